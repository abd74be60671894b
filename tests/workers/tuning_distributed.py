"""One process of a distributed tracked search: Keras Tuner's chief (the oracle) or a worker.

Keras Tuner reads its role from ``KERASTUNER_TUNER_ID`` ("chief" or
"tunerN"), ``KERASTUNER_ORACLE_IP`` and ``KERASTUNER_ORACLE_PORT``; every
process gets the same ``DIRECTORY`` (the shared storage Keras Tuner needs).

    python tests/workers/tuning_distributed.py DIRECTORY TRACKING_URI
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import keras  # noqa: E402

OPTIMIZERS = ["Adam", "RAdam", "SGDMomentum"]
TRIALS = 4
EPOCHS = 2


WORKERS = ("tuner0", "tuner1")


def _wait_for_the_other_workers(directory: str, timeout: float = 240.0) -> None:
    """Test scaffolding: workers start searching together, so each gets trials however slow its start."""
    import time
    from pathlib import Path

    role = os.environ["KERASTUNER_TUNER_ID"]
    if role not in WORKERS:
        return
    Path(directory, f"ready-{role}").touch()
    deadline = time.monotonic() + timeout
    while not all(Path(directory, f"ready-{w}").exists() for w in WORKERS):
        if time.monotonic() > deadline:
            raise RuntimeError("the other worker did not start")
        time.sleep(0.1)


def main(directory: str, tracking_uri: str) -> None:
    from sklearn.datasets import load_digits

    import keras_optsuite  # noqa: F401
    from keras_optsuite.tuning import MedianPruning, OptimizerHyperModel, RandomSearch

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")

    def build(hp):
        return keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="tanh"),
                                 keras.layers.Dense(10)])

    hypermodel = OptimizerHyperModel(build, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                                     optimizers=OPTIMIZERS)
    tuner = RandomSearch(hypermodel, objective="val_loss", max_trials=TRIALS, seed=2, directory=directory,
                         project_name="distributed", experiment="tuning-distributed", tracking_uri=tracking_uri,
                         pruning=MedianPruning(min_trials=100))  # reports every epoch; never prunes
    _wait_for_the_other_workers(directory)
    tuner.search(x[:640], y[:640], validation_data=(x[1200:], y[1200:]), epochs=EPOCHS, batch_size=64,
                 verbose=0)
    print(f"{os.environ['KERASTUNER_TUNER_ID']} done: parent {tuner.parent_run_id}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
