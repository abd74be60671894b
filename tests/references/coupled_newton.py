"""Coupled Newton iteration for inverse p-th roots (float64 NumPy transcription).

Guo and Higham (2006), "A Schur-Newton method for the matrix p-th root and
its inverse", SIAM J. Matrix Anal. Appl. 28(3), the coupled iteration
    X_0 = z^(1/p) I,  M_0 = z A,
    T_k = ((p + 1) I - M_k) / p,  X_{k+1} = X_k T_k,  M_{k+1} = T_k^p M_k,
so that M_k = X_k^p A and X_k -> A^(-1/p) as M_k -> I, with the scaling and
stopping rule of Anil et al. (2020), "Scalable Second Order Optimization for
Deep Learning" (Distributed Shampoo, matrix_inverse_pth_root):
    A = L + epsilon * lambda I, lambda a power-iteration estimate of lambda_max(L),
    z = (p + 1) / (2 ||A||_F),
    iterate while max|M - I| > tolerance and fewer than max_iterations steps;
    an iteration whose max|M - I| exceeds 1.2 times the previous one is
    discarded and ends the loop.
One matrix at a time (the optimizer runs batches; each matrix stops on its own).
"""
import numpy as np

MAX_ITERATIONS = 100
TOLERANCE = 1e-12  # float64
GROWTH = 1.2
POWER_ITERATIONS = 16


def largest_eigenvalue(matrix, iterations=POWER_ITERATIONS):
    """Rayleigh quotient after ``iterations`` power iterations with (L / ||L||_F)^4 from x_i = 2 + cos(i)."""
    norm = np.linalg.norm(matrix)
    scaled = matrix / norm if norm > 0 else matrix
    fourth = (scaled @ scaled) @ (scaled @ scaled)
    x = 2.0 + np.cos(np.arange(len(matrix), dtype=np.float64))
    x = x / np.linalg.norm(x)
    for _ in range(iterations):
        y = fourth @ x
        length = np.linalg.norm(y)
        x = y / length if length > 0 else y
    return float(x @ matrix @ x)


def inverse_root(statistic, p, epsilon, max_iterations=MAX_ITERATIONS, tolerance=TOLERANCE):
    """(L + epsilon * lambda I)^(-1/p) by the coupled Newton iteration; the identity for L = 0.

    Returns ``(root, iterations taken, final max|M - I|)``.
    """
    a = 0.5 * statistic + 0.5 * statistic.T
    n = len(a)
    identity = np.eye(n)
    damped = a + epsilon * largest_eigenvalue(a) * identity
    norm = np.linalg.norm(damped)  # Frobenius
    if norm == 0.0:
        return identity, 0, 0.0
    z = (p + 1.0) / (2.0 * norm)
    x = identity * z ** (1.0 / p)
    m = z * damped
    error = np.abs(m - identity).max()
    iterations = 0
    while error > tolerance and iterations < max_iterations:
        t = ((p + 1.0) * identity - m) / p
        new_m = np.linalg.matrix_power(t, p) @ m
        new_error = np.abs(new_m - identity).max()
        iterations += 1
        if not new_error < GROWTH * error:
            break
        x, m, error = x @ t, new_m, new_error
    return x, iterations, error
