"""LARS: layer-wise adaptive rate scaling."""

from __future__ import annotations

from typing import Any, Sequence

import keras
from keras import ops

from keras_optsuite._validation import check_decay_rate, check_patterns, check_positive
from keras_optsuite.optimizers._base import OptsuiteOptimizer, sum_all
from keras_optsuite.optimizers.gradient_transforms import matches_any


def _norm(tensor: Any) -> Any:
    return ops.sqrt(sum_all(ops.square(tensor)))


@keras.saving.register_keras_serializable(package="keras_optsuite")
class LARS(OptsuiteOptimizer):
    """LARS (layer-wise adaptive rate scaling).

    You, Gitman and Ginsburg, 2017, "Large Batch Training of Convolutional
    Networks", https://arxiv.org/abs/1708.03888 (Algorithm 1).

    Momentum SGD in which every variable (layer) gets its own learning rate,
    the trust ratio of its weight norm to its gradient norm, so each layer
    moves by about ``lr * trust_coefficient`` times its own norm per step
    (before momentum), whatever the scale of its gradient. It was designed for very large
    batches, where a single global rate is too large for some layers and
    too small for others.

    Update of a variable ``w`` with gradient ``g``, ``beta = weight_decay``:
    ``local_lr = trust_coefficient ||w|| / (||g|| + beta ||w||)`` (1 when
    ``||w|| = 0`` or the denominator is 0),
    ``v = momentum v + lr local_lr (g + beta w)``, ``w -= v``.
    Weight decay is the paper's: inside the trust ratio and the momentum,
    not Keras's decoupled decay (``exclude_from_weight_decay`` still
    applies). Variables whose path matches ``exclude_from_adaptation``
    (biases and normalization parameters by default, as large-batch LARS
    setups usually do; Algorithm 1 itself adapts every layer) take a plain
    momentum SGD step, ``v = momentum v + lr g``,
    with neither trust ratio nor weight decay.

    With the paper's small ``trust_coefficient`` LARS runs with much larger
    learning rates than SGD (5.0 fits a small dense model in this package's
    tests); the excluded variables see ``lr`` itself.

    Args:
        learning_rate: float, schedule or callable (the paper's global rate
            ``gamma``). Defaults to `1.0`.
        momentum: decay of the velocity, in [0, 1). Defaults to `0.9`.
        trust_coefficient: ``eta``, > 0. Defaults to `0.001` (the paper's).
        exclude_from_adaptation: regexes searched in each variable's
            ``path``; matching variables get plain momentum SGD. Defaults to
            `("bias", "gamma", "beta")` (Keras's Dense/Conv biases and
            BatchNormalization/LayerNormalization scales and offsets).
        {{base_optimizer_keyword_args}}

    Example:
    >>> model.compile(optimizer=keras_optsuite.optimizers.LARS(1.0, weight_decay=5e-4), loss="mse")
    """

    whole_variable_statistics = True  # per-variable statistics: not on shards (parameter_server.py)

    decays_in_update = True

    def __init__(
        self,
        learning_rate: Any = 1.0,
        momentum: float = 0.9,
        trust_coefficient: float = 0.001,
        exclude_from_adaptation: Sequence[str] = ("bias", "gamma", "beta"),
        name: str = "lars",
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum = check_decay_rate("momentum", momentum)
        self.trust_coefficient = check_positive("trust_coefficient", trust_coefficient)
        self.exclude_from_adaptation = check_patterns(
            "exclude_from_adaptation", exclude_from_adaptation
        )

    def _slot_names(self) -> tuple[str, ...]:
        return ("velocity",)

    def build(self, var_list: list) -> None:
        if self.built:
            return
        super().build(var_list)
        self._adapted = [not matches_any(v, self.exclude_from_adaptation) for v in var_list]

    def _update_variable(self, gradient, variable, learning_rate, t):
        velocity = self._slot("velocity", variable)
        if self._adapted[self._get_variable_index(variable)]:
            decay = self._decay_rate(variable, variable.dtype)
            weight_norm = _norm(variable)
            denominator = _norm(gradient) + decay * weight_norm
            defined = ops.logical_and(weight_norm > 0.0, denominator > 0.0)
            local_lr = ops.where(
                defined,
                self.trust_coefficient * weight_norm / ops.where(defined, denominator, 1.0),
                1.0,
            )
            step = local_lr * (gradient + decay * variable)
        else:
            step = gradient
        new_velocity = self.momentum * velocity + learning_rate * step
        self.assign(velocity, new_velocity)
        self.assign_sub(variable, new_velocity)
