"""Sophia (keras_optsuite.optimizers.sophia) against tests/references/sophia.py.

Trained through ``model.fit`` (the closure train step) on float64 softmax
regression, where gradients, Hessian-vector products and the Gauss-Newton
diagonal have closed forms. Probe vectors and sampled labels are injected by
overriding ``draw_probe_vectors`` / ``sample_targets``; the default samplers are
checked statistically.
"""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import LOSS, dense_model, mirrored_strategy
from references import sophia as reference

from keras_optsuite.optimizers.closure import ClosureRequiredError
from keras_optsuite.optimizers.sophia import Sophia, output_distribution

# dtype float64: a Loss object computes in floatx (float32) by default.
CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64")


def _softmax_regression(features, classes, weights, activation=None, loss=CE, optimizer=None):
    model = keras.Sequential([
        keras.Input((features,), dtype="float64"),
        keras.layers.Dense(classes, activation=activation, dtype="float64"),
    ])
    model.set_weights(weights)
    model.compile(optimizer=optimizer, loss=loss)
    return model


def _float32_exact(values):
    """Keras's data adapter casts float64 arrays (inputs, targets, sample weights) to float32."""
    return np.asarray(values, "float32").astype("float64")


def _injected(calls, probes=None, labels=None, **hyper):
    """Sophia whose probe vectors / sampled labels at step s are ``table[s]``."""

    class Injected(Sophia):
        def draw_probe_vectors(self, variables, step):
            calls.assign_add(1)
            return [tf.gather(tf.constant(table), step) for table in probes]

        def sample_targets(self, y_pred, kind, from_logits, step):
            calls.assign_add(1)
            return tf.one_hot(tf.gather(tf.constant(labels), step), y_pred.shape[-1], dtype=y_pred.dtype)

    return Injected(**hyper)


class _RecordCurvature(keras.callbacks.Callback):
    """The ``hessian`` slots after every batch."""

    def __init__(self):
        super().__init__()
        self.values = []

    def on_train_batch_end(self, batch, logs=None):
        self.values.append([v.numpy() for v in self.model.optimizer._slots["hessian"]])


@pytest.mark.parametrize("estimator", ["gauss_newton_bartlett", "hutchinson"])
def test_fit_steps_match_algorithm_3_with_injected_draws(estimator):
    n, features, classes, steps, k = 8, 3, 3, 7, 3
    rng = np.random.default_rng(0)
    x = _float32_exact(rng.normal(size=(n, features)))
    y = rng.integers(0, classes, n)
    sample_weight = _float32_exact(rng.uniform(0.5, 2.0, n))
    init = [0.5 * rng.normal(size=(features, classes)), 0.1 * rng.normal(size=classes)]
    probes = [rng.choice([-1.0, 1.0], size=(steps, *p.shape)) for p in init]
    labels = rng.integers(0, classes, (steps, n))
    # Exactly representable: Keras keeps the learning rate in float32.
    hyper = dict(learning_rate=2.0**-3, beta_1=0.875, beta_2=0.75, rho=0.03125, epsilon=1e-12,
                 hessian_update_interval=k, weight_decay=2.0**-3)

    # The shared base options reach Sophia: a schedule (read every step) for one
    # estimator, per-tensor norm clipping for the other.
    if estimator == "hutchinson":
        options = {"learning_rate": keras.optimizers.schedules.ExponentialDecay(
            hyper["learning_rate"], decay_steps=1, decay_rate=0.5)}
        reference_lr = lambda t: hyper["learning_rate"] * 0.5 ** (t - 1)  # noqa: E731
        clip = np.inf
    else:
        options, reference_lr, clip = {"clipnorm": 0.25}, hyper["learning_rate"], 0.25

    calls = tf.Variable(0)
    optimizer = _injected(calls, probes, labels, estimator=estimator, seed=0, **{**hyper, **options})
    model = _softmax_regression(features, classes, init, optimizer=optimizer)
    model.fit(x, y, sample_weight=sample_weight, batch_size=n, epochs=steps, shuffle=False, verbose=0)

    expected = reference.Sophia(**{**hyper, "learning_rate": reference_lr})
    params, clipped = [p.copy() for p in init], []
    for s in range(steps):
        grads = reference.cross_entropy_gradient(x, *params, y, sample_weight)
        clipped.append(max(np.linalg.norm(g) for g in grads) > clip)
        grads = [g * min(1.0, clip / np.linalg.norm(g)) for g in grads]
        if estimator == "hutchinson":
            def curvature(params=params, s=s):
                u = [table[s] for table in probes]
                hv = reference.hessian_vector_product(x, *params, *u, sample_weight)
                return [a * b for a, b in zip(u, hv)]
        else:
            def curvature(params=params, s=s):
                return reference.gauss_newton_bartlett(x, *params, labels[s], sample_weight)
        params = expected.step(params, grads, curvature)

    for got, want in zip(model.get_weights(), params):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    assert max(np.abs(p - q).max() for p, q in zip(params, init)) > 0.1
    # Refreshed on steps 1, 4, 7 only: the other steps never ran the estimator.
    assert expected.refreshed == [1, 4, 7] and int(calls.numpy()) == 3
    ratios = np.concatenate([r.ravel() for step in expected.ratios for r in step])
    assert (np.abs(ratios) > 1).any() and (np.abs(ratios) < 1).any(), "both clip branches occur"
    assert any(clipped) == (estimator == "gauss_newton_bartlett"), "clipnorm acted"


