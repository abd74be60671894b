"""Schedule-free learning: SGD, AdamW and RAdam without a learning-rate schedule."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_optsuite._validation import (
    check_bool,
    check_decay_rate,
    check_non_negative,
    check_non_negative_int,
    check_range,
)
from keras_optsuite.optimizers._base import CrossVariableOptimizer, choose, power
from keras_optsuite.optimizers._evaluation_weights import SwappedEvaluationWeights
from keras_optsuite.optimizers.radam import rectification


class _ScheduleFree(SwappedEvaluationWeights, CrossVariableOptimizer):
    """Defazio et al. 2024, "The Road Less Scheduled", Algorithm 1 (not used directly).

    The model trains ``y``; the optimizer keeps the base sequence ``z`` and
    the average ``x`` (the evaluation weights) in two slots. With ``t`` the
    1-based step, ``gamma_t = learning_rate_t * min(1, t / warmup_steps)``
    (times the variant's factor) and ``beta`` the interpolation:
    ``z = z - gamma_t (direction(g) + weight_decay * y)``,
    ``c = gamma_t^p / sum_{i<=t} gamma_i^p`` (``p = weight_lr_power``),
    ``x = (1 - c) x + c z``, ``y = (1 - beta) z + beta x``.
    ``z`` and ``x`` start at the weights the first step sees.

    Weight decay is the paper's: evaluated at ``y`` and applied through the
    ``z`` step. Variants define ``direction`` and the factor on ``gamma_t``.
    """

    decays_in_update = True
    _evaluation_slot = "x"
    _interpolation: str  # name of the constructor argument that is beta

    def __init__(
        self,
        learning_rate: Any,
        interpolation: float,
        warmup_steps: int,
        weight_lr_power: float,
        final_weights: str,
        name: str,
        **kwargs: Any,
    ) -> None:
        final_weights = self._check_final_weights(final_weights)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        setattr(self, self._interpolation, check_decay_rate(self._interpolation, interpolation))
        self.warmup_steps = check_non_negative_int("warmup_steps", warmup_steps)
        self.weight_lr_power = check_non_negative("weight_lr_power", weight_lr_power)
        self.final_weights = final_weights

    # -- state -------------------------------------------------------------
    def _slot_names(self) -> tuple[str, ...]:
        return ("z", "x") + self._direction_slots()

    def _direction_slots(self) -> tuple[str, ...]:
        return ()

    def _scalar_state(self) -> dict[str, Any]:
        return {"weight_sum": 0.0}

    def build(self, var_list: list) -> None:
        if self.built:
            return
        super().build(var_list)
        self._build_evaluation_flag()

    @property
    def averaged_variables(self) -> list:
        """The averages ``x`` (the evaluation weights), in the order of the trainable variables."""
        return list(self._slots["x"])

    def _has_evaluation_weights(self) -> bool:
        return self.built and int(self.iterations.numpy()) > 0

    def _no_evaluation_weights_reason(self) -> str:
        return "no step was taken yet"

    # -- update --------------------------------------------------------------
    def _step_terms(self, t: Any) -> tuple[Any, Any]:
        """``(factor on gamma_t, context for _direction)``, once per step (override)."""
        return ops.ones_like(t), None

    def _direction(
        self, gradient: Any, variable: Any, t: Any, context: Any
    ) -> tuple[Any, Any, list]:
        """``(direction, scale, [(slot, new value), ...])`` for one variable (override).

        The ``z`` step is ``gamma_t * scale * direction``: a scalar ``scale``
        keeps scalar factors (bias corrections) off the tensors.
        """
        raise NotImplementedError

    def _update_all(self, grads, variables, learning_rate, t):
        beta = getattr(self, self._interpolation)
        factor, context = self._step_terms(t)
        gamma = learning_rate * factor
        if self.warmup_steps:
            gamma = gamma * ops.minimum(t / float(self.warmup_steps), 1.0)
        weight = ops.power(gamma, self.weight_lr_power)
        weight_sum = self._scalars["weight_sum"] + weight
        c = ops.where(weight_sum > 0.0, weight / ops.where(weight_sum > 0.0, weight_sum, 1.0), 0.0)
        first = self._is_first_step()
        assignments = [(self._scalars["weight_sum"], weight_sum)]
        for gradient, variable in zip(grads, variables):
            dtype = variable.dtype
            y = ops.convert_to_tensor(variable)
            z_slot, x_slot = self._slot("z", variable), self._slot("x", variable)
            # z and x start at y.
            z = choose(first, lambda y=y: y, lambda z_slot=z_slot: ops.convert_to_tensor(z_slot))
            x = choose(first, lambda y=y: y, lambda x_slot=x_slot: ops.convert_to_tensor(x_slot))
            direction, scale, slot_updates = self._direction(
                gradient, variable, ops.cast(t, dtype), context
            )
            step = ops.cast(gamma, dtype)
            z = z - direction * (step * scale)
            if self._decays(variable):
                z = z - y * (step * self._decay_rate(variable, dtype))
            c_v = ops.cast(c, dtype)
            x = x + (z - x) * c_v
            y = z + (x - z) * beta
            assignments += slot_updates + [(z_slot, z), (x_slot, x), (variable, y)]
        return assignments


@keras.saving.register_keras_serializable(package="keras_optsuite")
class ScheduleFreeSGD(_ScheduleFree):
    """Schedule-free SGD.

    Defazio, Yang, Mehta, Mishchenko, Khaled and Cutkosky, 2024, "The Road
    Less Scheduled", https://arxiv.org/abs/2405.15682 (Algorithm 1 with the
    plain gradient step).

    No learning-rate schedule and no stopping time: the model trains at the
    interpolation ``y`` of a base SGD sequence ``z`` and its weighted
    average ``x``, and the average ``x`` is what you evaluate. Update, with
    ``t`` the 1-based step and ``gamma_t`` the learning rate (times the
    warmup ramp): ``z = z - gamma_t (g(y) + weight_decay y)``,
    ``c = gamma_t^p / sum_i gamma_i^p``, ``x = (1 - c) x + c z``,
    ``y = (1 - momentum) z + momentum x``.

    Train with ``keras_optsuite.callbacks.SwapEvaluationWeights`` so
    validation, ``evaluate``, ``predict`` and checkpoints use ``x``; when
    ``fit`` ends the model keeps ``x`` (``final_weights="averaged"``). Use
    ``final_weights="last"`` to keep ``y`` if you will call ``fit`` again.
    Batch-normalization statistics were gathered at ``y``: recompute them at
    ``x`` before relying on them.

    Args:
        learning_rate: float, schedule or callable. Defaults to `1.0` (the
            authors' default for SGD).
        momentum: the interpolation ``beta`` between ``z`` and ``x``, in [0, 1).
            Defaults to `0.9`.
        warmup_steps: linear warmup of ``gamma_t`` over this many steps (0: none).
            Defaults to `0`.
        weight_lr_power: ``p`` in the averaging weights. Defaults to `2.0`.
        final_weights: what the model keeps when ``fit`` ends: ``"averaged"``
            (``x``) or ``"last"`` (``y``). Defaults to `"averaged"`.
        {{base_optimizer_keyword_args}}

    Example:
    >>> model.compile(optimizer=ScheduleFreeSGD(0.5), loss="mse")
    >>> model.fit(x, y, validation_split=0.1, callbacks=[SwapEvaluationWeights()])
    """

    _interpolation = "momentum"

    def __init__(
        self,
        learning_rate: Any = 1.0,
        momentum: float = 0.9,
        warmup_steps: int = 0,
        weight_lr_power: float = 2.0,
        final_weights: str = "averaged",
        name: str = "schedule_free_sgd",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            learning_rate, momentum, warmup_steps, weight_lr_power, final_weights, name, **kwargs
        )

    def _direction(self, gradient, variable, t, context):
        return gradient, ops.ones_like(t), []


class _AdaptiveScheduleFree(_ScheduleFree):
    """Schedule-free methods with Adam's second moment (not used directly)."""

    _interpolation = "beta_1"

    def _direction_slots(self) -> tuple[str, ...]:
        return ("velocity",)

    def _normalized(self, gradient: Any, variable: Any, t: Any) -> tuple[Any, Any, list]:
        """``g / (sqrt(v_hat) + epsilon)`` as ``root * (g / (sqrt(v) + epsilon root))``.

        ``root = sqrt(1 - beta_2^t)``: the same number with the bias
        correction in the scalar ``root`` (returned as the scale).
        """
        v_slot = self._slot("velocity", variable)
        v = v_slot + (ops.square(gradient) - v_slot) * (1.0 - self.beta_2)
        root = ops.sqrt(1.0 - power(self.beta_2, t))
        return gradient / (ops.sqrt(v) + self.epsilon * root), root, [(v_slot, v)]


@keras.saving.register_keras_serializable(package="keras_optsuite")
class ScheduleFreeAdamW(_AdaptiveScheduleFree):
    """Schedule-free AdamW.

    Defazio, Yang, Mehta, Mishchenko, Khaled and Cutkosky, 2024, "The Road
    Less Scheduled", https://arxiv.org/abs/2405.15682 (Algorithm 1).

    Update, with ``t`` the 1-based step and ``gamma_t`` the learning rate
    times the warmup ramp ``min(1, t / warmup_steps)``:
    ``v = beta_2 v + (1 - beta_2) g(y)^2``, ``v_hat = v / (1 - beta_2^t)``,
    ``z = z - gamma_t (g / (sqrt(v_hat) + epsilon) + weight_decay y)``,
    ``c = gamma_t^p / sum_i gamma_i^p``, ``x = (1 - c) x + c z``,
    ``y = (1 - beta_1) z + beta_1 x``. The model trains ``y``; evaluate
    ``x`` (see :class:`ScheduleFreeSGD` for the evaluation-weights workflow).

    Unlike ``keras.optimizers.ScheduleFreeAdamW`` in Keras 3.15.1, this
    follows the paper on the TensorFlow backend: Keras's keeps
    ``momentum.value`` (a live view of the variable) as "z before the
    update", so it rebuilds ``x`` from the new ``z`` and leaves the
    published trajectory from step 2 on (tests/test_schedule_free.py
    measures both against the paper). It also keeps ``x`` exactly instead
    of recovering it from ``y`` and ``z``, applies weight decay at ``y`` as
    the paper does, and swaps ``x`` in for evaluation.

    Args:
        learning_rate: float, schedule or callable. Defaults to `0.0025`.
        beta_1: the interpolation ``beta`` between ``z`` and ``x``, in [0, 1).
            Defaults to `0.9`.
        beta_2: decay of the second-moment average, in [0, 1). Defaults to `0.999`.
        epsilon: added to the denominator, >= 0. Defaults to `1e-8`.
        warmup_steps: linear warmup of ``gamma_t`` (0: none). Defaults to `0`.
        weight_lr_power: ``p`` in the averaging weights. Defaults to `2.0`.
        final_weights: ``"averaged"`` (``x``) or ``"last"`` (``y``) after ``fit``.
            Defaults to `"averaged"`.
        {{base_optimizer_keyword_args}}

    Example:
    >>> model.compile(optimizer=ScheduleFreeAdamW(2.5e-3, warmup_steps=100), loss="mse")
    >>> model.fit(x, y, validation_split=0.1, callbacks=[SwapEvaluationWeights()])
    """

    def __init__(
        self,
        learning_rate: Any = 0.0025,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        warmup_steps: int = 0,
        weight_lr_power: float = 2.0,
        final_weights: str = "averaged",
        name: str = "schedule_free_adamw",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            learning_rate, beta_1, warmup_steps, weight_lr_power, final_weights, name, **kwargs
        )
        self.beta_2 = check_decay_rate("beta_2", beta_2)
        self.epsilon = check_non_negative("epsilon", epsilon)

    def _direction(self, gradient, variable, t, context):
        return self._normalized(gradient, variable, t)


@keras.saving.register_keras_serializable(package="keras_optsuite")
class ScheduleFreeRAdam(_AdaptiveScheduleFree):
    """Schedule-free RAdam.

    Schedule-free learning (Defazio et al., 2024,
    https://arxiv.org/abs/2405.15682) with RAdam's rectification (Liu et al.,
    2019, https://arxiv.org/abs/1908.03265), as in the authors'
    ``RAdamScheduleFree``: no warmup to tune.

    ``gamma_t = learning_rate_t r_t`` once RAdam's ``rho_t`` exceeds
    ``sma_threshold`` and the step is the ScheduleFreeAdamW step (without
    ``warmup_steps``); before that, with ``silent_sgd_phase`` (the default)
    ``gamma_t = 0`` - the weights stay where they are while the second
    moment gathers statistics (the first 5 steps at ``beta_2 = 0.999``) -
    otherwise a plain schedule-free SGD step with ``gamma_t = learning_rate_t``.

    Args:
        learning_rate: float, schedule or callable. Defaults to `0.0025`.
        beta_1: the interpolation ``beta`` between ``z`` and ``x``. Defaults to `0.9`.
        beta_2: decay of the second-moment average. Defaults to `0.999`.
        epsilon: added to the denominator, >= 0. Defaults to `1e-8`.
        sma_threshold: rectified steps start once ``rho_t`` exceeds this, >= 4.
            Defaults to `4.0` (the authors' schedule-free code).
        silent_sgd_phase: take no step while the variance is intractable.
            Defaults to `True`.
        weight_lr_power: ``p`` in the averaging weights. Defaults to `2.0`.
        final_weights: ``"averaged"`` (``x``) or ``"last"`` (``y``) after ``fit``.
            Defaults to `"averaged"`.
        {{base_optimizer_keyword_args}}

    Example:
    >>> model.compile(optimizer=ScheduleFreeRAdam(2.5e-3), loss="mse")
    """

    def __init__(
        self,
        learning_rate: Any = 0.0025,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        sma_threshold: float = 4.0,
        silent_sgd_phase: bool = True,
        weight_lr_power: float = 2.0,
        final_weights: str = "averaged",
        name: str = "schedule_free_radam",
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate, beta_1, 0, weight_lr_power, final_weights, name, **kwargs)
        self.beta_2 = check_decay_rate("beta_2", beta_2)
        self.epsilon = check_non_negative("epsilon", epsilon)
        self.sma_threshold = check_range("sma_threshold", sma_threshold, low=4.0)
        self.silent_sgd_phase = check_bool("silent_sgd_phase", silent_sgd_phase)

    def _step_terms(self, t):
        rectified, r_t = rectification(t, self.beta_2, self.sma_threshold)
        before = 0.0 if self.silent_sgd_phase else 1.0
        return ops.where(rectified, r_t, before), rectified

    def _direction(self, gradient, variable, t, rectified):
        v_slot = self._slot("velocity", variable)
        v = v_slot + (ops.square(gradient) - v_slot) * (1.0 - self.beta_2)
        root = ops.sqrt(1.0 - power(self.beta_2, t))
        direction = choose(
            rectified, lambda: gradient / (ops.sqrt(v) + self.epsilon * root), lambda: gradient
        )
        return direction, ops.where(rectified, root, ops.ones_like(root)), [(v_slot, v)]
