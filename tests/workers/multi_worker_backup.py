"""A two-worker training job with ``BackupAndRestore`` that one worker can kill.

Run by ``launch`` (which sets ``TF_CONFIG``), twice, in the same directory:

    python tests/workers/multi_worker_backup.py OUT_DIR --kill-at EPOCH:BATCH
    python tests/workers/multi_worker_backup.py OUT_DIR --then-uninterrupted

The job trains the digits MLP (``OUT_DIR/data.npz``) for ``EPOCHS`` epochs
with ``keras.callbacks.BackupAndRestore(OUT_DIR/backup)`` (a backup at the
end of every epoch). With ``--kill-at``, worker 1 sends itself SIGKILL
before that (0-based) batch of that (0-based) epoch: no clean-up of any
kind. Without it, the job runs to the end (resuming from the backup if there
is one); ``--then-uninterrupted`` then trains the same job again from
scratch in the same processes, with another backup directory, as the
uninterrupted reference. Every worker prints ``worker <i>: epoch <e>
begins`` and, at the end, writes ``OUT_DIR/worker<i>.npz`` (``resumed_<k>``
and ``uninterrupted_<k>``: the model's weights) and ``OUT_DIR/worker<i>.json``
(how many epochs each fit ran). The test runs :func:`fit` with the default
strategy for the one-device reference.
"""

from __future__ import annotations

import argparse
import json
import os
import signal

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import sys  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

# Run as a script by ``launch`` and imported by the test as ``workers.multi_worker_backup``.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import multi_worker_fit  # noqa: E402

EPOCHS = 4
GLOBAL_BATCH = 32  # 256 examples: 8 steps per epoch


def _say(message: str) -> None:
    print(message, flush=True)


def build(strategy):
    """The job's model: the digits MLP of ``multi_worker_fit.py`` (seeded, Adam)."""
    return multi_worker_fit.model(strategy)


def fit(strategy, x, y, backup_dir: str | None = None, kill_at: tuple[int, int] | None = None,
        worker: int = 0) -> tuple[list[np.ndarray], int]:
    """Train the job under ``strategy``; return the final weights and the epochs this fit ran.

    ``kill_at=(epoch, batch)``: worker 1 kills itself (SIGKILL) before that batch.
    """
    import keras

    class Progress(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            _say(f"worker {worker}: epoch {epoch} begins")

        def on_train_batch_begin(self, batch, logs=None):
            if kill_at == (self._epoch, batch) and worker == 1:
                _say(f"worker {worker}: killing itself in epoch {self._epoch} before batch {batch}")
                os.kill(os.getpid(), signal.SIGKILL)

        def on_epoch_end(self, epoch, logs=None):
            self._epoch = epoch + 1

        def on_train_begin(self, logs=None):
            self._epoch = self.model._initial_epoch or 0

    model = build(strategy)
    callbacks = [keras.callbacks.BackupAndRestore(backup_dir)] if backup_dir else []
    history = model.fit(
        x, y, batch_size=GLOBAL_BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
        callbacks=[*callbacks, Progress()],
    )
    return model.get_weights(), len(history.history["loss"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--kill-at", help="EPOCH:BATCH (0-based) at which worker 1 kills itself")
    parser.add_argument("--then-uninterrupted", action="store_true")
    args = parser.parse_args()
    kill_at = tuple(int(part) for part in args.kill_at.split(":")) if args.kill_at else None

    from keras_optsuite.distribute import enable_multi_worker_fit

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    enable_multi_worker_fit()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    worker = strategy.cluster_resolver.task_id
    data = np.load(os.path.join(args.out_dir, "data.npz"))
    x, y = data["x"], data["y"]

    arrays, report = {}, {}
    weights, report["resumed_epochs"] = fit(
        strategy, x, y, os.path.join(args.out_dir, "backup"), kill_at, worker
    )
    arrays.update({f"resumed_{k}": w for k, w in enumerate(weights)})
    _say(f"worker {worker}: job done after {report['resumed_epochs']} epoch(s)")
    if args.then_uninterrupted:
        weights, report["uninterrupted_epochs"] = fit(
            strategy, x, y, os.path.join(args.out_dir, "uninterrupted-backup"), None, worker
        )
        arrays.update({f"uninterrupted_{k}": w for k, w in enumerate(weights)})
        _say(f"worker {worker}: uninterrupted job done")
    np.savez(os.path.join(args.out_dir, f"worker{worker}.npz"), **arrays)
    with open(os.path.join(args.out_dir, f"worker{worker}.json"), "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main()
