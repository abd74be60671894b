"""What WeightNormalization and DropConnect promise beyond the layer contract suite.

WeightNormalization (Salimans & Kingma, 2016):
- the output and the gradients with respect to ``v`` (the stored kernel)
  and ``g`` are the paper's eq. 2 and eq. 3, transcribed in float64 NumPy
  (``references/weight_normalization.py``), for Dense and Conv2D, to 1e-9;
- wrapping a layer leaves its output unchanged (``g`` starts at ``||v||``);
- ``data_init=True`` standardizes the first training batch's
  pre-activations (section 3), in ``model.fit``, under XLA, under
  MirroredStrategy (both replicas assign the global batch's values), once.

DropConnect (Wan et al., 2013):
- the dropped fraction of kernel entries is ``rate`` (binomial bounds), the
  kept ones are scaled by exactly ``1 / (1 - rate)``, one mask per call
  shared by the batch, and the pre-activation averaged over masks is the
  full kernel's; the bias is never dropped; the gradient reaches the stored
  kernel through the kept entries only.
"""

from __future__ import annotations

import copy

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import mirrored_strategy

from keras_optsuite.layers.drop_connect import DropConnect
from keras_optsuite.layers.weight_normalization import DATA_INIT_EPSILON, WeightNormalization
from references import weight_normalization as reference

SPARSE_LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


# -- WeightNormalization: eq. 2 and eq. 3 ----------------------------------------------
def _dense_case(rng):
    layer = keras.layers.Dense(5, bias_initializer="random_normal")
    x = rng.normal(size=(7, 6))
    return layer, x, reference.dense, lambda grad_y: reference.dense_kernel_gradient(x, grad_y)


def _conv2d_case(rng):
    layer = keras.layers.Conv2D(4, (3, 2), bias_initializer="random_normal")
    x = rng.normal(size=(2, 6, 5, 3))
    return layer, x, reference.conv2d, lambda grad_y: reference.conv2d_kernel_gradient(x, grad_y, 3, 2)


@pytest.mark.parametrize("case", [_dense_case, _conv2d_case], ids=["dense", "conv2d"])
def test_output_and_gradients_are_the_papers(case):
    keras.config.set_dtype_policy("float64")
    rng = np.random.default_rng(0)
    layer, x, forward, kernel_gradient = case(rng)
    wrapper = WeightNormalization(layer)
    wrapper.build(x.shape)
    g = rng.uniform(0.5, 2.0, size=wrapper.g.shape)  # away from ||v||, so g matters
    wrapper.g.assign(g)
    v, b = layer.kernel.numpy(), layer.bias.numpy()

    with tf.GradientTape() as tape:
        y = wrapper(x)
        target = np.ones(y.shape)
        loss = 0.5 * tf.reduce_sum(tf.square(y - target))
    grad_v, grad_g = tape.gradient(loss, [layer.kernel.value, wrapper.g.value])

    y_ref = forward(x, reference.kernel(v, g), b)
    grad_v_ref, grad_g_ref = reference.gradients(v, g, kernel_gradient(y_ref - target))
    assert wrapper.g.dtype == "float64"
    np.testing.assert_allclose(y.numpy(), y_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(grad_g.numpy(), grad_g_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(grad_v.numpy(), grad_v_ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "layer, shape",
    [(lambda: keras.layers.Dense(6, activation="tanh"), (5, 8)), (lambda: keras.layers.Conv2D(4, 3), (2, 7, 7, 3))],
    ids=["dense", "conv2d"],
)
def test_wrapping_leaves_the_output_unchanged(layer, shape):
    layer = layer()
    x = np.random.default_rng(1).normal(size=shape).astype("float32")
    before = layer(x).numpy()
    wrapper = WeightNormalization(layer)
    after = wrapper(x).numpy()
    v = layer.kernel.numpy().astype("float64")
    np.testing.assert_allclose(wrapper.g.numpy(), np.linalg.norm(v.reshape(-1, v.shape[-1]), axis=0), rtol=1e-6)
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)


# -- WeightNormalization: data-dependent initialization -----------------------------------
def _pre_activations(wrapper, x, with_bias=True):
    """``x . g v / ||v|| (+ b)`` in float64 NumPy, from the wrapper's current weights."""
    layer = wrapper.layer
    w = reference.kernel(layer.kernel.numpy().astype("float64"), wrapper.g.numpy().astype("float64"))
    b = layer.bias.numpy().astype("float64") if with_bias else 0.0
    x = x.astype("float64")
    return reference.dense(x, w, b) if w.ndim == 2 else reference.conv2d(x, w, b)


def _normalized_pre_activations(wrapper, x):
    """``t = x . v / ||v||`` (no bias) in float64 NumPy."""
    v = wrapper.layer.kernel.numpy().astype("float64")
    unit = reference.kernel(v, np.ones(v.shape[-1]))
    x = x.astype("float64")
    return reference.dense(x, unit, 0.0) if v.ndim == 2 else reference.conv2d(x, unit, 0.0)


def _data_init_model(kind, seed=0):
    keras.utils.set_random_seed(seed)
    if kind == "dense":
        inner, shape = keras.layers.Dense(16, activation="tanh"), (64,)
    else:
        inner, shape = keras.layers.Conv2D(6, 3, activation="relu"), (8, 8, 1)
    wrapper = WeightNormalization(inner, data_init=True)
    model = keras.Sequential([keras.Input(shape), wrapper, keras.layers.Flatten(), keras.layers.Dense(10)])
    return model, wrapper


def _fit_one_batch(model, x, y, jit_compile=False):
    """One step at learning rate 0: only the data-dependent initialization moves weights."""
    model.compile(keras.optimizers.SGD(0.0), SPARSE_LOSS, jit_compile=jit_compile)
    model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)


