"""Exponential moving average of the weights (Polyak averaging), reference.

Polyak and Juditsky (1992); the decay schedule of TensorFlow's
``tf.train.ExponentialMovingAverage`` with ``num_updates``:
average_1 = w_1; average_s = d_s average_{s-1} + (1 - d_s) w_s with
d_s = decay, or min(decay, (1 + s) / (10 + s)) when dynamic.
"""


class ExponentialMovingAverage:
    def __init__(self, inner, decay=0.999, dynamic_decay=False, final_weights="averaged"):
        self.inner, self.decay, self.dynamic = inner, decay, dynamic_decay
        self.averages = None

    @property
    def updates(self):
        return self.inner.updates

    def step(self, params, grads):
        params = self.inner.step(params, grads)
        s = self.inner.updates
        if self.averages is None:
            self.averages = [p.copy() for p in params]
        else:
            d = min(self.decay, (1 + s) / (10 + s)) if self.dynamic else self.decay
            self.averages = [d * a + (1 - d) * p for a, p in zip(self.averages, params)]
        return params
