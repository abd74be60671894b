"""DropBlock1D / DropBlock2D: Algorithm 1 of Ghiasi, Lin & Le (2018) and its closed forms.

The generic layer contract (round trip, dtype, jit, MirroredStrategy) is in
test_layer_contract.py; here: the mask against a NumPy transcription of
Algorithm 1 given the same uniform draws, whole blocks, drop probabilities
and the renormalized expectation against their closed forms, the rate
variable, data formats, and argument checks.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_optsuite.layers._base import random_uniform
from keras_optsuite.layers.dropblock import DropBlock1D, DropBlock2D
from references import dropblock as reference

LAYERS = {1: DropBlock1D, 2: DropBlock2D}


def _zero_maps(output, shared):
    """The channels-last output's zero pattern as a list of spatial maps."""
    zeros = np.asarray(output) == 0
    if shared:
        zeros = zeros[..., :1]
    return [zeros[(b, ..., c)] for b in range(zeros.shape[0]) for c in range(zeros.shape[-1])]


@pytest.mark.parametrize(
    "rank, spatial, block_size, shared",
    [
        (2, (9, 11), 3, False),
        (2, (10, 10), 4, True),  # even block: one more row/column before the centre
        (2, (5, 12), 7, False),  # clipped to 5 along the first axis
        (1, (30,), 5, False),
        (1, (30,), 6, True),
    ],
)
def test_matches_numpy_algorithm_1_given_the_same_draws(rank, spatial, block_size, shared):
    batch, channels, rate, seed = 3, 4, 0.3, 7
    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 1.5, (batch, *spatial, channels)).astype("float32")
    layer = LAYERS[rank](rate, block_size=block_size, data_format="channels_last",
                         shared_across_channels=shared, seed=seed)
    output = np.asarray(layer(x, training=True))

    mask_shape = (batch, *spatial, 1 if shared else channels)
    draws = np.asarray(random_uniform(keras.random.SeedGenerator(seed), mask_shape))
    expected = reference.dropblock(x, draws, rate, block_size)
    assert (expected == 0).any() and (expected != 0).any()  # the case drops something
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize("block_size", [3, 4])
def test_dropped_region_is_whole_blocks_and_masks_per_channel(block_size):
    x = np.ones((4, 16, 16, 6), "float32")
    separate = DropBlock2D(0.3, block_size=block_size, data_format="channels_last", seed=1)
    zero_maps = _zero_maps(separate(x, training=True), shared=False)
    assert all(reference.zeros_form_whole_blocks(z, block_size) for z in zero_maps)
    assert sum(z.any() for z in zero_maps) > 0.9 * len(zero_maps)
    # shared_across_channels=False: one mask per (example, channel).
    zeros = np.asarray(separate(x, training=True)) == 0
    for b in range(4):
        for c in range(1, 6):
            assert not np.array_equal(zeros[b, ..., 0], zeros[b, ..., c])

    shared = DropBlock2D(0.3, block_size=block_size, data_format="channels_last",
                         shared_across_channels=True, seed=1)
    output = np.asarray(shared(x, training=True))
    assert all(reference.zeros_form_whole_blocks(z, block_size) for z in _zero_maps(output, True))
    zeros = output == 0
    np.testing.assert_array_equal(zeros, np.repeat(zeros[..., :1], 6, axis=-1))
    assert not np.array_equal(zeros[0], zeros[1])  # examples still differ


def test_zeros_form_whole_blocks_check_can_fail():
    zero_map = np.zeros((6, 6), bool)
    zero_map[1:4, 1:4] = True
    assert reference.zeros_form_whole_blocks(zero_map, 3)
    zero_map[4, 1] = True  # a stray zero
    assert not reference.zeros_form_whole_blocks(zero_map, 3)


