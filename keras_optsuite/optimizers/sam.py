"""Sharpness-aware minimization: SAM, adaptive ASAM and surrogate-gap GSAM.

Each wraps any Keras optimizer. A step needs the gradient at perturbed
weights on the same batch, so these optimizers need a closure
(``needs_closure = True``): ``model.fit`` provides it once ``keras_optsuite``
is imported (:mod:`keras_optsuite.optimizers.closure`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import keras
import tensorflow as tf
from keras import ops

from keras_optsuite._upstream import TFOptimizer
from keras_optsuite._validation import check_non_negative, check_positive
from keras_optsuite.optimizers._base import assign_cast, dense_gradient, snapshot
from keras_optsuite.optimizers._wrapper import OptimizerWrapper, deduplicate
from keras_optsuite.optimizers.closure import (
    PendingClosure,
    apply_with_closure,
    pending_closure,
    replica_id,
)

# Added to norms before dividing, as in the reference implementations.
_TINY = 1e-12


def _add(variable: Any, delta: Any) -> None:
    variable.assign_add(ops.cast(delta, variable.dtype))


def _all_finite(tensors: list) -> Any:
    return ops.all(ops.stack([ops.all(ops.isfinite(t)) for t in tensors]))


class SharpnessAware(OptimizerWrapper):
    """Base class of the SAM family (not used directly).

    One step, from the cross-replica sum ``g`` of the gradients at ``w``:
    ``epsilon = _perturbation(g, w)``; the weights move to ``w + epsilon`` on
    every replica; the closure gives each replica's gradient there, summed
    across replicas into ``g_adv``; the weights return to ``w``; the inner
    optimizer steps with ``_direction(g, g_adv)``.
    """

    needs_closure: ClassVar[bool] = True

    def __init__(self, inner: Any, rho: float, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(inner, name=name, **kwargs)
        self.rho = check_positive("rho", rho)
        self._closures: dict[int, PendingClosure] = {}  # by replica, set during apply

    def apply_with_closure(self, grads: list, trainable_variables: list, closure: Any) -> None:
        """One step; ``closure() -> (gradients, loss)`` at the current weights, same batch.

        Example:

        >>> sam = SAM(keras.optimizers.SGD(0.1), rho=0.05)
        >>> def closure():
        ...     with tf.GradientTape() as tape:
        ...         loss = keras.ops.mean((model(x) - y) ** 2)
        ...     return tape.gradient(loss, model.trainable_variables), loss
        >>> sam.apply_with_closure(closure()[0], model.trainable_variables, closure)
        """
        apply_with_closure(self, grads, trainable_variables, closure)

    def apply(self, grads: Sequence[Any], trainable_variables: Sequence[Any] | None = None) -> None:
        pending_closure(self)
        super().apply(grads, trainable_variables)

    # -- the step --------------------------------------------------------------
    def _apply_summed(self, grads: list, variables: list) -> None:
        present = [i for i, g in enumerate(grads) if g is not None]
        variables_p = [variables[i] for i in present]
        dtype = "float64" if any(v.dtype == "float64" for v in variables_p) else "float32"
        weights = [ops.cast(snapshot(v), dtype) for v in variables_p]
        dense = [ops.cast(dense_gradient(grads[i]), dtype) for i in present]

        pending = self._closures[replica_id()]
        epsilon = self._perturbation(dense, weights)
        self._update_each(_add, variables_p, per_variable=(epsilon,))
        adversarial, _ = pending.closure()
        adversarial = list(adversarial)
        pairs = TFOptimizer._all_reduce_sum_gradients(
            self, [(adversarial[i], variables[i]) for i in present]
        )
        self._update_each(assign_cast, variables_p, per_variable=(weights,))

        adversarial_dense = [ops.cast(dense_gradient(g), dtype) for g, _ in pairs]
        direction = self._direction(dense, adversarial_dense, [g for g, _ in pairs])
        step = list(grads)
        for i, d in zip(present, direction):
            step[i] = deduplicate(d) if isinstance(d, tf.IndexedSlices) else ops.cast(d, variables[i].dtype)
        if pending.skips_non_finite:
            finite = _all_finite([dense_gradient(g) for g in direction])
            self._apply_inner_when(finite, step, variables)
        else:
            self._apply_inner(step, variables)

    def _perturbation(self, grads: list, weights: list) -> list:
        """``epsilon`` for each variable (override)."""
        raise NotImplementedError

    def _direction(self, grads: list, adversarial: list, adversarial_raw: list) -> list:
        """The gradient handed to the inner optimizer: ``g_adv`` (SAM, ASAM)."""
        return adversarial_raw


def _global_norm(tensors: list) -> Any:
    return ops.sqrt(sum(ops.sum(ops.square(t)) for t in tensors))


@keras.saving.register_keras_serializable(package="keras_optsuite")
class SAM(SharpnessAware):
    """Sharpness-Aware Minimization.

    Foret, Kleiner, Mobahi and Neyshabur, 2021, "Sharpness-Aware Minimization
    for Efficiently Improving Generalization", https://arxiv.org/abs/2010.01412
    (Algorithm 1, p = 2).

    With ``g`` the gradient at ``w`` (summed across replicas):
    ``epsilon = rho * g / ||g||`` (norm over all variables together); the inner
    optimizer steps with the gradient at ``w + epsilon`` on the same batch.
    Costs two forward/backward passes per step and no per-parameter state
    beyond the inner optimizer's (one transient copy of the weights).

    Args:
        inner: the optimizer that takes the step (instance, name or config).
        rho: neighbourhood radius, > 0. Defaults to `0.05` (the paper's
            CIFAR setting).
        name: name of the optimizer.

    Example:
    >>> model.compile(optimizer=SAM(keras.optimizers.SGD(0.1, momentum=0.9), rho=0.05), loss="mse")
    >>> model.fit(x, y)  # after `import keras_optsuite`
    """

    def __init__(self, inner: Any, rho: float = 0.05, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(inner, rho=rho, name=name, **kwargs)

    def _perturbation(self, grads: list, weights: list) -> list:
        scale = self.rho / (_global_norm(grads) + _TINY)
        return [scale * g for g in grads]


@keras.saving.register_keras_serializable(package="keras_optsuite")
class ASAM(SharpnessAware):
    """Adaptive Sharpness-Aware Minimization.

    Kwon, Kim, Park and Choi, 2021, "ASAM: Adaptive Sharpness-Aware
    Minimization for Scale-Invariant Learning of Deep Neural Networks",
    https://arxiv.org/abs/2102.11600 (Algorithm 1, p = 2, element-wise
    normalization operator).

    With ``T = |w| + eta`` element-wise:
    ``epsilon = rho * T^2 g / ||T g||`` (norm over all variables together);
    the inner optimizer steps with the gradient at ``w + epsilon``.

    Args:
        inner: the optimizer that takes the step (instance, name or config).
        rho: radius of the adaptive neighbourhood, > 0. Defaults to `0.5` (the
            paper's CIFAR setting with SGD).
        eta: ``eta`` in ``T``, >= 0; keeps zero weights perturbable. Defaults to `0.01`.
        name: name of the optimizer.

    Example:
    >>> model.compile(optimizer=ASAM(keras.optimizers.SGD(0.1, momentum=0.9)), loss="mse")
    """

    def __init__(
        self,
        inner: Any,
        rho: float = 0.5,
        eta: float = 0.01,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(inner, rho=rho, name=name, **kwargs)
        self.eta = check_non_negative("eta", eta)

    def _perturbation(self, grads: list, weights: list) -> list:
        scales = [ops.abs(w) + ops.cast(self.eta, w.dtype) for w in weights]
        norm = _global_norm([t * g for t, g in zip(scales, grads)])
        return [self.rho * ops.square(t) * g / (norm + _TINY) for t, g in zip(scales, grads)]


@keras.saving.register_keras_serializable(package="keras_optsuite")
class GSAM(SharpnessAware):
    """Surrogate Gap Guided Sharpness-Aware Minimization.

    Zhuang, Gong, Yuan, Cui, Adam, Dvornek, Tatikonda, Duncan and Liu, 2022,
    "Surrogate Gap Guided Sharpness-Aware Minimization",
    https://arxiv.org/abs/2203.08065 (Algorithm 1).

    As SAM, ``epsilon = rho * g / ||g||`` and ``g_adv`` is the gradient at
    ``w + epsilon``. ``g`` is split into its component parallel to ``g_adv``,
    ``(g . g_adv / ||g_adv||^2) g_adv``, and the orthogonal rest ``g_perp``;
    the inner optimizer steps with ``g_adv - alpha * g_perp`` (descending on
    the perturbed loss while ascending along ``g_perp`` reduces the
    surrogate gap). ``rho`` is constant here: the paper's ``rho_t`` follows
    the learning-rate schedule, which equals a constant ``rho`` for a
    constant learning rate.

    Args:
        inner: the optimizer that takes the step (instance, name or config).
        rho: neighbourhood radius, > 0. Defaults to `0.05`.
        alpha: weight of the orthogonal ascent, >= 0 (0 gives SAM). Defaults to `0.1`.
        name: name of the optimizer.

    Example:
    >>> model.compile(optimizer=GSAM(keras.optimizers.Adam(1e-3), rho=0.05, alpha=0.1), loss="mse")
    """

    def __init__(
        self,
        inner: Any,
        rho: float = 0.05,
        alpha: float = 0.1,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(inner, rho=rho, name=name, **kwargs)
        self.alpha = check_non_negative("alpha", alpha)

    def _perturbation(self, grads: list, weights: list) -> list:
        scale = self.rho / (_global_norm(grads) + _TINY)
        return [scale * g for g in grads]

    def _direction(self, grads: list, adversarial: list, adversarial_raw: list) -> list:
        inner_product = sum(ops.sum(g * a) for g, a in zip(grads, adversarial))
        squared_norm = sum(ops.sum(ops.square(a)) for a in adversarial)
        coefficient = inner_product / (squared_norm + _TINY)
        return [a - self.alpha * (g - coefficient * a) for g, a in zip(grads, adversarial)]
