"""MixUp and CutMix on (inputs, labels) batches of any rank.

What is specific to batch mixing: MixUp's linear-target identity (mixing x
and y with the same lambda commutes with any linear map), the moments of
lambda against Beta(alpha, alpha), CutMix's label weight against the elements
actually pasted (exact), the shape of the pasted region, the box sizes
against a NumPy transcription of the paper's sampling, and the tf.data path.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

import keras
from keras_optsuite.layers.mixing import CutMix, MixUp
from references import cutmix as cutmix_reference


def index_encoded(batch_size, shape, dtype="float32"):
    """A batch whose example i is the constant i, with one-hot labels of its index."""
    values = np.arange(batch_size, dtype=dtype).reshape((-1,) + (1,) * len(shape))
    return np.broadcast_to(values, (batch_size,) + shape).copy(), np.eye(batch_size, dtype="float32")


def check_cutmix_batch(inputs, mixed, labels, spatial_axes):
    """Exact label weights and box-shaped pasted regions, example by example.

    ``inputs`` is index encoded: example i holds the value i everywhere.
    """
    for i in range(inputs.shape[0]):
        others = np.unique(mixed[i][mixed[i] != i])
        assert len(others) <= 1, f"example {i} got values from several examples: {others}"
        kept = np.count_nonzero(mixed[i] == i) / mixed[i].size
        # The weight of its own class is exactly the kept fraction (rounded once to float32).
        assert labels[i, i] == np.float32(kept), (i, labels[i, i], kept)
        np.testing.assert_allclose(labels[i].sum(), 1.0, rtol=0, atol=1e-6)
        if not len(others):
            continue
        partner = int(others[0])
        assert labels[i, partner] == np.float32(1.0) - labels[i, i]
        spatial_first = [a - 1 for a in spatial_axes]
        pasted = np.moveaxis(mixed[i] == partner, spatial_first, range(len(spatial_axes)))
        pasted = pasted.reshape(pasted.shape[: len(spatial_axes)] + (-1,))
        # Every channel of a position is pasted together.
        assert np.array_equal(pasted.all(axis=-1), pasted.any(axis=-1))
        region = pasted[..., 0]
        box = np.ones_like(region)
        for k in range(region.ndim):
            hit = np.flatnonzero(region.any(axis=tuple(j for j in range(region.ndim) if j != k)))
            assert np.array_equal(hit, np.arange(hit[0], hit[-1] + 1)), "pasted span not contiguous"
            on_axis = np.zeros(region.shape[k], bool)
            on_axis[hit] = True
            box &= on_axis.reshape([-1 if j == k else 1 for j in range(region.ndim)])
        assert np.array_equal(region, box), "pasted region is not a box"


# -- MixUp ------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(6,), (7, 3), (5, 4, 2)], ids=["tabular", "sequence", "image"])
def test_mixup_commutes_with_a_linear_target(shape):
    """y = x @ W  =>  mixed_y = mixed_x @ W: inputs and labels share one lambda per example."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64,) + shape)
    weights = rng.normal(size=(int(np.prod(shape)), 3))
    y = x.reshape(64, -1) @ weights
    mixed_x, mixed_y = MixUp(alpha=0.4, seed=1, dtype="float64")(x, y)
    mixed_x, mixed_y = np.asarray(mixed_x), np.asarray(mixed_y)
    assert mixed_x.dtype == np.float64 and mixed_y.dtype == np.float64
    np.testing.assert_allclose(mixed_y, mixed_x.reshape(64, -1) @ weights, rtol=1e-12, atol=1e-12)
    # It did mix (keras.layers.MixUp returns a rank-3 batch unchanged).
    assert np.abs(mixed_x - x).max() > 0.1


