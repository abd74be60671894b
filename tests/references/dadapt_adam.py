"""D-Adapted Adam reference.

Defazio, Mishchenko (2023), "Learning-Rate-Free Learning by D-Adaptation",
ICML 2023, arXiv:2301.07733, Adam variant in the form of the authors'
dadaptation.DAdaptAdam (version 3) step, with decoupled weight decay
(decouple=True). One d for all tensors. Deviation kept in both: when
||s||_1 = 0 d stays and the step is still taken (the authors' code returns).
paper_exact=True: the paper's algorithm as printed (references/dadapt_adam_defazio2023.py).
"""
import math

import numpy as np

from references import dadapt_adam_defazio2023
from references._harness import zero_state

WHOLE_STEP = True


def init_state(params, d0=1e-6, paper_exact=False, **_):
    if paper_exact:  # the paper's algorithm as printed: its own transcription
        return dadapt_adam_defazio2023.init_state(params, d0=d0)
    return zero_state(params, "s", "m", "v", r=0.0, d=d0)


def update(params, grads, state, t, learning_rate, *, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
           d0=1e-6, growth_rate=math.inf, use_bias_correction=False, weight_decay=0.0, paper_exact=False):
    if paper_exact:  # the optimizer refuses the options the paper lacks
        return dadapt_adam_defazio2023.update(params, grads, state, t, learning_rate, beta_1=beta_1,
                                              beta_2=beta_2, epsilon=epsilon, d0=d0,
                                              weight_decay=weight_decay)
    b = math.sqrt(beta_2)
    d = state["d"]
    bc = math.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t) if use_bias_correction else 1.0
    dlr = d * learning_rate * bc
    inner, s_norm = 0.0, 0.0
    for i, g in enumerate(grads):
        # <g_k, s_k>_{A_k^{-1}} with A_k = diag(sqrt(v_k) + eps), before this step's updates
        inner += dlr * float(np.sum(g * state["s"][i] / (np.sqrt(state["v"][i]) + epsilon)))
        # m_{k+1} = beta_1 m_k + (1 - beta_1) dlr g_k ; v_{k+1} = beta_2 v_k + (1 - beta_2) g_k^2
        state["m"][i] = beta_1 * state["m"][i] + (1 - beta_1) * dlr * g
        state["v"][i] = beta_2 * state["v"][i] + (1 - beta_2) * g * g
        # s_{k+1} = sqrt(beta_2) s_k + (1 - sqrt(beta_2)) dlr g_k
        state["s"][i] = b * state["s"][i] + (1 - b) * dlr * g
        s_norm += float(np.sum(np.abs(state["s"][i])))
    # r_{k+1} = sqrt(beta_2) r_k + (1 - sqrt(beta_2)) inner
    state["r"] = b * state["r"] + (1 - b) * inner
    if s_norm > 0:
        # d_hat = r_{k+1} / ((1 - sqrt(beta_2)) ||s_{k+1}||_1) ; d_{k+1} = max(d_k, min(d_hat, d_k growth))
        d_hat = state["r"] / ((1 - b) * s_norm)
        state["d"] = max(d, min(d_hat, d * growth_rate))
    # x_{k+1} = x_k - dlr lambda x_k - m_{k+1} / (sqrt(v_{k+1}) + eps)
    return [x - dlr * weight_decay * x - m / (np.sqrt(v) + epsilon)
            for x, m, v in zip(params, state["m"], state["v"])]
