"""Stochastic Weight Averaging reference.

Izmailov, Podoprikhin, Garipov, Vetrov, Wilson (2018), "Averaging Weights Leads
to Wider Optima and Better Generalization", arXiv:1803.05407, Algorithm 1:
after update i (1-based, counting from the start of averaging at update
``start_step``), if mod(i, c) = 0: n_models += 1,
w_SWA <- (w_SWA n_models_old + w) / (n_models_old + 1).
Learning rate (section 3.2) after start_step: alpha(i) = (1 - t(i)) alpha_1 + t(i) alpha_2,
t(i) = (mod(i - 1, c) + 1) / c; constant alpha_1 when there is no alpha_2.
"""


class SWA:
    def __init__(self, inner, start_step=1, average_period=1, swa_learning_rate=None,
                 swa_min_learning_rate=None, final_weights="averaged"):
        self.inner = inner
        self.start, self.c = start_step, average_period
        self.averages, self.n_models = None, 0
        if swa_learning_rate is not None:
            before = inner.learning_rate
            high = swa_learning_rate
            low = high if swa_min_learning_rate is None else swa_min_learning_rate

            def learning_rate(s):
                if s <= self.start:
                    return before(s) if callable(before) else before
                i = s - self.start
                t = ((i - 1) % self.c + 1) / self.c
                return (1 - t) * high + t * low

            inner.learning_rate = learning_rate

    @property
    def updates(self):
        return self.inner.updates

    def step(self, params, grads):
        params = self.inner.step(params, grads)
        i = self.inner.updates - self.start
        if i >= 0 and i % self.c == 0:
            if self.averages is None:
                self.averages = [p.copy() for p in params]
            else:
                self.averages = [(a * self.n_models + p) / (self.n_models + 1)
                                 for a, p in zip(self.averages, params)]
            self.n_models += 1
        return params
