"""Adan reference.

Xie, Zhou, Li, Lin, Yan (2022), "Adan: Adaptive Nesterov Momentum Algorithm
for Faster Optimizing Deep Models", arXiv:2208.06677, Algorithm 1 (no weight
decay, no restart), with the zero initialisation and bias correction of the
authors' official implementation (github.com/sail-sg/Adan).

Keras convention: beta_i here is "decay of the old value", i.e. 1 minus the
paper's beta_i (paper defaults 0.02, 0.08, 0.01 -> 0.98, 0.92, 0.99). The
paper's (1 - beta_2) factor on the gradient difference is therefore beta_2 here.
At t=1 the previous gradient is the current one, so g_1 - g_0 = 0.
"""
import numpy as np


def init_state(param, **_):
    return {
        "m": np.zeros_like(param, dtype=np.float64),       # m_0 = 0
        "v": np.zeros_like(param, dtype=np.float64),       # v_0 = 0
        "n": np.zeros_like(param, dtype=np.float64),       # n_0 = 0
        "g_prev": np.zeros_like(param, dtype=np.float64),  # g_{k-1}; set to g_1 at t=1
    }


def update(param, grad, state, t, learning_rate, *, beta_1=0.98, beta_2=0.92,
           beta_3=0.99, epsilon=1e-8):
    """Return the new parameter after step t (1-based). Mutates state."""
    theta = np.asarray(param, dtype=np.float64)
    g = np.asarray(grad, dtype=np.float64)
    b1, b2, b3 = beta_1, beta_2, beta_3
    if t == 1:
        state["g_prev"] = g.copy()  # g_0 := g_1
    diff = g - state["g_prev"]      # g_k - g_{k-1}
    # m_k = (1 - beta_1) m_{k-1} + beta_1 g_k                                [paper notation]
    state["m"] = b1 * state["m"] + (1.0 - b1) * g
    # v_k = (1 - beta_2) v_{k-1} + beta_2 (g_k - g_{k-1})
    state["v"] = b2 * state["v"] + (1.0 - b2) * diff
    # n_k = (1 - beta_3) n_{k-1} + beta_3 [g_k + (1 - beta_2)(g_k - g_{k-1})]^2
    state["n"] = b3 * state["n"] + (1.0 - b3) * (g + b2 * diff) ** 2
    # bias correction (official implementation)
    m_hat = state["m"] / (1.0 - b1 ** t)
    v_hat = state["v"] / (1.0 - b2 ** t)
    n_hat = state["n"] / (1.0 - b3 ** t)
    # eta_k = eta / (sqrt(n_k) + eps)
    # theta_{k+1} = theta_k - eta_k o (m_k + (1 - beta_2) v_k)              [lambda_k = 0]
    new_theta = theta - learning_rate * (m_hat + b2 * v_hat) / (np.sqrt(n_hat) + epsilon)
    state["g_prev"] = g.copy()
    return new_theta
