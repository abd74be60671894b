"""AdaHessian: the Hutchinson estimator, whole ``model.fit`` steps against NumPy, both HVP modes.

The fit checks use problems whose Hessian is analytic (logistic regression,
``H = A^T diag(p (1 - p)) A / n``, which changes with the weights; a linear
convolution under MSE, ``H = 2 J^T J / M``) and inject the probe vectors,
so every step of the float64 trajectory is compared with
``tests/references/adahessian.py`` at rtol 1e-9.
"""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf
from references.adahessian import AdaHessian as ReferenceAdaHessian

from keras_optsuite.optimizers.adahessian import AdaHessian, hutchinson_estimate
from keras_optsuite.optimizers.closure import (
    HVP_MODES,
    ClosureRequiredError,
    hessian_vector_product,
)

STEPS = 3
LR = 2.0**-3
# Exactly representable in float32 (Keras passes Python floats through float32).
HYPER = {"beta_1": 0.875, "beta_2": 0.9990234375, "epsilon": 2.0**-10}


def _float32_exact(values):
    return np.asarray(values, np.float32).astype(np.float64)


class InjectedProbes(AdaHessian):
    """AdaHessian whose probe vector at step t is ``probes[i][t]`` for variable i."""

    def __init__(self, probes, **kwargs):
        super().__init__(**kwargs)
        self.probes = probes

    def _probe_vectors(self, variables):
        step = tf.convert_to_tensor(self.iterations.value)
        return [tf.gather(tf.constant(p, v.dtype), step) for p, v in zip(self.probes, variables)]


# ---------------------------------------------------------------------------
# The estimator: E[z * Hz] = diag(H), Hessian-vector products in both modes.
# ---------------------------------------------------------------------------
def _coupled_problem():
    """Two variables (a 2x2 matrix and a 2-vector) coupled by a dense Hessian.

    ``f(u) = 0.5 u^T A u + sum(u^4) / 12`` on the concatenation ``u``:
    ``H = A + diag(u^2)``, non-diagonal and dependent on the point.
    """
    rng = np.random.default_rng(4)
    root = rng.normal(size=(6, 6))
    a = root @ root.T + np.diag(rng.uniform(0.5, 2.0, 6))
    point = rng.normal(size=6)
    variables = [keras.Variable(point[:4].reshape(2, 2), dtype="float64"),
                 keras.Variable(point[4:], dtype="float64")]

    def loss():
        u = tf.concat([tf.reshape(variables[0].value, [-1]), variables[1].value], 0)
        return 0.5 * tf.tensordot(u, tf.linalg.matvec(tf.constant(a), u), 1) + tf.reduce_sum(u**4) / 12.0

    return variables, loss, a + np.diag(point**2)


def _split(u):
    return [u[:4].reshape(2, 2), u[4:]]


def _flat(tensors):
    return np.concatenate([np.asarray(t).ravel() for t in tensors])


def test_hutchinson_expectation_over_all_sign_vectors_is_the_exact_diagonal_in_both_modes():
    variables, loss, hessian = _coupled_problem()
    estimates = {mode: [] for mode in HVP_MODES}
    traced = {
        mode: tf.function(lambda a, b, mode=mode: hessian_vector_product(loss, variables, [a, b], mode=mode)[1])
        for mode in HVP_MODES
    }
    for signs in itertools.product((-1.0, 1.0), repeat=6):
        z = np.array(signs)
        for mode in HVP_MODES:
            products = traced[mode](*_split(z))
            # Both modes give the analytic product H z.
            np.testing.assert_allclose(_flat(products), hessian @ z, rtol=1e-12, atol=1e-12)
            estimates[mode].append(_flat(hutchinson_estimate(z, _flat(products))))
    for mode, samples in estimates.items():
        np.testing.assert_allclose(np.mean(samples, axis=0), np.diag(hessian), rtol=1e-12,
                                   err_msg=mode)
    # A single sample is far from the diagonal (the off-diagonal terms only cancel on average).
    assert np.abs(np.asarray(estimates["back_over_back"]) - np.diag(hessian)).max() > 1.0


