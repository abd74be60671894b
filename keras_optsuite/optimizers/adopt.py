"""ADOPT: Adam that converges with any beta_2."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import ops

from keras_optsuite._validation import check_decay_rate, check_non_negative, check_positive
from keras_optsuite.optimizers._base import OptsuiteOptimizer, choose, ordered_after


@keras.saving.register_keras_serializable(package="keras_optsuite")
class ADOPT(OptsuiteOptimizer):
    """ADOPT.

    Taniguchi et al., 2024, "ADOPT: Modified Adam Can Converge with Any
    beta_2 with the Optimal Rate", https://arxiv.org/abs/2411.02853
    (Algorithm 1, with the clipping the authors recommend).

    Two changes to Adam remove its dependence on ``beta_2`` for
    convergence: the current gradient is normalized by the second moment of
    the *previous* steps (so it is independent of ``g_t``), and the
    normalization happens before the momentum average, not after.

    Update: the first step only initializes ``v = g^2`` and leaves the
    weights unchanged. Then, with ``t`` the 1-based step,
    ``u = g / max(sqrt(v), epsilon)`` clipped to ``[-c, c]`` with
    ``c = (t - 1)^clip_exponent``, ``m = beta_1 m + (1 - beta_1) u``,
    ``w -= lr m``, and finally ``v = beta_2 v + (1 - beta_2) g^2``.

    Args:
        learning_rate: float, schedule or callable. Defaults to `0.001`.
        beta_1: decay of the normalized-gradient average, in [0, 1).
            Defaults to `0.9`.
        beta_2: decay of the second-moment average, in [0, 1). Defaults to `0.9999`.
        epsilon: lower bound of ``sqrt(v)``, >= 0. Defaults to `1e-6`.
        clip_exponent: exponent of the clipping bound ``(t - 1)^clip_exponent``,
            > 0, or `None` for the unclipped Algorithm 1. Defaults to `0.25`.
        {{base_optimizer_keyword_args}}

    Example:
    >>> model.compile(optimizer=keras_optsuite.optimizers.ADOPT(1e-3), loss="mse")
    """

    def __init__(
        self,
        learning_rate: Any = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.9999,
        epsilon: float = 1e-6,
        clip_exponent: float | None = 0.25,
        name: str = "adopt",
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = check_decay_rate("beta_1", beta_1)
        self.beta_2 = check_decay_rate("beta_2", beta_2)
        self.epsilon = check_non_negative("epsilon", epsilon)
        self.clip_exponent = (
            None if clip_exponent is None else check_positive("clip_exponent", clip_exponent)
        )

    def _slot_names(self) -> tuple[str, ...]:
        return ("momentum", "velocity")

    def _update_variable(self, gradient, variable, learning_rate, t):
        m = self._slot("momentum", variable)
        v = self._slot("velocity", variable)
        first = self._is_first_step()  # only initializes v = g^2
        grad_sq = ops.square(gradient)

        def new_momentum() -> Any:
            normalized = gradient / ops.maximum(ops.sqrt(v), self.epsilon)
            if self.clip_exponent is not None:
                bound = ops.power(ops.maximum(t - 1.0, 0.0), self.clip_exponent)
                normalized = tf.clip_by_value(normalized, -bound, bound)
            return m + (normalized - m) * (1.0 - self.beta_1)

        m_value = choose(first, lambda: ops.convert_to_tensor(m), new_momentum)
        self.assign(m, m_value)
        self.assign_sub(
            variable,
            choose(first, lambda: ops.zeros_like(m_value), lambda: m_value * learning_rate),
        )
        new_v = choose(first, lambda: grad_sq, lambda: v + (grad_sq - v) * (1.0 - self.beta_2))
        # After the momentum, which reads the old v: XLA then writes v in place
        # instead of copying it every step.
        self.assign(v, ordered_after(new_v, m_value))
