"""Multi-worker ``model.fit`` on Keras 3 and the local launcher (keras_optsuite.distribute).

The launcher tests start real processes on 127.0.0.1 (plain Python, no
TensorFlow, so they are fast); one slow test runs TensorFlow's multi-worker
tutorial pattern in two real TensorFlow workers and checks it against the
same training in this process with the same global batch.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from keras_optsuite.distribute import (
    KNOWN_AFFECTED_KERAS,
    cluster_tasks,
    disable_multi_worker_fit,
    enable_multi_worker_fit,
    free_ports,
    launch,
    split_cpu,
)
from keras_optsuite.distribute import _keras_multi_worker_patch as patch
from keras_optsuite.distribute.launch import NOT_STARTED_EXIT_CODE, TIMEOUT_EXIT_CODE

WORKER_SCRIPT = Path(__file__).parent / "workers" / "multi_worker_fit.py"
ONE_THREAD = {"TF_NUM_INTEROP_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1"}

# One xdist worker runs the module: its launch fixture runs once.
pytestmark = pytest.mark.xdist_group("multi_worker_fit")


# ---------------------------------------------------------------------------
# TF_CONFIG construction
# ---------------------------------------------------------------------------
def test_tf_config_for_workers_names_every_worker_and_its_own_task():
    tasks = cluster_tasks(workers=3, ports=[7001, 7002, 7003])
    cluster = {"worker": ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]}
    assert [task.name for task in tasks] == ["worker 0", "worker 1", "worker 2"]
    for index, task in enumerate(tasks):
        assert task.tf_config == {"cluster": cluster, "task": {"type": "worker", "index": index}}
        assert json.loads(json.dumps(task.tf_config)) == task.tf_config


def test_tf_config_with_parameter_servers_adds_a_chief():
    tasks = cluster_tasks(workers=2, ps=2, ports=[7000, 7001, 7002, 7003, 7004])
    cluster = {
        "chief": ["127.0.0.1:7000"],
        "worker": ["127.0.0.1:7001", "127.0.0.1:7002"],
        "ps": ["127.0.0.1:7003", "127.0.0.1:7004"],
    }
    assert [task.name for task in tasks] == ["chief 0", "worker 0", "worker 1", "ps 0", "ps 1"]
    assert all(task.tf_config["cluster"] == cluster for task in tasks)
    assert [task.tf_config["task"] for task in tasks] == [
        {"type": "chief", "index": 0},
        {"type": "worker", "index": 0},
        {"type": "worker", "index": 1},
        {"type": "ps", "index": 0},
        {"type": "ps", "index": 1},
    ]


def test_cluster_tasks_pick_distinct_free_ports_and_reject_bad_arguments():
    cluster = cluster_tasks(workers=2, ps=1)[0].tf_config["cluster"]
    ports = [int(address.rsplit(":", 1)[1]) for role in cluster.values() for address in role]
    assert len(ports) == 4 and len(set(ports)) == 4
    with socket.socket() as sock:  # really free: bindable on 127.0.0.1
        sock.bind(("127.0.0.1", ports[0]))
    assert len(set(free_ports(5))) == 5
    with pytest.raises(ValueError, match="workers must be a positive integer, got workers=0"):
        cluster_tasks(workers=0)
    with pytest.raises(ValueError, match="ps must be an integer >= 0, got ps=-1"):
        cluster_tasks(workers=1, ps=-1)
    with pytest.raises(ValueError, match=r"ports must be 3 distinct ports .* got ports=\[1, 2\]"):
        cluster_tasks(workers=1, ps=1, ports=[1, 2])


def test_launch_rejects_bad_arguments():
    with pytest.raises(ValueError, match="command must be a non-empty list"):
        launch("python train.py", workers=2)
    with pytest.raises(ValueError, match="timeout must be in"):
        launch([sys.executable, "-c", "pass"], workers=1, timeout=0)
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        launch([sys.executable, "-c", "pass"], workers=0)


# ---------------------------------------------------------------------------
# split_cpu (conftest split the CPU into two logical devices at start-up)
# ---------------------------------------------------------------------------
def test_split_cpu_is_idempotent_and_refuses_a_late_different_split():
    import tensorflow as tf

    assert split_cpu(2) == ["/cpu:0", "/cpu:1"]
    assert split_cpu(2) == ["/cpu:0", "/cpu:1"]
    assert len(tf.config.list_logical_devices("CPU")) == 2
    with pytest.raises(RuntimeError, match=r"split_cpu\(n=3\) came too late: .* 2 logical CPU"):
        split_cpu(3)
    with pytest.raises(ValueError, match="n must be a positive integer, got n=0"):
        split_cpu(0)


# ---------------------------------------------------------------------------
# The Keras fix: applied, idempotent, removable, self-disabling
# ---------------------------------------------------------------------------
def test_multi_worker_fix_is_applied_idempotent_and_removable():
    import keras
    from keras.src.backend.tensorflow import trainer

    status = enable_multi_worker_fit()
    assert status == {
        "symbolic_build": "applied",
        "reduce_logs": "applied",
        "backup_and_restore_save": "applied",
        "backup_and_restore_cleanup": "applied",
    }, f"Keras {keras.__version__}: {status}"
    patched = trainer.TensorFlowTrainer._maybe_symbolic_build
    assert enable_multi_worker_fit() == status
    assert trainer.TensorFlowTrainer._maybe_symbolic_build is patched  # not wrapped twice
    upstream = patched.__wrapped__
    try:
        disable_multi_worker_fit()
        assert trainer.TensorFlowTrainer._maybe_symbolic_build is upstream
        assert trainer.reduce_per_replica.__name__ == "reduce_per_replica"
        assert not hasattr(trainer.reduce_per_replica, "__wrapped__")
        assert not hasattr(keras.callbacks.BackupAndRestore._save_model, "__wrapped__")
    finally:
        assert enable_multi_worker_fit() == status


def test_fix_turns_itself_off_when_upstream_code_changed_or_keras_is_outside_the_range(monkeypatch):
    fixed_upstream = patch._Fix(
        name="symbolic_build",
        owner=patch._trainer_class,
        attribute="_maybe_symbolic_build",
        faulty_code=("this code is what a fixed Keras would no longer contain",),
        make=patch._make_maybe_symbolic_build,
    )
    assert patch._why_not_needed(fixed_upstream) == (
        "not needed: upstream code changed (faulty code not found)"
    )
    assert all(patch._why_not_needed(fix) is None for fix in patch._FIXES)
    low, _ = KNOWN_AFFECTED_KERAS
    monkeypatch.setattr(patch, "KNOWN_AFFECTED_KERAS", (low, patch._keras_version()))
    reason = patch._why_not_needed(patch._FIXES[0])
    assert reason.startswith("not needed: Keras ") and reason.endswith("outside the affected range")


# ---------------------------------------------------------------------------
# The launcher with plain Python processes
# ---------------------------------------------------------------------------
# Each process reports its TF_CONFIG, installs SIGTERM/SIGINT handlers that
# print the signal, marks itself ready with a file, then follows argv[1]:
#   fail: worker 1 exits with 3 (last line without newline) once worker 0 is
#         ready; chief: the chief exits 0 once the others are ready; the rest
#         (and everyone in "wait") wait to be stopped.
CHILD = r"""
import json, os, signal, sys, time
config = json.loads(os.environ["TF_CONFIG"])
task, mode, flags = config["task"], sys.argv[1], sys.argv[2]
print("task", task["type"], task["index"], "cluster", json.dumps(config["cluster"], sort_keys=True))
def stop(signum, frame):
    print("got", signal.Signals(signum).name)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
