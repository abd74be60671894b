"""Weight normalization (Salimans & Kingma, 2016, https://arxiv.org/abs/1602.07868) in float64 NumPy.

Kernels keep the output units on their last axis (Dense ``(in, out)``,
Conv2D ``(kh, kw, in, out)``); each output unit's weight vector is the
flattened column ``kernel[..., j]``.
"""

from __future__ import annotations

import numpy as np


def _columns(kernel):
    """The kernel as ``(fan_in, units)``: one column per output unit."""
    return kernel.reshape(-1, kernel.shape[-1])


def kernel(v, g):
    """Eq. 2: ``w = g v / ||v||`` per output unit."""
    columns = _columns(v)
    return (g * columns / np.linalg.norm(columns, axis=0)).reshape(v.shape)


def gradients(v, g, grad_w):
    """Eq. 3: ``(dL/dv, dL/dg)`` from ``dL/dw``, one output unit at a time.

    ``dL/dg = dL/dw . v / ||v||``;
    ``dL/dv = g / ||v|| M_w dL/dw`` with ``M_w = I - w w^T / ||w||^2``.
    """
    columns, grad_columns = _columns(v), _columns(grad_w)
    w = _columns(kernel(v, g))
    grad_v = np.empty_like(columns)
    grad_g = np.empty(columns.shape[1])
    for j in range(columns.shape[1]):
        norm = np.linalg.norm(columns[:, j])
        grad_g[j] = grad_columns[:, j] @ columns[:, j] / norm
        projection = np.eye(len(w[:, j])) - np.outer(w[:, j], w[:, j]) / (w[:, j] @ w[:, j])
        grad_v[:, j] = g[j] / norm * projection @ grad_columns[:, j]
    return grad_v.reshape(v.shape), grad_g


def data_init(t, epsilon):
    """Section 3: ``g = 1 / sigma[t]``, ``b = -mu[t] / sigma[t]`` over every axis but the last.

    ``t = x . v / ||v||`` are the pre-activations without bias of the first
    batch; ``sigma = sqrt(variance + epsilon)`` (population variance).
    """
    axes = tuple(range(t.ndim - 1))
    sigma = np.sqrt(t.var(axis=axes) + epsilon)
    return 1.0 / sigma, -t.mean(axis=axes) / sigma


# -- the wrapped layers, and dL/dkernel, to check gradients end to end -----------------
def dense(x, w, b):
    return x @ w + b


def dense_kernel_gradient(x, grad_y):
    return x.T @ grad_y


def _patches(x, kh, kw):
    """``(batch, out_h, out_w, kh, kw, channels)``: the input window under each output."""
    batch, height, width, channels = x.shape
    out_h, out_w = height - kh + 1, width - kw + 1
    patches = np.empty((batch, out_h, out_w, kh, kw, channels))
    for i in range(kh):
        for j in range(kw):
            patches[:, :, :, i, j, :] = x[:, i : i + out_h, j : j + out_w, :]
    return patches


def conv2d(x, w, b):
    """A "valid", stride-1, channels-last 2D convolution (cross-correlation, as Keras)."""
    return np.einsum("npqijc,ijco->npqo", _patches(x, *w.shape[:2]), w) + b


def conv2d_kernel_gradient(x, grad_y, kh, kw):
    return np.einsum("npqijc,npqo->ijco", _patches(x, kh, kw), grad_y)
