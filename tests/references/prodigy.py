"""Prodigy (Adam version) reference.

Mishchenko, Defazio (2023), "Prodigy: An Expeditiously Adaptive
Parameter-Free Learner", arXiv:2306.06101, Algorithm 4, in the form of the
authors' prodigyopt step (weights (d/d0) dlr on r and s instead of the
paper's (1 - sqrt(beta_2)) gamma d^2, which cancel in d_hat = r / ||s||_1;
epsilon scaled by the new d; growth_rate and d_coef). One d for all tensors.
Deviation kept in both: when ||s||_1 = 0 d stays and the step is still taken
(prodigyopt returns without a step). paper_exact=True: Algorithm 4 as printed
(references/prodigy_mishchenko2023.py).
"""
import math

import numpy as np

from references import prodigy_mishchenko2023

WHOLE_STEP = True


def init_state(params, d0=1e-6, paper_exact=False, **_):
    if paper_exact:  # Algorithm 4 as printed: its own transcription
        return prodigy_mishchenko2023.init_state(params, d0=d0)
    return {
        "x0": [p.copy() for p in params],              # x_0
        "s": [np.zeros_like(p) for p in params],        # s_0 = 0
        "m": [np.zeros_like(p) for p in params],        # m_0 = 0
        "v": [np.zeros_like(p) for p in params],        # v_0 = 0
        "r": 0.0, "d": d0, "d_max": d0,                 # r_0 = 0, d_0
    }


def update(params, grads, state, t, learning_rate, *, beta_1=0.9, beta_2=0.999, beta_3=None,
           epsilon=1e-8, d0=1e-6, d_coef=1.0, growth_rate=math.inf,
           use_bias_correction=False, safeguard_warmup=False, weight_decay=0.0, paper_exact=False):
    if paper_exact:  # the optimizer refuses the options Algorithm 4 lacks
        return prodigy_mishchenko2023.update(params, grads, state, t, learning_rate, beta_1=beta_1,
                                             beta_2=beta_2, epsilon=epsilon, d0=d0,
                                             weight_decay=weight_decay)
    beta_3 = math.sqrt(beta_2) if beta_3 is None else beta_3
    d = state["d"]
    bc = math.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t) if use_bias_correction else 1.0
    dlr = d * learning_rate * bc
    # r_{k+1} = beta_3 r_k + (d/d0) dlr <g_k, x_0 - x_k>
    r = beta_3 * state["r"] + (d / d0) * dlr * sum(
        float(np.sum(g * (x0 - x))) for g, x0, x in zip(grads, state["x0"], params))
    s_norm = 0.0
    for i, g in enumerate(grads):
        # s_{k+1} = beta_3 s_k + (d/d0) dlr g_k   (d instead of dlr with safeguard_warmup)
        state["s"][i] = beta_3 * state["s"][i] + (d / d0) * (d if safeguard_warmup else dlr) * g
        s_norm += float(np.sum(np.abs(state["s"][i])))
        # m_{k+1} = beta_1 m_k + (1 - beta_1) d_k g_k ; v_{k+1} = beta_2 v_k + (1 - beta_2) d_k^2 g_k^2
        state["m"][i] = beta_1 * state["m"][i] + (1 - beta_1) * d * g
        state["v"][i] = beta_2 * state["v"][i] + (1 - beta_2) * d * d * g * g
    state["r"] = r
    if s_norm > 0:
        # d_hat = d_coef r_{k+1} / ||s_{k+1}||_1
        d_hat = d_coef * r / s_norm
        new_d = max(d, d_hat) if d == d0 else d
        state["d_max"] = max(state["d_max"], d_hat)
        # d_{k+1} = min(d_max, d growth_rate)
        state["d"] = min(state["d_max"], new_d * growth_rate)
    new_d = state["d"]
    # x_{k+1} = x_k - dlr lambda x_k - dlr m_{k+1} / (sqrt(v_{k+1}) + d_{k+1} eps)
    return [x - dlr * weight_decay * x - dlr * m / (np.sqrt(v) + new_d * epsilon)
            for x, m, v in zip(params, state["m"], state["v"])]
