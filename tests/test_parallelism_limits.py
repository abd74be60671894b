"""What Keras 3 on TensorFlow does not do, as the README states it (these fail when Keras changes).

Keras 3's own model-parallel API (``keras.distribution.ModelParallel`` with a
``LayoutMap``) is implemented for JAX. On the TensorFlow backend it is
accepted and silently ignored: a kernel the layout map shards over two
devices is created as one ordinary variable, whole, on the first device.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import LOGICAL_CPUS
from keras import distribution


@pytest.fixture
def model_parallel_distribution():
    devices = distribution.list_devices()
    assert len(devices) == len(LOGICAL_CPUS)
    mesh = distribution.DeviceMesh((1, 2), ["batch", "model"], devices)
    layout_map = distribution.LayoutMap(mesh)
    layout_map["sharded.*kernel"] = (None, "model")  # columns split over the 2 devices
    distribution.set_distribution(distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch"))
    try:
        yield
    finally:
        distribution.set_distribution(None)


def test_keras_model_parallel_layouts_are_ignored_on_tensorflow(model_parallel_distribution):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="sharded")])
    kernel = model.layers[0].kernel.value
    assert isinstance(kernel, tf.Variable) and not isinstance(kernel, tf.distribute.DistributedValues)
    assert tuple(kernel.shape) == (4, 8), "the whole kernel, not a (4, 4) shard"
    assert tf.DeviceSpec.from_string(kernel.device).device_index == 0
    model.compile("sgd", "mse")
    model.fit(np.ones((8, 4)), np.ones((8, 8)), verbose=0)  # accepted: nothing tells the user
    assert tuple(model.layers[0].kernel.value.shape) == (4, 8)
