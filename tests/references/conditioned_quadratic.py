"""The badly conditioned quadratic that preconditioned methods must win on.

``f(W) = 1/2 <W - W*, A (W - W*) B>`` for a 12 x 8 matrix ``W``: the Hessian
is ``A kron B`` with condition number 100 * 100 = 1e4, and ``A`` and ``B`` are
randomly rotated, so no diagonal method sees axis-aligned curvature. Runs
200 full-batch float32 steps from ``W = 0`` (loss 4.2e4).

Adam's baseline is the best final loss of its learning-rate grid around its
optimum (measured: 0.03 -> 277, 0.1 -> 22.7, 0.3 -> 2.41, 1.0 -> 0.93,
2.0 -> 1.94, 3.0 -> 3.62); it is computed once per test process.
"""

from __future__ import annotations

import functools

import keras
import numpy as np
import tensorflow as tf

ROWS, COLUMNS = 12, 8
STEPS = 200
ADAM_LEARNING_RATES = (0.3, 1.0, 3.0)


def rotation(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random n x n orthogonal matrix."""
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return q


@functools.lru_cache(maxsize=1)
def problem() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(A, B, W*)`` in float64, fixed by seed 0."""
    rng = np.random.default_rng(0)
    qa, qb = rotation(rng, ROWS), rotation(rng, COLUMNS)
    a = qa @ np.diag(np.logspace(0, 2, ROWS)) @ qa.T
    b = qb @ np.diag(np.logspace(0, 2, COLUMNS)) @ qb.T
    return a, b, rng.normal(size=(ROWS, COLUMNS))


def final_loss(optimizer: keras.optimizers.Optimizer, steps: int = STEPS) -> float:
    """The loss after ``steps`` full-batch steps of ``optimizer`` from ``W = 0``."""
    a_t, b_t, target_t = (tf.constant(x, tf.float32) for x in problem())

    def loss(w):
        error = w - target_t
        return 0.5 * tf.reduce_sum(error * (a_t @ error @ b_t))

    w = keras.Variable(np.zeros((ROWS, COLUMNS), "float32"))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            value = loss(w)
        optimizer.apply(tape.gradient(value, [w]), [w])

    for _ in range(steps):
        step()
    return float(loss(w))


@functools.lru_cache(maxsize=1)
def tuned_adam_final_loss() -> float:
    """Adam's best final loss over :data:`ADAM_LEARNING_RATES`."""
    return min(final_loss(keras.optimizers.Adam(lr)) for lr in ADAM_LEARNING_RATES)