@pytest.mark.parametrize("layer_class", [MixUp, CutMix])
@pytest.mark.parametrize("integer_labels", [True, False])
def test_label_rows_still_sum_to_one(layer_class, integer_labels):
    rng = np.random.default_rng(1)
    classes = rng.integers(0, 5, size=32)
    soft = rng.dirichlet(np.ones(5), size=32).astype("float32")
    labels = classes.astype("int32") if integer_labels else soft
    layer = layer_class(alpha=0.5, num_classes=5 if integer_labels else None, seed=2)
    _, mixed = layer(rng.random((32, 8, 3)).astype("float32"), labels)
    mixed = np.asarray(mixed)
    assert mixed.shape == (32, 5) and mixed.dtype == np.float32
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0, rtol=0, atol=1e-6)
    assert mixed.min() >= 0.0 and mixed.max() <= 1.0 + 1e-6


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_mixup_lambda_moments_match_beta(alpha):
    """lambda_i is read off one-hot labels of the example's own index: the weight of class i.

    A row equal to e_i is read as lambda = 1; it may also be an example paired
    with itself (lambda unobservable), about one row in a batch of 1000: at most
    0.001 on the mean, inside the tolerance. Tolerance: 5 standard errors of the
    sample mean and of the sample variance, from Beta(alpha, alpha)'s moments.
    """
    batch_size, batches = 1000, 20
    layer = MixUp(alpha=alpha, seed=3)
    x = np.zeros((batch_size, 1), "float32")
    labels = np.eye(batch_size, dtype="float32")
    draws = np.concatenate([np.diag(np.asarray(layer(x, labels)[1])) for _ in range(batches)])
    count = draws.size
    variance, excess_kurtosis = scipy.stats.beta(alpha, alpha).stats(moments="vk")
    assert np.isclose(variance, 1.0 / (4.0 * (2.0 * alpha + 1.0)))
    mean_tolerance = 5.0 * np.sqrt(variance / count)
    variance_tolerance = 5.0 * np.sqrt((excess_kurtosis + 2.0) * variance**2 / count)
    assert abs(draws.mean() - 0.5) < mean_tolerance, (draws.mean(), mean_tolerance)
    assert abs(draws.var() - variance) < variance_tolerance, (draws.var(), variance, variance_tolerance)
    # One lambda per example, not per batch.
    assert np.unique(draws[:batch_size]).size > batch_size // 2


def test_mixup_pairs_with_a_permutation_of_the_batch():
    x, labels = index_encoded(16, (1,))
    mixed_x, mixed_y = (np.asarray(t) for t in MixUp(alpha=1.0, seed=4)(x, labels))
    partners = []
    for i in range(16):
        others = np.flatnonzero((mixed_y[i] > 0) & (np.arange(16) != i))
        partner = int(others[0]) if len(others) else i
        partners.append(partner)
        lam = mixed_y[i, i]
        np.testing.assert_allclose(mixed_x[i, 0], lam * i + (1 - lam) * partner, rtol=1e-6)
    assert sorted(partners) == list(range(16))


# -- CutMix -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape, data_format, spatial_axes",
    [
        ((40, 3), "channels_last", (1,)),
        ((9, 11, 2), "channels_last", (1, 2)),
        ((2, 9, 11), "channels_first", (2, 3)),
        ((5, 6, 7, 1), "channels_last", (1, 2, 3)),
    ],
    ids=["sequence", "image", "image_channels_first", "volume"],
)
def test_cutmix_label_weight_is_the_fraction_kept_and_the_region_a_box(shape, data_format, spatial_axes):
    inputs, labels = index_encoded(24, shape)
    layer = CutMix(alpha=1.0, data_format=data_format, seed=5)
    pasted_any = 0
    for _ in range(3):
        mixed, mixed_labels = (np.asarray(t) for t in layer(inputs, labels))
        assert mixed.shape == inputs.shape
        check_cutmix_batch(inputs, mixed, mixed_labels, spatial_axes)
        pasted_any += int((np.diag(mixed_labels) < 1).sum())
    assert pasted_any > 24  # most examples got a box


def test_cutmix_box_sizes_match_the_paper_sampling():
    """Mean covered fraction vs a NumPy transcription of the paper's sampling (5 standard errors)."""
    spatial = (16, 12)
    inputs, labels = index_encoded(200, spatial + (1,))
    layer = CutMix(alpha=1.0, seed=6)
    covered = []
    for _ in range(20):
        mixed = np.asarray(layer(inputs, labels)[0])
        covered.append([(mixed[i] != i).mean() for i in range(200)])
    covered = np.concatenate(covered)
    reference = cutmix_reference.pasted_fractions(spatial, 1.0, 400_000, np.random.default_rng(0))
    # A box pasted from the example itself leaves it unchanged: an example is
    # paired with itself with probability 1/200 under a uniform permutation.
    expected = reference.mean() * (1 - 1 / 200)
    tolerance = 5 * reference.std() / np.sqrt(covered.size)
    assert abs(covered.mean() - expected) < tolerance, (covered.mean(), expected, tolerance)
    # The box is clipped at the borders: not every draw covers (1 - lambda), some cover little.
    assert 0.2 < expected < 0.4


def test_cutmix_keeps_integer_inputs_and_casts_floats_to_the_compute_dtype():
    images = np.random.default_rng(7).integers(0, 256, size=(8, 6, 6, 3)).astype("uint8")
    mixed, _ = CutMix(num_classes=4, seed=8)(images, np.arange(8) % 4)
    assert keras.backend.standardize_dtype(mixed.dtype) == "uint8"
    assert set(np.unique(np.asarray(mixed))) <= set(np.unique(images))


