"""LaProp: momentum applied after the adaptive normalization."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_optsuite._validation import check_decay_rate, check_non_negative
from keras_optsuite.optimizers._base import OptsuiteOptimizer, power


@keras.saving.register_keras_serializable(package="keras_optsuite")
class LaProp(OptsuiteOptimizer):
    """LaProp.

    Ziyin, Wang and Ueda, 2020, "LaProp: Separating Momentum and Adaptivity
    in Adam", https://arxiv.org/abs/2002.04839 (Algorithm 1).

    Adam averages raw gradients and then divides by the RMS; LaProp divides
    each gradient by the current RMS first and then averages, which
    decouples momentum from adaptivity and removes Adam's instability when
    ``beta_1 > sqrt(beta_2)``.

    Update, with ``t`` the 1-based step:
    ``n = beta_2 n + (1 - beta_2) g^2``,
    ``m = beta_1 m + (1 - beta_1) g / (sqrt(n / (1 - beta_2^t)) + epsilon)``,
    ``w -= lr m / (1 - beta_1^t)``.

    Args:
        learning_rate: float, schedule or callable. Defaults to `0.0004`
            (the paper's default).
        beta_1: decay of the momentum, in [0, 1). Defaults to `0.9`.
        beta_2: decay of the second-moment average, in [0, 1). Defaults to `0.999`.
        epsilon: added to the denominator, >= 0. Defaults to `1e-15` (paper).
        {{base_optimizer_keyword_args}}

    Example:
    >>> model.compile(optimizer=keras_optsuite.optimizers.LaProp(4e-4), loss="mse")
    """

    def __init__(
        self,
        learning_rate: Any = 0.0004,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-15,
        name: str = "laprop",
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = check_decay_rate("beta_1", beta_1)
        self.beta_2 = check_decay_rate("beta_2", beta_2)
        self.epsilon = check_non_negative("epsilon", epsilon)

    def _slot_names(self) -> tuple[str, ...]:
        return ("momentum", "velocity")

    def _update_variable(self, gradient, variable, learning_rate, t):
        m = self._slot("momentum", variable)
        n = self._slot("velocity", variable)
        self._moving_average(n, ops.square(gradient), self.beta_2)
        # g / (sqrt(n_hat) + epsilon) = root g / (sqrt(n) + epsilon root),
        # root = sqrt(1 - beta_2^t): the correction folded into scalars.
        root = ops.sqrt(1.0 - power(self.beta_2, t))
        normalized = gradient * (root * (1.0 - self.beta_1)) / (ops.sqrt(n) + self.epsilon * root)
        self.assign_add(m, normalized - m * (1.0 - self.beta_1))
        self.assign_sub(variable, m * (learning_rate / (1.0 - power(self.beta_1, t))))