def _draw_curvatures(model, x, y, repeats):
    """``h_hat`` at fixed weights, once per batch (lr 0, k 1, beta_2 0: h = h_hat)."""
    record = _RecordCurvature()
    model.fit(np.tile(x, (repeats, 1)), np.tile(y, (repeats, *[1] * (y.ndim - 1))),
              batch_size=len(x), epochs=1, shuffle=False, verbose=0, callbacks=[record])
    return record.values


EXACT = dict(learning_rate=0.0, beta_2=0.0, hessian_update_interval=1, seed=0)


def test_gauss_newton_bartlett_expectation_over_all_labels_is_the_gauss_newton_diagonal():
    n, features, classes = 2, 2, 3
    rng = np.random.default_rng(1)
    x, y = _float32_exact(rng.normal(size=(n, features))), rng.integers(0, classes, n)
    init = [rng.normal(size=(features, classes)), rng.normal(size=classes)]
    labelings = np.array(list(itertools.product(range(classes), repeat=n)))  # 9 joint labels
    optimizer = _injected(tf.Variable(0), labels=labelings, **EXACT)
    model = _softmax_regression(features, classes, init, optimizer=optimizer)
    estimates = _draw_curvatures(model, x, y, len(labelings))

    probabilities = reference.softmax(x @ init[0] + init[1])
    weights = [np.prod(probabilities[np.arange(n), labeling]) for labeling in labelings]
    expectation = [sum(w * e[i] for w, e in zip(weights, estimates)) for i in range(2)]
    for got, want in zip(expectation, reference.hessian_diagonal(x, *init)):
        np.testing.assert_allclose(got, want, rtol=1e-10)
    for labeling, estimate in zip(labelings, estimates):  # each draw is the formula's
        for got, want in zip(estimate, reference.gauss_newton_bartlett(x, *init, labeling)):
            np.testing.assert_allclose(got, want, rtol=1e-10)


def test_hutchinson_mean_over_all_sign_vectors_is_the_hessian_diagonal():
    n, features, classes = 4, 2, 2
    rng = np.random.default_rng(2)
    x, y = _float32_exact(rng.normal(size=(n, features))), rng.integers(0, classes, n)
    init = [rng.normal(size=(features, classes)), rng.normal(size=classes)]
    signs = np.array(list(itertools.product([-1.0, 1.0], repeat=features * classes + classes)))
    probes = [signs[:, : features * classes].reshape(-1, features, classes), signs[:, features * classes :]]
    optimizer = _injected(tf.Variable(0), probes=probes, estimator="hutchinson", **EXACT)
    model = _softmax_regression(features, classes, init, optimizer=optimizer)
    estimates = _draw_curvatures(model, x, y, len(signs))
    mean = [np.mean([e[i] for e in estimates], axis=0) for i in range(2)]
    for got, want in zip(mean, reference.hessian_diagonal(x, *init)):
        np.testing.assert_allclose(got, want, rtol=1e-10)
    assert not np.allclose(estimates[0][0], mean[0]), "single draws are noisy"


@pytest.mark.parametrize("loss", ["sparse_categorical_crossentropy", "mse"])
def test_default_sampler_mean_is_within_a_statistical_bound_of_the_gauss_newton_diagonal(loss):
    """600 seeded draws; the bound is 5 standard errors per element.

    For mse (d = 4 outputs) a sampler with unit noise instead of variance d/2
    would give half the diagonal: the test checks that it is far outside.
    """
    n, features, outputs, draws = 6, 3, 4, 600
    rng = np.random.default_rng(3)
    x = _float32_exact(rng.normal(size=(n, features)))
    init = [0.5 * rng.normal(size=(features, outputs)), 0.1 * rng.normal(size=outputs)]
    if loss == "mse":
        y, activation = _float32_exact(rng.normal(size=(n, outputs))), None
        diagonal = reference.gaussian_gauss_newton_diagonal(x, outputs)
    else:  # probabilities (from_logits=False): the sampler takes their logarithm
        y, activation = rng.integers(0, outputs, n), "softmax"
        diagonal = reference.hessian_diagonal(x, *init)
    model = _softmax_regression(features, outputs, init, activation, loss, Sophia(**EXACT))
    estimates = _draw_curvatures(model, x, y, draws)
    for i, want in enumerate(diagonal):
        samples = np.array([e[i] for e in estimates])
        mean, error = samples.mean(axis=0), samples.std(axis=0) / np.sqrt(draws)
        assert np.all(np.abs(mean - want) <= 5 * error + 1e-12), (mean, want)
        assert np.all(np.abs(mean - 0.5 * want) > 5 * error), "the factor d/2 is visible"


