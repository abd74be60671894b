"""Shampoo reference (float64).

Gupta, Koren, Singer (2018), "Shampoo: Preconditioned Stochastic Tensor
Optimization", arXiv:1802.09568, Algorithm 2 (order-k tensors): one
statistic per dimension, H_t^i = H_{t-1}^i + G_t^(i), where G_t^(i) is the
contraction of G_t with itself over every dimension but i, and the update
G_t x_1 (H^1)^{-1/2k} ... x_k (H^k)^{-1/2k}.

With the practical choices of Anil, Gupta, Koren, Regan, Singer (2020),
"Scalable Second Order Optimization for Deep Learning", arXiv:2002.09018:
  - statistics as an exponential moving average (statistics_decay < 1; statistics_decay = 1 is
    the paper's sum),
  - inverse p-th roots recomputed every `precondition_frequency` steps from
    `start_preconditioning_step` on, and held in between,
  - damping epsilon * lambda_max added before the root,
  - large dimensions cut into blocks, each preconditioned separately;
    dimensions above `max_preconditioner_dim` (and 1-D tensors) are not
    preconditioned,
  - layer-wise grafting: the direction of the Shampoo update with the norm
    (per tensor) of an Adam / AdaGrad / SGD step,
  - momentum (moving average) on the grafted update.
Before preconditioning starts (and for tensors without a preconditioned
dimension) the grafting step itself is used (the gradient when grafting is
None).
Roots: root_method="eigh" by eigendecomposition (inverse_root below),
"newton" by the coupled Newton iteration of references/coupled_newton.py,
whose damping uses a power-iteration estimate of lambda_max.
Statistics (Distributed Shampoo's statistics_compute_steps = k) are
accumulated at steps 1, 1 + k, 1 + 2k, ... only.
"""
import itertools

import numpy as np

from references import coupled_newton, shampoo_gupta2018


def _block_starts(size, block_size):
    return [(start, min(start + block_size, size)) for start in range(0, size, block_size)]


def _layout(shape, block_size, max_preconditioner_dim):
    """Preconditioned dims and the list of block index tuples (slices)."""
    if len(shape) < 2:
        return [], []
    dims = [i for i, d in enumerate(shape) if d <= max_preconditioner_dim]
    ranges = [
        _block_starts(d, block_size) if i in dims else [(0, d)] for i, d in enumerate(shape)
    ]
    blocks = [tuple(slice(a, b) for a, b in combo) for combo in itertools.product(*ranges)]
    return dims, blocks


def matrix_power_sym(matrix, power):
    """matrix^power for a symmetric PSD matrix, in float64 by eigendecomposition."""
    w, v = np.linalg.eigh(matrix)
    return (v * w**power) @ v.T


def inverse_root(statistic, p, epsilon):
    """(H + epsilon * lambda_max(H) I)^(-1/p); identity for H = 0."""
    h = 0.5 * (statistic + statistic.T)
    w, v = np.linalg.eigh(h)
    w = np.maximum(w, 0.0)
    lam_max = w.max()
    if lam_max <= 0.0:
        return np.eye(len(h))
    damped = w + epsilon * lam_max
    return (v * damped ** (-1.0 / p)) @ v.T


def unfolded_gram(block, i):
    """G^(i) = G_(i) G_(i)^T with G_(i) the mode-i unfolding (d_i x prod other dims)."""
    unfolding = np.moveaxis(block, i, 0).reshape(block.shape[i], -1)
    return unfolding @ unfolding.T


def mode_multiply(block, matrix, i):
    """block x_i matrix: multiply the mode-i unfolding from the left by matrix."""
    moved = np.moveaxis(block, i, 0)
    shape = moved.shape
    product = (matrix @ moved.reshape(shape[0], -1)).reshape(shape)
    return np.moveaxis(product, 0, i)


def init_state(param, *, block_size=128, max_preconditioner_dim=8192, paper_exact=False, **hyper):
    if paper_exact:  # Gupta et al. 2018 as published: its own transcription
        return shampoo_gupta2018.init_state(param, **hyper)
    dims, blocks = _layout(param.shape, block_size, max_preconditioner_dim)
    state = {
        "m": np.zeros_like(param, dtype=np.float64),
        "v": np.zeros_like(param, dtype=np.float64),
        "dims": dims,
        "blocks": blocks,
        # statistics[b][i] and roots[b][i]: block b, dimension dims[i]
        "H": [[np.zeros((param[blk].shape[d],) * 2) for d in dims] for blk in blocks],
        "R": [[None for _ in dims] for _ in blocks],
    }
    return state


def update(param, grad, state, t, learning_rate, *, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
           statistics_decay=0.999, matrix_epsilon=1e-3, precondition_frequency=10,
           start_preconditioning_step=10, block_size=128, max_preconditioner_dim=8192,
           exponent_override=None, grafting="adam", root_method="eigh", statistics_compute_steps=1,
           paper_exact=False):
    """Return the new parameter after step t (1-based). Mutates state."""
    if paper_exact:
        return shampoo_gupta2018.update(param, grad, state, t, learning_rate,
                                        matrix_epsilon=matrix_epsilon)
    w = np.asarray(param, dtype=np.float64)
    g = np.asarray(grad, dtype=np.float64)

    # Grafting step D.
    if grafting == "adam":
        state["v"] = beta_2 * state["v"] + (1.0 - beta_2) * g * g
        v_hat = state["v"] / (1.0 - beta_2**t)
        graft = g / (np.sqrt(v_hat) + epsilon)
    elif grafting == "adagrad":
        state["v"] = state["v"] + g * g
        graft = g / (np.sqrt(state["v"]) + epsilon)
    else:  # "sgd" or None
        graft = g

    dims = state["dims"]
    if dims:
        p = exponent_override if exponent_override is not None else 2 * len(dims)
        refresh = t >= start_preconditioning_step and (
            (t - start_preconditioning_step) % precondition_frequency == 0
        )
        shampoo = np.zeros_like(g)
        accumulate = (t - 1) % statistics_compute_steps == 0
        for b, blk in enumerate(state["blocks"]):
            gb = g[blk]
            for k, d in enumerate(dims):
                if accumulate:
                    state["H"][b][k] = (statistics_decay * state["H"][b][k]
                                        + (1.0 - statistics_decay) * unfolded_gram(gb, d)
                                        if statistics_decay != 1.0
                                        else state["H"][b][k] + unfolded_gram(gb, d))
                if refresh and root_method == "newton":
                    state["R"][b][k] = coupled_newton.inverse_root(state["H"][b][k], p, matrix_epsilon)[0]
                elif refresh:
                    state["R"][b][k] = inverse_root(state["H"][b][k], p, matrix_epsilon)
            if t >= start_preconditioning_step:
                pb = gb
                for k, d in enumerate(dims):
                    pb = mode_multiply(pb, state["R"][b][k], d)
                shampoo[blk] = pb
        if t >= start_preconditioning_step:
            if grafting is not None:
                norm = np.linalg.norm(shampoo)
                shampoo = shampoo * (np.linalg.norm(graft) / norm if norm > 0 else 0.0)
            u = shampoo
        else:
            u = graft
    else:
        u = graft

    state["m"] = beta_1 * state["m"] + (1.0 - beta_1) * u
    return w - learning_rate * state["m"]