@pytest.mark.parametrize(
    "rank, spatial, block_size, rate",
    [(2, (12, 12), 3, 0.25), (2, (12, 12), 4, 0.15), (1, (16,), 5, 0.2)],
)
def test_drop_probability_matches_closed_form(rank, spatial, block_size, rate):
    """P(dropped) = 1 - (1 - gamma) ** (number of valid centres covering the position).

    Compared per covering count (corners, edges, interior), over 2048 masks
    per position from one seed: absolute tolerance 0.012 (about 4 standard
    errors of the interior estimate, whose samples are correlated within a block).
    """
    batch, channels = 128, 16
    layer = LAYERS[rank](rate, block_size=block_size, data_format="channels_last", seed=3)
    output = np.asarray(layer(np.ones((batch, *spatial, channels), "float32"), training=True))
    dropped = (output == 0).mean(axis=(0, -1))

    counts = reference.covering_counts(spatial, block_size)
    probability = reference.drop_probability(spatial, block_size, rate)
    interior = counts == block_size**rank
    assert interior.sum() > 0
    for count in np.unique(counts):
        where = counts == count
        np.testing.assert_allclose(dropped[where].mean(), probability[where].mean(), atol=0.012)
    # Interior positions are dropped more often than `rate` (equation 1 spreads
    # the centres over the valid region only), and the whole map close to `rate`.
    assert probability[interior].mean() > rate + 0.02
    np.testing.assert_allclose(dropped.mean(), probability.mean(), atol=0.01)


def test_block_larger_than_the_map_drops_whole_maps_at_rate():
    """Clipped to the map, the block covers it: gamma = rate, and a map is all or nothing."""
    layer = DropBlock2D(0.3, block_size=7, data_format="channels_last", seed=5)
    output = np.asarray(layer(np.ones((256, 3, 5, 16), "float32"), training=True))
    zeros = output == 0
    per_map = zeros.mean(axis=(1, 2))
    assert set(np.unique(per_map)) <= {0.0, 1.0}
    np.testing.assert_allclose(per_map.mean(), 0.3, atol=0.02)  # 4096 maps: 3 standard errors


def test_renormalized_expectation():
    """The mask averages to exactly 1 per draw, and E[output] = x * P(keep) / mean P(keep).

    ``count(M) / sum(M)`` keeps the expected *sum*; per position the expectation
    follows the keep probability: border positions (fewer covering centres)
    come out above their input, interior ones below. 8192 draws per position
    (512 examples x 16 channels), one seed: tolerance 0.03 absolute on
    output / input per position (about 5 standard errors), 0.01 on the mean
    over positions with the same covering count.
    """
    spatial, block_size, rate = (12, 12), 3, 0.2
    rng = np.random.default_rng(1)
    x_map = rng.uniform(0.5, 1.5, spatial).astype("float32")
    x = np.broadcast_to(x_map[None, :, :, None], (512, *spatial, 16)).copy()
    layer = DropBlock2D(rate, block_size=block_size, data_format="channels_last", seed=11)
    ones_output = np.asarray(layer(np.ones_like(x), training=True), np.float64)
    np.testing.assert_allclose(ones_output.mean(), 1.0, rtol=1e-5)

    output = np.asarray(layer(x, training=True), np.float64)
    ratio = output.mean(axis=(0, -1)) / x_map
    keep = 1.0 - reference.drop_probability(spatial, block_size, rate)
    expected_ratio = keep / keep.mean()
    np.testing.assert_allclose(ratio, expected_ratio, atol=0.03)
    counts = reference.covering_counts(spatial, block_size)
    for count in np.unique(counts):
        where = counts == count
        np.testing.assert_allclose(ratio[where].mean(), expected_ratio[where].mean(), atol=0.01)
    expected_sum_ratio = (x_map * expected_ratio).sum() / x_map.sum()
    np.testing.assert_allclose(output.sum() / x.sum(), expected_sum_ratio, rtol=0.005)
    # The border effect is real (it is what the tolerance above resolves).
    assert expected_ratio[0, 0] > 1.15 and expected_ratio[6, 6] < 0.99


@pytest.mark.parametrize("training", [False, None])
@pytest.mark.parametrize("rank", [1, 2])
def test_identity_outside_training(rank, training):
    x = np.random.default_rng(2).normal(size=(2, *([10] * rank), 3)).astype("float32")
    layer = LAYERS[rank](0.5, block_size=3, seed=0)
    np.testing.assert_array_equal(np.asarray(layer(x, training=training)), x)


