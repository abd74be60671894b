"""ADOPT reference.

Taniguchi, Harada, Minegishi, Oshima, Jeong, Nagahara, Iiyama, Suzuki,
Iwasawa, Matsuo (2024), "ADOPT: Modified Adam Can Converge with Any beta_2
with the Optimal Rate", arXiv:2411.02853, Algorithm 1 with the clipping of the
authors' recommended (clipped) version.

Step indexing: the paper's initial step (v_0 = g_0^2) is our t=1 and leaves the
parameter unchanged; the paper's update step s = t - 1 >= 1 uses the clip value
c_s = s^clip_exponent. clip_exponent=None disables clipping.
"""
import numpy as np


def init_state(param, **_):
    return {
        "m": np.zeros_like(param, dtype=np.float64),  # m_0 = 0
        "v": np.zeros_like(param, dtype=np.float64),
    }


def update(param, grad, state, t, learning_rate, *, beta_1=0.9, beta_2=0.9999,
           epsilon=1e-6, clip_exponent=0.25):
    """Return the new parameter after step t (1-based). Mutates state."""
    theta = np.asarray(param, dtype=np.float64)
    g = np.asarray(grad, dtype=np.float64)
    b1, b2 = beta_1, beta_2
    if t == 1:
        # v_0 = g_0^2; no parameter update
        state["v"] = g * g
        return theta.copy()
    s = t - 1  # paper's step index
    # g_s / max(sqrt(v_{s-1}), eps)
    normed = g / np.maximum(np.sqrt(state["v"]), epsilon)
    if clip_exponent is not None:
        # Clip(., c_s), c_s = s^{1/4}
        c = float(s) ** clip_exponent
        normed = np.clip(normed, -c, c)
    # m_s = beta_1 m_{s-1} + (1 - beta_1) Clip(g_s / max(sqrt(v_{s-1}), eps), c_s)
    state["m"] = b1 * state["m"] + (1.0 - b1) * normed
    # theta_s = theta_{s-1} - alpha_s m_s
    new_theta = theta - learning_rate * state["m"]
    # v_s = beta_2 v_{s-1} + (1 - beta_2) g_s^2
    state["v"] = b2 * state["v"] + (1.0 - b2) * g * g
    return new_theta
