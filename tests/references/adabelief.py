"""AdaBelief reference.

Zhuang, Tang, Ding, Tatikonda, Dvornek, Papademetris, Duncan (2020),
"AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed Gradients",
arXiv:2010.07468, Algorithm 2.

Options: ``amsgrad`` keeps the running maximum of s_t; ``rectify`` applies the
RAdam rectification (Liu et al. 2019, arXiv:1908.03265, Algorithm 2) with s_t
in place of v_t, falling back to theta -= lr * m_hat when rho_t <= sma_threshold.
"""
import math

import numpy as np


def init_state(param, **_):
    return {
        "m": np.zeros_like(param, dtype=np.float64),      # m_0 = 0
        "s": np.zeros_like(param, dtype=np.float64),      # s_0 = 0
        "s_max": np.zeros_like(param, dtype=np.float64),  # only used with amsgrad
    }


def update(param, grad, state, t, learning_rate, *, beta_1=0.9, beta_2=0.999,
           epsilon=1e-16, amsgrad=False, rectify=False, sma_threshold=5.0):
    """Return the new parameter after step t (1-based). Mutates state."""
    theta = np.asarray(param, dtype=np.float64)
    g = np.asarray(grad, dtype=np.float64)
    b1, b2, eps = beta_1, beta_2, epsilon
    # m_t = beta_1 m_{t-1} + (1 - beta_1) g_t
    state["m"] = b1 * state["m"] + (1.0 - b1) * g
    # s_t = beta_2 s_{t-1} + (1 - beta_2) (g_t - m_t)^2 + eps
    state["s"] = b2 * state["s"] + (1.0 - b2) * (g - state["m"]) ** 2 + eps
    s = state["s"]
    if amsgrad:
        # s_t <- max(s_{t-1}^max, s_t)
        state["s_max"] = np.maximum(state["s_max"], state["s"])
        s = state["s_max"]
    # Bias correction: m_hat_t = m_t / (1 - beta_1^t), s_hat_t = s_t / (1 - beta_2^t)
    m_hat = state["m"] / (1.0 - b1 ** t)
    s_hat = s / (1.0 - b2 ** t)
    if not rectify:
        # theta_t = theta_{t-1} - alpha m_hat_t / (sqrt(s_hat_t) + eps)
        return theta - learning_rate * m_hat / (np.sqrt(s_hat) + eps)
    # RAdam rectification with s_t in place of v_t
    rho_inf = 2.0 / (1.0 - b2) - 1.0
    rho_t = rho_inf - 2.0 * t * b2 ** t / (1.0 - b2 ** t)
    if rho_t > sma_threshold:
        r_t = math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                        / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
        return theta - learning_rate * r_t * m_hat / (np.sqrt(s_hat) + eps)
    return theta - learning_rate * m_hat