@pytest.mark.parametrize("kind, jit_compile", [("dense", False), ("dense", True), ("conv2d", False)])
def test_data_init_standardizes_the_first_batch(digits, kind, jit_compile):
    x, y = digits[0][:128], digits[1][:128]
    if kind == "conv2d":
        x = x.reshape(-1, 8, 8, 1)
    model, wrapper = _data_init_model(kind)
    assert wrapper.initialized.numpy() == 0.0
    wrapper(x, training=False)  # inference does not initialize
    assert wrapper.initialized.numpy() == 0.0
    g_ref, b_ref = reference.data_init(_normalized_pre_activations(wrapper, x), DATA_INIT_EPSILON)

    _fit_one_batch(model, x, y, jit_compile)

    assert wrapper.initialized.numpy() == 1.0
    np.testing.assert_allclose(wrapper.g.numpy(), g_ref, rtol=2e-5)
    np.testing.assert_allclose(wrapper.layer.bias.numpy(), b_ref, rtol=2e-5, atol=2e-6)
    pre = _pre_activations(wrapper, x)
    axes = tuple(range(pre.ndim - 1))
    # float32 statistics; the epsilon lowers the std by about 0.5e-6 / variance.
    np.testing.assert_allclose(pre.mean(axis=axes), 0.0, atol=1e-5)
    np.testing.assert_allclose(pre.std(axis=axes), 1.0, atol=1e-4)


def test_data_init_runs_once_and_the_flag_is_saved(digits, tmp_path):
    x, y = digits
    first, second = slice(0, 128), slice(128, 256)
    model, wrapper = _data_init_model("dense")
    _fit_one_batch(model, x[first], y[first])
    g, b = wrapper.g.numpy(), wrapper.layer.bias.numpy()
    # The second batch's statistics differ, so re-initializing would show.
    g_second, _ = reference.data_init(_normalized_pre_activations(wrapper, x[second]), DATA_INIT_EPSILON)
    assert np.max(np.abs(g_second / g - 1)) > 1e-2

    _fit_one_batch(model, x[second], y[second])
    np.testing.assert_array_equal(wrapper.g.numpy(), g)
    np.testing.assert_array_equal(wrapper.layer.bias.numpy(), b)

    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    loaded_wrapper = loaded.layers[0]
    assert loaded_wrapper.data_init and loaded_wrapper.initialized.numpy() == 1.0
    _fit_one_batch(loaded, x[second], y[second])
    np.testing.assert_array_equal(loaded_wrapper.g.numpy(), g)
    np.testing.assert_array_equal(loaded_wrapper.layer.bias.numpy(), b)


@pytest.mark.slow
def test_data_init_under_mirrored_strategy_uses_the_global_batch(digits):
    x, y = digits[0][:128], digits[1][:128]
    strategy = mirrored_strategy()
    with strategy.scope():
        model, wrapper = _data_init_model("dense")
    t = _normalized_pre_activations(wrapper, x)
    g_ref, b_ref = reference.data_init(t, DATA_INIT_EPSILON)
    g_half, _ = reference.data_init(t[:64], DATA_INIT_EPSILON)  # what replica 0 alone would see
    assert np.max(np.abs(g_half / g_ref - 1)) > 1e-2

    with strategy.scope():
        _fit_one_batch(model, x, y)

    g_copies = [c.numpy() for c in wrapper.g.value.values]
    b_copies = [c.numpy() for c in wrapper.layer.bias.value.values]
    flags = [c.numpy() for c in wrapper.initialized.value.values]
    assert len(g_copies) == 2 and flags == [1.0, 1.0]
    np.testing.assert_array_equal(g_copies[0], g_copies[1])
    np.testing.assert_array_equal(b_copies[0], b_copies[1])
    np.testing.assert_allclose(g_copies[0], g_ref, rtol=2e-5)
    np.testing.assert_allclose(b_copies[0], b_ref, rtol=2e-5, atol=2e-6)


