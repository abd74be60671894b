"""AggMo reference.

Lucas, Sun, Zemel, Grosse (2019), "Aggregated Momentum: Stability Through
Passive Damping", arXiv:1804.00325, Section 3 (Eq. for v_t^(i) and theta_t).
"""
import numpy as np


def init_state(param, *, betas=(0.0, 0.9, 0.99), **_):
    # v_0^(i) = 0 for i = 1..K
    return {"velocities": [np.zeros_like(param, dtype=np.float64) for _ in betas]}


def update(param, grad, state, t, learning_rate, *, betas=(0.0, 0.9, 0.99)):
    """Return the new parameter after step t (1-based). Mutates state."""
    del t
    theta = np.asarray(param, dtype=np.float64)
    g = np.asarray(grad, dtype=np.float64)
    k = len(betas)
    # v_t^(i) = beta^(i) v_{t-1}^(i) - grad f(theta_{t-1})
    state["velocities"] = [b * v - g for b, v in zip(betas, state["velocities"])]
    # theta_t = theta_{t-1} + (gamma / K) sum_i v_t^(i)
    return theta + (learning_rate / k) * sum(state["velocities"])
