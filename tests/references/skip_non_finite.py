"""Skip-non-finite reference: a step whose gradients hold NaN or Inf changes nothing."""
import numpy as np


class SkipNonFinite:
    def __init__(self, inner):
        self.inner = inner
        self.skipped = 0

    @property
    def updates(self):
        return self.inner.updates

    def step(self, params, grads):
        if not all(np.all(np.isfinite(g)) for g in grads):
            self.skipped += 1
            return params
        return self.inner.step(params, grads)
