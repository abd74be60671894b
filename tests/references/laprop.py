"""LaProp reference.

Ziyin, Wang, Ueda (2020), "LaProp: Separating Momentum and Adaptivity in Adam",
arXiv:2002.04839, Algorithm 1 with bias correction (constant learning rate).
Paper notation: momentum mu = beta_1, adaptivity nu = beta_2.
"""
import numpy as np


def init_state(param, **_):
    return {
        "m": np.zeros_like(param, dtype=np.float64),  # m_0 = 0
        "n": np.zeros_like(param, dtype=np.float64),  # n_0 = 0
    }


def update(param, grad, state, t, learning_rate, *, beta_1=0.9, beta_2=0.999,
           epsilon=1e-15):
    """Return the new parameter after step t (1-based). Mutates state."""
    theta = np.asarray(param, dtype=np.float64)
    g = np.asarray(grad, dtype=np.float64)
    b1, b2 = beta_1, beta_2
    # n_t = nu n_{t-1} + (1 - nu) g_t^2
    state["n"] = b2 * state["n"] + (1.0 - b2) * g * g
    # c_n = 1 - nu^t
    c_n = 1.0 - b2 ** t
    # m_t = mu m_{t-1} + (1 - mu) g_t / (sqrt(n_t / c_n) + eps)
    state["m"] = b1 * state["m"] + (1.0 - b1) * g / (np.sqrt(state["n"] / c_n) + epsilon)
    # c_m = 1 - mu^t
    c_m = 1.0 - b1 ** t
    # theta_t = theta_{t-1} - lambda m_t / c_m
    return theta - learning_rate * state["m"] / c_m
