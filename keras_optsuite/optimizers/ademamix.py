"""AdEMAMix: Adam with a mixture of a fast and a slow gradient average."""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from keras_optsuite._validation import (
    check_decay_rate,
    check_non_negative,
    check_positive_int,
    check_range,
)
from keras_optsuite.optimizers._base import OptsuiteOptimizer, power


@keras.saving.register_keras_serializable(package="keras_optsuite")
class AdEMAMix(OptsuiteOptimizer):
    """AdEMAMix.

    Pagliardini, Ablin and Grangier, 2024, "The AdEMAMix Optimizer: Better,
    Faster, Older", https://arxiv.org/abs/2409.03137 (Algorithm 1).

    A single EMA cannot both react to recent gradients and remember old
    ones. AdEMAMix adds a slow EMA ``m2`` (``beta_3`` close to 1, half-life
    of thousands of steps) to Adam's fast EMA ``m1``:
    ``m1 = beta_1 m1 + (1 - beta_1) g``, ``m2 = beta_3 m2 + (1 - beta_3) g``,
    ``nu = beta_2 nu + (1 - beta_2) g^2``,
    ``w -= lr (m1 / (1 - beta_1^t) + alpha m2) / (sqrt(nu / (1 - beta_2^t)) + epsilon)``.

    The paper warms up ``alpha`` linearly and ``beta_3`` along a schedule that
    keeps the half-life growing linearly, to avoid early instability:
    ``alpha_t = min(t alpha / alpha_warmup_steps, alpha)`` and
    ``beta_3(t) = min(exp(ln(beta_1) ln(beta_3) /
    ((1 - t/T) ln(beta_3) + (t/T) ln(beta_1))), beta_3)`` with
    ``T = beta_3_warmup_steps``. Both are off by default (``None``); the
    paper sets both to the total number of training steps.

    Args:
        learning_rate: float, schedule or callable. Defaults to `0.001`.
        beta_1: decay of the fast average, in (0, 1). Defaults to `0.9`.
        beta_2: decay of the second-moment average, in [0, 1). Defaults to `0.999`.
        beta_3: decay of the slow average, in [0, 1). Defaults to `0.9999`.
        alpha: weight of the slow average, >= 0. Defaults to `5.0`.
        epsilon: added to the denominator, >= 0. Defaults to `1e-8`.
        alpha_warmup_steps: steps of the linear ``alpha`` warm-up, or `None`.
        beta_3_warmup_steps: steps of the ``beta_3`` warm-up, or `None`.
        {{base_optimizer_keyword_args}}

    Example:
    >>> opt = keras_optsuite.optimizers.AdEMAMix(1e-3, alpha_warmup_steps=10_000,
    ...                                          beta_3_warmup_steps=10_000)
    """

    def __init__(
        self,
        learning_rate: Any = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        beta_3: float = 0.9999,
        alpha: float = 5.0,
        epsilon: float = 1e-8,
        alpha_warmup_steps: int | None = None,
        beta_3_warmup_steps: int | None = None,
        name: str = "ademamix",
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        # beta_1 = 0 would make the beta_3 schedule's ln(beta_1) infinite.
        self.beta_1 = check_range("beta_1", beta_1, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
        self.beta_2 = check_decay_rate("beta_2", beta_2)
        self.beta_3 = check_range("beta_3", beta_3, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
        self.alpha = check_non_negative("alpha", alpha)
        self.epsilon = check_non_negative("epsilon", epsilon)
        self.alpha_warmup_steps = check_positive_int("alpha_warmup_steps", alpha_warmup_steps, allow_none=True)
        self.beta_3_warmup_steps = check_positive_int("beta_3_warmup_steps", beta_3_warmup_steps, allow_none=True)

    def _slot_names(self) -> tuple[str, ...]:
        return ("fast_momentum", "slow_momentum", "velocity")

    def _alpha(self, t):
        if self.alpha_warmup_steps is None:
            return ops.convert_to_tensor(self.alpha, dtype=t.dtype)
        return ops.minimum(t * self.alpha / self.alpha_warmup_steps, self.alpha)

    def _beta_3(self, t):
        if self.beta_3_warmup_steps is None:
            return ops.convert_to_tensor(self.beta_3, dtype=t.dtype)
        log_start, log_end = math.log(self.beta_1), math.log(self.beta_3)
        fraction = t / self.beta_3_warmup_steps
        scheduled = ops.exp(
            log_start * log_end / ((1.0 - fraction) * log_end + fraction * log_start)
        )
        return ops.minimum(scheduled, self.beta_3)

    def _update_variable(self, gradient, variable, learning_rate, t):
        m1 = self._slot("fast_momentum", variable)
        m2 = self._slot("slow_momentum", variable)
        nu = self._slot("velocity", variable)
        self._moving_average(m1, gradient, self.beta_1)
        self._moving_average(m2, gradient, self._beta_3(t))
        self._moving_average(nu, ops.square(gradient), self.beta_2)
        # lr (m1_hat + alpha m2) / (sqrt(nu_hat) + epsilon) with the bias
        # corrections folded into scalars: a (m1 + k m2) / (sqrt(nu) + epsilon_hat).
        first = 1.0 - power(self.beta_1, t)
        root = ops.sqrt(1.0 - power(self.beta_2, t))
        k = self._alpha(t) * first
        self.assign_sub(
            variable,
            (m1 + m2 * k) * (learning_rate * root / first) / (ops.sqrt(nu) + self.epsilon * root),
        )
