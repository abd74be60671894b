"""RAdam reference.

Liu, Jiang, He, Chen, Liu, Gao, Han (2019), "On the Variance of the Adaptive
Learning Rate and Beyond", arXiv:1908.03265, Algorithm 2.

Variant notes: the tractability test uses ``rho_t > sma_threshold`` (default 5,
as in the authors' code; the paper's Algorithm 2 writes ``rho_t > 4``), and
epsilon is added to sqrt(v_hat) (the paper writes l_t = sqrt((1-beta_2^t)/v_t)).
"""
import math

import numpy as np


def init_state(param, **_):
    return {
        "m": np.zeros_like(param, dtype=np.float64),  # m_0 = 0
        "v": np.zeros_like(param, dtype=np.float64),  # v_0 = 0
    }


def update(param, grad, state, t, learning_rate, *, beta_1=0.9, beta_2=0.999,
           epsilon=1e-7, sma_threshold=5.0):
    """Return the new parameter after step t (1-based). Mutates state."""
    theta = np.asarray(param, dtype=np.float64)
    g = np.asarray(grad, dtype=np.float64)
    b1, b2 = beta_1, beta_2
    # rho_inf = 2 / (1 - beta_2) - 1
    rho_inf = 2.0 / (1.0 - b2) - 1.0
    # v_t = beta_2 v_{t-1} + (1 - beta_2) g_t^2
    state["v"] = b2 * state["v"] + (1.0 - b2) * g * g
    # m_t = beta_1 m_{t-1} + (1 - beta_1) g_t
    state["m"] = b1 * state["m"] + (1.0 - b1) * g
    # m_hat_t = m_t / (1 - beta_1^t)
    m_hat = state["m"] / (1.0 - b1 ** t)
    # rho_t = rho_inf - 2 t beta_2^t / (1 - beta_2^t)
    rho_t = rho_inf - 2.0 * t * b2 ** t / (1.0 - b2 ** t)
    if rho_t > sma_threshold:
        # l_t = sqrt((1 - beta_2^t) / v_t)  ->  1 / (sqrt(v_t / (1 - beta_2^t)) + eps)
        v_hat = state["v"] / (1.0 - b2 ** t)
        # r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
        r_t = math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                        / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
        # theta_t = theta_{t-1} - alpha_t r_t m_hat_t l_t
        return theta - learning_rate * r_t * m_hat / (np.sqrt(v_hat) + epsilon)
    # theta_t = theta_{t-1} - alpha_t m_hat_t   (un-adapted momentum)
    return theta - learning_rate * m_hat