def wait_until_ready(*names):
    while not all(os.path.exists(os.path.join(flags, n)) for n in names):
        time.sleep(0.02)
if mode == "chief" and task["type"] == "chief":
    wait_until_ready("worker-0", "ps-0")
    sys.exit(0)
if mode == "fail" and task["index"] == 1:
    wait_until_ready("worker-0")
    sys.stdout.write("failing")
    sys.exit(3)
open(os.path.join(flags, f"{task['type']}-{task['index']}"), "w").close()
print("ready")
time.sleep(120)
"""


def _lines(text):
    lines = text.splitlines()
    prefixes = ("[worker 0] ", "[worker 1] ", "[chief 0] ", "[ps 0] ", "[launch] ")
    assert all(line.startswith(prefixes) for line in lines), text
    return lines


def test_failing_worker_stops_the_other_and_sets_the_exit_code(tmp_path):
    output = io.StringIO()
    start = time.monotonic()
    code = launch([sys.executable, "-c", CHILD, "fail", str(tmp_path)], workers=2,
                  output=output, timeout=60)
    elapsed = time.monotonic() - start
    text = output.getvalue()
    lines = _lines(text)
    assert code == 3, text
    assert elapsed < 20, f"took {elapsed:.1f} s"
    cluster = None
    for index in (0, 1):
        [task_line] = [line for line in lines if line.startswith(f"[worker {index}] task ")]
        assert task_line.startswith(f"[worker {index}] task worker {index} cluster ")
        this_cluster = json.loads(task_line.split(" cluster ", 1)[1])
        cluster = cluster or this_cluster
        assert this_cluster == cluster  # one cluster, everyone's own task
    ports = [int(address.rsplit(":", 1)[1]) for address in cluster["worker"]]
    assert list(cluster) == ["worker"] and len(set(ports)) == 2
    assert "[worker 1] failing" in lines  # a last line without newline arrives whole
    assert "[launch] worker 1 exited with code 3; stopping 1 other process(es)" in lines
    assert lines.index("[worker 0] ready") < lines.index("[worker 0] got SIGTERM")


class _SignalWhenReady(io.StringIO):
    """Sends ``signum`` to this process once every worker printed "ready"."""

    def __init__(self, signum, workers):
        super().__init__()
        self.signum, self.workers, self.sent = signum, workers, False

    def write(self, text):
        written = super().write(text)
        ready = self.getvalue().count("] ready")
        if ready == self.workers and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)
        return written


def test_sigint_to_the_launcher_is_forwarded_to_every_worker(tmp_path):
    before = signal.getsignal(signal.SIGINT)
    output = _SignalWhenReady(signal.SIGINT, workers=2)
    code = launch([sys.executable, "-c", CHILD, "wait", str(tmp_path)], workers=2,
                  output=output, timeout=60)
    lines = _lines(output.getvalue())
    assert code == 128 + signal.SIGINT, output.getvalue()
    assert "[launch] received SIGINT; forwarding it to every process" in lines
    assert "[worker 0] got SIGINT" in lines and "[worker 1] got SIGINT" in lines
    assert signal.getsignal(signal.SIGINT) is before


def test_parameter_server_job_ends_with_the_chief_and_timeout_stops_everyone(tmp_path):
    output = io.StringIO()
    code = launch([sys.executable, "-c", CHILD, "chief", str(tmp_path)], workers=1, ps=1,
                  output=output, timeout=60)
    lines = _lines(output.getvalue())
    assert code == 0, output.getvalue()
    assert any(line.startswith("[chief 0] task chief 0 cluster ") for line in lines)
    assert any(line.startswith("[ps 0] task ps 0 cluster ") for line in lines)
    assert "[launch] chief 0 finished; stopping the 2 worker and ps process(es)" in lines
    assert "[worker 0] got SIGTERM" in lines and "[ps 0] got SIGTERM" in lines

    output = io.StringIO()
    start = time.monotonic()
    code = launch([sys.executable, "-c", CHILD, "wait", str(tmp_path)], workers=2,
                  output=output, timeout=1.0)
    lines = _lines(output.getvalue())
    assert code == TIMEOUT_EXIT_CODE and time.monotonic() - start < 15
    assert "[launch] timeout after 1 s; stopping every process" in lines

    output = io.StringIO()
    code = launch([str(tmp_path / "no-such-program")], workers=2, output=output)
    assert code == NOT_STARTED_EXIT_CODE
    assert output.getvalue().startswith("[launch] cannot start ")


# ---------------------------------------------------------------------------
# Two real TensorFlow workers, through launch
# ---------------------------------------------------------------------------
def _close(got, want, what):
    for index, (a, b) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"{what}[{index}]")


def _close_history(got, want, what):
    assert sorted(got) == sorted(want), what
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, err_msg=f"{what}[{key}]")


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory, shared_mlflow_server_process):
    """One launch of tests/workers/multi_worker_fit.py with 2 TensorFlow workers
    (every check shares it: each worker process costs ~10 s of imports)."""
    server = shared_mlflow_server_process.start()
    out = tmp_path_factory.mktemp("two-workers")
    output = io.StringIO()
    code = launch([sys.executable, str(WORKER_SCRIPT), str(out)], workers=2,
                  env={**ONE_THREAD, "OPTSUITE_TEST_TRACKING_URI": server.uri}, output=output, timeout=400)
    text = output.getvalue()
    assert code == 0, text[-6000:]
    reports = [json.loads((out / f"worker{i}.json").read_text()) for i in (0, 1)]
    saved = [dict(np.load(out / f"worker{i}.npz")) for i in (0, 1)]
    return {"directory": out, "lines": _lines(text), "reports": reports, "saved": saved, "uri": server.uri}


@pytest.mark.slow
def test_two_workers_fit_like_one_process_with_the_same_global_batch(two_workers):
    """TensorFlow's tutorial pattern (tf.data, steps_per_epoch, validation),
    NumPy arrays (validation_split, evaluate, predict) and BackupAndRestore
    (interrupted, resumed by a new model, one shared backup_dir), each in two
    worker processes, against the same code on one device in this process.

    Tolerance: rtol 1e-5, atol 1e-6 (float32 sums of 2 partial gradients
    instead of one, over 8-16 Adam steps).
    """
    import tensorflow as tf

    from workers import multi_worker_fit as job

    tmp_path, lines = two_workers["directory"], two_workers["lines"]
    for index in (0, 1):
        for step in ("tutorial fit done", "numpy fit, evaluate, predict done", "backup and restore done"):
            assert f"[worker {index}] worker {index}: {step}" in lines
        assert f"[worker {index}] worker {index}: 2 replicas in sync" in lines

    reports, saved = two_workers["reports"], two_workers["saved"]
    assert set(reports[0]["fixes"].values()) == {"applied"}
    # Without the fix, the same fit fails in both workers (keras-team/keras#20585).
    assert reports[0]["unpatched_fit_fails"] and reports[1]["unpatched_fit_fails"]
    # Mirrored training: both workers hold exactly the same weights.
    for key in saved[0]:
        np.testing.assert_array_equal(saved[0][key], saved[1][key], err_msg=key)

    def weights(name):
        return [saved[0][f"{name}_{i}"] for i in range(4)]

    one_device = tf.distribute.get_strategy()
    initial = job.model(one_device).get_weights()

    want, want_history = job.tutorial_fit(one_device)
    _close(weights("tutorial"), want, "tutorial weights")
    assert max(np.abs(a - b).max() for a, b in zip(want, initial)) > 1e-2
    for report in reports:
        _close_history(report["tutorial_history"], want_history, "tutorial history")

    want, want_history, want_evaluation, want_predictions = job.numpy_fit(one_device)
    _close(weights("numpy"), want, "numpy weights")
    np.testing.assert_allclose(saved[0]["predictions"], want_predictions, rtol=1e-5, atol=1e-6)
    for report in reports:
        _close_history(report["numpy_history"], want_history, "numpy history")
        _close_history(report["evaluation"], want_evaluation, "evaluation")

    want, epochs_run = job.backup_and_restore_fit(one_device)
    assert epochs_run == job.BACKUP_EPOCHS
    assert [r["resumed_epochs"] for r in reports] == [job.BACKUP_EPOCHS - job.INTERRUPTED_AT_EPOCH] * 2
    _close(weights("backup"), want, "resumed weights")
    assert not (tmp_path / "backup").exists()  # the chief deleted the finished backup


@pytest.mark.slow
def test_only_the_chief_logs_and_logs_the_global_values(two_workers):
    """MLflowTracking in both workers: one run, from worker 0; its validation
    loss is the whole validation set's (computed here from the final weights),
    not worker 0's half."""
    import mlflow
    import tensorflow as tf

    from workers import multi_worker_fit as job

    run_ids = [report["run_id"] for report in two_workers["reports"]]
    assert run_ids[0] is not None and run_ids[1] is None, "worker 0 (the chief) logs, worker 1 does not"
    client = mlflow.MlflowClient(two_workers["uri"])
    runs = client.search_runs([client.get_experiment_by_name("multi-worker").experiment_id])
    assert [run.info.run_id for run in runs] == [run_ids[0]]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["distribution.strategy"] == "MultiWorkerMirroredStrategy"
    assert run.data.params["distribution.replicas"] == "2"

    net = job.model(tf.distribute.get_strategy())
    net.set_weights([two_workers["saved"][0][f"tracked_{i}"] for i in range(4)])
    (x, y), _ = job.data()
    split = int(len(x) * 0.75)  # Keras's validation_split
    want = net.evaluate(x[split:], y[split:], batch_size=job.GLOBAL_BATCH, verbose=0, return_dict=True)
    logged = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_loss")}
    steps_per_epoch = split // job.GLOBAL_BATCH
    epoch_ends = [steps_per_epoch * (epoch + 1) for epoch in range(job.EPOCHS)]
    assert sorted(logged) == epoch_ends, "at the optimizer step that ends each epoch"
    assert logged[epoch_ends[-1]] == pytest.approx(want["loss"], rel=1e-5)
    half = net.evaluate(x[split:split + 32], y[split:split + 32], verbose=0, return_dict=True)["loss"]
    assert half != pytest.approx(want["loss"], rel=1e-3), "the check can tell a local value from the global one"
    steps = job.EPOCHS * steps_per_epoch
    gradient_norms = client.get_metric_history(run.info.run_id, "gradient_norm")
    assert sorted(m.step for m in gradient_norms) == list(range(2, steps + 1, 2))
    assert all(np.isfinite(m.value) and m.value > 0 for m in gradient_norms)


