"""QHM reference.

Ma, Yarats (2019), "Quasi-hyperbolic momentum and Adam for deep learning",
arXiv:1810.06801, QHM (Section 2, Eqs. for g_{t+1} and theta_{t+1}).
Here ``momentum`` is the paper's beta.
"""
import numpy as np


def init_state(param, **_):
    return {"buf": np.zeros_like(param, dtype=np.float64)}  # g_0 = 0


def update(param, grad, state, t, learning_rate, *, momentum=0.999, nu=0.7):
    """Return the new parameter after step t (1-based). Mutates state."""
    del t
    theta = np.asarray(param, dtype=np.float64)
    g = np.asarray(grad, dtype=np.float64)
    # g_{t+1} = beta g_t + (1 - beta) grad
    state["buf"] = momentum * state["buf"] + (1.0 - momentum) * g
    # theta_{t+1} = theta_t - alpha [(1 - nu) grad + nu g_{t+1}]
    return theta - learning_rate * ((1.0 - nu) * g + nu * state["buf"])
