"""A NaN or infinite gradient never crashes a step of a method with a matrix decomposition.

Shampoo (eigendecomposition), SOAP (QR; eigendecomposition in its
paper-exact mode) and LBFGS (line search over curvature pairs) either end in
NaN weights, which ``TerminateOnNaN`` and the tuner handle, or skip the
step; a due refresh over non-finite statistics keeps the previous roots or
bases and is counted in ``skipped_refreshes``. Before this,
``tf.linalg.eigh`` raised ``InvalidArgumentError`` and killed the process.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from references import conditioned_quadratic

from keras_optsuite.optimizers import LBFGS, SOAP, Shampoo
from keras_optsuite.optimizers.closure import apply_with_closure

# Refresh at every step, so the non-finite step's refresh is due.
EVERY_STEP = {
    "Shampoo": (Shampoo, {"start_preconditioning_step": 1, "precondition_frequency": 1}),
    "Shampoo(grafting=None)": (
        Shampoo, {"start_preconditioning_step": 1, "precondition_frequency": 1, "grafting": None}
    ),
    "Shampoo(root_method=newton)": (
        Shampoo, {"start_preconditioning_step": 1, "precondition_frequency": 1, "root_method": "newton"}
    ),
    "SOAP": (SOAP, {"precondition_frequency": 1}),
    "SOAP(paper_exact)": (SOAP, {"precondition_frequency": 1, "paper_exact": True}),
}


def _matrices(optimizer, variable):
    """The stored roots (Shampoo) or bases (SOAP) of ``variable``."""
    return optimizer.factor_matrices(variable, "root" if isinstance(optimizer, Shampoo) else "basis")


@pytest.mark.parametrize("bad", [np.inf, np.nan], ids=["inf", "nan"])
@pytest.mark.parametrize("name", list(EVERY_STEP))
def test_a_non_finite_gradient_keeps_the_previous_factors_and_is_counted(name, bad):
    cls, hyper = EVERY_STEP[name]
    optimizer = cls(learning_rate=0.01, **hyper)
    kernel = keras.Variable(np.ones((3, 4), "float32"))
    rng = np.random.default_rng(0)
    good = tf.constant(rng.normal(size=(3, 4)), tf.float32)
    poisoned = np.array(good.numpy())
    poisoned[1, 2] = bad
    poisoned = tf.constant(poisoned)

    @tf.function
    def step(gradient):
        optimizer.apply([gradient], [kernel])

    step(good)
    step(good)
    before = _matrices(optimizer, kernel)
    assert all(np.all(np.isfinite(m)) for m in before)
    assert optimizer.skipped_refreshes == 0
    step(poisoned)  # raised InvalidArgumentError (eigh) before
    step(good)  # the statistics stay non-finite: every later refresh is skipped too
    assert optimizer.skipped_refreshes == 2
    for kept, previous in zip(_matrices(optimizer, kernel), before):
        np.testing.assert_array_equal(kept, previous)
    assert not np.all(np.isfinite(kernel.numpy())), "the divergence shows in the weights"


def test_shampoo_without_grafting_diverging_ends_in_a_nan_loss_not_a_crash():
    """The case of issue #22: ``grafting=None`` at learning rate 0.1 on the cond-1e4
    quadratic takes plain gradient steps until step 10 (default
    ``start_preconditioning_step``), diverges, and then refreshed its roots
    from infinite statistics inside ``tf.linalg.eigh``."""
    optimizer = Shampoo(0.1, grafting=None)
    loss = conditioned_quadratic.final_loss(optimizer, steps=30)
    assert not np.isfinite(loss)
    assert optimizer.skipped_refreshes >= 1  # steps 10, 20, 30 for the one kernel


@pytest.mark.parametrize("bad", [np.inf, np.nan], ids=["inf", "nan"])
def test_lbfgs_skips_a_step_whose_loss_or_gradient_is_not_finite(bad):
    """A non-finite evaluation counts as failing sufficient decrease (f = inf):
    the weights stay where they were and the history is not polluted."""
    w = keras.Variable(np.array([1.0, -2.0, 0.5]), dtype="float64")
    scale = keras.Variable(1.0, dtype="float64")

    def closure():
        with tf.GradientTape() as tape:
            loss = scale * tf.reduce_sum(tf.square(w))
        return tape.gradient(loss, [w]), loss

    optimizer = LBFGS(history_size=3)
    grads, loss = closure()
    apply_with_closure(optimizer, grads, [w], closure, loss=loss)
    moved = w.numpy()
    assert not np.allclose(moved, [1.0, -2.0, 0.5])
    scale.assign(bad)
    grads, loss = closure()
    apply_with_closure(optimizer, grads, [w], closure, loss=loss)
    np.testing.assert_array_equal(w.numpy(), moved)
    assert np.all(np.isfinite(optimizer._s_history.numpy()))
    assert np.all(np.isfinite(optimizer._y_history.numpy()))
