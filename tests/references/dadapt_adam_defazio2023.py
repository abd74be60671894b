"""D-Adapted Adam exactly as published (float64): Defazio, Mishchenko (2023),
"Learning-Rate-Free Learning by D-Adaptation", ICML 2023, arXiv:2301.07733
(v5), the Adam D-Adaptation algorithm, what ``DAdaptAdam(paper_exact=True)`` runs.

    Input: d_0 > 0, x_0, beta_1, beta_2, epsilon, learning rates gamma_k
    s_0 = 0, m_0 = 0, v_0 = 0, r_0 = 0
    for k = 0, ..., n:
        g_k = gradient at x_k
        m_{k+1} = beta_1 m_k + (1 - beta_1) d_k gamma_k g_k
        v_{k+1} = beta_2 v_k + (1 - beta_2) g_k^2
        A_{k+1} = diag(sqrt(v_{k+1}) + epsilon)
        x_{k+1} = x_k - A_{k+1}^{-1} m_{k+1}
        s_{k+1} = sqrt(beta_2) s_k + (1 - sqrt(beta_2)) d_k gamma_k g_k
        r_{k+1} = sqrt(beta_2) r_k + (1 - sqrt(beta_2)) d_k gamma_k <g_k, s_k>_{A_{k+1}^{-1}}
        d^_{k+1} = r_{k+1} / ((1 - sqrt(beta_2)) ||s_{k+1}||_1)
        d_{k+1} = max(d_k, d^_{k+1})

<a, b>_{A^{-1}} = sum a b / diag(A); x is the concatenation of every tensor
(one d, one inner product, one l1 norm). The paper has no weight decay, bias
correction or growth_rate. Its d^ is 0/0 while every gradient is zero; here
d then stays (as in the package).
"""
import math

import numpy as np

from references._harness import zero_state

WHOLE_STEP = True


def init_state(params, d0=1e-6, **_):
    return zero_state(params, "s", "m", "v", r=0.0, d=d0)  # s_0 = 0, m_0 = 0, v_0 = 0, r_0 = 0


def update(params, grads, state, t, learning_rate, *, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
           d0=1e-6, weight_decay=0.0, paper_exact=True):
    """x_{k+1} from x_k and g_k (t = k + 1 is unused: every step is the same rule)."""
    assert not weight_decay, "the paper's algorithm has no weight decay"
    new_params, inner, d, b = [], 0.0, state["d"], math.sqrt(beta_2)
    gamma = learning_rate
    for i, (x, g) in enumerate(zip(params, grads)):
        state["m"][i] = beta_1 * state["m"][i] + (1 - beta_1) * d * gamma * g
        state["v"][i] = beta_2 * state["v"][i] + (1 - beta_2) * g**2
        a = np.sqrt(state["v"][i]) + epsilon                      # diag(A_{k+1})
        new_params.append(x - state["m"][i] / a)
        inner += float(np.sum(g * state["s"][i] / a))              # <g_k, s_k>_{A_{k+1}^{-1}}
        state["s"][i] = b * state["s"][i] + (1 - b) * d * gamma * g
    state["r"] = b * state["r"] + (1 - b) * d * gamma * inner
    s_l1 = sum(float(np.sum(np.abs(s))) for s in state["s"])
    if s_l1 > 0:
        state["d"] = max(d, state["r"] / ((1 - b) * s_l1))
    return new_params
