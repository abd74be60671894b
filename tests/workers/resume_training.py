"""A tracked, resumable training job: BackupAndRestore + MLflowTracking(backup_dir=...).

The test runs it twice in the same working directory: first in a process
that stops itself at optimizer step ``--kill-at`` (``kill -9``, no clean-up
of any kind), then again (in the test process) to completion.

    python tests/workers/resume_training.py DIRECTORY --kill-at 15
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

EPOCHS = 3
BATCH = 32
SAMPLES = 320  # 10 optimizer steps per epoch
EVERY = 2  # log every 2 steps


def data() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.data[:SAMPLES] / 16.0).astype("float32"), digits.target[:SAMPLES].astype("int32")


class StopAt(keras.callbacks.Callback):
    """At optimizer step ``step``: SIGKILL this process, or raise KeyboardInterrupt."""

    def __init__(self, step: int | None, how: str) -> None:
        super().__init__()
        self.step, self.how = step, how

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.step is not None and int(self.model.optimizer.iterations.numpy()) == self.step:
            if self.how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise KeyboardInterrupt


def train(directory: str, tracking_uri: str, stop_at: int | None = None, how: str = "kill"):
    """Train (or resume) the job whose backup lives in ``directory``; returns (tracking, model)."""
    from keras_optsuite.callbacks import MLflowTracking

    x, y = data()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(10)])
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    backup_dir = os.path.join(directory, "backup")
    tracking = MLflowTracking(experiment="resume", tracking_uri=tracking_uri, backup_dir=backup_dir,
                              log_every_n_steps=EVERY, log_model=False)
    callbacks = [tracking, keras.callbacks.BackupAndRestore(backup_dir), StopAt(stop_at, how)]
    with tracking:
        model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, validation_data=(x[:64], y[:64]), verbose=0,
                  callbacks=callbacks)
    return tracking, model


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("directory")
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--kill-at", type=int, required=True)
    arguments = parser.parse_args()
    train(arguments.directory, arguments.tracking_uri, arguments.kill_at, "kill")
    sys.exit("not killed")  # unreachable when --kill-at is within the run
