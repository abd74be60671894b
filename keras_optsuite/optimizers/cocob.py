"""COCOB-Backprop: learning-rate-free training by coin betting."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_optsuite._validation import check_positive
from keras_optsuite.optimizers._base import LearningRateFree, OptsuiteOptimizer


@keras.saving.register_keras_serializable(package="keras_optsuite")
class COCOB(LearningRateFree, OptsuiteOptimizer):
    """COCOB-Backprop (continuous coin betting).

    Orabona and Tommasi, 2017, "Training Deep Networks without Learning
    Rates Through Coin Betting", https://arxiv.org/abs/1705.07795
    (Algorithm 2).

    Each coordinate bets a fraction of its "wealth" (its initial stake plus
    the reward its past bets earned) on the sign of the sum of past negative
    gradients; the step size comes out of the betting strategy, with no
    learning rate to tune.

    Update of each coordinate, in terms of the gradient ``g`` (the paper
    writes it with the negative gradient), ``Delta`` the displacement from
    the initial weight (``Delta_1 = 0``):
    ``L_t = max(L_{t-1}, |g_t|)`` with ``L_0 = epsilon``,
    ``G_t = G_{t-1} + |g_t|``,
    ``Reward_t = max(Reward_{t-1} - Delta_t g_t, 0)``,
    ``theta_t = theta_{t-1} + g_t``,
    ``bet_t = -theta_t / (L_t max(G_t + L_t, alpha L_t)) (L_t + Reward_t)``,
    ``Delta_{t+1} = lr bet_t``, ``w += Delta_{t+1} - Delta_t``.
    The paper writes the last step as ``w_{t+1} = w_1 + bet_t``; the
    increments (as in the authors' code) keep Keras's decoupled weight
    decay, which shrinks ``w`` before each update. With ``learning_rate=1``
    and no weight decay this is exactly the paper's algorithm.

    ``estimated_step_size`` is the mean over all coordinates of
    ``lr (L_t + Reward_t) / (L_t max(G_t + L_t, alpha L_t))``, the
    per-coordinate rate ``eta`` in ``w = w_1 - eta theta_t`` (the effective
    dual-averaging learning rate), with the current ``learning_rate``;
    0.0 before the first step.

    Args:
        learning_rate: float, schedule or callable: a multiplier on the bet
            (1.0 is the paper's algorithm; a schedule below 1 damps it).
            Defaults to `1.0`.
        alpha: ``alpha``, > 0: caps the first bets at about ``1 / alpha`` of
            the wealth. Defaults to `100.0` (the paper's).
        epsilon: ``L_0``, the initial gradient-range estimate, > 0 (keeps
            the bet defined before a coordinate sees a non-zero gradient).
            Defaults to `1e-8` (the authors' code).
        {{base_optimizer_keyword_args}}

    Example:
    >>> model.compile(optimizer=keras_optsuite.optimizers.COCOB(), loss="mse")
    """

    def __init__(
        self,
        learning_rate: Any = 1.0,
        alpha: float = 100.0,
        epsilon: float = 1e-8,
        name: str = "cocob",
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.alpha = check_positive("alpha", alpha)
        self.epsilon = check_positive("epsilon", epsilon)

    def _slot_names(self) -> tuple[str, ...]:
        return ("max_abs_gradient", "abs_gradient_sum", "reward", "gradient_sum", "displacement")

    def _slot_initializer(self, slot_name: str) -> Any:
        if slot_name == "max_abs_gradient":
            # L_0 = epsilon, exactly in the variable's dtype (Keras's Constant
            # goes through float32): the update then needs no floor.
            return lambda shape, dtype: tf.fill(shape, tf.constant(self.epsilon, dtype=dtype))
        return "zeros"

    def _update_variable(self, gradient, variable, learning_rate, t):
        max_abs = self._slot("max_abs_gradient", variable)
        abs_sum = self._slot("abs_gradient_sum", variable)
        reward = self._slot("reward", variable)
        gradient_sum = self._slot("gradient_sum", variable)
        displacement = self._slot("displacement", variable)

        abs_gradient = ops.abs(gradient)
        # Read before any assignment below: the bet needs them all.
        new_max_abs = ops.maximum(max_abs, abs_gradient)
        # max(Reward - Delta g, 0), written as Reward - min(Delta g, Reward)
        # (equal in floating point too): XLA copies a max with a constant
        # into every loop that reads it, so the bet below would recompute it
        # from the old reward, and the reward would be copied every step to
        # keep that read safe; a root with two tensor operands is computed
        # once and read back (benchmarks/step_time.py --jit).
        new_reward = reward - ops.minimum(displacement * gradient, reward)
        self.assign(max_abs, new_max_abs)
        self.assign(reward, new_reward)
        self.assign_add(abs_sum, abs_gradient)
        self.assign_add(gradient_sum, gradient)
        # bet = -theta (L + Reward) / (L max(G + L, alpha L)); the sign and the
        # learning rate are one scalar.
        wealth = (new_max_abs + new_reward) * gradient_sum
        scale = new_max_abs * ops.maximum(abs_sum + new_max_abs, new_max_abs * self.alpha)
        new_displacement = wealth * -learning_rate / scale
        self.assign_add(variable, new_displacement - displacement)
        self.assign(displacement, new_displacement)

    @property
    def estimated_step_size(self) -> float:
        """Mean over all coordinates of ``lr (L + Reward) / (L max(G + L, alpha L))``."""
        if not self.built or int(self.iterations) == 0:
            return 0.0
        total, count = 0.0, 0
        for max_abs, abs_sum, reward in zip(
            self._slots["max_abs_gradient"], self._slots["abs_gradient_sum"], self._slots["reward"]
        ):
            max_abs = np.maximum(np.asarray(max_abs.numpy(), np.float64), self.epsilon)
            abs_sum = np.asarray(abs_sum.numpy(), np.float64)
            reward = np.asarray(reward.numpy(), np.float64)
            rate = (max_abs + reward) / (max_abs * np.maximum(abs_sum + max_abs, self.alpha * max_abs))
            total += float(np.sum(rate))
            count += rate.size
        if count == 0:
            return 0.0
        return float(self.learning_rate) * total / count
