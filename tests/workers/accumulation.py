"""Gradient accumulation trained by hand, on one device or as one worker of
a MultiWorkerMirroredStrategy cluster (``TF_CONFIG`` set by the test).

Run as a worker: ``python -m workers.accumulation OUT.npz`` from ``tests/``.
The test imports ``train`` to compute the one-device, large-batch reference.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

MICRO_BATCH = 32  # global micro-batch, split across the workers
MICRO_STEPS = 4
UPDATES = 6


def data():
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.data / 16.0).astype("float32"), digits.target.astype("int32")


def model():
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(10)]
    )


def train(strategy=None, worker=0, workers=1, accumulate=True):
    """Weights after UPDATES updates of Adam(0.01).

    With ``accumulate``: MICRO_STEPS micro-batches of MICRO_BATCH per update,
    each split across ``workers``; without: one batch of
    MICRO_BATCH * MICRO_STEPS per update on one device.
    """
    import keras

    from keras_optsuite.optimizers import GradientAccumulation

    x, y = data()
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        net = model()
        inner = keras.optimizers.Adam(0.01)
        optimizer = GradientAccumulation(inner, steps=MICRO_STEPS) if accumulate else inner
        optimizer.build(net.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    batch = MICRO_BATCH if accumulate else MICRO_BATCH * MICRO_STEPS
    calls = UPDATES * (MICRO_STEPS if accumulate else 1)

    def replica_step(xb, yb):
        with tf.GradientTape() as tape:
            # Each worker's share of the mean over the global batch.
            loss = tf.reduce_sum(loss_fn(yb, net(xb, training=True))) / batch
        grads = tape.gradient(loss, net.trainable_variables)
        optimizer.apply(grads, net.trainable_variables)

    @tf.function
    def step(xb, yb):
        strategy.run(replica_step, args=(xb, yb))

    share = batch // workers
    for call in range(calls):
        start = call * batch + worker * share
        step(tf.constant(x[start:start + share]), tf.constant(y[start:start + share]))
    return [v.numpy() for v in net.trainable_variables]


if __name__ == "__main__":
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import json

    task = json.loads(os.environ["TF_CONFIG"])["task"]
    cluster = tf.distribute.MultiWorkerMirroredStrategy()
    weights = train(cluster, worker=task["index"], workers=cluster.num_replicas_in_sync)
    np.savez(sys.argv[1], *weights)
    print(f"worker {task['index']}: done", flush=True)