def test_sampled_probes_are_rademacher_and_their_mean_estimate_is_within_five_sigma():
    variables, _, hessian = _coupled_problem()
    optimizer = AdaHessian(seed=7)
    optimizer.build(variables)
    samples = 1000

    @tf.function
    def draw(step):
        optimizer.iterations.assign(step)
        return optimizer._probe_vectors(variables)

    draws = np.array([_flat(draw(tf.constant(step, "int64"))) for step in range(samples)])
    assert set(np.unique(draws)) == {-1.0, 1.0}
    mean_estimate = np.mean(draws * (draws @ hessian.T), axis=0)
    # Var[z_i (H z)_i] = sum_{j != i} H_ij^2 for Rademacher z.
    off_diagonal = hessian - np.diag(np.diag(hessian))
    sigma = np.sqrt(np.sum(off_diagonal**2, axis=1) / samples)
    assert np.all(np.abs(mean_estimate - np.diag(hessian)) < 5.0 * sigma), (mean_estimate, sigma)
    # Same seed and step, same vector; the 6 coordinates are not all coupled.
    optimizer.iterations.assign(3)
    np.testing.assert_array_equal(_flat(optimizer._probe_vectors(variables)), draws[3])
    assert abs(np.corrcoef(draws.T)[0, 1]) < 0.1


def test_both_modes_agree_on_an_embedding_with_sparse_gradients():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.Input((5,), dtype="int32"), keras.layers.Embedding(20, 3, dtype="float64"),
        keras.layers.Flatten(), keras.layers.Dense(1, activation="tanh", dtype="float64"),
    ])
    tokens = np.random.default_rng(0).integers(0, 20, size=(8, 5)).astype("int32")

    def loss():
        return tf.reduce_mean(tf.square(model(tokens) - 0.5))

    variables = model.trainable_variables
    rng = np.random.default_rng(2)
    probes = [rng.choice([-1.0, 1.0], size=v.shape) for v in variables]
    products = {
        mode: [np.asarray(tf.convert_to_tensor(h)) for h in hessian_vector_product(loss, variables, probes, mode)[1]]
        for mode in HVP_MODES
    }
    for a, b in zip(*products.values()):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert np.abs(products["back_over_back"][0]).max() > 1e-6


# ---------------------------------------------------------------------------
# model.fit against the NumPy reference.
# ---------------------------------------------------------------------------
def _logistic_regression():
    """Logistic regression: returns data, init, gradient and Hessian at given params."""
    rng = np.random.default_rng(0)
    n = 32
    x = _float32_exact(rng.normal(size=(n, 3)))
    y = (x @ np.array([[1.5], [-2.0], [0.5]]) + rng.normal(size=(n, 1)) > 0).astype(np.float64)
    init = [_float32_exact(rng.normal(size=(3, 1))), _float32_exact(rng.normal(size=(1,)))]
    design = np.hstack([x, np.ones((n, 1))])

    def derivatives(params):
        theta = np.concatenate([params[0].ravel(), params[1]])
        p = 1.0 / (1.0 + np.exp(-(design @ theta)))
        gradient = design.T @ (p - y.ravel()) / n
        hessian = design.T @ (design * (p * (1.0 - p))[:, None]) / n
        return gradient, hessian

    model = keras.Sequential([keras.Input((3,), dtype="float64"), keras.layers.Dense(1, dtype="float64")])
    loss = keras.losses.BinaryCrossentropy(from_logits=True, dtype="float64")
    return model, loss, x, y, init, derivatives


def _convolution(rank):
    """A linear ``Conv{rank}D`` (valid, stride 1) under MSE: H = 2 J^T J / M, J built by hand."""
    rng = np.random.default_rng(rank)
    n, channels, filters, size, kernel = 6, 2, 3, 4, 2
    spatial_in = (size,) * rank
    x = _float32_exact(rng.normal(size=(n, *spatial_in, channels)))
    spatial_out = tuple(s - kernel + 1 for s in spatial_in)
    y = _float32_exact(rng.normal(size=(n, *spatial_out, filters)))
    kernel_shape = (kernel,) * rank + (channels, filters)
    init = [_float32_exact(rng.normal(size=kernel_shape)), _float32_exact(rng.normal(size=(filters,)))]

    # One row per output entry (sample, position, filter), one column per parameter.
    kernel_size = int(np.prod(kernel_shape))
    rows = []
    for sample in range(n):
        for position in itertools.product(*(range(s) for s in spatial_out)):
            window = x[(sample, *(slice(p, p + kernel) for p in position))]  # (*kernel, channels)
            for f in range(filters):
                row = np.zeros(kernel_size + filters)
                weights = np.zeros(kernel_shape)
                weights[..., f] = window
                row[:kernel_size] = weights.ravel()
                row[kernel_size + f] = 1.0
                rows.append(row)
    jacobian = np.array(rows)
    outputs = len(rows)

    def derivatives(params):
        theta = np.concatenate([params[0].ravel(), params[1]])
        residual = jacobian @ theta - y.ravel()
        return 2.0 * jacobian.T @ residual / outputs, 2.0 * jacobian.T @ jacobian / outputs

    layer = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D}[rank]
    model = keras.Sequential([keras.Input((*spatial_in, channels), dtype="float64"),
                              layer(filters, kernel, dtype="float64")])
    loss = keras.losses.MeanSquaredError(dtype="float64")
    return model, loss, x, y, init, derivatives


