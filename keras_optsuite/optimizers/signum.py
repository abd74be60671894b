"""Signum: sign SGD with momentum."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_optsuite._validation import check_decay_rate
from keras_optsuite.optimizers._base import OptsuiteOptimizer


@keras.saving.register_keras_serializable(package="keras_optsuite")
class Signum(OptsuiteOptimizer):
    """Signum (signSGD with momentum).

    Bernstein, Wang, Azizzadenesheli and Anandkumar, 2018, "signSGD:
    Compressed Optimisation for Non-Convex Problems",
    https://arxiv.org/abs/1802.04434 (Algorithm 1, Signum).

    Every weight moves by exactly ``lr`` in the direction of the sign of its
    momentum: ``m = momentum m + (1 - momentum) g``, ``w -= lr sign(m)``.
    ``momentum=0`` is signSGD. Each step moves every coordinate by the full
    learning rate, so use much smaller rates than for SGD.

    Args:
        learning_rate: float, schedule or callable. Defaults to `0.0001`
            (the paper's ImageNet setting).
        momentum: decay of the momentum, in [0, 1). Defaults to `0.9`.
        {{base_optimizer_keyword_args}}

    Example:
    >>> model.compile(optimizer=keras_optsuite.optimizers.Signum(1e-4), loss="mse")
    """

    def __init__(
        self,
        learning_rate: Any = 0.0001,
        momentum: float = 0.9,
        name: str = "signum",
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum = check_decay_rate("momentum", momentum)

    def _slot_names(self) -> tuple[str, ...]:
        return ("momentum_buffer",)

    def _update_variable(self, gradient, variable, learning_rate, t):
        m = self._slot("momentum_buffer", variable)
        self._moving_average(m, gradient, self.momentum)
        self.assign_sub(variable, ops.sign(m) * learning_rate)