# -- DropConnect -----------------------------------------------------------------------
def _effective_kernel(wrapper, inputs):
    """With identity inputs and a zero bias, a Dense layer outputs its kernel."""
    return wrapper(np.eye(inputs, dtype="float32"), training=True).numpy()


@pytest.mark.parametrize("rate", [0.3, 0.75])
def test_drop_connect_drops_a_rate_fraction_and_scales_the_rest(rate):
    inputs, units = 64, 128
    wrapper = DropConnect(keras.layers.Dense(units), rate=rate, seed=3)
    wrapper.build((None, inputs))
    kernel = wrapper.layer.kernel.numpy()
    assert np.all(kernel != 0)
    for _ in range(3):
        masked = _effective_kernel(wrapper, inputs)
        kept = masked != 0
        n = kernel.size
        dropped = 1 - kept.mean()
        assert abs(dropped - rate) < 5 * np.sqrt(rate * (1 - rate) / n), dropped  # 5 binomial sigmas
        if rate == 0.75:  # 1 / (1 - rate) = 4: exact in float32
            np.testing.assert_array_equal(masked[kept], 4 * kernel[kept])
        else:
            np.testing.assert_allclose(masked[kept], kernel[kept] / (1 - rate), rtol=1e-6)


def test_drop_connect_draws_one_mask_per_call_shared_by_the_batch():
    wrapper = DropConnect(keras.layers.Dense(32), rate=0.5, seed=0)
    row = np.random.default_rng(0).normal(size=(1, 16)).astype("float32")
    first = wrapper(np.repeat(row, 8, axis=0), training=True).numpy()
    second = wrapper(np.repeat(row, 8, axis=0), training=True).numpy()
    np.testing.assert_array_equal(first, np.repeat(first[:1], 8, axis=0))
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(wrapper(row, training=False).numpy(), wrapper.layer(row).numpy())


def test_drop_connect_averages_to_the_full_kernel():
    rate, draws = 0.4, 2000
    wrapper = DropConnect(keras.layers.Dense(8, bias_initializer="random_normal"), rate=rate, seed=5)
    x = np.random.default_rng(2).normal(size=(4, 16)).astype("float32")
    full = wrapper(x, training=False).numpy().astype("float64")
    draw = tf.function(lambda: wrapper(x, training=True))
    samples = np.stack([draw().numpy() for _ in range(draws)]).astype("float64")
    # Each entry kept with probability 1 - rate and scaled by 1 / (1 - rate):
    # variance of x . (M W / (1 - rate)) is rate / (1 - rate) sum_i x_i^2 W_ij^2.
    w = wrapper.layer.kernel.numpy().astype("float64")
    standard_error = np.sqrt(rate / (1 - rate) * (x.astype("float64") ** 2 @ w**2) / draws)
    assert np.all(np.abs(samples.mean(axis=0) - full) < 5 * standard_error)
    sample_std = samples.std(axis=0)
    np.testing.assert_allclose(sample_std, standard_error * np.sqrt(draws), rtol=0.1)


def test_drop_connect_never_drops_the_bias_and_masks_the_kernel_gradient():
    inputs, units, rate = 24, 10, 0.5
    wrapper = DropConnect(keras.layers.Dense(units, bias_initializer="random_normal"), rate=0.9, seed=7)
    wrapper.build((None, inputs))
    bias = wrapper.layer.bias.numpy()
    for _ in range(5):  # zero inputs: the output is the bias, whatever the mask
        outputs = wrapper(np.zeros((3, inputs), "float32"), training=True).numpy()
        np.testing.assert_array_equal(outputs, np.tile(bias, (3, 1)))

    wrapper.rate = rate
    wrapper.layer.bias.assign(np.zeros(units))
    upstream = np.random.default_rng(3).normal(size=(inputs, units)).astype("float32")
    with tf.GradientTape() as tape:
        masked = wrapper(np.eye(inputs, dtype="float32"), training=True)  # = the effective kernel
        loss = tf.reduce_sum(upstream * masked)
    grad_kernel, grad_bias = tape.gradient(loss, [wrapper.layer.kernel.value, wrapper.layer.bias.value])
    kept = masked.numpy() != 0
    assert 0 < kept.mean() < 1
    # dL/dkernel = mask / (1 - rate) * dL/dW_effective, and 1 / (1 - rate) = 2 exactly.
    np.testing.assert_array_equal(grad_kernel.numpy(), np.where(kept, 2 * upstream, 0.0))
    np.testing.assert_allclose(grad_bias.numpy(), upstream.sum(axis=0), rtol=1e-6)


