"""Adan: adaptive Nesterov momentum."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_optsuite._validation import check_decay_rate, check_non_negative
from keras_optsuite.optimizers._base import OptsuiteOptimizer, choose, ordered_after, power


@keras.saving.register_keras_serializable(package="keras_optsuite")
class Adan(OptsuiteOptimizer):
    """Adan (adaptive Nesterov momentum).

    Xie et al., 2022, "Adan: Adaptive Nesterov Momentum Algorithm for Faster
    Optimizing Deep Models", https://arxiv.org/abs/2208.06677 (Algorithm 1).

    Adan estimates Nesterov momentum without the extra gradient evaluation
    at an extrapolated point, using the gradient difference
    ``g_t - g_{t-1}`` as the look-ahead correction.

    Coefficients follow the Keras convention (decay of the old value): the
    paper's ``beta_1, beta_2, beta_3 = 0.02, 0.08, 0.01`` are
    ``beta_1=0.98, beta_2=0.92, beta_3=0.99`` here. With ``t`` the 1-based
    step and ``d = g_t - g_{t-1}`` (``0`` at the first step):
    ``m = beta_1 m + (1 - beta_1) g``, ``v = beta_2 v + (1 - beta_2) d``,
    ``n = beta_3 n + (1 - beta_3) (g + beta_2 d)^2``,
    ``w -= lr (m_hat + beta_2 v_hat) / (sqrt(n_hat) + epsilon)``,
    where ``x_hat`` divides by ``1 - beta^t`` (bias correction, as in the
    authors' implementation). Weight decay is Keras's decoupled decay
    ``w -= lr * weight_decay * w`` applied before the step, which agrees with
    the paper's proximal ``w / (1 + lr * weight_decay)`` to first order.

    Args:
        learning_rate: float, schedule or callable. Defaults to `0.001`.
        beta_1: decay of the gradient average, in [0, 1). Defaults to `0.98`.
        beta_2: decay of the gradient-difference average, in [0, 1).
            Defaults to `0.92`.
        beta_3: decay of the second-moment average, in [0, 1). Defaults to `0.99`.
        epsilon: added to the denominator, >= 0. Defaults to `1e-8`.
        {{base_optimizer_keyword_args}}

    Example:
    >>> model.compile(optimizer=keras_optsuite.optimizers.Adan(1e-3), loss="mse")
    """

    def __init__(
        self,
        learning_rate: Any = 0.001,
        beta_1: float = 0.98,
        beta_2: float = 0.92,
        beta_3: float = 0.99,
        epsilon: float = 1e-8,
        name: str = "adan",
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = check_decay_rate("beta_1", beta_1)
        self.beta_2 = check_decay_rate("beta_2", beta_2)
        self.beta_3 = check_decay_rate("beta_3", beta_3)
        self.epsilon = check_non_negative("epsilon", epsilon)

    def _slot_names(self) -> tuple[str, ...]:
        return ("momentum", "difference", "velocity", "previous_gradient")

    def _update_variable(self, gradient, variable, learning_rate, t):
        m = self._slot("momentum", variable)
        v = self._slot("difference", variable)
        n = self._slot("velocity", variable)
        previous_slot = self._slot("previous_gradient", variable)
        # d = 0 at the first step: the "previous" gradient is g itself.
        previous = choose(
            self._is_first_step(), lambda: gradient, lambda: ops.convert_to_tensor(previous_slot)
        )
        difference = gradient - previous
        self._moving_average(m, gradient, self.beta_1)
        self._moving_average(v, difference, self.beta_2)
        self._moving_average(n, ops.square(gradient + self.beta_2 * difference), self.beta_3)
        # lr (m_hat + beta_2 v_hat) / (sqrt(n_hat) + epsilon) with the bias
        # corrections folded into scalars (as adam_step_size does):
        # alpha (m + k v) / (sqrt(n) + epsilon_hat).
        first = 1.0 - power(self.beta_1, t)
        root = ops.sqrt(1.0 - power(self.beta_3, t))
        k = self.beta_2 * first / (1.0 - power(self.beta_2, t))
        alpha = learning_rate * root / first
        new_variable = variable - (m + v * k) * alpha / (ops.sqrt(n) + self.epsilon * root)
        self.assign(variable, new_variable)
        # After the weights, which come after every read of the previous
        # gradient: XLA then writes it in place instead of copying it.
        self.assign(previous_slot, ordered_after(gradient, new_variable))
