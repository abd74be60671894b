"""Soft orthogonality regularizers: SO (Frobenius) and SRIP (spectral), Bansal et al. 2018.

References are closed forms through the singular values ``s`` of the kernel
viewed as ``(-1, units)``, independent of the Gram computation: with ``G``
the Gram of the smaller side, ``||G - I||_F^2 = sum (s^2 - 1)^2`` and
``sigma(G - I) = max |s^2 - 1|``.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import keras
from keras_optsuite.regularizers import SoftOrthogonal, SpectralRestrictedIsometry

SHAPES = [(16, 8), (8, 16), (3, 3, 4, 6), (3, 3, 2, 32)]  # tall, wide (W W^T), conv, wide conv


def singular_values(kernel):
    matrix = np.asarray(kernel, np.float64).reshape(-1, kernel.shape[-1])
    return np.linalg.svd(matrix, compute_uv=False)  # min(rows, columns) values: the smaller side


def frobenius_reference(kernel):
    return np.sum((singular_values(kernel) ** 2 - 1.0) ** 2)


def spectral_reference(kernel):
    return np.max(np.abs(singular_values(kernel) ** 2 - 1.0))


def kernel(shape, seed=0, scale=1.0):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype("float32")


def value(regularizer, weights):
    return float(regularizer(tf.constant(weights)))


@pytest.mark.parametrize("shape", SHAPES)
def test_soft_orthogonal_matches_the_frobenius_closed_form(shape):
    weights = kernel(shape)
    expected = 0.3 * frobenius_reference(weights)
    np.testing.assert_allclose(value(SoftOrthogonal(0.3), weights), expected, rtol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_srip_with_many_iterations_is_the_spectral_norm(shape):
    weights = kernel(shape, seed=1)
    got = value(SpectralRestrictedIsometry(0.5, power_iterations=300), weights)
    np.testing.assert_allclose(got, 0.5 * spectral_reference(weights), rtol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_srip_with_two_iterations_is_a_bracketed_lower_bound(shape):
    """sigma * max_i |u_i|^(1/k) <= sigma_k <= sigma, and sigma_k rises with k.

    u is the unit eigenvector of A = G - I for its eigenvalue of largest
    magnitude, computed here with numpy.linalg.eigh; max_i |u_i| >= 1/sqrt(n)
    gives the data-free bound sigma * n^(-1/(2k)).
    """
    weights = kernel(shape, seed=2)
    matrix = weights.reshape(-1, shape[-1]).astype(np.float64)
    gram = matrix.T @ matrix if matrix.shape[0] >= matrix.shape[1] else matrix @ matrix.T
    eigenvalues, eigenvectors = np.linalg.eigh(gram - np.eye(gram.shape[0]))
    sigma = np.abs(eigenvalues).max()
    top = eigenvectors[:, np.argmax(np.abs(eigenvalues))]
    n = gram.shape[0]
    estimates = [value(SpectralRestrictedIsometry(1.0, k), weights) for k in (1, 2, 5)]
    two = estimates[1]
    assert sigma * np.abs(top).max() ** 0.5 <= two <= sigma * (1 + 1e-6)
    assert two >= sigma * n**-0.25
    assert estimates[0] <= estimates[1] * (1 + 1e-6) and estimates[1] <= estimates[2] * (1 + 1e-6)
    assert two < sigma * (1 - 1e-3)  # two products estimate sigma, not equal it (else the test is moot)


def test_srip_does_not_vanish_when_one_direction_is_isometric():
    """W^T W e_1 = e_1: a power iteration from the single start e_1 would give 0."""
    rng = np.random.default_rng(3)
    left = np.linalg.qr(rng.standard_normal((16, 8)))[0]
    right = np.eye(8)[:, rng.permutation(8)]
    right[:, [0, int(np.argmax(right[0]))]] = right[:, [int(np.argmax(right[0])), 0]]  # e_1 first
    singular = np.array([1.0, 2.0, 1.5, 0.5, 1.0, 2.0, 0.3, 1.2])
    weights = ((left * singular) @ right.T).astype("float32")
    np.testing.assert_allclose((weights.T @ weights)[:, 0], np.eye(8)[:, 0], atol=1e-5)
    sigma = spectral_reference(weights)  # 3
    for k in (1, 2):
        assert value(SpectralRestrictedIsometry(1.0, k), weights) >= sigma * 8 ** (-1 / (2 * k))


def test_orthonormal_kernels_cost_nothing():
    rng = np.random.default_rng(4)
    tall = np.linalg.qr(rng.standard_normal((16, 8)))[0].astype("float32")  # orthonormal columns
    wide = np.ascontiguousarray(tall.T)  # orthonormal rows: W W^T = I
    conv = np.linalg.qr(rng.standard_normal((3 * 3 * 4, 8)))[0].reshape(3, 3, 4, 8).astype("float32")
    for weights in (tall, wide, conv):
        assert value(SoftOrthogonal(1.0), weights) < 1e-10
        assert value(SpectralRestrictedIsometry(1.0), weights) < 1e-6
    # A scaled orthonormal kernel is not orthonormal: keras.regularizers.OrthogonalRegularizer
    # ignores the scale, these do not.
    assert value(SoftOrthogonal(1.0), 3 * tall) == pytest.approx(8 * 64, rel=1e-5)
    assert value(SpectralRestrictedIsometry(1.0), 3 * tall) == pytest.approx(8, rel=1e-5)
    keras_penalty = keras.regularizers.OrthogonalRegularizer(1.0, mode="columns")
    assert float(keras_penalty(tf.constant(3 * tall))) < 1e-6


@pytest.mark.parametrize(
    "regularizer, steps",
    [(SoftOrthogonal(1.0), 300), (SpectralRestrictedIsometry(1.0), 1500)],
    ids=["soft_orthogonal", "srip"],
)
def test_gradient_descent_on_the_penalty_alone_orthonormalizes(regularizer, steps):
    """SGD with a cosine-decayed step of 0.01 from 0.3 * N(0, 1) drives W^T W to I (measured ~1e-6)."""
    weights = tf.Variable(kernel((16, 8), seed=5, scale=0.3))
    optimizer = keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(0.01, steps))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            penalty = regularizer(weights)
        optimizer.apply_gradients([(tape.gradient(penalty, weights), weights)])

    for _ in range(steps):
        step()
    matrix = weights.numpy().astype(np.float64)
    assert spectral_reference(matrix) < 1e-4, spectral_reference(matrix)


def test_gradient_is_finite_at_an_orthonormal_kernel():
    weights = tf.Variable(np.eye(8, dtype="float32"))
    for regularizer in (SoftOrthogonal(1.0), SpectralRestrictedIsometry(1.0, 3)):
        with tf.GradientTape() as tape:
            penalty = regularizer(weights)
        gradient = tape.gradient(penalty, weights).numpy()
        assert np.all(np.isfinite(gradient)) and np.abs(gradient).max() < 1e-5


def build_model():
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(4, 3, kernel_regularizer=SpectralRestrictedIsometry(0.01, 20)),
            keras.layers.Flatten(),
            keras.layers.Dense(3, kernel_regularizer=SoftOrthogonal(0.02)),
        ]
    )
    model.compile(optimizer="sgd", loss="mse", jit_compile=True)
    return model


def test_as_kernel_regularizers_in_a_model_with_keras_round_trip(tmp_path):
    keras.utils.set_random_seed(6)
    model = build_model()
    conv, dense = model.layers[0], model.layers[2]
    expected = [
        0.01 * spectral_reference(conv.kernel.numpy()),
        0.02 * frobenius_reference(dense.kernel.numpy()),
    ]
    losses = sorted(float(loss) for loss in model.losses)
    assert len(losses) == 2
    np.testing.assert_allclose(losses, sorted(expected), rtol=1e-4)
    # The penalty enters the training loss (compiled with XLA).
    x, y = np.zeros((4, 6, 6, 2), "float32"), np.zeros((4, 3), "float32")
    assert model.evaluate(x, y, verbose=0) == pytest.approx(sum(losses), rel=1e-4)  # mse is 0 here
    model.fit(x, y, epochs=1, verbose=0)

    path = str(tmp_path / "orthogonal.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.layers[0].kernel_regularizer, SpectralRestrictedIsometry)
    assert isinstance(loaded.layers[2].kernel_regularizer, SoftOrthogonal)
    assert loaded.layers[0].kernel_regularizer.get_config() == {"factor": 0.01, "power_iterations": 20}
    assert loaded.layers[2].kernel_regularizer.get_config() == {"factor": 0.02}
    np.testing.assert_allclose(
        sorted(float(v) for v in loaded.losses), sorted(float(v) for v in model.losses), rtol=1e-6
    )


def test_mixed_float16_penalties_are_float32():
    keras.config.set_dtype_policy("mixed_float16")
    layer = keras.layers.Dense(8, kernel_regularizer=SpectralRestrictedIsometry(1.0))
    layer.build((None, 16))
    (penalty,) = layer.losses
    assert keras.backend.standardize_dtype(penalty.dtype) == "float32"
    # Computed from the float32 kernel, not a float16 copy (which would be ~1e-3 off).
    from_float32 = value(SpectralRestrictedIsometry(1.0), layer.kernel.numpy())
    np.testing.assert_allclose(float(penalty), from_float32, rtol=1e-6)


def test_config_round_trip():
    for regularizer in (SoftOrthogonal(0.5), SpectralRestrictedIsometry(0.25, power_iterations=4)):
        restored = keras.regularizers.deserialize(keras.regularizers.serialize(regularizer))
        assert type(restored) is type(regularizer)
        assert restored.get_config() == regularizer.get_config()


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: SoftOrthogonal(-1.0), "factor"),
        (lambda: SoftOrthogonal(float("nan")), "factor"),
        (lambda: SoftOrthogonal("1e-4"), "factor"),
        (lambda: SoftOrthogonal(True), "factor"),
        (lambda: SpectralRestrictedIsometry(-0.1), "factor"),
        (lambda: SpectralRestrictedIsometry(power_iterations=0), "power_iterations"),
        (lambda: SpectralRestrictedIsometry(power_iterations=2.0), "power_iterations"),
        (lambda: SpectralRestrictedIsometry(power_iterations=True), "power_iterations"),
    ],
)
def test_invalid_arguments(make, name):
    with pytest.raises(ValueError, match=name):
        make()


@pytest.mark.parametrize("regularizer_class", [SoftOrthogonal, SpectralRestrictedIsometry])
def test_rank_one_weights_are_rejected(regularizer_class):
    with pytest.raises(ValueError, match="rank >= 2"):
        regularizer_class()(tf.zeros((8,)))
