"""StochasticDepth drops a branch for the whole batch; DropPath per example, rescaled."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import mirrored_strategy
from keras_optsuite.layers import DropPath, StochasticDepth


def _binomial_bound(p: float, n: int) -> float:
    """Five standard deviations of a fraction of n Bernoulli(p) draws."""
    return 5 * np.sqrt(p * (1 - p) / n)


def test_stochastic_depth_keeps_or_drops_the_branch_for_the_whole_batch():
    layer = StochasticDepth(survival_probability=0.7, seed=11)
    shortcut = np.random.default_rng(0).normal(size=(8, 5)).astype("float32")
    residual = np.random.default_rng(1).normal(size=(8, 5)).astype("float32")
    call = tf.function(lambda: layer([shortcut, residual], training=True))
    kept = 0
    draws = 2000
    for _ in range(draws):
        out = np.asarray(call())
        if np.allclose(out, shortcut + residual, rtol=0, atol=1e-6):
            kept += 1
        else:
            np.testing.assert_allclose(out, shortcut, rtol=0, atol=0)  # all of it dropped
    assert abs(kept / draws - 0.7) < _binomial_bound(0.7, draws)


def test_stochastic_depth_inference_scales_the_branch_by_the_survival_probability():
    layer = StochasticDepth(survival_probability=0.25)
    out = layer([np.ones((2, 3), "float32"), np.full((2, 3), 4.0, "float32")], training=False)
    np.testing.assert_array_equal(np.asarray(out), np.full((2, 3), 2.0))  # 1 + 0.25 * 4


def test_drop_path_drops_whole_examples_and_rescales_the_rest_exactly():
    layer = DropPath(rate=0.375, seed=5)
    x = np.random.default_rng(0).uniform(1.0, 2.0, size=(4000, 3, 2)).astype("float32")
    out = np.asarray(layer(x, training=True))
    dropped = np.all(out == 0, axis=(1, 2))
    kept = np.all(out != 0, axis=(1, 2))
    assert np.all(dropped | kept), "an example is dropped entirely or not at all"
    np.testing.assert_allclose(out[kept], x[kept] / 0.625, rtol=1e-6)
    assert abs(dropped.mean() - 0.375) < _binomial_bound(0.375, len(x))


def test_a_new_rate_takes_effect_without_retracing():
    layer = DropPath(rate=0.0, seed=2)
    traces = []

    @tf.function
    def call(x):
        traces.append(1)
        return layer(x, training=True)

    x = np.ones((4000, 1), "float32")
    assert np.all(np.asarray(call(x)) == 1.0)
    layer.rate = 0.5
    out = np.asarray(call(x))
    assert len(traces) == 1
    assert abs(np.mean(out == 0) - 0.5) < _binomial_bound(0.5, len(x))
    assert set(np.unique(out)) == {0.0, 2.0}


@pytest.mark.slow
def test_replicas_draw_different_masks():
    """The same inputs on both replicas: a per-replica seed gives different masks."""
    strategy = mirrored_strategy()
    with strategy.scope():
        layer = DropPath(rate=0.5, seed=9)
    x = tf.ones((256, 1))
    masks = strategy.run(tf.function(lambda: layer(x, training=True)))
    first, second = (np.asarray(m) for m in strategy.experimental_local_results(masks))
    assert not np.array_equal(first, second)
    for mask in (first, second):
        assert abs(np.mean(mask == 0) - 0.5) < _binomial_bound(0.5, len(mask))


@pytest.mark.parametrize(
    "make, argument",
    [
        (lambda: StochasticDepth(survival_probability=1.5), "survival_probability"),
        (lambda: StochasticDepth(survival_probability=-0.1), "survival_probability"),
        (lambda: DropPath(rate=1.0), "rate"),
        (lambda: DropPath(rate="0.1"), "rate"),
    ],
)
def test_invalid_arguments_name_the_argument(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()


def test_setting_an_invalid_rate_names_it_and_keeps_the_old_one():
    layer = DropPath(rate=0.25)
    with pytest.raises(ValueError, match="rate"):
        layer.rate = 1.0
    assert layer.rate == 0.25


def test_stochastic_depth_needs_a_pair_of_inputs():
    with pytest.raises(ValueError, match="shortcut, residual"):
        StochasticDepth()(np.ones((2, 3), "float32"), training=True)


def test_keras_builds_them_from_their_registered_names():
    for cls in (StochasticDepth, DropPath):
        name = keras.saving.get_registered_name(cls)
        assert name == f"keras_optsuite>{cls.__name__}"
        assert keras.saving.get_registered_object(name) is cls
