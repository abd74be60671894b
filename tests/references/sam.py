"""SAM family references: ``step(params, gradient_at) -> params``.

Unlike the other references these take a gradient *function*
(``gradient_at(params) -> grads`` on the current batch), because each step
evaluates the gradient twice. ``inner`` is any list-level reference with
``step(params, grads)`` (``_harness.PerTensor``, or :class:`SGD` below).

SAM: Foret et al. 2021, arXiv:2010.01412, Algorithm 1 (p = 2):
    eps = rho g / ||g||,  step with g(w + eps).
ASAM: Kwon et al. 2021, arXiv:2102.11600, Algorithm 1 (p = 2, T_w = |w| + eta):
    eps = rho T^2 g / ||T g||,  step with g(w + eps).
GSAM: Zhuang et al. 2022, arXiv:2203.08065, Algorithm 1:
    eps = rho g / ||g||,  g_adv = g(w + eps),
    g_perp = g - (<g, g_adv> / ||g_adv||^2) g_adv,  step with g_adv - alpha g_perp.
"""
import numpy as np

TINY = 1e-12  # added to norms, as in the reference implementations


def _norm(tensors):
    return np.sqrt(sum(np.sum(t**2) for t in tensors))


class SGD:
    """keras.optimizers.SGD without momentum."""

    def __init__(self, learning_rate):
        self.learning_rate = learning_rate
        self.updates = 0

    def step(self, params, grads):
        self.updates += 1
        return [p - self.learning_rate * g for p, g in zip(params, grads)]


class SAM:
    def __init__(self, inner, rho=0.05):
        self.inner, self.rho = inner, rho

    def perturbation(self, params, grads):
        return [self.rho * g / (_norm(grads) + TINY) for g in grads]

    def direction(self, grads, adversarial):
        return adversarial

    def step(self, params, gradient_at):
        grads = gradient_at(params)
        eps = self.perturbation(params, grads)
        adversarial = gradient_at([p + e for p, e in zip(params, eps)])
        return self.inner.step(params, self.direction(grads, adversarial))


class ASAM(SAM):
    def __init__(self, inner, rho=0.5, eta=0.01):
        super().__init__(inner, rho)
        self.eta = eta

    def perturbation(self, params, grads):
        scales = [np.abs(p) + self.eta for p in params]
        norm = _norm([t * g for t, g in zip(scales, grads)])
        return [self.rho * t**2 * g / (norm + TINY) for t, g in zip(scales, grads)]


class GSAM(SAM):
    def __init__(self, inner, rho=0.05, alpha=0.1):
        super().__init__(inner, rho)
        self.alpha = alpha

    def direction(self, grads, adversarial):
        parallel = sum(np.sum(g * a) for g, a in zip(grads, adversarial)) / (
            sum(np.sum(a**2) for a in adversarial) + TINY
        )
        return [a - self.alpha * (g - parallel * a) for g, a in zip(grads, adversarial)]
