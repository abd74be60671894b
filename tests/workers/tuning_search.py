"""A tracked, resumable tuning search: RandomSearch with overwrite=False.

The test runs it twice with the same directory and store: first in a
process that kills itself (``kill -9``, no clean-up of any kind) at the end
of the ``--kill-after-epochs``-th epoch of the search, then again (in the
test process) to completion.

    python tests/workers/tuning_search.py DIRECTORY TRACKING_URI --kill-after-epochs 8
"""

from __future__ import annotations

import argparse
import os
import signal

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import keras  # noqa: E402

OPTIMIZERS = ["Adam", "RAdam", "SGDMomentum"]
TRIALS = 4
EPOCHS = 3
SAMPLES = 320

_epochs_done = [0]  # module state: Keras Tuner deep-copies the callbacks of every trial


class KillAfterEpochs(keras.callbacks.Callback):
    def __init__(self, epochs: int | None) -> None:
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        _epochs_done[0] += 1
        if self.epochs is not None and _epochs_done[0] == self.epochs:
            os.kill(os.getpid(), signal.SIGKILL)


def search(directory: str, tracking_uri: str, kill_after_epochs: int | None = None):
    from sklearn.datasets import load_digits

    import keras_optsuite  # noqa: F401
    from keras_optsuite.tuning import OptimizerHyperModel, RandomSearch

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")

    def build(hp):
        return keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="tanh"),
                                 keras.layers.Dense(10)])

    hypermodel = OptimizerHyperModel(build, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                                     optimizers=OPTIMIZERS)
    tuner = RandomSearch(hypermodel, objective="val_loss", max_trials=TRIALS, seed=5, directory=directory,
                         project_name="resumable", overwrite=False, experiment="tuning-resume",
                         tracking_uri=tracking_uri)
    tuner.search(x[:SAMPLES], y[:SAMPLES], validation_data=(x[1200:], y[1200:]), epochs=EPOCHS,
                 batch_size=64, verbose=0, callbacks=[KillAfterEpochs(kill_after_epochs)])
    return tuner


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("directory")
    parser.add_argument("tracking_uri")
    parser.add_argument("--kill-after-epochs", type=int, default=None)
    arguments = parser.parse_args()
    search(arguments.directory, arguments.tracking_uri, arguments.kill_after_epochs)
