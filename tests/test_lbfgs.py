"""L-BFGS (keras_optsuite.optimizers.LBFGS): iterations, line search, full-batch fit.

* On a float64 quadratic every step matches the NumPy transcription of
  Nocedal and Wright in ``tests/references/lbfgs.py`` (two-loop recursion,
  strong-Wolfe bracketing/zoom with cubic interpolation), from initial step
  lengths that are accepted at once, too long (zoom) and too short
  (extrapolation); every accepted step satisfies both strong-Wolfe
  conditions, checked from the analytic loss and gradient; the stored
  curvature pairs equal the reference's, and the reference's two-loop
  direction equals ``-H g`` with ``H`` built by dense BFGS updates.
* ``model.fit`` on a full batch reaches SciPy's L-BFGS-B optimum of an
  L2-regularized logistic regression (absolute difference of the final loss
  <= 1e-5), and converges on the Rosenbrock function from (-1.2, 1).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from references import lbfgs as reference

from keras_optsuite.optimizers import LBFGS
from keras_optsuite.optimizers.closure import ClosureRequiredError, apply_with_closure

C1, C2 = 1e-4, 0.9


def _quadratic(n=9, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    a = q @ np.diag(np.logspace(0, 2, n)) @ q.T  # condition number 100
    b = rng.normal(size=n)

    def loss_and_gradient(x):
        return 0.5 * x @ a @ x - b @ x, a @ x - b

    return a, b, rng.normal(size=n), loss_and_gradient


def _stepper(optimizer, x0, a, b, pass_loss=False):
    """Two float64 variables (a 2x3 matrix and a 3-vector) holding x, and one step.

    With ``pass_loss`` the step hands the optimizer the first pass's loss, as
    the ``model.fit`` closure step does, so it need not evaluate it again.
    """
    variables = [keras.Variable(x0[:6].reshape(2, 3), dtype="float64"),
                 keras.Variable(x0[6:], dtype="float64")]
    a, b = tf.constant(a), tf.constant(b)

    def closure():
        with tf.GradientTape() as tape:
            x = tf.concat([tf.reshape(variables[0], [-1]), variables[1]], axis=0)
            loss = 0.5 * tf.tensordot(x, tf.linalg.matvec(a, x), 1) - tf.tensordot(b, x, 1)
        return tape.gradient(loss, variables), loss

    optimizer.build(variables)

    def counted():
        step.evaluations += 1
        return closure()

    def step():  # eager: cheaper than tracing for a few steps
        grads, loss = closure()
        apply_with_closure(optimizer, grads, variables, counted, loss=loss if pass_loss else None)

    step.evaluations = 0  # closure calls made by the optimizer

    def weights():
        return np.concatenate([variables[0].numpy().ravel(), variables[1].numpy()])

    return step, weights


CASES = {
    "unit_step": {"learning_rate": 1.0, "history_size": 3},
    "long_step_zooms": {"learning_rate": 8.0, "history_size": 3},
    "short_step_extrapolates": {"learning_rate": 2.0**-6},
    "two_iterations_per_step": {"learning_rate": 1.0, "history_size": 4, "max_iterations": 2},
    "fixed_step": {"learning_rate": 0.5, "line_search": None},
}


def test_steps_match_the_numpy_transcription_and_satisfy_strong_wolfe():
    a, b, x0, loss_and_gradient = _quadratic()
    zoomed = extrapolated = False
    for case, hyper in CASES.items():
        optimizer = LBFGS(**hyper)
        step, weights = _stepper(optimizer, x0, a, b)
        expected = reference.LBFGS(**hyper)
        x = x0.copy()
        for k in range(8):
            before = weights()
            step()
            x = expected.step(x, loss_and_gradient)
            np.testing.assert_allclose(weights(), x, rtol=1e-8, atol=1e-10,
                                       err_msg=f"{case}: step {k + 1}")
            if hyper.get("line_search", "strong_wolfe") and hyper.get("max_iterations", 1) == 1:
                # Strong Wolfe with s = t d: f(x+s) <= f + c1 g.s, |g(x+s).s| <= c2 |g.s|.
                f0, g0 = loss_and_gradient(before)
                f1, g1 = loss_and_gradient(weights())
                s = weights() - before
                assert g0 @ s < 0.0, f"{case}: step {k + 1} is a descent step"
                assert f1 <= f0 + C1 * (g0 @ s), f"{case}: sufficient decrease at step {k + 1}"
                assert abs(g1 @ s) <= C2 * abs(g0 @ s), f"{case}: curvature at step {k + 1}"
        zoomed |= any(t < hyper["learning_rate"] and n > 1 for t, n in expected.accepted[1:])
        extrapolated |= any(t > hyper["learning_rate"] for t, _ in expected.accepted)
        assert len(expected.accepted) == 8 * hyper.get("max_iterations", 1), case
        # The stored curvature pairs (newest last) are the reference's.
        count = int(optimizer._history_count.numpy())
        assert count == len(expected.pairs) == min(optimizer.history_size, 8 * hyper.get("max_iterations", 1))
        for stored, (s, y) in zip(range(optimizer.history_size - count, optimizer.history_size),
                                  expected.pairs):
            np.testing.assert_allclose(optimizer._s_history.numpy()[stored], s, rtol=1e-7, atol=1e-12)
            np.testing.assert_allclose(optimizer._y_history.numpy()[stored], y, rtol=1e-7, atol=1e-12)
        # The reference's two-loop recursion is -H g for the BFGS matrix H (N&W eq. 7.19).
        g = loss_and_gradient(x)[1]
        h = reference.dense_inverse_hessian(expected.pairs, len(x))
        np.testing.assert_allclose(reference.two_loop_direction(g, expected.pairs), -h @ g,
                                   rtol=1e-9, atol=1e-12)
    assert zoomed and extrapolated, "both phases of the line search ran"


def test_the_first_pass_loss_saves_one_evaluation_per_step_and_changes_nothing_else():
    """model.fit's closure step passes the loss of the gradients it computed."""
    a, b, x0, _ = _quadratic()
    runs = {}
    for pass_loss in (False, True):
        step, weights = _stepper(LBFGS(history_size=3), x0, a, b, pass_loss=pass_loss)
        for _ in range(4):
            step()
        runs[pass_loss] = (weights(), step.evaluations)
    np.testing.assert_allclose(runs[True][0], runs[False][0], rtol=1e-12, atol=1e-14)
    assert runs[False][1] - runs[True][1] == 4, runs