def test_drop_connect_masks_conv2d_kernel_entries():
    rate = 0.5
    wrapper = DropConnect(keras.layers.Conv2D(5, 3, use_bias=False), rate=rate, seed=11)
    x = np.random.default_rng(4).uniform(0.5, 1.0, size=(2, 6, 6, 4)).astype("float32")
    wrapper.build(x.shape)
    kernel = wrapper.layer.kernel.numpy().astype("float64")
    with tf.GradientTape() as tape:
        y = wrapper(x, training=True)
        loss = tf.reduce_sum(y)
    grad = tape.gradient(loss, wrapper.layer.kernel.value).numpy()
    full_grad = reference.conv2d_kernel_gradient(x.astype("float64"), np.ones(y.shape), 3, 3)  # > 0 everywhere
    kept = grad != 0
    assert abs(1 - kept.mean() - rate) < 5 * np.sqrt(rate * (1 - rate) / kernel.size)
    np.testing.assert_allclose(grad[kept], 2 * full_grad[kept], rtol=1e-5)
    y_ref = reference.conv2d(x.astype("float64"), np.where(kept, 2 * kernel, 0), 0.0)
    np.testing.assert_allclose(y.numpy(), y_ref, rtol=1e-5, atol=1e-5)


# -- both, on convolutions, mixed precision, XLA and a .keras round trip ----------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    "wrap",
    [lambda c: WeightNormalization(c, data_init=True), lambda c: DropConnect(c, rate=0.3, seed=1)],
    ids=["wn", "dc"],
)
def test_conv1d_mixed_float16_jit_fit_and_round_trip(wrap, tmp_path):
    keras.config.set_dtype_policy("mixed_float16")
    rng = np.random.default_rng(5)
    x, target = rng.random((16, 10, 6)).astype("float32"), rng.random((16, 3)).astype("float32")
    wrapper = wrap(keras.layers.Conv1D(4, 3, activation="relu"))
    model = keras.Sequential([keras.Input((10, 6)), wrapper, keras.layers.Flatten(), keras.layers.Dense(3)])
    model.compile("adam", "mse", jit_compile=True)
    history = model.fit(x, target, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert wrapper(x, training=True).dtype == "float16"
    assert wrapper.layer.kernel.dtype == "float32"
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    for saved, restored in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(saved.numpy(), restored.numpy())
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))


# -- invalid arguments -----------------------------------------------------------------
@pytest.mark.parametrize("cls", [WeightNormalization, DropConnect])
def test_a_layer_without_kernel_is_rejected(cls):
    with pytest.raises(ValueError, match="layer must have a `kernel`"):
        cls(keras.layers.Dropout(0.5))(np.zeros((2, 3), "float32"))
    with pytest.raises(ValueError, match="layer must be a keras.layers.Layer"):
        cls("dense")


@pytest.mark.parametrize("layer", [keras.layers.Conv2DTranspose, keras.layers.DepthwiseConv2D])
def test_weight_normalization_rejects_kernels_with_units_elsewhere(layer):
    inner = layer(4, 3) if layer is keras.layers.Conv2DTranspose else layer(3)
    with pytest.raises(ValueError, match="layer must keep its output units on the kernel's last axis"):
        WeightNormalization(inner)


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_data_init_must_be_a_bool(value):
    with pytest.raises(ValueError, match="data_init must be a bool"):
        WeightNormalization(keras.layers.Dense(2), data_init=value)


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5, "0.5", True])
def test_drop_connect_rate_must_be_in_0_1(rate):
    with pytest.raises(ValueError, match=r"rate must be (in \[0, 1\)|a real number)"):
        DropConnect(keras.layers.Dense(2), rate=rate)
    wrapper = DropConnect(keras.layers.Dense(2), rate=0.2)
    with pytest.raises(ValueError, match="rate"):
        wrapper.rate = rate
    assert wrapper.rate == pytest.approx(0.2)


@pytest.mark.parametrize("seed", [-1, 1.5, "7"])
def test_drop_connect_seed_must_be_a_non_negative_integer(seed):
    with pytest.raises(ValueError, match="seed must be an integer"):
        DropConnect(keras.layers.Dense(2), seed=seed)


def test_configs_round_trip():
    wrappers = [
        WeightNormalization(keras.layers.Dense(3), data_init=True),
        DropConnect(keras.layers.Conv1D(2, 3), rate=0.25, seed=4),
    ]
    for wrapper in wrappers:
        config = wrapper.get_config()
        clone = type(wrapper).from_config(copy.deepcopy(config))  # from_config pops "layer"
        assert clone.get_config() == config
