"""List-level reference optimizers: ``step(params, grads) -> params``.

``PerTensor`` runs a per-tensor reference module (``init_state``/``update``)
over a list of tensors; wrapper references take such an object as ``inner``.
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