def test_learning_rate_schedule_sets_each_steps_initial_step_length():
    a, b, x0, loss_and_gradient = _quadratic(seed=1)
    schedule = keras.optimizers.schedules.ExponentialDecay(8.0, decay_steps=1, decay_rate=0.5)
    optimizer = LBFGS(learning_rate=schedule, history_size=3)
    step, weights = _stepper(optimizer, x0, a, b)
    expected = reference.LBFGS(learning_rate=lambda k: 8.0 * 0.5**k, history_size=3)
    x = x0.copy()
    for k in range(6):
        step()
        x = expected.step(x, loss_and_gradient)
        np.testing.assert_allclose(weights(), x, rtol=1e-8, atol=1e-10, err_msg=f"step {k + 1}")
    # A constant 8.0 gives another trajectory: the schedule was read.
    constant = reference.LBFGS(learning_rate=8.0, history_size=3)
    y = x0.copy()
    for _ in range(6):
        y = constant.step(y, loss_and_gradient)
    assert np.abs(x - y).max() > 1e-6


@pytest.fixture
def float64_floatx():
    # Keras cannot add float64 regularization losses to a float32 total: all float64.
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    yield
    keras.config.set_floatx("float32")
    keras.config.set_dtype_policy("float32")


L2 = 2.0**-8


def _logistic_objective(x, y):
    def objective(params):
        w, bias = params[:640].reshape(64, 10), params[640:]
        z = x @ w + bias
        z = z - z.max(axis=1, keepdims=True)
        log_normalizer = np.log(np.exp(z).sum(axis=1))
        loss = np.mean(log_normalizer - z[np.arange(len(y)), y]) + L2 * np.sum(w**2)
        p = np.exp(z - log_normalizer[:, None])
        p[np.arange(len(y)), y] -= 1.0
        p /= len(y)
        return loss, np.concatenate([(x.T @ p + 2.0 * L2 * w).ravel(), p.sum(axis=0)])

    return objective


