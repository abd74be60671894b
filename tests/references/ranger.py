"""Ranger reference: per tensor, gradient centralization, then RAdam's update,
then Lookahead's synchronization every k steps (Wright 2019, the authors'
ranger.py: GC on every tensor of rank > 1, RAdam with the SGD fallback while
rho_t <= 5, slow weights initialized to the starting weights).
"""
from references import radam
from references.chain import centralize


def init_state(param, **_):
    state = radam.init_state(param)
    state["slow"] = param.copy()
    return state


def update(param, grad, state, t, learning_rate, *, beta_1=0.95, beta_2=0.999, epsilon=1e-5,
           sma_threshold=5.0, sync_period=6, slow_step_size=0.5, conv_only=False):
    grad = centralize([grad], [param], conv_only=conv_only)[0]
    param = radam.update(param, grad, state, t, learning_rate, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, sma_threshold=sma_threshold)
    if t % sync_period == 0:
        state["slow"] = state["slow"] + slow_step_size * (param - state["slow"])
        param = state["slow"].copy()
    return param
