"""Prodigy exactly as published (float64): Mishchenko, Defazio (2023),
"Prodigy: An Expeditiously Adaptive Parameter-Free Learner", arXiv:2306.06101
(v4), Algorithm 4 "Prodigy (Adam version)", what ``Prodigy(paper_exact=True)`` runs.

    Input: d_0 > 0, x_0, beta_1, beta_2, epsilon, learning rates gamma_k
    r_0 = 0, s_0 = 0, m_0 = 0, v_0 = 0
    for k = 0, ..., n:
        g_k = gradient at x_k
        m_{k+1} = beta_1 m_k + (1 - beta_1) d_k g_k
        v_{k+1} = beta_2 v_k + (1 - beta_2) d_k^2 g_k^2
        r_{k+1} = sqrt(beta_2) r_k + (1 - sqrt(beta_2)) gamma_k d_k^2 <g_k, x_0 - x_k>
        s_{k+1} = sqrt(beta_2) s_k + (1 - sqrt(beta_2)) gamma_k d_k^2 g_k
        d^_{k+1} = r_{k+1} / ||s_{k+1}||_1
        d_{k+1} = max(d_k, d^_{k+1})
        x_{k+1} = x_k - gamma_k d_k m_{k+1} / (sqrt(v_{k+1}) + d_k epsilon)

x is the concatenation of every tensor: one d, one inner product and one l1
norm over all of them. The paper has no weight decay, bias correction,
beta_3, d_coef, growth_rate or safeguard_warmup. Its d^ is 0/0 while every
gradient is zero; here d then stays (as in the package).
"""
import math

import numpy as np

from references._harness import zero_state

WHOLE_STEP = True


def init_state(params, d0=1e-6, **_):
    # r_0 = 0, s_0 = 0, m_0 = 0, v_0 = 0 (and x_0 for <g_k, x_0 - x_k>)
    return zero_state(params, "m", "v", "s", r=0.0, d=d0, x0=[p.copy() for p in params])


def update(params, grads, state, t, learning_rate, *, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
           d0=1e-6, weight_decay=0.0, paper_exact=True):
    """x_{k+1} from x_k and g_k (t = k + 1 is unused: every step is the same rule)."""
    assert not weight_decay, "Algorithm 4 has no weight decay"
    gamma, d, b = learning_rate, state["d"], math.sqrt(beta_2)
    for i, g in enumerate(grads):
        state["m"][i] = beta_1 * state["m"][i] + (1 - beta_1) * d * g
        state["v"][i] = beta_2 * state["v"][i] + (1 - beta_2) * d**2 * g**2
    correlation = sum(float(np.sum(g * (x0 - x))) for g, x0, x in zip(grads, state["x0"], params))
    state["r"] = b * state["r"] + (1 - b) * gamma * d**2 * correlation
    for i, g in enumerate(grads):
        state["s"][i] = b * state["s"][i] + (1 - b) * gamma * d**2 * g
    s_l1 = sum(float(np.sum(np.abs(s))) for s in state["s"])
    if s_l1 > 0:
        state["d"] = max(d, state["r"] / s_l1)
    return [x - gamma * d * m / (np.sqrt(v) + d * epsilon)
            for x, m, v in zip(params, state["m"], state["v"])]
