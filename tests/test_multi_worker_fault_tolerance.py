"""Fault tolerance: a worker killed mid-epoch, the job restarted, training resumed.

Two real TensorFlow workers on 127.0.0.1 (``tests/workers/multi_worker_backup.py``)
train with ``keras.callbacks.BackupAndRestore`` (a backup at the end of
every epoch, 4 epochs of 8 steps). On the first attempt worker 1 kills
itself with SIGKILL before batch 3 of epoch 2 (0-based, as Keras callbacks
count: after two backups), so the backup holds the state after epoch 1.
``launch`` must return non-zero and stop worker 0, which waits for worker 1
in the gradient all-reduce. Launching the same job again must resume from
the backup: it starts at epoch 2, runs 2 epochs instead of 4, deletes the
backup at the end, and ends with the weights of an uninterrupted run.

Tolerances. Against the same job run uninterrupted by the same two worker
processes (after the resumed one): exactly equal. The restored weights and
Adam slots are the float32 values the chief wrote to HDF5, bit for bit, and
the remaining steps run the same ops in the same order, so nothing can
differ. Against one device in this process with the same global batch:
rtol 1e-5, atol 1e-6 (float32; the global gradient is the sum of two
partial sums of 16 examples instead of one of 32, a few roundings per step,
see tests/test_multi_worker_equivalence.py).
"""

from __future__ import annotations

import io
import json
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from keras_optsuite.distribute import launch
from workers import multi_worker_backup as job
from workers.shared_run import exclusive, shared_directory

# One xdist worker for the module; the grouping is lost with pytest 9, so the
# launches are also shared across processes (tests/workers/shared_run.py).
pytestmark = pytest.mark.xdist_group("multi_worker_fault_tolerance")

WORKER_SCRIPT = Path(__file__).parent / "workers" / "multi_worker_backup.py"
ONE_THREAD = {"TF_NUM_INTEROP_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1"}
KILL_EPOCH, KILL_BATCH = 2, 3
SAMPLES = 256  # 8 steps of the global batch of 32 per epoch
RTOL, ATOL = 1e-5, 1e-6
LAUNCH_TIMEOUT = 300  # seconds; each launch takes ~15 s


def _epochs_begun(lines: list[str], worker: int) -> list[int]:
    prefix = f"[worker {worker}] worker {worker}: epoch "
    return [int(line[len(prefix):].split()[0]) for line in lines if line.startswith(prefix)]


def _run_job_twice(directory: Path, data) -> None:
    """The killed attempt, then the restarted one; ``status.json`` comes last."""
    np.savez(directory / "data.npz", x=data[0], y=data[1])
    command = [sys.executable, str(WORKER_SCRIPT), str(directory)]
    backup = directory / "backup"
    attempts = []
    for arguments in ([f"--kill-at={KILL_EPOCH}:{KILL_BATCH}"], ["--then-uninterrupted"]):
        output = io.StringIO()
        code = launch(command + arguments, workers=2, env=ONE_THREAD, output=output, timeout=LAUNCH_TIMEOUT)
        metadata = backup / "training_metadata.json"
        attempts.append({
            "code": code,
            "lines": output.getvalue().splitlines(),
            # What the next attempt will find.
            "backup_files": sorted(p.name for p in backup.iterdir()) if backup.exists() else None,
            "backup_epoch": json.loads(metadata.read_text())["epoch"] if metadata.exists() else None,
        })
    (directory / "status.json").write_text(json.dumps(attempts))


@pytest.fixture(scope="module")
def restarted_job(tmp_path_factory, digits):
    """Two launches of the job in one directory, once per test run (see
    tests/workers/shared_run.py): killed, then restarted."""
    data = (digits[0][:SAMPLES], digits[1][:SAMPLES])
    directory = shared_directory(tmp_path_factory, "multi-worker-fault-tolerance")
    with exclusive(directory):
        if not (directory / "status.json").exists():
            _run_job_twice(directory, data)
    first, second = json.loads((directory / "status.json").read_text())
    assert second["code"] == 0, "\n".join(second["lines"][-80:])
    reports = [json.loads((directory / f"worker{i}.json").read_text()) for i in (0, 1)]
    saved = [dict(np.load(directory / f"worker{i}.npz")) for i in (0, 1)]
    return {"directory": directory, "first": first, "second": second, "reports": reports,
            "saved": saved, "data": data}


@pytest.mark.slow
def test_killing_a_worker_mid_epoch_fails_the_job_and_stops_the_other(restarted_job):
    first = restarted_job["first"]
    text = "\n".join(first["lines"][-80:])
    assert first["code"] == 128 + signal.SIGKILL, text
    assert f"[worker 1] worker 1: killing itself in epoch {KILL_EPOCH} before batch {KILL_BATCH}" in first["lines"]
    assert "[launch] worker 1 exited with code -9; stopping 1 other process(es)" in first["lines"], text
    assert "[worker 0] worker 0: job done after 4 epoch(s)" not in first["lines"]
    for worker in (0, 1):
        assert _epochs_begun(first["lines"], worker) == [0, 1, 2], text
    # The last backup, written by the chief at the end of epoch 1, survived the kill.
    assert first["backup_files"] == ["latest.weights.h5", "training_metadata.json"]
    assert first["backup_epoch"] == KILL_EPOCH


@pytest.mark.slow
def test_restarted_job_resumes_from_the_backup_and_ends_like_an_uninterrupted_run(restarted_job):
    second, reports, saved = restarted_job["second"], restarted_job["reports"], restarted_job["saved"]
    text = "\n".join(second["lines"][-80:])
    for worker in (0, 1):
        # The resumed fit starts at the epoch after the last backup, then the
        # uninterrupted reference runs every epoch.
        assert _epochs_begun(second["lines"], worker) == [2, 3, 0, 1, 2, 3], text
        assert reports[worker] == {
            "resumed_epochs": job.EPOCHS - KILL_EPOCH, "uninterrupted_epochs": job.EPOCHS
        }
    # Both backup directories were deleted when their fit finished.
    assert second["backup_files"] is None
    assert not (restarted_job["directory"] / "uninterrupted-backup").exists()

    layers = len([key for key in saved[0] if key.startswith("resumed_")])
    resumed = [saved[0][f"resumed_{k}"] for k in range(layers)]
    uninterrupted = [saved[0][f"uninterrupted_{k}"] for k in range(layers)]
    for key in saved[0]:  # mirrored: both workers hold the same weights
        np.testing.assert_array_equal(saved[0][key], saved[1][key], err_msg=key)
    for k, (got, want) in enumerate(zip(resumed, uninterrupted)):
        np.testing.assert_array_equal(got, want, err_msg=f"weight {k}: resumed != uninterrupted")

    x, y = restarted_job["data"]
    one_device, epochs = job.fit(tf.distribute.get_strategy(), x, y)
    assert epochs == job.EPOCHS
    for k, (got, want) in enumerate(zip(resumed, one_device)):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"weight {k}")
    initial = job.build(tf.distribute.get_strategy()).get_weights()
    assert max(np.abs(w - i).max() for w, i in zip(one_device, initial)) > 1e-2, "training moved the weights"

