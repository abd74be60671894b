"""List-level reference optimizers: ``step(params, grads) -> params``.

``PerTensor`` runs a per-tensor reference module (``init_state``/``update``)
over a list of tensors; ``WholeStep`` runs a module whose step couples all
tensors (it sets ``WHOLE_STEP = True`` and its ``init_state``/``update``
take lists). Wrapper references take such an object as ``inner``.
``updates`` counts the updates that reached the parameters.
"""
import numpy as np


class PerTensor:
    def __init__(self, module, learning_rate, **hyper):
        self.module = module
        self.hyper = hyper
        self.learning_rate = learning_rate  # float, or a function of the 1-based update
        self.updates = 0
        self.states = None

    def lr(self, t):
        return self.learning_rate(t) if callable(self.learning_rate) else self.learning_rate

    def step(self, params, grads):
        if self.states is None:
            self.states = [self.module.init_state(p, **self.hyper) for p in params]
        self.updates += 1
        t = self.updates
        return [
            self.module.update(np.asarray(p, np.float64), np.asarray(g, np.float64), s, t,
                               self.lr(t), **self.hyper)
            for p, g, s in zip(params, grads, self.states)
        ]


class WholeStep(PerTensor):
    def step(self, params, grads):
        params = [np.asarray(p, np.float64) for p in params]
        if self.states is None:
            self.states = self.module.init_state(params, **self.hyper)
        self.updates += 1
        t = self.updates
        grads = [np.asarray(g, np.float64) for g in grads]
        return self.module.update(params, grads, self.states, t, self.lr(t), **self.hyper)


def zero_state(params, *names, **scalars):
    """A state of zeros shaped like ``params`` under each of ``names``, plus ``scalars``."""
    return {**{name: [np.zeros_like(p) for p in params] for name in names}, **scalars}


def reference_for(module, learning_rate, **hyper):
    """The list-level reference of a reference module."""
    kind = WholeStep if getattr(module, "WHOLE_STEP", False) else PerTensor
    return kind(module, learning_rate, **hyper)


def run_beside(optimizer, reference, shapes, seed, steps=30):
    """``steps`` float64 steps of a Keras ``optimizer`` and a list-level ``reference`` side by side.

    Weights start at N(0, 1) draws of ``shapes`` and each gradient is that of
    ``|w|^2 / 2`` plus N(0, 1/4) noise (seeded by ``seed``). Returns the
    optimizer's final weights and the reference's, as NumPy arrays.
    """
    import keras
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    params = [rng.normal(size=s) for s in shapes]
    variables = [keras.Variable(p, dtype="float64") for p in params]
    for _ in range(steps):
        grads = [p + 0.5 * rng.normal(size=p.shape) for p in params]
        optimizer.apply([tf.constant(g) for g in grads], variables)
        params = reference.step(params, grads)
    return [v.numpy() for v in variables], params
