"""Weight averaging: exponential moving average (EMA) and stochastic weight averaging (SWA)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_optsuite._validation import check_bool, check_decay_rate, check_positive, check_positive_int
from keras_optsuite.optimizers._base import compiled_by_xla, snapshot
from keras_optsuite.optimizers._evaluation_weights import SwappedEvaluationWeights
from keras_optsuite.optimizers._wrapper import OptimizerWrapper, applied_updates


class _WeightAveraging(SwappedEvaluationWeights, OptimizerWrapper):
    """Keeps ``average <- average + w_s (weights - average)`` after update ``s``.

    Subclasses define the averaging weight ``w_s`` (0 means "do not average
    after this update"). The average is a per-variable slot; evaluation swaps
    it with the model's weights exactly (no arithmetic on the values).
    """

    _evaluation_slot = "average"

    def __init__(
        self, inner: Any, final_weights: str = "averaged", name: str | None = None, **kwargs: Any
    ) -> None:
        final_weights = self._check_final_weights(final_weights)
        super().__init__(inner, name=name, **kwargs)
        self.final_weights = final_weights

    def _slot_names(self) -> tuple[str, ...]:
        return ("average",)

    def _build_state(self, var_list: list) -> None:
        self._build_evaluation_flag()

    @property
    def averaged_variables(self) -> list:
        """The running averages, in the order of the model's trainable variables."""
        return list(self._slots["average"])

    # -- averaging ---------------------------------------------------------
    def _averaging_weight(self, step: Any, dtype: str) -> Any:
        """Weight of the new weights in the average after update ``step`` (1-based)."""
        raise NotImplementedError

    def _first_averaged_update(self) -> int:
        """The 1-based update after which the first average is taken."""
        raise NotImplementedError

    def _has_evaluation_weights(self) -> bool:
        return int(applied_updates(self.inner).numpy()) >= self._first_averaged_update()

    def _no_evaluation_weights_reason(self) -> str:
        return "no average was taken yet (see start_step)"

    def _apply_summed(self, grads: list, variables: list) -> None:
        before = snapshot(applied_updates(self.inner))
        self._apply_inner(grads, variables)
        self._update_each(self._accumulate_average, variables, shared=(before,))

    def _accumulate_average(self, variable: Any, before: Any) -> None:
        step = applied_updates(self.inner)
        weight = self._averaging_weight(ops.cast(step, variable.dtype), variable.dtype)
        weight = ops.where(step > before, weight, ops.zeros_like(weight))
        average = self._slot("average", variable)

        def update() -> None:
            self.assign_add(average, weight * (variable - average))

        if compiled_by_xla():  # a select fuses into the loop; a conditional copies the average
            self.assign(average, ops.where(weight > 0, average + weight * (variable - average), average))
        else:  # only averaging steps touch the average
            ops.cond(weight > 0, update, lambda: None)


@keras.saving.register_keras_serializable(package="keras_optsuite")
class ExponentialMovingAverage(_WeightAveraging):
    """Polyak-Ruppert averaging with an exponential moving average of the weights.

    Polyak and Juditsky, 1992, "Acceleration of Stochastic Approximation by
    Averaging", https://doi.org/10.1137/0330046; as used by e.g. Tan and Le,
    2019 (EfficientNet). After every
    update ``s`` of the inner optimizer (1-based):
    ``average = weights`` if ``s == 1``, else
    ``average = decay_s average + (1 - decay_s) weights`` with
    ``decay_s = decay``, or ``min(decay, (1 + s) / (10 + s))`` when
    ``dynamic_decay`` (as ``tf.train.ExponentialMovingAverage`` with
    ``num_updates``), which keeps early averages from clinging to the
    random initialization.

    Unlike Keras's ``use_ema=True``, this works under ``MirroredStrategy``
    and nests with the other wrappers; updates skipped by ``SkipNonFinite``
    or still accumulating in ``GradientAccumulation`` are not averaged.
    Use ``keras_optsuite.callbacks.SwapEvaluationWeights`` to validate and
    checkpoint with the averaged weights.

    Args:
        inner: the optimizer that trains the weights (instance, name or config).
        decay: the moving average's decay, in [0, 1). Defaults to `0.999`.
        dynamic_decay: ramp the decay up over the first steps. Defaults to `False`.
        final_weights: what the model keeps when ``fit`` ends: ``"averaged"``
            (the moving average) or ``"last"`` (the trained weights).
            Defaults to `"averaged"`.
        name: name of the optimizer.

    Example:
    >>> optimizer = ExponentialMovingAverage(keras.optimizers.Adam(1e-3), decay=0.99)
    >>> model.compile(optimizer=optimizer, loss="mse")
    >>> model.fit(x, y, validation_split=0.1,
    ...           callbacks=[keras_optsuite.callbacks.SwapEvaluationWeights()])
    """

    def __init__(
        self,
        inner: Any,
        decay: float = 0.999,
        dynamic_decay: bool = False,
        final_weights: str = "averaged",
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(inner, final_weights=final_weights, name=name, **kwargs)
        self.decay = check_decay_rate("decay", decay)
        self.dynamic_decay = check_bool("dynamic_decay", dynamic_decay)

    def _averaging_weight(self, step: Any, dtype: str) -> Any:
        decay = ops.convert_to_tensor(self.decay, dtype=dtype)
        if self.dynamic_decay:
            decay = ops.minimum(decay, (1.0 + step) / (10.0 + step))
        return ops.where(step <= 1.0, ops.ones_like(decay), 1.0 - decay)

    def _first_averaged_update(self) -> int:
        return 1


@keras.saving.register_keras_serializable(package="keras_optsuite")
class SWALearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """The learning rate SWA hands over to once averaging starts.

    Izmailov et al., 2018, section 3.2: for update ``s <= start_step`` the
    ``initial`` learning rate (float or schedule); afterwards, with
    ``i = s - start_step`` and ``c = cycle_length``,
    ``t(i) = ((i - 1) mod c + 1) / c`` and
    ``lr = (1 - t(i)) swa_learning_rate + t(i) swa_min_learning_rate`` (a
    cyclical rate that reaches its minimum exactly when SWA averages), or
    the constant ``swa_learning_rate`` when ``swa_min_learning_rate`` is None.
    """

    def __init__(
        self,
        initial: Any,
        start_step: int,
        swa_learning_rate: float,
        swa_min_learning_rate: float | None = None,
        cycle_length: int = 1,
    ) -> None:
        if isinstance(initial, dict):
            initial = keras.optimizers.schedules.deserialize(initial)
        self.initial = initial
        self.start_step = check_positive_int("start_step", start_step)
        self.swa_learning_rate = check_positive("swa_learning_rate", swa_learning_rate)
        self.swa_min_learning_rate = (
            None if swa_min_learning_rate is None
            else check_positive("swa_min_learning_rate", swa_min_learning_rate)
        )
        self.cycle_length = check_positive_int("cycle_length", cycle_length)

    def __call__(self, step: Any) -> Any:
        update = ops.cast(step, "float32") + 1.0  # Keras passes the 0-based count
        if isinstance(self.initial, keras.optimizers.schedules.LearningRateSchedule):
            before = ops.cast(self.initial(step), "float32")
        else:
            before = ops.convert_to_tensor(self.initial, dtype="float32")
        high = ops.convert_to_tensor(self.swa_learning_rate, dtype="float32")
        if self.swa_min_learning_rate is None:
            after = high
        else:
            low = ops.convert_to_tensor(self.swa_min_learning_rate, dtype="float32")
            i = update - float(self.start_step)
            fraction = (ops.mod(i - 1.0, float(self.cycle_length)) + 1.0) / float(self.cycle_length)
            after = (1.0 - fraction) * high + fraction * low
        return ops.where(update <= float(self.start_step), before, after)

    def get_config(self) -> dict[str, Any]:
        initial = self.initial
        if isinstance(initial, keras.optimizers.schedules.LearningRateSchedule):
            initial = keras.optimizers.schedules.serialize(initial)
        return {
            "initial": initial,
            "start_step": self.start_step,
            "swa_learning_rate": self.swa_learning_rate,
            "swa_min_learning_rate": self.swa_min_learning_rate,
            "cycle_length": self.cycle_length,
        }


@keras.saving.register_keras_serializable(package="keras_optsuite")
class SWA(_WeightAveraging):
    """Stochastic Weight Averaging.

    Izmailov et al., 2018, "Averaging Weights Leads to Wider Optima and
    Better Generalization", https://arxiv.org/abs/1803.05407 (Algorithm 1).

    The inner optimizer trains as usual; after update ``start_step`` and then
    after every ``average_period``-th update the weights join an equal-weight
    running average: ``n += 1``, ``average += (weights - average) / n``.

    With ``swa_learning_rate`` the inner optimizer's learning rate is handed
    over to :class:`SWALearningRate` once averaging starts: constant, or
    cyclical down to ``swa_min_learning_rate`` over each averaging period
    (the paper's two schedules). Its value before ``start_step`` is the one
    the inner optimizer was created with.

    Batch-normalization statistics are not averaged: recompute them with one
    pass over the training data (``model.fit`` with a zero learning rate, or
    a forward pass with ``training=True``) after swapping in the average.

    Args:
        inner: the optimizer that trains the weights (instance, name or config).
        start_step: the first update whose result is averaged, >= 1. Defaults to `1`.
        average_period: updates between averages, >= 1. Defaults to `1`.
        swa_learning_rate: learning rate after ``start_step`` (None keeps the
            inner optimizer's). Defaults to `None`.
        swa_min_learning_rate: the cyclical schedule's minimum (None: constant).
            Defaults to `None`.
        final_weights: what the model keeps when ``fit`` ends: ``"averaged"``
            or ``"last"``. Defaults to `"averaged"`.
        name: name of the optimizer.

    Example:
    >>> optimizer = SWA(keras.optimizers.SGD(0.1, momentum=0.9), start_step=750,
    ...                 average_period=50, swa_learning_rate=0.05,
    ...                 swa_min_learning_rate=0.005)
    """

    def __init__(
        self,
        inner: Any,
        start_step: int = 1,
        average_period: int = 1,
        swa_learning_rate: float | None = None,
        swa_min_learning_rate: float | None = None,
        final_weights: str = "averaged",
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(inner, final_weights=final_weights, name=name, **kwargs)
        self.start_step = check_positive_int("start_step", start_step)
        self.average_period = check_positive_int("average_period", average_period)
        if swa_learning_rate is None and swa_min_learning_rate is not None:
            raise ValueError(
                "swa_min_learning_rate needs swa_learning_rate, got "
                f"swa_min_learning_rate={swa_min_learning_rate!r} and swa_learning_rate=None"
            )
        self.swa_learning_rate = swa_learning_rate
        self.swa_min_learning_rate = swa_min_learning_rate
        if swa_learning_rate is not None:
            self._hand_over_learning_rate()

    def _hand_over_learning_rate(self) -> None:
        current = None
        if not isinstance(self.inner, keras.optimizers.MultiOptimizer):
            current = getattr(self.inner, "_learning_rate", None)
        if isinstance(current, SWALearningRate):  # rebuilt from a saved config
            current = current.initial
        if isinstance(current, keras.Variable):
            current = float(current.numpy())
        if not isinstance(current, (float, keras.optimizers.schedules.LearningRateSchedule)):
            raise ValueError(
                "swa_learning_rate needs an inner optimizer with a float or schedule "
                f"learning rate, got inner={self.inner.name!r} with {current!r}"
            )
        assert self.swa_learning_rate is not None  # only called when it is set
        self.inner.learning_rate = SWALearningRate(
            current, self.start_step, self.swa_learning_rate,
            self.swa_min_learning_rate, cycle_length=self.average_period,
        )

    def _averaging_weight(self, step: Any, dtype: str) -> Any:
        since_start = step - float(self.start_step)
        period = float(self.average_period)
        due = ops.logical_and(since_start >= 0.0, ops.equal(ops.mod(since_start, period), 0.0))
        count = ops.floor(since_start / period) + 1.0
        return ops.where(due, 1.0 / ops.maximum(count, 1.0), ops.zeros_like(step))

    def _first_averaged_update(self) -> int:
        return self.start_step
