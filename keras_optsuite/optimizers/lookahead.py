"""Lookahead: k fast steps forward, one step back toward the slow weights."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_optsuite._validation import check_fraction, check_positive_int
from keras_optsuite.optimizers._base import compiled_by_xla, snapshot
from keras_optsuite.optimizers._wrapper import OptimizerWrapper, applied_updates


@keras.saving.register_keras_serializable(package="keras_optsuite")
class Lookahead(OptimizerWrapper):
    """Lookahead optimizer.

    Zhang, Lucas, Hinton and Ba, 2019, "Lookahead Optimizer: k steps forward,
    1 step back", https://arxiv.org/abs/1907.08610 (Algorithm 1).

    The inner optimizer updates the *fast* weights (the model's). The *slow*
    weights start at the model's weights before the first update; after
    every ``sync_period``-th update of the inner optimizer,
    ``slow += slow_step_size (fast - slow)`` and the fast weights are reset
    to the new slow weights. The inner optimizer's state is kept across
    synchronizations (the paper's default).

    Args:
        inner: the optimizer that takes the fast steps (instance, name or config).
        sync_period: ``k``, fast updates between synchronizations, >= 1. Defaults to `6`.
        slow_step_size: ``alpha``, in [0, 1]. Defaults to `0.5`.
        name: name of the optimizer.

    Example:
    >>> model.compile(optimizer=Lookahead(keras.optimizers.Adam(1e-3)), loss="mse")
    """

    def __init__(
        self,
        inner: Any,
        sync_period: int = 6,
        slow_step_size: float = 0.5,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(inner, name=name, **kwargs)
        self.sync_period = check_positive_int("sync_period", sync_period)
        self.slow_step_size = check_fraction("slow_step_size", slow_step_size)

    def _slot_names(self) -> tuple[str, ...]:
        return ("slow",)

    def _apply_summed(self, grads: list, variables: list) -> None:
        before = snapshot(applied_updates(self.inner))
        self._update_each(self._start_slow_weights, variables, shared=(before,))
        self._apply_inner(grads, variables)
        self._update_each(self._synchronize, variables, shared=(before,))

    def _start_slow_weights(self, variable: Any, before: Any) -> None:
        slow = self._slot("slow", variable)
        if compiled_by_xla():  # a select fuses into the loop; a conditional copies the weights
            self.assign(slow, ops.where(ops.equal(before, 0), variable, slow))
        else:  # only the first step reads the weights
            ops.cond(ops.equal(before, 0), lambda: self.assign(slow, variable), lambda: None)

    def _synchronize(self, variable: Any, before: Any) -> None:
        after = applied_updates(self.inner)
        due = ops.logical_and(after > before, ops.equal(after % self.sync_period, 0))
        slow = self._slot("slow", variable)
        alpha = ops.convert_to_tensor(self.slow_step_size, dtype=variable.dtype)

        def synchronize() -> None:
            self.assign_add(slow, alpha * (variable - slow))
            self.assign(variable, slow)

        if compiled_by_xla():  # selects fuse into the loops; a conditional copies both tensors
            fast = ops.convert_to_tensor(variable)
            new_slow = ops.where(due, slow + alpha * (fast - slow), slow)
            self.assign(slow, new_slow)
            self.assign(variable, ops.where(due, new_slow, fast))
        else:  # only synchronizing steps touch the slow weights
            ops.cond(due, synchronize, lambda: None)