def test_optsuite_launch_command_runs_the_program_per_worker(capfd):
    from keras_optsuite.cli import main

    program = "import json, os; print(json.loads(os.environ['TF_CONFIG'])['task']['index'])"
    assert main(["launch", "--workers", "2", "--", sys.executable, "-c", program]) == 0
    lines = set(capfd.readouterr().out.splitlines())
    assert {"[worker 0] 0", "[worker 1] 1"} <= lines
    assert main(["launch", "--workers", "2", "--", sys.executable, "-c", "import sys; sys.exit(3)"]) == 3
    assert main(["launch", "--workers", "2"]) == 2  # no program: a usage error
    assert "no program to launch" in capfd.readouterr().err


def test_optsuite_launch_search_starts_a_keras_tuner_chief_and_workers_on_one_oracle_port(capfd):
    from keras_optsuite.cli import main

    program = ("import os; print(os.environ['KERASTUNER_TUNER_ID'], os.environ['KERASTUNER_ORACLE_IP'], "
               "os.environ['KERASTUNER_ORACLE_PORT'], 'TF_CONFIG' in os.environ)")
    assert main(["launch", "--search", "--workers", "2", "--", sys.executable, "-c", program]) == 0
    lines = sorted(line for line in capfd.readouterr().out.splitlines() if not line.startswith("[launch]"))
    assert [line.split()[:3] for line in lines] == [["[chief", "0]", "chief"], ["[tuner", "0]", "tuner0"],
                                                    ["[tuner", "1]", "tuner1"]]
    assert {tuple(line.split()[3:]) for line in lines} == {(lines[0].split()[3], lines[0].split()[4], "False")}
    assert lines[0].split()[3] == "127.0.0.1", "one oracle address for all, no TF_CONFIG"
    # the job waits for the chief too: it is the oracle, and ends when the last worker has
    assert main(["launch", "--search", "--workers", "1", "--", sys.executable, "-c",
                 "import os, sys; sys.exit(4 if os.environ['KERASTUNER_TUNER_ID'] == 'chief' else 0)"]) == 4
    assert main(["launch", "--search", "--ps", "1", "--workers", "1", "--", sys.executable, "-c", "0"]) == 2
    assert "--search starts a chief and tuner workers; it takes no --ps (got --ps 1)" in capfd.readouterr().err
