"""User functions that pipeline configs name with ``module:function`` (tests/ is on sys.path)."""

import numpy as np


def blobs():
    """Two well-separated Gaussian blobs: (x, y) arrays, 200 rows of 6 features."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 100)
    x = rng.normal(size=(200, 6)) + 3.0 * y[:, None]
    return x.astype("float32"), y


def linear_model(input_shape, outputs, task):
    import keras

    return keras.Sequential([keras.Input(input_shape), keras.layers.Dense(outputs)])


def blobs_dataset():
    """The same rows as :func:`blobs`, as a batched ``tf.data.Dataset`` of (x, y) pairs."""
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(blobs()).batch(32)


def endless_blobs():
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(blobs()).repeat()


def counted_blobs():
    """:func:`blobs`, each call recorded as a line (the process id) in the file ``$OPTSUITE_TEST_DATA_CALLS``."""
    import os

    with open(os.environ["OPTSUITE_TEST_DATA_CALLS"], "a") as calls:
        calls.write(f"{os.getpid()}\n")
    return blobs()
