"""MADGRAD reference.

Defazio, Jelassi (2021), "Adaptivity without Compromise: A Momentumized,
Adaptive, Dual Averaged Gradient Method for Stochastic Optimization",
arXiv:2101.11075, Algorithm 1, with constant gamma_k = learning_rate and
constant c_{k+1} = 1 - momentum. Paper iteration k = t - 1 (0-based).
"""
import numpy as np


def init_state(param, **_):
    return {
        "x0": np.array(param, dtype=np.float64, copy=True),  # x_0
        "s": np.zeros_like(param, dtype=np.float64),         # s_0 = 0
        "nu": np.zeros_like(param, dtype=np.float64),        # nu_0 = 0
    }


def update(param, grad, state, t, learning_rate, *, momentum=0.9, epsilon=1e-6):
    """Return the new parameter after step t (1-based). Mutates state."""
    x = np.asarray(param, dtype=np.float64)
    g = np.asarray(grad, dtype=np.float64)
    k = t - 1
    # lambda_k = gamma_k sqrt(k + 1)
    lam = learning_rate * np.sqrt(k + 1.0)
    # s_{k+1} = s_k + lambda_k g_k
    state["s"] = state["s"] + lam * g
    # nu_{k+1} = nu_k + lambda_k (g_k o g_k)
    state["nu"] = state["nu"] + lam * g * g
    # z_{k+1} = x_0 - s_{k+1} / (nu_{k+1}^{1/3} + eps)
    z = state["x0"] - state["s"] / (np.cbrt(state["nu"]) + epsilon)
    # x_{k+1} = (1 - c_{k+1}) x_k + c_{k+1} z_{k+1},  c = 1 - momentum
    c = 1.0 - momentum
    return (1.0 - c) * x + c * z
