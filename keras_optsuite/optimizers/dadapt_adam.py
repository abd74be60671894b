"""D-Adaptation for Adam: a learning-rate-free Adam."""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from keras_optsuite._validation import (
    check_bool,
    check_decay_rate,
    check_growth_rate,
    check_non_negative,
    check_paper_exact,
    check_positive,
)
from keras_optsuite.optimizers._base import (
    DistanceEstimate,
    adam_bias_correction,
    ordered_after,
    sum_all,
)

# What DAdaptAdam(paper_exact=True) requires: the paper's algorithm has neither option.
_PAPER_EXACT = {"growth_rate": math.inf, "use_bias_correction": False}

@keras.saving.register_keras_serializable(package="keras_optsuite")
class DAdaptAdam(DistanceEstimate):
    """D-Adapted Adam.

    Defazio and Mishchenko, 2023, "Learning-Rate-Free Learning by
    D-Adaptation", ICML 2023, https://arxiv.org/abs/2301.07733 (the Adam
    variant, as the authors' ``dadaptation.DAdaptAdam`` implements it).

    Adam whose step size ``d`` is a lower bound on the distance to the
    solution, grown from the weighted inner products of the gradients with
    their running sum ``s``. Keep ``learning_rate=1.0``; it multiplies ``d``.
    One ``d`` is shared by all variables. Update, with ``t`` the 1-based
    step, sums over every coordinate of every variable,
    ``dlr = d lr bc`` (``bc`` Adam's bias correction when
    ``use_bias_correction``) and ``b = sqrt(beta_2)``:
    ``r = b r + (1 - b) dlr <g, s / (sqrt(v) + epsilon)>`` (``s``, ``v`` before
    this step), ``m = beta_1 m + (1 - beta_1) dlr g``,
    ``v = beta_2 v + (1 - beta_2) g^2``, ``s = b s + (1 - b) dlr g``,
    ``d_hat = r / ((1 - b) sum |s|)``,
    ``d_new = max(d, min(d_hat, d growth_rate))``;
    ``x = x - dlr weight_decay x - m / (sqrt(v) + epsilon)``.
    While every gradient is zero (``sum |s| = 0``) ``d`` stays; the authors'
    code then skips the step.

    Deviations from the paper's Adam D-Adaptation algorithm (arXiv
    2301.07733 v5, the ICML version), all the authors' code's (version 3):

    - The inner product ``<g, s>`` is weighted by ``1 / (sqrt(v) + epsilon)``
      with ``v`` before this step's update; the paper weights it by
      ``A_{k+1}^{-1}``, ``A_{k+1} = diag(sqrt(v_new) + epsilon)``, the same
      denominator the step divides by (the difference is also reported
      against the code upstream: facebookresearch/dadaptation#38).
    - While ``sum |s| = 0`` the paper's ``d_hat`` is ``0 / 0``; here ``d`` stays.
    - ``growth_rate``, ``use_bias_correction`` and weight decay are the
      code's additions; their defaults are the paper's algorithm (the paper
      has no weight decay).

    ``paper_exact=True`` runs the paper's algorithm as printed (checked
    against ``tests/references/dadapt_adam_defazio2023.py`` at rtol 1e-9).

    Weight decay is decoupled and scaled by ``dlr`` (the authors'
    ``decouple=True``; their default couples it to the gradient). The
    current ``d * learning_rate`` is ``estimated_step_size`` (for logging).
    Memory: four float tensors per parameter (m, v, s and the weights).

    Args:
        learning_rate: multiplier on the estimated step size (float, schedule
            or callable). Defaults to `1.0`.
        beta_1: decay of the first moment. Defaults to `0.9`.
        beta_2: decay of the second moment. Defaults to `0.999`.
        epsilon: added to the denominator, >= 0. Defaults to `1e-8`.
        d0: initial estimate, > 0. Defaults to `1e-6`.
        growth_rate: largest factor ``d`` may grow by per step, >= 1.
            Defaults to `inf`.
        use_bias_correction: include Adam's bias correction in ``dlr``.
            Defaults to `False`.
        paper_exact: `True` runs the paper's algorithm as printed:
            ``r = b r + (1 - b) dlr <g, s / (sqrt(v_new) + epsilon)>`` with
            ``s`` before and ``v_new`` after this step's update.
            ``growth_rate`` and ``use_bias_correction`` must keep their
            defaults (passing others raises ``ValueError``); weight decay
            (not in the paper) is applied as above. Defaults to `False`.
        {{base_optimizer_keyword_args}}

    Example:
    >>> model.compile(optimizer=DAdaptAdam(), loss="mse")
    """

    decays_in_update = True

    def __init__(
        self,
        learning_rate: Any = 1.0,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        d0: float = 1e-6,
        growth_rate: float = math.inf,
        use_bias_correction: bool = False,
        paper_exact: bool = False,
        name: str = "dadapt_adam",
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = check_decay_rate("beta_1", beta_1)
        self.beta_2 = check_decay_rate("beta_2", beta_2)
        self.epsilon = check_non_negative("epsilon", epsilon)
        self.d0 = check_positive("d0", d0)
        self.growth_rate = check_growth_rate("growth_rate", growth_rate)
        self.use_bias_correction = check_bool("use_bias_correction", use_bias_correction)
        self.paper_exact = check_bool("paper_exact", paper_exact)
        if paper_exact:
            check_paper_exact("Defazio and Mishchenko 2023",
                              {"growth_rate": growth_rate, "use_bias_correction": use_bias_correction},
                              _PAPER_EXACT)

    def _slot_names(self) -> tuple[str, ...]:
        return ("momentum", "velocity", "s")

    def _scalar_state(self) -> dict[str, Any]:
        return {"d": self.d0, "numerator": 0.0}

    def _update_all(self, grads, variables, learning_rate, t):
        b = math.sqrt(self.beta_2)
        d = self._scalars["d"]
        d_value = ops.convert_to_tensor(d)
        dlr = d_value * learning_rate * adam_bias_correction(
            self.use_bias_correction, self.beta_1, self.beta_2, t
        )
        inner = ops.zeros((), d_value.dtype)
        s_norm = ops.zeros((), d_value.dtype)
        new_state = []
        for g, variable in zip(grads, variables):
            dtype = variable.dtype
            m_slot, v_slot, s_slot = (
                self._slot(name, variable) for name in ("momentum", "velocity", "s")
            )
            step = ops.cast(dlr, dtype)
            scaled = g * step
            m = m_slot + (scaled - m_slot) * (1.0 - self.beta_1)
            v = v_slot + (ops.square(g) - v_slot) * (1.0 - self.beta_2)
            # <g, s / (sqrt(v) + epsilon)> with s before this step and v before
            # it (the code: the one pass over the state that Adam does not
            # make) or after it (the paper's A_{k+1}).
            weighted = sum_all(g * s_slot / (ops.sqrt(v if self.paper_exact else v_slot) + self.epsilon))
            inner += ops.cast(step * weighted, d_value.dtype)
            s = s_slot + (scaled - s_slot) * (1.0 - b)
            # Written after the sum that reads the old s and v: XLA then
            # updates them in place instead of copying both every step.
            s, v = ordered_after(s, weighted), ordered_after(v, weighted)
            s_norm += ops.cast(sum_all(ops.abs(s)), d_value.dtype)
            new_state.append((variable, m, m_slot, v, v_slot, s, s_slot))

        numerator = b * self._scalars["numerator"] + (1.0 - b) * inner
        moved = s_norm > 0.0
        d_hat = numerator / ((1.0 - b) * ops.where(moved, s_norm, 1.0))
        new_d = ops.maximum(d_value, ops.minimum(d_hat, d_value * self.growth_rate))
        new_d = ops.where(moved, new_d, d_value)

        assignments = [(self._scalars["numerator"], numerator), (d, new_d)]
        for variable, m, m_slot, v, v_slot, s, s_slot in new_state:
            dtype = variable.dtype
            x = ops.convert_to_tensor(variable)
            if self._decays(variable):
                x = x - x * (ops.cast(dlr, dtype) * self._decay_rate(variable, dtype))
            new_x = x - m / (ops.sqrt(v) + self.epsilon)
            assignments += [(m_slot, m), (v_slot, v), (s_slot, s), (variable, new_x)]
        return assignments