def test_mixed_float16_policy_keeps_labels_in_float32():
    keras.config.set_dtype_policy("mixed_float16")
    x = np.random.default_rng(9).random((8, 10, 3)).astype("float32")
    for layer in (MixUp(num_classes=3, seed=1), CutMix(num_classes=3, seed=1)):
        mixed_x, mixed_y = layer(x, np.arange(8) % 3)
        assert keras.backend.standardize_dtype(mixed_x.dtype) == "float16"
        assert keras.backend.standardize_dtype(mixed_y.dtype) == "float32"
        np.testing.assert_allclose(np.asarray(mixed_y).sum(axis=1), 1.0, atol=1e-6)


# -- tf.data -----------------------------------------------------------------------------------
def test_mixup_in_tf_data_map_with_integer_labels_and_a_linear_target():
    rng = np.random.default_rng(10)
    x = rng.normal(size=(50, 4, 3)).astype("float32")
    classes = rng.integers(0, 6, size=50).astype("int64")
    layer = MixUp(alpha=1.0, num_classes=6, seed=11)
    batches = list(tf.data.Dataset.from_tensor_slices((x, classes)).batch(16).map(layer))
    assert [tuple(b[0].shape) for b in batches] == [(16, 4, 3)] * 3 + [(2, 4, 3)]  # partial last batch
    for mixed_x, mixed_y in batches:
        assert mixed_y.dtype == tf.float32 and mixed_y.shape[1] == 6
        np.testing.assert_allclose(tf.reduce_sum(mixed_y, axis=1), 1.0, atol=1e-6)
    # The generator advances inside the dataset graph: batches, and epochs, differ.
    one_batch = tf.data.Dataset.from_tensors((x[:16], classes[:16])).map(layer)
    first, second = (np.asarray(next(iter(one_batch))[1]) for _ in range(2))
    assert not np.array_equal(first, second)
    # Linear target through the pipeline.
    weights = rng.normal(size=(12, 2)).astype("float32")
    y = x.reshape(50, -1) @ weights
    for mixed_x, mixed_y in tf.data.Dataset.from_tensor_slices((x, y)).batch(25).map(MixUp(seed=12)):
        expected = np.asarray(mixed_x).reshape(25, -1) @ weights
        np.testing.assert_allclose(mixed_y, expected, rtol=1e-4, atol=1e-4)


def test_cutmix_in_tf_data_map_is_exact():
    inputs, labels = index_encoded(32, (10, 10, 1))
    dataset = tf.data.Dataset.from_tensor_slices((inputs, np.arange(32, dtype="int32"))).batch(32)
    mixed, mixed_labels = next(iter(dataset.map(CutMix(num_classes=32, seed=13))))
    check_cutmix_batch(inputs, np.asarray(mixed), np.asarray(mixed_labels), (1, 2))


def test_same_seed_same_draws_and_config_round_trip():
    x = np.random.default_rng(14).random((8, 12, 2)).astype("float32")
    for layer in (MixUp(alpha=0.3, num_classes=4, seed=15), CutMix(alpha=2.0, num_classes=4, seed=15)):
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert type(restored) is type(layer)
        config = layer.get_config()
        assert restored.get_config() == config
        fresh = type(layer).from_config(config)
        for a, b in zip(layer(x, np.arange(8) % 4), fresh(x, np.arange(8) % 4)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# -- invalid arguments ---------------------------------------------------------------------------
@pytest.mark.parametrize("layer_class", [MixUp, CutMix])
@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": -1.0}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"alpha": "big"}, "alpha"),
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": 2.5}, "num_classes"),
        ({"seed": -1}, "seed"),
        ({"seed": "abc"}, "seed"),
    ],
)
def test_invalid_arguments(layer_class, kwargs, name):
    with pytest.raises(ValueError, match=name):
        layer_class(**kwargs)


def test_invalid_data_format():
    with pytest.raises(ValueError, match="data_format"):
        CutMix(data_format="NHWC")


@pytest.mark.parametrize("layer_class", [MixUp, CutMix])
def test_invalid_labels(layer_class):
    x = np.zeros((4, 5, 1), "float32")
    with pytest.raises(ValueError, match="labels.*num_classes|num_classes.*labels"):
        layer_class()(x, np.array([0, 1, 2, 0], "int32"))  # class ids without num_classes
    with pytest.raises(ValueError, match="labels"):
        layer_class()(x, np.array([0.0, 1.0, 2.0, 0.0], "float32"))  # rank 1 floats
    with pytest.raises(ValueError, match="labels"):
        layer_class(num_classes=3)(x, np.eye(4, dtype="float32"))  # 4 classes, not 3
    with pytest.raises(ValueError, match="labels"):
        layer_class(num_classes=3)(x, np.zeros((4, 2), "int32"))  # integer, not ids
    with pytest.raises(ValueError, match="batch size"):
        layer_class()(x, np.eye(3, dtype="float32"))


def test_cutmix_needs_a_spatial_axis():
    with pytest.raises(ValueError, match="inputs"):
        CutMix()(np.zeros((4, 5), "float32"), np.eye(4, dtype="float32"))