@pytest.mark.slow
def test_full_batch_fit_reaches_scipys_lbfgsb_optimum(digits, float64_floatx):
    from scipy.optimize import minimize

    x, y = digits[0][:400].astype("float64"), digits[1][:400]
    objective = _logistic_objective(x, y)
    scipy_result = minimize(objective, np.zeros(650), jac=True, method="L-BFGS-B",
                            options={"maxiter": 5000, "gtol": 1e-12, "ftol": 1e-16})
    assert scipy_result.success

    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(10, kernel_initializer="zeros", kernel_regularizer=keras.regularizers.L2(L2)),
    ])
    model.compile(optimizer=LBFGS(max_iterations=25),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, batch_size=len(x), epochs=6, shuffle=False, verbose=0).history["loss"]
    kernel, bias = model.get_weights()
    final_loss, final_gradient = objective(np.concatenate([kernel.ravel(), bias]))
    # Absolute difference of the final loss (about 0.5 here).
    assert abs(final_loss - scipy_result.fun) <= 1e-5
    assert history[-1] < history[0]
    assert np.abs(final_gradient).max() < 1e-3


class _Rosenbrock(keras.Model):
    """One weight vector w; the loss is (1 - w0)^2 + 100 (w1 - w0^2)^2 whatever the data."""

    def __init__(self):
        super().__init__(dtype="float64", name="rosenbrock")
        self.w = self.add_weight(shape=(2,), initializer="zeros", dtype="float64", name="w")

    def call(self, inputs):
        return inputs

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return (1.0 - self.w[0]) ** 2 + 100.0 * (self.w[1] - self.w[0] ** 2) ** 2


def _rosenbrock(w):
    loss = (1.0 - w[0]) ** 2 + 100.0 * (w[1] - w[0] ** 2) ** 2
    gradient = np.array([-2.0 * (1.0 - w[0]) - 400.0 * w[0] * (w[1] - w[0] ** 2),
                         200.0 * (w[1] - w[0] ** 2)])
    return loss, gradient


def test_rosenbrock_converges_to_the_minimum_and_follows_the_reference(float64_floatx):
    model = _Rosenbrock()
    model.compile(optimizer=LBFGS(max_iterations=5))
    model.w.assign(np.array([-1.2, 1.0]))
    path = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: path.append(model.w.numpy()))
    data = np.zeros((1, 1))
    model.fit(data, data, batch_size=1, epochs=8, verbose=0, callbacks=[record])

    expected = reference.LBFGS(max_iterations=5)
    w = np.array([-1.2, 1.0])
    for epoch in range(4):  # the first 20 iterations, before rounding differences can grow
        w = expected.step(w, _rosenbrock)
        np.testing.assert_allclose(path[epoch], w, rtol=1e-7, atol=1e-9, err_msg=f"epoch {epoch + 1}")
    # Near the minimum y.s falls below 1e-10 and pairs stop being stored (as in
    # PyTorch): the reference also stalls at a loss ~4e-13, |w - 1| ~ 1.3e-6.
    assert _rosenbrock(path[-1])[0] < 1e-11
    np.testing.assert_allclose(path[-1], [1.0, 1.0], atol=1e-5)
    assert len(expected.accepted) == 20, "the path needs several iterations"


def test_needs_a_closure_and_dense_gradients():
    w = keras.Variable(np.ones(3), dtype="float64")
    optimizer = LBFGS()
    with pytest.raises(ClosureRequiredError, match="LBFGS needs the loss re-evaluated"):
        optimizer.apply([tf.ones(3, tf.float64)], [w])

    embedding = keras.layers.Embedding(10, 2)
    tokens = tf.constant([[1, 2]])

    def closure():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(embedding(tokens))
        return tape.gradient(loss, embedding.trainable_variables), loss

    grads, _ = closure()
    assert isinstance(grads[0], tf.IndexedSlices)
    with pytest.raises(ValueError, match="embeddings.*IndexedSlices"):
        apply_with_closure(LBFGS(), grads, embedding.trainable_variables, closure)


@pytest.mark.parametrize("arguments,name", [
    ({"history_size": 0}, "history_size"),
    ({"max_iterations": 1.5}, "max_iterations"),
    ({"max_evaluations": 0}, "max_evaluations"),
    ({"tolerance_grad": -1.0}, "tolerance_grad"),
    ({"tolerance_change": float("nan")}, "tolerance_change"),
    ({"line_search": "backtracking"}, "line_search"),
    ({"c1": 0.0}, "c1"),
    ({"c1": 0.5, "c2": 0.25}, "c2"),
    ({"clipnorm": 1.0}, "clipnorm"),
    ({"global_clipnorm": 1.0}, "global_clipnorm"),
])
def test_invalid_arguments_raise_value_error_naming_them(arguments, name):
    with pytest.raises(ValueError, match=name):
        LBFGS(**arguments)
