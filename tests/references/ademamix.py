"""AdEMAMix reference.

Pagliardini, Ablin, Grangier (2024), "The AdEMAMix Optimizer: Better, Faster,
Older", arXiv:2409.03137, Algorithm 1 with the alpha and beta_3 schedulers
(no weight decay). Schedulers are evaluated at the 1-based step t.
"""
import math

import numpy as np


def init_state(param, **_):
    return {
        "m1": np.zeros_like(param, dtype=np.float64),  # m_1^(0) = 0
        "m2": np.zeros_like(param, dtype=np.float64),  # m_2^(0) = 0
        "nu": np.zeros_like(param, dtype=np.float64),  # nu^(0) = 0
    }


def alpha_scheduler(t, alpha, t_alpha):
    # alpha(t) = min(t alpha / T_alpha, alpha)
    if not t_alpha:
        return alpha
    return min(t * alpha / t_alpha, alpha)


def beta3_scheduler(t, beta_start, beta_end, t_beta3):
    # beta_3(t) = min(exp(ln(b_start) ln(b_end) /
    #                     ((1 - t/T) ln(b_end) + (t/T) ln(b_start))), b_end)
    if not t_beta3:
        return beta_end
    r = t / t_beta3
    ls, le = math.log(beta_start), math.log(beta_end)
    return min(math.exp(ls * le / ((1.0 - r) * le + r * ls)), beta_end)


def update(param, grad, state, t, learning_rate, *, beta_1=0.9, beta_2=0.999,
           beta_3=0.9999, alpha=5.0, epsilon=1e-8, alpha_warmup_steps=None,
           beta_3_warmup_steps=None):
    """Return the new parameter after step t (1-based). Mutates state."""
    theta = np.asarray(param, dtype=np.float64)
    g = np.asarray(grad, dtype=np.float64)
    b1, b2 = beta_1, beta_2
    alpha_t = alpha_scheduler(t, alpha, alpha_warmup_steps)
    b3_t = beta3_scheduler(t, b1, beta_3, beta_3_warmup_steps)  # beta_start = beta_1
    # m1 = beta_1 m1 + (1 - beta_1) g
    state["m1"] = b1 * state["m1"] + (1.0 - b1) * g
    # m2 = beta_3(t) m2 + (1 - beta_3(t)) g
    state["m2"] = b3_t * state["m2"] + (1.0 - b3_t) * g
    # nu = beta_2 nu + (1 - beta_2) g^2
    state["nu"] = b2 * state["nu"] + (1.0 - b2) * g * g
    # m1_hat = m1 / (1 - beta_1^t), nu_hat = nu / (1 - beta_2^t)
    m1_hat = state["m1"] / (1.0 - b1 ** t)
    nu_hat = state["nu"] / (1.0 - b2 ** t)
    # theta = theta - eta ((m1_hat + alpha(t) m2) / (sqrt(nu_hat) + eps))
    return theta - learning_rate * (m1_hat + alpha_t * state["m2"]) / (np.sqrt(nu_hat) + epsilon)
