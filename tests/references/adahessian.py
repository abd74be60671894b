"""AdaHessian reference: ``step(params, grads, probes, hessian_products) -> params``.

Yao, Gholami, Shen, Mustafa, Keutzer and Mahoney 2021, "ADAHESSIAN: An
Adaptive Second Order Optimizer for Machine Learning", arXiv:2006.00719,
Algorithm 1, with the reference code's defaults and averaging rule
(github.com/amirgholami/adahessian):

    D     = |z * (H z)|                      Hutchinson diagonal (z Rademacher)
    D     = mean of D over the spatial axes   convolution kernels only
    m_t   = beta_1 m_{t-1} + (1 - beta_1) g_t
    v_t   = beta_2 v_{t-1} + (1 - beta_2) D^2
    denom = (sqrt(v_t) / sqrt(1 - beta_2^t))^k + epsilon      (k = hessian_power)
    w_t   = w_{t-1} - lr (m_t / (1 - beta_1^t) / denom + weight_decay w_{t-1})

``learning_rate`` is a float or a function of the 1-based step ``t``. The
caller supplies ``probes`` (z) and ``hessian_products`` (H z, computed
from the problem's analytic Hessian), so the reference has no randomness.
Kernel layout as in Keras, ``(*spatial, in, out)``: rank 3 (Conv1D) averages
axis 0, rank 4 (Conv2D) axes 0 and 1; ranks 0-2 are not averaged.
"""
import numpy as np


def spatial_average(diagonal):
    if diagonal.ndim < 3:
        return diagonal
    return diagonal.mean(axis=tuple(range(diagonal.ndim - 2)), keepdims=True)


class AdaHessian:
    def __init__(self, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-4,
                 hessian_power=1.0, spatial_average=True, weight_decay=0.0):
        self.learning_rate = learning_rate
        self.beta_1, self.beta_2 = beta_1, beta_2
        self.epsilon = epsilon
        self.hessian_power = hessian_power
        self.spatial_average = spatial_average
        self.weight_decay = weight_decay
        self.t = 0
        self.m = self.v = None

    def step(self, params, grads, probes, hessian_products):
        params = [np.asarray(p, np.float64) for p in params]
        if self.m is None:
            self.m = [np.zeros_like(p) for p in params]
            self.v = [np.zeros_like(p) for p in params]
        self.t += 1
        t, b1, b2, k = self.t, self.beta_1, self.beta_2, self.hessian_power
        new_params = []
        for i, (p, g, z, hz) in enumerate(zip(params, grads, probes, hessian_products)):
            diagonal = np.abs(np.asarray(z) * np.asarray(hz))
            if self.spatial_average:
                diagonal = spatial_average(diagonal)
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * np.asarray(g)
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * np.broadcast_to(diagonal**2, p.shape)
            denom = (np.sqrt(self.v[i]) / np.sqrt(1.0 - b2**t)) ** k + self.epsilon
            step = self.m[i] / (1.0 - b1**t) / denom + self.weight_decay * p
            lr = self.learning_rate(t) if callable(self.learning_rate) else self.learning_rate
            new_params.append(p - lr * step)
        return new_params