def test_rate_assignment_takes_effect_without_retracing():
    x = np.ones((64, 12, 12, 16), "float32")
    layer = DropBlock2D(0.05, block_size=3, data_format="channels_last", seed=4)
    traces = []

    @tf.function(jit_compile=True)
    def train_call(inputs):
        traces.append(1)
        return layer(inputs, training=True)

    spatial_mean = lambda rate: reference.drop_probability((12, 12), 3, rate).mean()  # noqa: E731
    low = float(np.mean(train_call(x).numpy() == 0))
    layer.rate = 0.4
    high = float(np.mean(train_call(x).numpy() == 0))
    layer.rate = 0.0
    none = float(np.mean(train_call(x).numpy() == 0))
    assert len(traces) == 1 and train_call.experimental_get_tracing_count() == 1
    np.testing.assert_allclose(low, spatial_mean(0.05), atol=0.01)
    np.testing.assert_allclose(high, spatial_mean(0.4), atol=0.02)
    assert none == 0.0
    assert layer.rate == pytest.approx(0.0)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("rank", [1, 2])
def test_channels_first_is_channels_last_transposed(rank, shared):
    x_last = np.random.default_rng(3).uniform(0.5, 1.5, (3, *([11] * rank), 5)).astype("float32")
    x_first = np.moveaxis(x_last, -1, 1)
    kwargs = dict(rate=0.3, block_size=4, shared_across_channels=shared, seed=9)
    last = np.asarray(LAYERS[rank](data_format="channels_last", **kwargs)(x_last, training=True))
    first = np.asarray(LAYERS[rank](data_format="channels_first", **kwargs)(x_first, training=True))
    assert (last == 0).any()
    np.testing.assert_allclose(np.moveaxis(first, 1, -1), last, rtol=1e-6)


def test_dynamic_spatial_shape_matches_static():
    """Spatial sizes unknown when built (clipping and gamma from the run-time shape)."""
    x = np.random.default_rng(4).uniform(0.5, 1.5, (4, 5, 13, 3)).astype("float32")
    outputs = []
    for input_shape in [(None, None, 3), (5, 13, 3)]:
        model = keras.Sequential([keras.Input(input_shape),
                                  DropBlock2D(0.3, block_size=7, data_format="channels_last", seed=2)])
        call = tf.function(lambda inputs, m=model: m(inputs, training=True), jit_compile=True,
                           input_signature=[tf.TensorSpec((None, *input_shape), "float32")])
        outputs.append(np.asarray(call(x)))
    assert (outputs[0] == 0).any()
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_mixed_float16_same_blocks_in_compute_dtype():
    x = np.ones((2, 10, 10, 4), "float32")
    reference_output = np.asarray(DropBlock2D(0.3, block_size=3, seed=6)(x, training=True))
    keras.config.set_dtype_policy("mixed_float16")
    output = DropBlock2D(0.3, block_size=3, seed=6)(x, training=True)
    assert output.dtype == tf.float16
    np.testing.assert_array_equal(np.asarray(output) == 0, reference_output == 0)
    np.testing.assert_allclose(np.asarray(output, np.float32), reference_output, rtol=1e-3)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(rate=1.0), "rate"),
        (dict(rate=-0.1), "rate"),
        (dict(rate=0.1, block_size=0), "block_size"),
        (dict(rate=0.1, block_size=2.5), "block_size"),
        (dict(rate=0.1, data_format="nhwc"), "data_format"),
        (dict(rate=0.1, shared_across_channels="yes"), "shared_across_channels"),
        (dict(rate=0.1, seed=-1), "seed"),
    ],
)
@pytest.mark.parametrize("rank", [1, 2])
def test_invalid_arguments(rank, kwargs, argument):
    with pytest.raises(ValueError, match=f"{argument}="):
        LAYERS[rank](**kwargs)


def test_invalid_rate_assignment_and_input_rank():
    layer = DropBlock2D(0.1)
    with pytest.raises(ValueError, match="rate="):
        layer.rate = 1.0
    assert layer.rate == pytest.approx(0.1)
    with pytest.raises(ValueError):
        layer(np.ones((2, 8, 3), "float32"), training=True)
    with pytest.raises(ValueError):
        DropBlock1D(0.1)(np.ones((2, 8, 8, 3), "float32"), training=True)
