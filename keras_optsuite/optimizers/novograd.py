"""NovoGrad: momentum on layer-wise normalized gradients."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_optsuite._validation import check_bool, check_decay_rate, check_non_negative
from keras_optsuite.optimizers._base import OptsuiteOptimizer, sum_all


def _state_prefix(variable: Any) -> str:
    """``variable``'s path as Keras prefixes slot names (no ``/`` or ``:``)."""
    path = getattr(variable, "path", None) or variable.name
    return path.replace("/", "_").replace(":", "_")


@keras.saving.register_keras_serializable(package="keras_optsuite")
class NovoGrad(OptsuiteOptimizer):
    """NovoGrad.

    Ginsburg et al., 2019, "Stochastic Gradient Methods with Layer-wise
    Adaptive Moments for Training of Deep Networks",
    https://arxiv.org/abs/1905.11286 (Algorithm 1).

    Adam-like, but the second moment is one number per variable (layer),
    the moving average of the squared gradient norm: each layer's gradient
    is divided by its running norm before it enters the momentum, so the
    optimizer state is about half of Adam's.

    Update of a variable ``w`` with gradient ``g``, ``t`` the 1-based step,
    ``m_0 = 0``:
    ``v_1 = ||g_1||^2``, ``v_t = beta_2 v_{t-1} + (1 - beta_2) ||g_t||^2``,
    ``m_t = beta_1 m_{t-1} + (g_t / (sqrt(v_t) + epsilon) + weight_decay w_t)``,
    ``w_{t+1} = w_t - lr m_t``.
    Weight decay is the paper's: inside the momentum, not Keras's decoupled
    decay (``exclude_from_weight_decay`` still applies).
    ``grad_averaging=True`` multiplies the bracket by ``(1 - beta_1)`` from
    the second step on, as TensorFlow Addons' NovoGrad does (the first step
    keeps ``m_1`` at the bracket, so the average is not biased toward 0);
    the step is then about ``1 - beta_1`` times smaller, so raise the
    learning rate accordingly.

    Args:
        learning_rate: float, schedule or callable. Defaults to `0.01`.
        beta_1: decay of the momentum, in [0, 1). Defaults to `0.95`.
        beta_2: decay of the squared-gradient-norm average, in [0, 1).
            Defaults to `0.98`.
        epsilon: added to the norm in the denominator, >= 0. Defaults to `1e-8`.
        grad_averaging: use an exponential average (not a sum) of the
            normalized gradients in the momentum. Defaults to `False`.
        {{base_optimizer_keyword_args}}

    Example:
    >>> model.compile(optimizer=keras_optsuite.optimizers.NovoGrad(0.01), loss="mse")
    """

    whole_variable_statistics = True  # per-variable statistics: not on shards (parameter_server.py)

    decays_in_update = True

    def __init__(
        self,
        learning_rate: Any = 0.01,
        beta_1: float = 0.95,
        beta_2: float = 0.98,
        epsilon: float = 1e-8,
        grad_averaging: bool = False,
        name: str = "novograd",
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = check_decay_rate("beta_1", beta_1)
        self.beta_2 = check_decay_rate("beta_2", beta_2)
        self.epsilon = check_non_negative("epsilon", epsilon)
        self.grad_averaging = check_bool("grad_averaging", grad_averaging)

    def _slot_names(self) -> tuple[str, ...]:
        return ("momentum",)

    def build(self, var_list: list) -> None:
        if self.built:
            return
        super().build(var_list)
        # One scalar per variable, not a slot of the variable's shape.
        self._squared_norm_averages = [
            self.add_variable(shape=(), dtype=v.dtype, name=f"{_state_prefix(v)}_squared_norm_average")
            for v in var_list
        ]

    def _update_variable(self, gradient, variable, learning_rate, t):
        momentum = self._slot("momentum", variable)
        average = self._squared_norm_averages[self._get_variable_index(variable)]
        first_step = self._is_first_step()
        squared_norm = sum_all(ops.square(gradient))
        new_average = ops.where(
            first_step,
            squared_norm,
            self.beta_2 * average + (1.0 - self.beta_2) * squared_norm,
        )
        self.assign(average, new_average)
        bracket = (
            gradient / (ops.sqrt(new_average) + self.epsilon)
            + self._decay_rate(variable, variable.dtype) * variable
        )
        if self.grad_averaging:
            bracket = ops.where(first_step, bracket, (1.0 - self.beta_1) * bracket)
        new_momentum = self.beta_1 * momentum + bracket
        self.assign(momentum, new_momentum)
        self.assign_sub(variable, learning_rate * new_momentum)
