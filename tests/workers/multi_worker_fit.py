"""``model.fit`` / ``evaluate`` / ``predict`` as one worker of a
MultiWorkerMirroredStrategy cluster, in TensorFlow's tutorial pattern.

Run by ``launch`` (which sets ``TF_CONFIG``):
``python tests/workers/multi_worker_fit.py OUT_DIR``; each worker writes
``OUT_DIR/worker<i>.npz`` and ``OUT_DIR/worker<i>.json``. The test imports
the same functions and runs them with the default (one-device) strategy for
the reference: the global batch is the same, split across the workers.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

GLOBAL_BATCH = 32
STEPS_PER_EPOCH = 4
EPOCHS = 2
BACKUP_EPOCHS = 4
INTERRUPTED_AT_EPOCH = 2


def data():
    """256 training and 128 validation digits (multiples of the global batch)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int32")
    return (x[:256], y[:256]), (x[256:384], y[256:384])


def model(strategy):
    import keras

    keras.utils.set_random_seed(0)
    with strategy.scope():
        net = keras.Sequential(
            [keras.Input((64,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(10)]
        )
        net.compile(
            optimizer=keras.optimizers.Adam(0.01),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
    return net


def tutorial_fit(strategy):
    """TensorFlow's multi-worker tutorial: a repeated tf.data dataset batched
    with the global batch, ``steps_per_epoch``, and validation data."""
    (x, y), (x_val, y_val) = data()
    train = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(GLOBAL_BATCH)
    val = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(GLOBAL_BATCH)
    net = model(strategy)
    history = net.fit(
        train, epochs=EPOCHS, steps_per_epoch=STEPS_PER_EPOCH, validation_data=val, verbose=0
    )
    return net.get_weights(), history.history


def numpy_fit(strategy):
    """NumPy arrays (shuffled: the same seed on every worker gives the same
    permutation, which the workers then split), ``validation_split``, then
    ``evaluate`` and ``predict``."""
    (x, y), (x_val, y_val) = data()
    net = model(strategy)
    history = net.fit(
        x, y, batch_size=GLOBAL_BATCH, epochs=EPOCHS, validation_split=0.25, verbose=0
    )
    evaluation = net.evaluate(x_val, y_val, batch_size=GLOBAL_BATCH, verbose=0, return_dict=True)
    predictions = net.predict(x_val, batch_size=GLOBAL_BATCH, verbose=0)
    return net.get_weights(), history.history, evaluation, predictions


def backup_and_restore_fit(strategy, backup_dir=None):
    """BACKUP_EPOCHS epochs; with ``backup_dir``, interrupted at
    INTERRUPTED_AT_EPOCH and resumed by a new model from the backup."""
    import keras

    (x, y), _ = data()
    fit = dict(x=x, y=y, batch_size=GLOBAL_BATCH, epochs=BACKUP_EPOCHS, shuffle=False, verbose=0)
    if backup_dir is None:
        net = model(strategy)
        epochs_run = len(net.fit(**fit).history["loss"])
        return net.get_weights(), epochs_run

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == INTERRUPTED_AT_EPOCH:
                raise RuntimeError("interrupted")

    try:
        model(strategy).fit(
            **fit, callbacks=[keras.callbacks.BackupAndRestore(backup_dir), Interrupt()]
        )
    except RuntimeError as error:
        if str(error) != "interrupted":
            raise
    net = model(strategy)
    history = net.fit(**fit, callbacks=[keras.callbacks.BackupAndRestore(backup_dir)])
    return net.get_weights(), len(history.history["loss"])


def tracked_fit(strategy, tracking_uri):
    """The NumPy fit tracked by MLflowTracking (every worker has the callback;
    only the chief may log). Returns the weights and the run id (None if
    this worker did not log)."""
    from keras_optsuite.callbacks import MLflowTracking

    (x, y), _ = data()
    net = model(strategy)
    tracking = MLflowTracking(experiment="multi-worker", tracking_uri=tracking_uri, log_every_n_steps=2,
                              log_model=False, seed=0)
    with tracking:
        net.fit(x, y, batch_size=GLOBAL_BATCH, epochs=EPOCHS, validation_split=0.25, verbose=0,
                callbacks=[tracking])
    return net.get_weights(), tracking.run_id


def unpatched_fit_fails(strategy):
    """Whether upstream Keras's fit fails here with keras-team/keras#20585."""
    from keras_optsuite.distribute import disable_multi_worker_fit, enable_multi_worker_fit

    (x, y), _ = data()
    disable_multi_worker_fit()
    try:
        model(strategy).fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, verbose=0)
    except ValueError as error:
        return "with an unsupported type" in str(error)
    finally:
        enable_multi_worker_fit()
    return False


def main(out_dir):
    from keras_optsuite.distribute import enable_multi_worker_fit

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    fixes = enable_multi_worker_fit()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    index = strategy.cluster_resolver.task_id
    say = lambda message: print(f"worker {index}: {message}", flush=True)  # noqa: E731
    say(f"{strategy.num_replicas_in_sync} replicas in sync")

    report = {"fixes": fixes, "unpatched_fit_fails": unpatched_fit_fails(strategy)}
    say(f"unpatched fit fails: {report['unpatched_fit_fails']}")
    arrays = {}
    weights, report["tutorial_history"] = tutorial_fit(strategy)
    arrays.update({f"tutorial_{i}": w for i, w in enumerate(weights)})
    say("tutorial fit done")
    weights, report["numpy_history"], report["evaluation"], predictions = numpy_fit(strategy)
    arrays.update({f"numpy_{i}": w for i, w in enumerate(weights)})
    arrays["predictions"] = predictions
    say("numpy fit, evaluate, predict done")
    backup_dir = os.path.join(out_dir, "backup")
    weights, report["resumed_epochs"] = backup_and_restore_fit(strategy, backup_dir)
    arrays.update({f"backup_{i}": w for i, w in enumerate(weights)})
    say("backup and restore done")
    tracking_uri = os.environ.get("OPTSUITE_TEST_TRACKING_URI")
    if tracking_uri:
        weights, report["run_id"] = tracked_fit(strategy, tracking_uri)
        arrays.update({f"tracked_{i}": w for i, w in enumerate(weights)})
        say("tracked fit done")
    np.savez(os.path.join(out_dir, f"worker{index}.npz"), **arrays)
    with open(os.path.join(out_dir, f"worker{index}.json"), "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main(sys.argv[1])
