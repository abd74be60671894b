"""Lookahead reference.

Zhang, Lucas, Hinton, Ba (2019), "Lookahead Optimizer: k steps forward, 1 step
back", arXiv:1907.08610, Algorithm 1: phi_0 = theta_0; the inner optimizer
takes k steps from theta; then phi <- phi + alpha (theta - phi), theta <- phi.
"""


class Lookahead:
    def __init__(self, inner, sync_period=6, slow_step_size=0.5):
        self.inner, self.k, self.alpha = inner, sync_period, slow_step_size
        self.slow = None

    @property
    def updates(self):
        return self.inner.updates

    def step(self, params, grads):
        if self.slow is None:
            self.slow = [p.copy() for p in params]  # phi_0 = theta_0
        params = self.inner.step(params, grads)
        if self.inner.updates % self.k == 0:
            self.slow = [s + self.alpha * (p - s) for s, p in zip(self.slow, params)]
            params = [s.copy() for s in self.slow]
        return params
