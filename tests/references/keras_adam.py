"""Keras's Adam, as a reference for wrapping a built-in optimizer.

Kingma and Ba (2015), "Adam: A Method for Stochastic Optimization",
arXiv:1412.6980, Algorithm 1 with the efficiency note at the end of
section 2 (epsilon-hat form), which is what ``keras.optimizers.Adam`` does:
alpha_t = lr sqrt(1 - beta_2^t) / (1 - beta_1^t),
theta_t = theta_{t-1} - alpha_t m_t / (sqrt(v_t) + epsilon).
"""
import numpy as np


def init_state(param, **_):
    return {"m": np.zeros_like(param, dtype=np.float64), "v": np.zeros_like(param, dtype=np.float64)}


def update(param, grad, state, t, learning_rate, *, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    state["m"] = beta_1 * state["m"] + (1.0 - beta_1) * grad
    state["v"] = beta_2 * state["v"] + (1.0 - beta_2) * grad * grad
    alpha = learning_rate * np.sqrt(1.0 - beta_2**t) / (1.0 - beta_1**t)
    return param - alpha * state["m"] / (np.sqrt(state["v"]) + epsilon)
