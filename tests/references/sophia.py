"""Sophia reference: Liu, Li, Hall, Liang and Ma 2023, arXiv:2305.14342, Algorithm 3.

Per tensor, at 1-based step t with gradient g:
    m_t = beta_1 m_{t-1} + (1 - beta_1) g
    if t mod k == 1 (k = 1: every step): h_t = beta_2 h_{t-k} + (1 - beta_2) h_hat_t
    else h_t = h_{t-1}
    theta <- theta - lr * weight_decay * theta            (decoupled, after h_hat)
    theta <- theta - lr * clip(m_t / max(rho h_t, epsilon), -1, 1)

Estimators of the Hessian diagonal at theta_t on the step's batch:
    Hutchinson:              h_hat = u * (H u)
    Gauss-Newton-Bartlett:   h_hat = B * g_hat * g_hat, g_hat = gradient of the mean
                             loss over the B predictions on labels sampled from the model.

Also here, for the softmax-regression tests (logits = x W + b, mean cross-entropy):
gradients, Hessian-vector products and the Gauss-Newton diagonal, from the formulas.
"""
import numpy as np


class Sophia:
    """``step(params, grads, curvature) -> params``; ``curvature()`` gives h_hat."""

    def __init__(self, learning_rate, beta_1=0.965, beta_2=0.99, rho=0.04, epsilon=1e-12,
                 hessian_update_interval=10, weight_decay=0.0):
        self.lr, self.beta_1, self.beta_2 = learning_rate, beta_1, beta_2
        self.rho, self.epsilon, self.k, self.weight_decay = rho, epsilon, hessian_update_interval, weight_decay
        self.t, self.m, self.h = 0, None, None
        self.ratios = []  # m / max(rho h, eps) before clipping, per step (to see both clip branches)
        self.refreshed = []  # steps (1-based) whose h_hat was computed

    def step(self, params, grads, curvature):
        self.t += 1
        lr = self.lr(self.t) if callable(self.lr) else self.lr  # a function of the 1-based step
        if self.m is None:
            self.m = [np.zeros_like(p) for p in params]
            self.h = [np.zeros_like(p) for p in params]
        self.m = [self.beta_1 * m + (1 - self.beta_1) * g for m, g in zip(self.m, grads)]
        if self.t % self.k == 1 % self.k:
            self.refreshed.append(self.t)
            self.h = [self.beta_2 * h + (1 - self.beta_2) * e for h, e in zip(self.h, curvature())]
        new = []
        ratios = []
        for p, m, h in zip(params, self.m, self.h):
            p = p - lr * self.weight_decay * p
            ratio = m / np.maximum(self.rho * h, self.epsilon)
            ratios.append(ratio)
            new.append(p - lr * np.clip(ratio, -1.0, 1.0))
        self.ratios.append(ratios)
        return new


# -- softmax regression: logits = x W + b, loss = mean_i w_i CE(softmax(logits_i), y_i) --
def softmax(logits):
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def cross_entropy_gradient(x, W, b, labels, weights=None):
    """Gradient of (1/N) sum_i w_i CE_i for integer ``labels`` ((N,))."""
    n = len(x)
    weights = np.ones(n) if weights is None else weights
    residual = (softmax(x @ W + b) - np.eye(W.shape[1])[labels]) * weights[:, None] / n
    return [x.T @ residual, residual.sum(axis=0)]


def hessian_vector_product(x, W, b, U, u, weights=None):
    """H @ (U, u) of (1/N) sum_i w_i CE_i: per sample (diag(p) - p p^T) dz, dz = x U + u."""
    n = len(x)
    weights = np.ones(n) if weights is None else weights
    p = softmax(x @ W + b)
    dz = x @ U + u
    a_dz = p * dz - p * (p * dz).sum(axis=1, keepdims=True)
    a_dz = a_dz * weights[:, None] / n
    return [x.T @ a_dz, a_dz.sum(axis=0)]


def hessian_diagonal(x, W, b):
    """diag(H) of the mean cross-entropy (= the Gauss-Newton diagonal: logits are linear)."""
    p = softmax(x @ W + b)
    a = p * (1 - p) / len(x)  # diagonal of diag(p) - p p^T, averaged
    return [(x**2).T @ a, a.sum(axis=0)]


def gauss_newton_bartlett(x, W, b, sampled_labels, weights=None):
    """B * g_hat * g_hat, g_hat the mean loss gradient on the sampled labels (sqrt weights)."""
    n = len(x)
    root = None if weights is None else np.sqrt(weights)
    g_hat = cross_entropy_gradient(x, W, b, sampled_labels, root)
    return [n * g * g for g in g_hat]


def gaussian_gauss_newton_diagonal(x, outputs):
    """Gauss-Newton diagonal of mean_i mean_j (y_ij - (x W + b)_ij)^2: (2/d) mean_i x_i^2."""
    n = len(x)
    return [np.repeat(((x**2).sum(axis=0) / n)[:, None], outputs, axis=1) * 2 / outputs,
            np.full(outputs, 2.0 / outputs)]
