"""RAdam: Adam with a rectified adaptive learning rate."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_optsuite._validation import check_decay_rate, check_non_negative, check_range
from keras_optsuite.optimizers._base import OptsuiteOptimizer, adam_step_size, choose, power


def rectification(t: Any, beta_2: float, sma_threshold: float) -> tuple[Any, Any]:
    """RAdam's variance rectification (Liu et al. 2019, Algorithm 2).

    Returns ``(rectified, r_t)``: whether the length ``rho_t`` of the
    approximated simple moving average exceeds ``sma_threshold`` (the
    adaptive learning rate's variance is tractable), and the rectification
    term ``r_t`` (1 where it is not).
    """
    beta_2_power = power(beta_2, t)
    rho_inf = 2.0 / (1.0 - beta_2) - 1.0
    rho_t = rho_inf - 2.0 * t * beta_2_power / (1.0 - beta_2_power)
    rectified = rho_t > sma_threshold
    # r_t is undefined for rho_t <= 4: evaluate it at a harmless point there so
    # the branch that ops.where discards stays finite.
    safe_rho_t = ops.where(rectified, rho_t, 5.0)
    r_t = ops.sqrt(
        (safe_rho_t - 4.0) * (safe_rho_t - 2.0) * rho_inf
        / ((rho_inf - 4.0) * (rho_inf - 2.0) * safe_rho_t)
    )
    return rectified, ops.where(rectified, r_t, ops.ones_like(r_t))


def apply_rectified_step(
    optimizer: keras.optimizers.Optimizer,
    variable: Any,
    momentum: Any,
    second_moment: Any,
    learning_rate: Any,
    t: Any,
    beta_1: float,
    beta_2: float,
    epsilon: float,
    sma_threshold: float,
) -> None:
    """RAdam's step (Liu et al. 2019, Algorithm 2) from the updated moments.

    ``second_moment`` is the *uncorrected* second-moment average. While
    ``rho_t <= sma_threshold`` the variance of the adaptive rate is
    intractable and the step is SGD with momentum, ``w -= lr m_hat``;
    afterwards it is the adaptive step scaled by the rectification term,
    ``w -= lr r_t m_hat / (sqrt(v_hat) + epsilon)``, computed as
    ``alpha r_t m / (sqrt(v) + epsilon_hat)`` (``adam_step_size``: the same
    number, with the bias corrections folded into scalars). The branch is
    chosen once per step on a scalar (``choose``), so without XLA only one
    of them touches the tensors.
    """
    rectified, r_t = rectification(t, beta_2, sma_threshold)
    alpha, epsilon_hat = adam_step_size(learning_rate, beta_1, beta_2, epsilon, t)
    momentum_rate = learning_rate / (1.0 - power(beta_1, t))

    optimizer.assign_sub(
        variable,
        choose(
            rectified,
            lambda: momentum * (alpha * r_t) / (ops.sqrt(second_moment) + epsilon_hat),
            lambda: momentum * momentum_rate,
        ),
    )


@keras.saving.register_keras_serializable(package="keras_optsuite")
class RAdam(OptsuiteOptimizer):
    """Rectified Adam (RAdam).

    Liu et al., 2019, "On the Variance of the Adaptive Learning Rate and
    Beyond", https://arxiv.org/abs/1908.03265 (Algorithm 2).

    Adam's adaptive learning rate has a large variance in the first steps,
    when the second-moment average has seen few gradients. RAdam multiplies
    the Adam step by a rectification term ``r_t`` derived from the length
    ``rho_t`` of the approximated simple moving average, and while
    ``rho_t <= sma_threshold`` it takes a bias-corrected SGD-with-momentum
    step instead (the paper's "degenerate to SGD" variant, which is the
    default here and in the authors' code; the paper states the switch at
    ``rho_t > 4``, the authors' code and TensorFlow Addons use 5).

    Update, with ``t`` the 1-based step:
    ``m = beta_1 m + (1 - beta_1) g``, ``v = beta_2 v + (1 - beta_2) g^2``,
    ``m_hat = m / (1 - beta_1^t)``;
    if ``rho_t > sma_threshold``:
    ``w -= lr r_t m_hat / (sqrt(v / (1 - beta_2^t)) + epsilon)``,
    else ``w -= lr m_hat``.

    Args:
        learning_rate: float, schedule or callable. Defaults to `0.001`.
        beta_1: decay of the first-moment average, in [0, 1). Defaults to `0.9`.
        beta_2: decay of the second-moment average, in [0, 1). Defaults to `0.999`.
        epsilon: added to the denominator, >= 0. Defaults to `1e-7`.
        sma_threshold: the rectified step is used once ``rho_t`` exceeds this,
            >= 4 (4 is the paper's Algorithm 2). Defaults to `5.0`.
        {{base_optimizer_keyword_args}}

    Example:
    >>> model.compile(optimizer=keras_optsuite.optimizers.RAdam(1e-3), loss="mse")
    """

    def __init__(
        self,
        learning_rate: Any = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        sma_threshold: float = 5.0,
        name: str = "radam",
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = check_decay_rate("beta_1", beta_1)
        self.beta_2 = check_decay_rate("beta_2", beta_2)
        self.epsilon = check_non_negative("epsilon", epsilon)
        self.sma_threshold = check_range("sma_threshold", sma_threshold, low=4.0)

    def _slot_names(self) -> tuple[str, ...]:
        return ("momentum", "velocity")

    def _update_variable(self, gradient, variable, learning_rate, t):
        m = self._slot("momentum", variable)
        v = self._slot("velocity", variable)
        self._moving_average(m, gradient, self.beta_1)
        self._moving_average(v, ops.square(gradient), self.beta_2)
        apply_rectified_step(
            self, variable, m, v, learning_rate, t,
            self.beta_1, self.beta_2, self.epsilon, self.sma_threshold,
        )
