"""One process of a pipeline's distributed search (started by ``run_search`` with ``workers``).

    python -m keras_optsuite.pipelines._search_task SPEC.json

``KERASTUNER_TUNER_ID`` says whether it is the chief (the oracle) or a worker.
"""

import sys

from keras_optsuite.pipelines.tune import run_search_task

if __name__ == "__main__":
    run_search_task(sys.argv[1])
