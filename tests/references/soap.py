"""SOAP reference (float64).

Vyas, Morwani, Zhao, Shapira, Brandfonbrener, Janson, Kakade (2024),
"SOAP: Improving and Stabilizing Shampoo using Adam", arXiv:2409.11321.

Algorithm 3 (one m x n layer, written here for any order and blocks):
    G' = Q_L^T G Q_R
    M = beta_1 M + (1 - beta_1) G            (first moment in the original space)
    M' = Q_L^T M Q_R
    V = beta_2 V + (1 - beta_2) G' * G'      (second moment in the rotated space)
    N' = M' / (sqrt(V) + eps)                (with Adam's bias correction here)
    N = Q_L N' Q_R^T
    W = W - eta N
    L = s L + (1 - s) G G^T;  R = s R + (1 - s) G^T G
    if t % f == 0: Q_L = Eigenvectors(L, Q_L); Q_R = Eigenvectors(R, Q_R)
Algorithm 4, Eigenvectors(P, Q): S = P Q; Q = QR(S) (one power iteration).
Deviation: the paper initialises the bases by an eigendecomposition after
step 1; here they start at the identity (so step 1 is an Adam step) and
every refresh, step 1 included, is one power iteration with P shifted by
matrix_epsilon * trace(P) * I (matrix_epsilon = 0: the paper's Algorithm 4),
which keeps the basis a continuous function of the factors when they are
rank-deficient (an eigendecomposition's basis of a degenerate eigenspace is
arbitrary). Order-k tensors: Q_i^T applied along every
preconditioned dimension i. Blocking and the dimensions that are not
preconditioned (1-D tensors, dimensions > max_preconditioner_dim: identity)
follow Shampoo's reference layout. statistics_compute_steps = k accumulates
L and R at steps 1, 1 + k, 1 + 2k, ... only (the refresh schedule is unchanged).
"""
import numpy as np

from references import soap_authors
from references.shampoo import _layout, mode_multiply, unfolded_gram


def init_state(param, *, block_size=128, max_preconditioner_dim=8192, paper_exact=False, **_):
    if paper_exact:  # the authors' code: its own transcription
        return soap_authors.init_state(param, max_preconditioner_dim=max_preconditioner_dim)
    dims, blocks = _layout(param.shape, block_size, max_preconditioner_dim)
    shapes = [[param[blk].shape[d] for d in dims] for blk in blocks]
    return {
        "m": np.zeros_like(param, dtype=np.float64),
        "v": np.zeros_like(param, dtype=np.float64),
        "dims": dims,
        "blocks": blocks,
        "L": [[np.zeros((n, n)) for n in row] for row in shapes],
        "Q": [[np.eye(n) for n in row] for row in shapes],
    }


def _rotate(x, state, back):
    out = np.array(x, dtype=np.float64)
    for b, blk in enumerate(state["blocks"]):
        xb = x[blk]
        for k, d in enumerate(state["dims"]):
            q = state["Q"][b][k]
            xb = mode_multiply(xb, q if back else q.T, d)
        out[blk] = xb
    return out


def _power_iteration(p, q, matrix_epsilon):
    """Algorithm 4 (S = P Q; Q = QR(S)) with P shifted by matrix_epsilon * trace(P) * I."""
    trace = np.trace(p)
    if trace <= 0.0:
        return q
    new, _ = np.linalg.qr((p + matrix_epsilon * trace * np.eye(len(p))) @ q)
    return new


def update(param, grad, state, t, learning_rate, *, beta_1=0.95, beta_2=0.95, epsilon=1e-8,
           shampoo_beta=0.95, matrix_epsilon=1e-3, precondition_frequency=10, block_size=128,
           max_preconditioner_dim=8192, statistics_compute_steps=1, paper_exact=False):
    """Return the new parameter after step t (1-based). Mutates state."""
    if paper_exact:
        return soap_authors.update(param, grad, state, t, learning_rate, beta_1=beta_1, beta_2=beta_2,
                                   epsilon=epsilon, shampoo_beta=shampoo_beta,
                                   precondition_frequency=precondition_frequency)
    w = np.asarray(param, dtype=np.float64)
    g = np.asarray(grad, dtype=np.float64)
    dims = state["dims"]

    state["m"] = beta_1 * state["m"] + (1.0 - beta_1) * g
    g_rot = _rotate(g, state, back=False) if dims else g
    m_rot = _rotate(state["m"], state, back=False) if dims else state["m"]
    state["v"] = beta_2 * state["v"] + (1.0 - beta_2) * g_rot * g_rot
    m_hat = m_rot / (1.0 - beta_1**t)
    v_hat = state["v"] / (1.0 - beta_2**t)
    n_rot = m_hat / (np.sqrt(v_hat) + epsilon)
    n = _rotate(n_rot, state, back=True) if dims else n_rot
    new_w = w - learning_rate * n

    for b, blk in enumerate(state["blocks"]):
        gb = g[blk]
        for k, d in enumerate(dims):
            stat = unfolded_gram(gb, d)
            if (t - 1) % statistics_compute_steps == 0 and shampoo_beta == 1.0:
                state["L"][b][k] = state["L"][b][k] + stat
            elif (t - 1) % statistics_compute_steps == 0:
                state["L"][b][k] = shampoo_beta * state["L"][b][k] + (1.0 - shampoo_beta) * stat
            if t == 1 or t % precondition_frequency == 0:
                state["Q"][b][k] = _power_iteration(state["L"][b][k], state["Q"][b][k], matrix_epsilon)
    return new_w
