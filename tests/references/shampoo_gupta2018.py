"""Shampoo exactly as published (float64): Gupta, Koren, Singer (2018),
"Shampoo: Preconditioned Stochastic Tensor Optimization", arXiv:1802.09568,
Algorithm 2 (order-k tensors), what ``Shampoo(paper_exact=True)`` runs.

    Initialize: W_1 = 0 (here: the given W), H_0^i = epsilon I_{n_i} for i = 1..k
    for t = 1, ..., T:
        receive G_t
        for i = 1..k:  H_t^i = H_{t-1}^i + G_t^(i)
        G~_t = G_t x_1 (H_t^1)^(-1/2k) x_2 ... x_k (H_t^k)^(-1/2k)
        W_{t+1} = W_t - eta G~_t

G_t^(i) is the contraction of G_t with itself over every dimension but i
(for a matrix: G G^T and G^T G; for a vector, k = 1: g g^T and the update
H^(-1/2) g, full-matrix AdaGrad). No grafting, no momentum, no blocks. Matrix
powers by symmetric eigendecomposition in float64.
"""
import numpy as np


def _contraction(tensor, i):
    """G^(i): G contracted with itself over every dimension but i (n_i x n_i)."""
    others = [a for a in range(tensor.ndim) if a != i]
    return np.tensordot(tensor, tensor, axes=(others, others))


def _power(symmetric, exponent):
    eigenvalues, eigenvectors = np.linalg.eigh(symmetric)
    return (eigenvectors * eigenvalues**exponent) @ eigenvectors.T


def _times(tensor, matrix, i):
    """tensor x_i matrix: every mode-i fibre multiplied by matrix."""
    return np.moveaxis(np.tensordot(matrix, tensor, axes=([1], [i])), 0, i)


def init_state(param, *, matrix_epsilon=1e-3, **_):
    if param.ndim == 0:
        return {"H": []}
    return {"H": [matrix_epsilon * np.eye(n) for n in param.shape]}


def update(param, grad, state, t, learning_rate, *, matrix_epsilon=1e-3, **_):
    """W_{t+1} from W_t and G_t (t 1-based; unused: every step is the same rule)."""
    w = np.asarray(param, np.float64)
    g = np.asarray(grad, np.float64)
    k = g.ndim
    if k == 0:
        return w - learning_rate * g
    for i in range(k):
        state["H"][i] = state["H"][i] + _contraction(g, i)
    preconditioned = g
    for i in range(k):
        preconditioned = _times(preconditioned, _power(state["H"][i], -1.0 / (2 * k)), i)
    return w - learning_rate * preconditioned
