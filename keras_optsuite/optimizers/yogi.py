"""Yogi: additive, sign-controlled second-moment updates."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_optsuite._validation import check_decay_rate, check_non_negative
from keras_optsuite.optimizers._base import OptsuiteOptimizer, adam_step_size


@keras.saving.register_keras_serializable(package="keras_optsuite")
class Yogi(OptsuiteOptimizer):
    """Yogi.

    Zaheer et al., 2018, "Adaptive Methods for Nonconvex Optimization",
    NeurIPS 2018 (Algorithm 2),
    https://papers.nips.cc/paper/8186-adaptive-methods-for-nonconvex-optimization.

    Adam's second moment ``v`` can grow quickly and forget a large
    gradient; Yogi changes ``v`` additively by ``(1 - beta_2) g^2`` in the
    direction of ``g^2``, so the effective learning rate changes gradually.

    Update, with ``t`` the 1-based step:
    ``m = beta_1 m + (1 - beta_1) g``,
    ``v = v - (1 - beta_2) sign(v - g^2) g^2``,
    ``w -= lr (m / (1 - beta_1^t)) / (sqrt(v / (1 - beta_2^t)) + epsilon)``.
    The paper omits Adam's bias correction "for clarity"; it is applied here,
    as in the authors' experiments' Adam baseline and in optax/TF Addons.

    Args:
        learning_rate: float, schedule or callable. Defaults to `0.01`
            (the paper's recommended value).
        beta_1: decay of the first-moment average, in [0, 1). Defaults to `0.9`.
        beta_2: rate of the additive second-moment change, in [0, 1).
            Defaults to `0.999`.
        epsilon: added to the denominator, >= 0. Defaults to `1e-3` (paper).
        initial_accumulator_value: initial ``v``, >= 0. Defaults to `1e-6` (paper).
        {{base_optimizer_keyword_args}}

    Example:
    >>> model.compile(optimizer=keras_optsuite.optimizers.Yogi(1e-2), loss="mse")
    """

    def __init__(
        self,
        learning_rate: Any = 0.01,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-3,
        initial_accumulator_value: float = 1e-6,
        name: str = "yogi",
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = check_decay_rate("beta_1", beta_1)
        self.beta_2 = check_decay_rate("beta_2", beta_2)
        self.epsilon = check_non_negative("epsilon", epsilon)
        self.initial_accumulator_value = check_non_negative(
            "initial_accumulator_value", initial_accumulator_value
        )

    def _slot_names(self) -> tuple[str, ...]:
        return ("momentum", "velocity")

    def _slot_initializer(self, slot_name: str) -> Any:
        if slot_name == "velocity":
            return keras.initializers.Constant(self.initial_accumulator_value)
        return "zeros"

    def _update_variable(self, gradient, variable, learning_rate, t):
        m = self._slot("momentum", variable)
        v = self._slot("velocity", variable)
        grad_sq = ops.square(gradient)
        self._moving_average(m, gradient, self.beta_1)
        self.assign_sub(v, ops.sign(v - grad_sq) * grad_sq * (1.0 - self.beta_2))
        alpha, epsilon_hat = adam_step_size(learning_rate, self.beta_1, self.beta_2, self.epsilon, t)
        self.assign_sub(variable, m * alpha / (ops.sqrt(v) + epsilon_hat))
