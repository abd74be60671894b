"""Gradient accumulation: one update from the mean gradient of several micro-batches."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_optsuite._validation import check_positive_int
from keras_optsuite.optimizers._base import dense_gradient, ordered_after
from keras_optsuite.optimizers._wrapper import OptimizerWrapper


@keras.saving.register_keras_serializable(package="keras_optsuite")
class GradientAccumulation(OptimizerWrapper):
    """Accumulate ``steps`` micro-batch gradients, then step with their mean.

    The large-batch equivalence Goyal et al., 2017, "Accurate, Large Minibatch
    SGD", https://arxiv.org/abs/1706.02677, build on, on a small machine.

    With a mean-reduced loss, ``steps`` micro-batches of size ``b`` give the
    same update as one batch of ``steps * b`` (up to float rounding): the
    inner optimizer sees ``(g_1 + ... + g_steps) / steps``. Between updates
    the weights and the inner optimizer's state do not change, and the
    inner ``iterations`` (bias correction, schedules) count updates, not
    micro-batches.

    Unlike Keras's ``gradient_accumulation_steps``, this works under
    ``MirroredStrategy`` and ``MultiWorkerMirroredStrategy``
    (keras-team/keras#20582): the gradients are summed across replicas
    first, and the conditional update branches outside the replica context.

    Batch-dependent layers (BatchNormalization) still see micro-batches.

    Args:
        inner: the optimizer that takes the accumulated step (instance, name or config).
        steps: micro-batches per update, >= 1. Defaults to `2`.
        name: name of the optimizer.

    Example:
    >>> model.compile(optimizer=GradientAccumulation("adam", steps=4), loss="mse")
    """

    def __init__(
        self, inner: Any, steps: int = 2, name: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(inner, name=name, **kwargs)
        self.steps = check_positive_int("steps", steps)

    def _slot_names(self) -> tuple[str, ...]:
        return ("accumulated_gradient",)

    def _apply_summed(self, grads: list, variables: list) -> None:
        pairs = [(dense_gradient(g), v) for g, v in zip(grads, variables) if g is not None]
        variables = [v for _, v in pairs]
        totals = [
            ops.cast(g, v.dtype) + self._slot("accumulated_gradient", v)
            for g, v in pairs
        ]
        is_update = ops.equal((self._iterations + 1) % self.steps, 0)
        means = [total / float(self.steps) for total in totals]
        stepped = self._apply_inner_when(is_update, means, variables)
        # The accumulators are written after the inner step, which read them
        # (under XLA, ordered after it: written in place, not copied).
        self._update_each(
            self._store, variables, per_variable=(totals,), shared=(is_update, stepped)
        )

    def _store(self, variable: Any, total: Any, is_update: Any, stepped: Any) -> None:
        accumulator = self._slot("accumulated_gradient", variable)
        value = ops.where(is_update, ops.zeros_like(total), total)
        if stepped is not None:
            value = ordered_after(value, stepped)
        self.assign(accumulator, value)
