"""Batch Renormalization and Ghost Batch Normalization references, float64.

Batch Renormalization: Ioffe (2017), "Batch Renormalization: Towards
Reducing Minibatch Dependence in Batch-Normalized Models", arXiv:1702.03275,
Algorithm 1, for one channel axis (the last), reducing over all others.
Variant notes: like Keras (and the paper author's TensorFlow code) the mu,
sigma that give r and d (``renorm_*``, rate ``1 - renorm_momentum``) are
kept apart from the inference pair (``moving_*``, rate ``1 - momentum``);
with equal momenta they are Algorithm 1's single pair. Keras floors sigma
at sqrt(epsilon) when dividing by it (inactive here: sigma >= sqrt(epsilon)
once it starts at 1).

Ghost Batch Normalization: Hoffer, Hubara, Soudry (2017), "Train longer,
generalize better", arXiv:1705.08741, section 4.1. Variant note: the moving
statistics are updated once per batch from the count-weighted means of the
ghost means and ghost variances (the paper applies the moving average once
per ghost batch).
"""
import numpy as np


# -- Batch Renormalization -------------------------------------------------------
def renorm_init_state(channels, moving_mean=0.0, moving_variance=1.0):
    mean = np.full(channels, moving_mean, dtype=np.float64)
    stddev = np.full(channels, np.sqrt(moving_variance), dtype=np.float64)
    return {"moving_mean": mean.copy(), "moving_stddev": stddev.copy(),
            "renorm_mean": mean.copy(), "renorm_stddev": stddev.copy()}


def batch_renorm_train(x, state, gamma, beta, *, r_max, d_max, momentum, renorm_momentum,
                       epsilon):
    """One training step of Algorithm 1. Returns (y, info); mutates state.

    ``info`` holds r and d before and after clipping, for checking that the
    clipping was active.
    """
    x = np.asarray(x, dtype=np.float64)
    axes = tuple(range(x.ndim - 1))
    m = np.prod([x.shape[a] for a in axes])
    # mu_B = 1/m sum_i x_i
    mu_b = x.sum(axis=axes) / m
    # sigma_B = sqrt(epsilon + 1/m sum_i (x_i - mu_B)^2)
    sigma_b = np.sqrt(epsilon + ((x - mu_b) ** 2).sum(axis=axes) / m)
    mu, sigma = state["renorm_mean"], state["renorm_stddev"]
    # r = stop_gradient(clip_[1/r_max, r_max](sigma_B / sigma))
    r_raw = sigma_b / sigma
    r = np.clip(r_raw, 1.0 / r_max, r_max)
    # d = stop_gradient(clip_[-d_max, d_max]((mu_B - mu) / sigma))
    d_raw = (mu_b - mu) / sigma
    d = np.clip(d_raw, -d_max, d_max)
    # x_hat_i = (x_i - mu_B) / sigma_B * r + d
    x_hat = (x - mu_b) / sigma_b * r + d
    # y_i = gamma x_hat_i + beta
    y = gamma * x_hat + beta
    # mu := mu + alpha (mu_B - mu);  sigma := sigma + alpha (sigma_B - sigma)
    alpha = 1.0 - renorm_momentum
    state["renorm_mean"] = mu + alpha * (mu_b - mu)
    state["renorm_stddev"] = sigma + alpha * (sigma_b - sigma)
    alpha = 1.0 - momentum  # the inference pair
    state["moving_mean"] = state["moving_mean"] + alpha * (mu_b - state["moving_mean"])
    state["moving_stddev"] = state["moving_stddev"] + alpha * (sigma_b - state["moving_stddev"])
    info = {"r_raw": r_raw, "r": r, "d_raw": d_raw, "d": d, "x_hat": x_hat,
            "x_hat_bn": (x - mu_b) / sigma_b, "sigma_b": sigma_b}
    return y, info


def batch_renorm_input_gradient(upstream, info, gamma):
    """d(sum(upstream * y)) / dx with r, d held constant (stop_gradient).

    y = gamma (r x_hat + d), x_hat = (x - mu_B) / sigma_B: the batch-norm
    backward pass scaled by r:
    dx = gamma r / sigma_B (g - mean(g) - x_hat mean(g x_hat)).
    """
    g = np.asarray(upstream, dtype=np.float64)
    axes = tuple(range(g.ndim - 1))
    x_hat = info["x_hat_bn"]
    return gamma * info["r"] / info["sigma_b"] * (
        g - g.mean(axis=axes) - x_hat * (g * x_hat).mean(axis=axes))


def batch_renorm_inference(x, state, gamma, beta):
    """y = gamma (x - mu) / sigma + beta with the inference pair."""
    return gamma * (np.asarray(x, np.float64) - state["moving_mean"]) / state["moving_stddev"] + beta


# -- Ghost Batch Normalization -----------------------------------------------------
def ghost_batch_norm_train(x, state, gamma, beta, *, virtual_batch_size, momentum, epsilon,
                           channel_axis=-1):
    """One training step: normalize each consecutive virtual batch on its own.

    ``state`` holds ``moving_mean`` and ``moving_variance``; mutated.
    """
    x = np.asarray(x, dtype=np.float64)
    channel_axis = channel_axis % x.ndim
    axes = tuple(a for a in range(x.ndim) if a != channel_axis)
    shape = [1] * x.ndim
    shape[channel_axis] = -1
    gamma, beta = np.reshape(gamma, shape), np.reshape(beta, shape)
    outputs, means, variances, counts = [], [], [], []
    for start in range(0, x.shape[0], virtual_batch_size):
        ghost = x[start:start + virtual_batch_size]  # the last one may be smaller
        n = ghost.size // ghost.shape[channel_axis]
        mean = ghost.sum(axis=axes, keepdims=True) / n
        variance = ((ghost - mean) ** 2).sum(axis=axes, keepdims=True) / n
        outputs.append(gamma * (ghost - mean) / np.sqrt(variance + epsilon) + beta)
        means.append(mean.reshape(-1))
        variances.append(variance.reshape(-1))
        counts.append(n)
    counts = np.asarray(counts, dtype=np.float64)[:, None]
    mean = (counts * np.asarray(means)).sum(axis=0) / counts.sum()
    variance = (counts * np.asarray(variances)).sum(axis=0) / counts.sum()
    state["moving_mean"] = momentum * state["moving_mean"] + (1.0 - momentum) * mean
    state["moving_variance"] = momentum * state["moving_variance"] + (1.0 - momentum) * variance
    return np.concatenate(outputs, axis=0)


def batch_norm_inference(x, state, gamma, beta, *, epsilon, channel_axis=-1):
    x = np.asarray(x, dtype=np.float64)
    shape = [1] * x.ndim
    shape[channel_axis % x.ndim] = -1
    mean = state["moving_mean"].reshape(shape)
    variance = state["moving_variance"].reshape(shape)
    return (np.reshape(gamma, shape) * (x - mean) / np.sqrt(variance + epsilon)
            + np.reshape(beta, shape))
