"""Signum reference.

Bernstein, Wang, Azizzadenesheli, Anandkumar (2018), "signSGD: Compressed
Optimisation for Non-Convex Problems", arXiv:1802.04434, the SIGNUM algorithm box.
Here ``momentum`` is the paper's beta and learning_rate its delta.
"""
import numpy as np


def init_state(param, **_):
    return {"m": np.zeros_like(param, dtype=np.float64)}  # m_0 = 0


def update(param, grad, state, t, learning_rate, *, momentum=0.9):
    """Return the new parameter after step t (1-based). Mutates state."""
    del t
    x = np.asarray(param, dtype=np.float64)
    g = np.asarray(grad, dtype=np.float64)
    # m_{k+1} = beta m_k + (1 - beta) g_k
    state["m"] = momentum * state["m"] + (1.0 - momentum) * g
    # x_{k+1} = x_k - delta sign(m_{k+1})
    return x - learning_rate * np.sign(state["m"])
