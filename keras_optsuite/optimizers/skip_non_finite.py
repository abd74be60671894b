"""Skip any step whose gradient holds a NaN or an infinity."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_optsuite.optimizers._base import gradient_values, sum_all
from keras_optsuite.optimizers._wrapper import OptimizerWrapper


def all_finite(grads: list) -> Any:
    """One boolean: every entry of every (dense or sparse) gradient is finite.

    A sum with a NaN or an infinity in it is not finite, so one reduction per
    tensor (no boolean temporary) settles the usual case; only when a sum is
    not finite does the exact elementwise test run, which also tells a
    finite sum that overflowed from a real NaN or infinity.
    """
    values = [gradient_values(g) for g in grads if g is not None]
    if not values:
        return ops.convert_to_tensor(True)
    sums = ops.stack([ops.cast(sum_all(v), "float32") for v in values])

    def exact() -> Any:
        return ops.all(ops.stack([ops.all(ops.isfinite(v)) for v in values]))

    return ops.cond(ops.all(ops.isfinite(sums)), lambda: ops.convert_to_tensor(True), exact)


@keras.saving.register_keras_serializable(package="keras_optsuite")
class SkipNonFinite(OptimizerWrapper):
    """Leave weights and optimizer state untouched on a step with a non-finite gradient.

    The skip rule of dynamic loss scaling (Micikevicius et al., 2018, "Mixed
    Precision Training", https://arxiv.org/abs/1710.03740), for any precision.

    The test runs on the gradient summed across replicas, so every replica
    skips together. ``skipped_steps`` counts the skipped steps (a variable,
    saved with the model, readable by callbacks). ``iterations`` counts every
    call; ``inner.iterations`` counts the steps taken.

    Keras's ``LossScaleOptimizer`` (added by ``compile`` under
    ``mixed_float16``) already skips overflowing steps while it lowers the
    loss scale; this wrapper is for float32 training, where a NaN batch
    would otherwise poison the moments for good.

    Args:
        inner: the optimizer to protect (instance, name or config).
        name: name of the optimizer.

    Example:
    >>> model.compile(optimizer=SkipNonFinite(keras.optimizers.Adam()), loss="mse")
    """

    def __init__(self, inner: Any, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(inner, name=name, **kwargs)

    def _build_state(self, var_list: list) -> None:
        self._skipped_steps = self.add_variable(
            shape=(), dtype="int", initializer="zeros",
            aggregation="only_first_replica", name="skipped_steps",
        )

    @property
    def skipped_steps(self) -> Any:
        """Number of steps skipped so far (a variable; 0 before the first step)."""
        if not self.built:
            return ops.convert_to_tensor(0, dtype="int64")
        return self._skipped_steps

    def _apply_summed(self, grads: list, variables: list) -> None:
        finite = all_finite(grads)
        self._apply_inner_when(finite, grads, variables)
        self._skipped_steps.assign_add(ops.cast(ops.logical_not(finite), self._skipped_steps.dtype))