CASES = {
    "dense-back_over_back": (_logistic_regression, {"hvp_mode": "back_over_back", "weight_decay": 2.0**-3}),
    "dense-forward_over_back": (_logistic_regression, {"hvp_mode": "forward_over_back", "weight_decay": 2.0**-3}),
    # Base-class options reach the method: a schedule read at every step, per-tensor clipping.
    "conv1d-schedule": (lambda: _convolution(1), {"schedule": True}),
    "conv2d-hessian_power_0.5-clipnorm": (lambda: _convolution(2), {"hessian_power": 0.5, "clipnorm": 0.25}),
}


def _options(options):
    """(optimizer kwargs, reference kwargs, clipnorm) of a case."""
    optimizer = {k: v for k, v in options.items() if k != "schedule"}
    reference = {k: options[k] for k in ("hessian_power", "weight_decay") if k in options}
    if options.get("schedule"):
        optimizer["learning_rate"] = keras.optimizers.schedules.ExponentialDecay(LR, 1, 0.5)
        reference["learning_rate"] = lambda t: LR * 0.5 ** (t - 1)
    return optimizer, reference, optimizer.pop("clipnorm", None)


def _reference_trajectory(reference, init, derivatives, probes, clipnorm=None):
    shapes = [p.shape for p in init]
    sizes = [int(np.prod(s)) for s in shapes]
    split = np.split(np.arange(sum(sizes)), np.cumsum(sizes)[:-1])
    params = [p.copy() for p in init]
    clipped = False
    for step in range(STEPS):
        gradient, hessian = derivatives(params)
        z = [p[step] for p in probes]
        product = hessian @ _flat(z)
        grads = [gradient[i].reshape(s) for i, s in zip(split, shapes)]
        if clipnorm is not None:  # Keras's clipnorm: each tensor by its own norm
            clipped |= any(np.linalg.norm(g) > clipnorm for g in grads)
            grads = [g * min(1.0, clipnorm / np.linalg.norm(g)) for g in grads]
        params = reference.step(params, grads, z, [product[i].reshape(s) for i, s in zip(split, shapes)])
    assert clipnorm is None or clipped, "the clipping was exercised"
    return params


@pytest.mark.parametrize("case", list(CASES))
def test_fit_steps_match_the_numpy_reference_with_injected_probes(case):
    make, options = CASES[case]
    optimizer_options, reference_options, clipnorm = _options(options)
    model, loss, x, y, init, derivatives = make()
    rng = np.random.default_rng(11)
    probes = [rng.choice([-1.0, 1.0], size=(STEPS, *p.shape)) for p in init]
    model.set_weights(init)
    optimizer = InjectedProbes(probes, **{"learning_rate": LR, **HYPER, **optimizer_options},
                               **({"clipnorm": clipnorm} if clipnorm else {}))
    model.compile(optimizer=optimizer, loss=loss)
    model.fit(x, y, batch_size=len(x), epochs=STEPS, shuffle=False, verbose=0)

    reference = ReferenceAdaHessian(**{"learning_rate": LR, **HYPER, **reference_options})
    params = _reference_trajectory(reference, init, derivatives, probes, clipnorm)
    for got, want in zip(model.get_weights(), params):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=case)
    assert max(np.abs(p - q).max() for p, q in zip(params, init)) > 1e-3
    if case.startswith("conv"):  # the spatial average changes the trajectory
        unaveraged = ReferenceAdaHessian(**{"learning_rate": LR, **HYPER, **reference_options},
                                         spatial_average=False)
        other = _reference_trajectory(unaveraged, init, derivatives, probes, clipnorm)
        assert np.abs(other[0] - params[0]).max() > 1e-4


# ---------------------------------------------------------------------------
# Errors and arguments.
# ---------------------------------------------------------------------------
def test_apply_without_a_closure_raises_and_leaves_the_weights():
    variable = keras.Variable(np.ones(3))
    with pytest.raises(ClosureRequiredError, match=r"AdaHessian.*closure"):
        AdaHessian().apply([tf.ones(3, "float64")], [variable])
    np.testing.assert_array_equal(variable.numpy(), 1.0)


@pytest.mark.parametrize(
    "name,value",
    [("hessian_power", 1.5), ("hessian_power", -0.5), ("hvp_mode", "forward"),
     ("spatial_average", "yes"), ("seed", -1), ("epsilon", -1e-4)],
)
def test_invalid_arguments_raise_value_error_naming_the_argument(name, value):
    with pytest.raises(ValueError, match=name):
        AdaHessian(**{name: value})
