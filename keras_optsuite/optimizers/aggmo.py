"""AggMo: aggregated momentum."""

from __future__ import annotations

from typing import Any, Sequence

import keras

from keras_optsuite._validation import check_decay_rate
from keras_optsuite.optimizers._base import OptsuiteOptimizer


@keras.saving.register_keras_serializable(package="keras_optsuite")
class AggMo(OptsuiteOptimizer):
    """Aggregated momentum (AggMo).

    Lucas, Sun, Zemel and Grosse, 2019, "Aggregated Momentum: Stability
    Through Passive Damping", https://arxiv.org/abs/1804.00325.

    Keeps ``K`` heavy-ball velocities with different damping coefficients
    and steps along their average: large ``beta`` gives speed along
    low-curvature directions, the small ones damp the oscillations a large
    ``beta`` alone would cause. ``v_i = beta_i v_i - g`` and
    ``w += (lr / K) sum_i v_i``. A velocity with ``beta_i = 0`` is ``-g``
    and is not stored (the default keeps two velocity tensors, not three).

    Args:
        learning_rate: float, schedule or callable. Defaults to `0.01`.
        betas: the damping coefficients, each in [0, 1). Defaults to
            `(0.0, 0.9, 0.99)` (the paper's recommendation).
        {{base_optimizer_keyword_args}}

    Example:
    >>> model.compile(optimizer=keras_optsuite.optimizers.AggMo(0.1), loss="mse")
    """

    def __init__(
        self,
        learning_rate: Any = 0.01,
        betas: Sequence[float] = (0.0, 0.9, 0.99),
        name: str = "aggmo",
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) == 0:
            raise ValueError(f"betas must be a non-empty sequence of floats, got betas={betas!r}")
        self.betas = tuple(check_decay_rate(f"betas[{i}]", b) for i, b in enumerate(betas))

    def _slot_names(self) -> tuple[str, ...]:
        # A velocity with beta = 0 keeps no memory (v = -g): it is not stored,
        # which saves its memory and, under XLA, the pass that wrote it.
        return tuple(f"velocity_{i}" for i, beta in enumerate(self.betas) if beta != 0.0)

    def _update_variable(self, gradient, variable, learning_rate, t):
        total = 0.0
        for i, beta in enumerate(self.betas):
            if beta == 0.0:
                total = total - gradient
                continue
            v = self._slot(f"velocity_{i}", variable)
            self.assign(v, beta * v - gradient)
            total = total + v
        self.assign_add(variable, learning_rate / len(self.betas) * total)
