"""QHAdam reference.

Ma, Yarats (2019), "Quasi-hyperbolic momentum and Adam for deep learning",
arXiv:1810.06801, QHAdam (Algorithm / Section 4).
"""
import numpy as np


def init_state(param, **_):
    return {
        "g1": np.zeros_like(param, dtype=np.float64),  # g_0 = 0
        "g2": np.zeros_like(param, dtype=np.float64),  # s_0 = 0
    }


def update(param, grad, state, t, learning_rate, *, beta_1=0.995, beta_2=0.999,
           nu_1=0.7, nu_2=1.0, epsilon=1e-8):
    """Return the new parameter after step t (1-based). Mutates state."""
    theta = np.asarray(param, dtype=np.float64)
    g = np.asarray(grad, dtype=np.float64)
    b1, b2 = beta_1, beta_2
    # g_{t+1} = beta_1 g_t + (1 - beta_1) grad
    state["g1"] = b1 * state["g1"] + (1.0 - b1) * g
    # s_{t+1} = beta_2 s_t + (1 - beta_2) grad^2
    state["g2"] = b2 * state["g2"] + (1.0 - b2) * g * g
    # g_hat = (1 - beta_1^{t+1})^{-1} g_{t+1};  s_hat = (1 - beta_2^{t+1})^{-1} s_{t+1}
    g1_hat = state["g1"] / (1.0 - b1 ** t)
    g2_hat = state["g2"] / (1.0 - b2 ** t)
    # theta = theta - alpha [(1 - nu_1) grad + nu_1 g_hat] / (sqrt((1 - nu_2) grad^2 + nu_2 s_hat) + eps)
    num = (1.0 - nu_1) * g + nu_1 * g1_hat
    den = np.sqrt((1.0 - nu_2) * g * g + nu_2 * g2_hat) + epsilon
    return theta - learning_rate * num / den
