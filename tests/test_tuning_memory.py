"""What TensorFlow keeps of a trial (keras-tuner#873): tf.custom_gradient's registry entries and their graphs."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import tensorflow as tf

from keras_optsuite.tuning import releasing_custom_gradients
from keras_optsuite.tuning._memory import custom_gradient_names


@tf.custom_gradient
def _triple_gradient(x):
    return tf.identity(x), lambda dy: 3.0 * dy


def _traced_gradient():
    """A traced function differentiating through a custom gradient: its gradient and its graph."""

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(_triple_gradient(x) ** 2)
        return tape.gradient(y, x)

    x = tf.constant([1.0, -2.0])
    concrete = step.get_concrete_function(x)
    return concrete(x).numpy(), weakref.ref(concrete.graph)


def test_a_graph_traced_without_release_stays_registered_and_alive():
    """The upstream behaviour the release exists for (if TensorFlow fixes it, this test says so)."""
    before = custom_gradient_names()
    _, graph = _traced_gradient()
    gc.collect()
    assert len(custom_gradient_names() - before) == 1
    assert graph() is not None


def test_release_unregisters_what_the_block_registered_and_frees_its_graph():
    with releasing_custom_gradients():
        outer_before = custom_gradient_names()
        _, kept = _traced_gradient()  # registered before the inner block: must stay
        registered_outside = custom_gradient_names() - outer_before
        with releasing_custom_gradients():
            inner_before = custom_gradient_names()
            gradient, graph = _traced_gradient()
            assert len(custom_gradient_names() - inner_before) == 1
        # d/dx sum(x^2) = 2x, times the custom factor 3
        np.testing.assert_allclose(gradient, 6.0 * np.array([1.0, -2.0]))
        assert custom_gradient_names() == inner_before
        assert registered_outside <= custom_gradient_names()
        gc.collect()
        assert graph() is None, "the released graph is still reachable"
        assert kept() is not None
    assert not registered_outside & custom_gradient_names()
    gc.collect()
    assert kept() is None
