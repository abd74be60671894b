"""Gradient transformations, reference.

Gradient centralization: Yong et al. (2020), arXiv:2004.01461, eq. (4):
Phi_GC(grad w_i) = grad w_i - mean(grad w_i), per output unit i, for tensors of
rank >= 2 (Keras layout: output units on the last axis, so the mean runs over
every other axis).
Adaptive gradient clipping: Brock et al. (2021), arXiv:2102.06171, eq. (3):
G_i <- lambda max(||W_i||, eps) / ||G_i|| G_i if ||G_i|| / max(||W_i||, eps) > lambda,
unit-wise Frobenius norms (whole-tensor norm for rank <= 1).
Global-norm clipping: g <- g c / max(||g||_global, c).
"""
import numpy as np


def _axes(x):
    return tuple(range(x.ndim - 1))


def centralize(grads, params, conv_only=False, exclude=()):
    rank = 3 if conv_only else 2
    return [g - g.mean(axis=_axes(g), keepdims=True) if g.ndim >= rank else g for g in grads]


def _unit_norm(x):
    if x.ndim <= 1:
        return np.sqrt(np.sum(x * x))
    return np.sqrt(np.sum(x * x, axis=_axes(x), keepdims=True))


def adaptive_clip(grads, params, clip_factor=0.01, epsilon=1e-3, exclude=()):
    out = []
    for g, w in zip(grads, params):
        max_norm = clip_factor * np.maximum(_unit_norm(w), epsilon)
        g_norm = _unit_norm(g)
        out.append(np.where(g_norm > max_norm, g * max_norm / np.maximum(g_norm, 1e-300), g))
    return out


def clip_global(grads, params, clipnorm, exclude=()):
    norm = np.sqrt(sum(np.sum(g * g) for g in grads))
    return [g * clipnorm / max(norm, clipnorm) for g in grads]


REFERENCES = {
    "GradientCentralization": centralize,
    "AGC": adaptive_clip,
    "ClipByGlobalNorm": clip_global,
}


class Chain:
    """``transforms``: the optimizer's GradientTransformation objects; their
    configs select and parameterize the NumPy functions above."""

    def __init__(self, inner, transforms=()):
        self.inner = inner
        self.functions = [(REFERENCES[type(t).__name__], t.get_config()) for t in transforms]

    @property
    def updates(self):
        return self.inner.updates

    def transform(self, grads, params):
        """The gradients the inner optimizer receives."""
        for function, config in self.functions:
            grads = function([np.asarray(g, np.float64) for g in grads], params, **config)
        return grads

    def step(self, params, grads):
        return self.inner.step(params, self.transform(grads, params))
