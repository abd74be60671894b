"""Every python block of README.md runs as written (issue 22, item 6).

One subprocess runs all the blocks (TensorFlow is imported once), each in a
fresh namespace, in a temporary working directory with its own MLflow store.
A block gets ``model``, ``x`` and ``y`` from the preamble below only if it
says they are the reader's own, with a comment line ``# model, x, y: your
...``; everything else it must define itself. A block preceded by
``<!-- readme-test: not run, REASON -->`` is not run here, and REASON must
say why (it must name the test that runs the same code instead). A block
preceded by ``<!-- readme-test: run as train.py with optsuite launch ARGS -->``
is a cluster job: it is saved as ``train.py`` and run with ``launch`` and
those arguments, as the README tells the reader to.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
YOURS = "# model, x, y: your "
NOT_RUN = re.compile(r"<!-- readme-test: not run, (.+?) -->")
LAUNCHED = re.compile(r"<!-- readme-test: run as train.py with optsuite launch (.+?) -->")

# The reader's model and data: 96 digits (8x8, 10 classes), a small softmax MLP.
PREAMBLE = """
import keras
from sklearn.datasets import load_digits

keras.utils.set_random_seed(0)
_digits = load_digits()
x, y = _digits.data[:96].astype("float32") / 16.0, _digits.target[:96]
model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu"),
                          keras.layers.Dense(10, activation="softmax")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
"""

RUNNER = """
import contextlib, io, json, sys, time, traceback
blocks, preamble = json.load(sys.stdin)
results = {}
for block in blocks:
    namespace = {"__name__": "__readme__"}
    output = io.StringIO()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            if block["uses_preamble"]:
                exec(compile(preamble, "preamble", "exec"), namespace)
            exec(compile(block["code"], "README.md:%d" % block["line"], "exec"), namespace)
        results[block["line"]] = {"ok": True, "seconds": round(time.perf_counter() - start, 1)}
    except BaseException:
        results[block["line"]] = {"ok": False, "error": traceback.format_exc(),
                                  "output": output.getvalue()[-3000:]}
print("RESULTS " + json.dumps(results))
"""


def readme_blocks(text: str) -> list[dict]:
    """Every ```python block: its first line number, code and marker."""
    blocks = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start = i + 1
            end = next(j for j in range(start, len(lines)) if lines[j].strip() == "```")
            before = lines[i - 1] if i else ""
            code = "\n".join(lines[start:end]) + "\n"
            not_run = NOT_RUN.search(before)
            launched = LAUNCHED.search(before)
            blocks.append({
                "line": start + 1, "code": code, "marker": before.strip(),
                "not_run": not_run.group(1) if not_run else None,
                "launch": launched.group(1).split() if launched else None,
                "uses_preamble": any(l.startswith(YOURS) for l in code.splitlines()),
            })
            i = end
        i += 1
    return blocks


BLOCKS = readme_blocks(README.read_text())
# The layers example trains for ~10 s and is run, with checks on what it learns,
# by tests/test_layer_registry.py; it is not run twice.
RUN_ELSEWHERE = {"<!-- layers-example -->": ROOT / "tests" / "test_layer_registry.py"}
TO_RUN = [b for b in BLOCKS
          if not b["not_run"] and not b["launch"] and b["marker"] not in RUN_ELSEWHERE]
CLUSTER_JOBS = [b for b in BLOCKS if b["launch"]]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    work = tmp_path_factory.mktemp("readme")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    completed = subprocess.run(
        [sys.executable, "-c", RUNNER], input=json.dumps([TO_RUN, PREAMBLE]),
        capture_output=True, text=True, cwd=work, env=env, timeout=600,
    )
    line = [l for l in completed.stdout.splitlines() if l.startswith("RESULTS ")]
    assert line, completed.stderr[-5000:]
    return {int(k): v for k, v in json.loads(line[0][len("RESULTS "):]).items()}


def test_the_readme_has_the_blocks_this_test_expects():
    assert len(BLOCKS) >= 10
    for block in BLOCKS:
        if block["not_run"]:
            assert re.search(r"tests/test_\w+\.py", block["not_run"]), block["not_run"]
    for marker, test_file in RUN_ELSEWHERE.items():
        assert marker in test_file.read_text(), f"{test_file} no longer runs {marker}"


@pytest.mark.slow
@pytest.mark.xdist_group("readme_blocks")  # one worker: the subprocess runs once
@pytest.mark.parametrize("block", TO_RUN, ids=[f"README.md:{b['line']}" for b in TO_RUN])
def test_readme_block_runs_as_written(block, results):
    result = results[block["line"]]
    print(f"README.md:{block['line']} ran in {result.get('seconds')} s")
    assert result["ok"], f"README.md line {block['line']}:\n{result['error']}\n{result['output']}"


@pytest.mark.slow
@pytest.mark.xdist_group("parameter_server")  # not beside the other 5-process cluster
@pytest.mark.parametrize("block", CLUSTER_JOBS, ids=[f"README.md:{b['line']}" for b in CLUSTER_JOBS])
def test_readme_cluster_job_runs_as_written(block, tmp_path):
    from keras_optsuite.distribute.launch import launch

    options = argparse.ArgumentParser()
    options.add_argument("--workers", type=int, required=True)
    options.add_argument("--ps", type=int, default=0)
    arguments = options.parse_args(block["launch"])
    # The block as written, then a line reporting what it trained.
    (tmp_path / "train.py").write_text(
        block["code"] + "print('README job: %d losses, all finite: %s' % "
        "(len(losses), all(l == l and abs(l) != float('inf') for l in losses)))\n"
    )
    output = io.StringIO()
    code = launch([sys.executable, "train.py"], workers=arguments.workers, ps=arguments.ps,
                  cwd=tmp_path, env={"TF_NUM_INTEROP_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1"},
                  output=output, timeout=300)
    text = output.getvalue()
    assert code == 0, text[-5000:]
    steps = int(re.search(r"steps=(\d+)", block["code"]).group(1))
    assert f"[chief 0] README job: {steps} losses, all finite: True" in text.splitlines()


def test_blocks_without_the_your_model_comment_get_nothing_from_the_preamble():
    text = "```python\nimport keras\nprint(model)\n```\n\n```python\n" + YOURS + "model\n```\n"
    first, second = readme_blocks(text)
    assert not first["uses_preamble"] and second["uses_preamble"]
