"""Yogi reference.

Zaheer, Reddi, Sachan, Kale, Kumar (2018), "Adaptive Methods for Nonconvex
Optimization", NeurIPS 2018, Algorithm 2 (Yogi).

Variant note: the paper omits debiasing "for clarity"; Adam's bias correction
is applied here to both moments, and v starts at initial_accumulator_value.
"""
import numpy as np


def init_state(param, *, initial_accumulator_value=1e-6, **_):
    return {
        "m": np.zeros_like(param, dtype=np.float64),  # m_0 = 0
        "v": np.full(np.shape(param), initial_accumulator_value, dtype=np.float64),  # v_0
    }


def update(param, grad, state, t, learning_rate, *, beta_1=0.9, beta_2=0.999,
           epsilon=1e-3, initial_accumulator_value=1e-6):
    """Return the new parameter after step t (1-based). Mutates state.

    initial_accumulator_value only matters in init_state.
    """
    del initial_accumulator_value
    x = np.asarray(param, dtype=np.float64)
    g = np.asarray(grad, dtype=np.float64)
    b1, b2 = beta_1, beta_2
    g2 = g * g
    # m_t = beta_1 m_{t-1} + (1 - beta_1) g_t
    state["m"] = b1 * state["m"] + (1.0 - b1) * g
    # v_t = v_{t-1} - (1 - beta_2) sign(v_{t-1} - g_t^2) g_t^2
    state["v"] = state["v"] - (1.0 - b2) * np.sign(state["v"] - g2) * g2
    # x_{t+1} = x_t - eta_t m_t / (sqrt(v_t) + eps), with Adam's debiasing of m_t, v_t
    m_hat = state["m"] / (1.0 - b1 ** t)
    v_hat = state["v"] / (1.0 - b2 ** t)
    return x - learning_rate * m_hat / (np.sqrt(v_hat) + epsilon)