def test_apply_without_a_closure_raises():
    variable = keras.Variable(np.zeros(3))
    with pytest.raises(ClosureRequiredError, match="Sophia needs the loss re-evaluated"):
        Sophia().apply([tf.ones(3, "float64")], [variable])


def test_unsupported_loss_with_gauss_newton_bartlett_fails_at_the_first_step_naming_it():
    model = _softmax_regression(2, 1, [np.ones((2, 1)), np.zeros(1)], loss="mean_absolute_error",
                                optimizer=Sophia())
    with pytest.raises(ValueError, match=r"loss='mean_absolute_error'.*estimator=\"hutchinson\""):
        model.fit(np.ones((4, 2)), np.ones((4, 1)), verbose=0)


@pytest.mark.parametrize("loss,expected", [
    ("sparse_categorical_crossentropy", ("categorical", False)),
    ("CategoricalCrossentropy", ("categorical", False)),
    (keras.losses.CategoricalCrossentropy(from_logits=True), ("categorical", True)),
    (keras.losses.sparse_categorical_crossentropy, ("categorical", False)),
    ("mse", ("gaussian", False)),
    (keras.losses.MeanSquaredError(), ("gaussian", False)),
])
def test_output_distribution_of_supported_losses(loss, expected):
    assert output_distribution(loss) == expected


@pytest.mark.parametrize("name,value", [
    ("estimator", "newton"), ("hessian_update_interval", 0), ("rho", 0.0), ("epsilon", 0.0), ("seed", -1),
])
def test_invalid_arguments_name_the_argument(name, value):
    with pytest.raises(ValueError, match=name):
        Sophia(**{name: value})


def test_gauss_newton_bartlett_on_two_replicas_matches_one_device():
    """Each replica takes its rows of the batch's label noise and the estimate is
    reduced before squaring: two replicas give one device's trajectory and h.
    """
    n, features, classes = 8, 3, 4
    rng = np.random.default_rng(4)
    x, y = _float32_exact(rng.normal(size=(n * 3, features))), rng.integers(0, classes, n * 3)
    init = [rng.normal(size=(features, classes)), rng.normal(size=classes)]
    hyper = dict(learning_rate=2.0**-3, rho=0.25, hessian_update_interval=2, seed=5)
    runs = []
    for strategy in (tf.distribute.get_strategy(), mirrored_strategy()):
        with strategy.scope():
            model = _softmax_regression(features, classes, init, optimizer=Sophia(**hyper))
        model.fit(x, y, batch_size=n, epochs=1, shuffle=False, verbose=0)
        runs.append(model.get_weights() + [v.numpy() for v in model.optimizer._slots["hessian"]])
    for one, two in zip(*runs):
        np.testing.assert_allclose(two, one, rtol=1e-12, atol=1e-15)
    assert np.abs(runs[0][2]).max() > 0, "h was refreshed"


def test_default_draws_are_the_same_with_and_without_xla():
    """jit_compile must not change the trajectory: XLA's float random kernels
    differ from TensorFlow's, so the draws are built from integer draws."""
    optimizer = Sophia(seed=3)
    variables = [keras.Variable(np.zeros((5, 4), "float32")), keras.Variable(np.zeros(4, "float32"))]
    optimizer.build(variables)
    y_pred = tf.constant(np.random.default_rng(5).normal(size=(64, 10)), "float32")

    def draws(step):
        return (optimizer.draw_probe_vectors(variables, step),
                optimizer.sample_targets(y_pred, "categorical", True, step),
                optimizer.sample_targets(y_pred, "gaussian", False, step))

    step = tf.constant(7, "int64")
    graph, xla = tf.function(draws)(step), tf.function(draws, jit_compile=True)(step)
    for a, b in zip(graph[0], xla[0]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(graph[1], xla[1])
    np.testing.assert_allclose(graph[2], xla[2], rtol=1e-5, atol=1e-5)
    assert set(np.unique(graph[0][0])) == {-1.0, 1.0}



@pytest.mark.slow
def test_default_estimator_refreshes_h_under_mixed_float16(digits):
    """Gauss-Newton-Bartlett's sampled-label loss is scaled like the compiled
    loss: h is refreshed under mixed_float16 as in float32. (A sum over the
    batch overflowed float16 in the loss-scaled backward pass; every refresh
    was then skipped as non-finite, h stayed 0, and training still lowered the
    loss, so the contract's mixed-precision check could not see it.)
    """
    x, y = digits[0][:512], digits[1][:512]
    hyper = dict(learning_rate=0.01, hessian_update_interval=2, seed=7)
    assert Sophia(**hyper).estimator == "gauss_newton_bartlett"
    keras.config.set_dtype_policy("mixed_float16")
    model = dense_model()
    model.compile(optimizer=Sophia(**hyper), loss=LOSS)
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    h = [v.numpy() for v in model.optimizer.inner_optimizer._slots["hessian"]]
    assert all(np.all(np.isfinite(v)) and np.all(v >= 0) for v in h)
    assert max(v.max() for v in h) > 0, "h was refreshed"
