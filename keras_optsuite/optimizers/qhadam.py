"""QHAdam and QHM: quasi-hyperbolic momentum."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_optsuite._validation import check_decay_rate, check_fraction, check_non_negative
from keras_optsuite.optimizers._base import OptsuiteOptimizer, power


@keras.saving.register_keras_serializable(package="keras_optsuite")
class QHM(OptsuiteOptimizer):
    """Quasi-hyperbolic momentum (QHM).

    Ma and Yarats, 2019, "Quasi-hyperbolic momentum and Adam for deep
    learning", https://arxiv.org/abs/1810.06801.

    The step is a weighted average of the plain gradient and a momentum
    buffer: ``buf = momentum buf + (1 - momentum) g`` and
    ``w -= lr ((1 - nu) g + nu buf)``. ``nu=1`` is (normalized) momentum SGD,
    ``nu=0`` is plain SGD; the paper recommends ``nu=0.7, momentum=0.999``.

    Args:
        learning_rate: float, schedule or callable. Defaults to `0.01`.
        momentum: decay of the momentum buffer, in [0, 1). Defaults to `0.999`.
        nu: weight of the momentum buffer in the step, in [0, 1]. Defaults to `0.7`.
        {{base_optimizer_keyword_args}}

    Example:
    >>> model.compile(optimizer=keras_optsuite.optimizers.QHM(0.1), loss="mse")
    """

    def __init__(
        self,
        learning_rate: Any = 0.01,
        momentum: float = 0.999,
        nu: float = 0.7,
        name: str = "qhm",
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum = check_decay_rate("momentum", momentum)
        self.nu = check_fraction("nu", nu)

    def _slot_names(self) -> tuple[str, ...]:
        return ("momentum_buffer",)

    def _update_variable(self, gradient, variable, learning_rate, t):
        buf = self._slot("momentum_buffer", variable)
        self._moving_average(buf, gradient, self.momentum)
        if self.nu == 0.0:
            self.assign_sub(variable, gradient * learning_rate)
            return
        # (1 - nu) g + nu buf = nu (buf + g (1 - nu) / nu): the weights in scalars.
        self.assign_sub(
            variable, (buf + gradient * ((1.0 - self.nu) / self.nu)) * (learning_rate * self.nu)
        )


@keras.saving.register_keras_serializable(package="keras_optsuite")
class QHAdam(OptsuiteOptimizer):
    """Quasi-hyperbolic Adam (QHAdam).

    Ma and Yarats, 2019, "Quasi-hyperbolic momentum and Adam for deep
    learning", https://arxiv.org/abs/1810.06801.

    QHM's interpolation applied to both of Adam's moments:
    ``g1 = beta_1 g1 + (1 - beta_1) g``, ``g2 = beta_2 g2 + (1 - beta_2) g^2``,
    ``w -= lr ((1 - nu_1) g + nu_1 g1_hat) /
    (sqrt((1 - nu_2) g^2 + nu_2 g2_hat) + epsilon)``, where ``x_hat`` divides
    by ``1 - beta^t``. ``nu_1 = nu_2 = 1`` is Adam.

    Args:
        learning_rate: float, schedule or callable. Defaults to `0.001`.
        beta_1: decay of the first moment, in [0, 1). Defaults to `0.995`
            (the paper's recommendation).
        beta_2: decay of the second moment, in [0, 1). Defaults to `0.999`.
        nu_1: weight of the first-moment average, in [0, 1]. Defaults to `0.7`.
        nu_2: weight of the second-moment average, in [0, 1]. Defaults to `1.0`.
        epsilon: added to the denominator, >= 0. Defaults to `1e-8`.
        {{base_optimizer_keyword_args}}

    Example:
    >>> model.compile(optimizer=keras_optsuite.optimizers.QHAdam(1e-3), loss="mse")
    """

    def __init__(
        self,
        learning_rate: Any = 0.001,
        beta_1: float = 0.995,
        beta_2: float = 0.999,
        nu_1: float = 0.7,
        nu_2: float = 1.0,
        epsilon: float = 1e-8,
        name: str = "qhadam",
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = check_decay_rate("beta_1", beta_1)
        self.beta_2 = check_decay_rate("beta_2", beta_2)
        self.nu_1 = check_fraction("nu_1", nu_1)
        self.nu_2 = check_fraction("nu_2", nu_2)
        self.epsilon = check_non_negative("epsilon", epsilon)

    def _slot_names(self) -> tuple[str, ...]:
        return ("momentum", "velocity")

    def _update_variable(self, gradient, variable, learning_rate, t):
        g1 = self._slot("momentum", variable)
        g2 = self._slot("velocity", variable)
        grad_sq = ops.square(gradient)
        self._moving_average(g1, gradient, self.beta_1)
        self._moving_average(g2, grad_sq, self.beta_2)
        # The bias corrections and the nu weights folded into scalars, exactly:
        # numerator (1 - nu_1) g + nu_1 g1 / c1 = a (g1 + b g) with
        # a = nu_1 / c1, b = (1 - nu_1) c1 / nu_1; denominator
        # sqrt((1 - nu_2) g^2 + nu_2 g2 / c2) + epsilon = r (sqrt(g2 + q g^2) + epsilon / r)
        # with r = sqrt(nu_2 / c2), q = (1 - nu_2) c2 / nu_2 (c = 1 - beta^t).
        # nu = 1 drops the gradient term (Adam's tensor work); nu = 0 the average.
        c1 = 1.0 - power(self.beta_1, t)
        c2 = 1.0 - power(self.beta_2, t)
        if self.nu_1 == 0.0:
            numerator, scale = gradient, ops.ones_like(t)
        elif self.nu_1 == 1.0:
            numerator, scale = g1, 1.0 / c1
        else:
            numerator = g1 + gradient * ((1.0 - self.nu_1) * c1 / self.nu_1)
            scale = self.nu_1 / c1
        if self.nu_2 == 0.0:
            root, epsilon = ops.abs(gradient), ops.convert_to_tensor(self.epsilon, dtype=t.dtype)
        else:
            r = ops.sqrt(self.nu_2 / c2)
            second = g2 if self.nu_2 == 1.0 else g2 + grad_sq * ((1.0 - self.nu_2) * c2 / self.nu_2)
            root, epsilon = ops.sqrt(second), self.epsilon / r
            scale = scale / r
        self.assign_sub(variable, numerator * (learning_rate * scale) / (root + epsilon))
