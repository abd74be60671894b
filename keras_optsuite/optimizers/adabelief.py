"""AdaBelief: adapt the step size by the belief in the observed gradient."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import ops

from keras_optsuite._validation import check_decay_rate, check_non_negative, check_range
from keras_optsuite.optimizers._base import OptsuiteOptimizer, adam_step_size
from keras_optsuite.optimizers.radam import apply_rectified_step


@keras.saving.register_keras_serializable(package="keras_optsuite")
class AdaBelief(OptsuiteOptimizer):
    """AdaBelief.

    Zhuang et al., 2020, "AdaBelief Optimizer: Adapting Stepsizes by the
    Belief in Observed Gradients", https://arxiv.org/abs/2010.07468
    (Algorithm 2).

    Adam divides by the running mean of ``g^2``; AdaBelief divides by the
    running variance of the gradient around its prediction ``m``: a large
    step when the observed gradient agrees with the prediction, a small one
    when it does not.

    Update, with ``t`` the 1-based step:
    ``m = beta_1 m + (1 - beta_1) g``,
    ``s = beta_2 s + (1 - beta_2) (g - m)^2 + epsilon``,
    ``w -= lr (m / (1 - beta_1^t)) / (sqrt(s / (1 - beta_2^t)) + epsilon)``.

    Variants: the default is the paper's Algorithm 2 (no rectification).
    ``amsgrad=True`` uses the running maximum of ``s``; ``rectify=True``
    applies RAdam's rectification (as the authors' later releases do by
    default), with the same ``sma_threshold`` switch to SGD with momentum.

    Args:
        learning_rate: float, schedule or callable. Defaults to `0.001`.
        beta_1: decay of the first-moment average, in [0, 1). Defaults to `0.9`.
        beta_2: decay of the belief (variance) average, in [0, 1). Defaults to `0.999`.
        epsilon: >= 0, added inside ``s`` and to the denominator (as in the
            paper). Defaults to `1e-16`.
        amsgrad: use the maximum of past ``s``. Defaults to `False`.
        rectify: apply RAdam's rectification. Defaults to `False`.
        sma_threshold: RAdam switch point when ``rectify=True``, >= 4.
            Defaults to `5.0`.
        {{base_optimizer_keyword_args}}

    Example:
    >>> model.compile(optimizer=keras_optsuite.optimizers.AdaBelief(1e-3), loss="mse")
    """

    def __init__(
        self,
        learning_rate: Any = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-16,
        amsgrad: bool = False,
        rectify: bool = False,
        sma_threshold: float = 5.0,
        name: str = "adabelief",
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = check_decay_rate("beta_1", beta_1)
        self.beta_2 = check_decay_rate("beta_2", beta_2)
        self.epsilon = check_non_negative("epsilon", epsilon)
        self.amsgrad = bool(amsgrad)
        self.rectify = bool(rectify)
        self.sma_threshold = check_range("sma_threshold", sma_threshold, low=4.0)

    def _slot_names(self) -> tuple[str, ...]:
        return ("momentum", "belief") + (("belief_max",) if self.amsgrad else ())

    def _update_variable(self, gradient, variable, learning_rate, t):
        m = self._slot("momentum", variable)
        s = self._slot("belief", variable)
        self._moving_average(m, gradient, self.beta_1)
        # (g - m)^2 in one kernel; epsilon is added to s every step, as in the paper.
        self.assign_add(
            s, (tf.math.squared_difference(gradient, m) - s) * (1.0 - self.beta_2) + self.epsilon
        )
        if self.amsgrad:
            s_max = self._slot("belief_max", variable)
            self.assign(s_max, ops.maximum(s_max, s))
            s = s_max
        if self.rectify:
            apply_rectified_step(
                self, variable, m, s, learning_rate, t,
                self.beta_1, self.beta_2, self.epsilon, self.sma_threshold,
            )
            return
        alpha, epsilon_hat = adam_step_size(learning_rate, self.beta_1, self.beta_2, self.epsilon, t)
        self.assign_sub(variable, m * alpha / (ops.sqrt(s) + epsilon_hat))
