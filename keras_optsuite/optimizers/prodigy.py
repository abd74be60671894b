"""Prodigy: a learning-rate-free Adam that estimates the distance to the solution."""

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
    choose,
    compiled_by_xla,
    sum_all,
)

# What Prodigy(paper_exact=True) requires: Algorithm 4 has none of these options.
_PAPER_EXACT = {"beta_3": None, "d_coef": 1.0, "growth_rate": math.inf,
                "use_bias_correction": False, "safeguard_warmup": False}

@keras.saving.register_keras_serializable(package="keras_optsuite")
class Prodigy(DistanceEstimate):
    """Prodigy (Adam version).

    Mishchenko and Defazio, 2023, "Prodigy: An Expeditiously Adaptive
    Parameter-Free Learner", https://arxiv.org/abs/2306.06101 (Algorithm 4),
    as the authors' ``prodigyopt`` implements it.

    Adam whose step size ``d`` estimates the distance from the initial
    weights ``x0`` to the solution, from the correlation of the gradients
    with the distance travelled. Keep ``learning_rate=1.0``; it multiplies
    ``d`` (use a schedule on it for warmup or decay). One estimate ``d`` is
    shared by all variables. Update, with ``t`` the 1-based step, sums over
    every coordinate of every variable and ``dlr = d lr bc`` (``bc`` the Adam
    bias correction when ``use_bias_correction``, else 1):
    ``r = beta_3 r + (d / d0) dlr <g, x0 - x>``,
    ``s = beta_3 s + (d / d0) dlr g`` (``(d / d0) d g`` with ``safeguard_warmup``),
    ``m = beta_1 m + (1 - beta_1) d g``, ``v = beta_2 v + (1 - beta_2) d^2 g^2``,
    ``d_hat = d_coef r / sum |s|``; then ``d_max = max(d_max, d_hat)`` and
    ``d_new = min(d_max, d growth_rate)`` (the first growth from ``d0`` is not
    limited); finally
    ``x = x - dlr weight_decay x - dlr m / (sqrt(v) + d_new epsilon)``.
    ``beta_3`` defaults to ``sqrt(beta_2)``. While every gradient is zero
    (``sum |s| = 0``) ``d`` stays; the authors' code then skips the step.

    Deviations from Algorithm 4 as printed (arXiv v4), all the authors' code's:

    - ``r`` and ``s`` add ``(d / d0) dlr`` times the new term where the paper
      adds ``(1 - sqrt(beta_2)) lr d^2``: both sums are scaled by the same
      ``1 / (d0 (1 - sqrt(beta_2)))``, which cancels in ``d_hat`` (the code
      does it to keep ``s`` away from float underflow); the stored ``r`` and
      ``s`` differ from the paper's by that factor.
    - The denominator adds ``d_new epsilon`` (the estimate after this
      step's update); the paper adds ``d epsilon`` (the estimate the step
      started with, the one in ``dlr`` and ``m``).
    - While ``sum |s| = 0`` the paper's ``d_hat`` is ``0 / 0``; here ``d`` stays.
    - ``beta_3``, ``d_coef``, ``growth_rate``, ``use_bias_correction``,
      ``safeguard_warmup`` and weight decay are the code's additions; their
      defaults are the paper's algorithm (the paper has no weight decay).

    ``paper_exact=True`` runs Algorithm 4 as printed (checked against
    ``tests/references/prodigy_mishchenko2023.py`` at rtol 1e-9).

    Weight decay is decoupled and scaled by ``dlr`` (as ``prodigyopt`` with
    ``decouple=True``), not by ``learning_rate`` alone. The estimated step
    size ``d * learning_rate`` is ``estimated_step_size`` (for logging).
    Memory: five float tensors per parameter (m, v, s, x0 and the weights).

    Args:
        learning_rate: multiplier on the estimated step size (float, schedule
            or callable). Defaults to `1.0`.
        beta_1: decay of the first moment. Defaults to `0.9`.
        beta_2: decay of the second moment. Defaults to `0.999`.
        beta_3: decay of the estimate's sums (None: ``sqrt(beta_2)``).
            Defaults to `None`.
        epsilon: added to the denominator (scaled by ``d``), >= 0. Defaults to `1e-8`.
        d0: initial estimate, > 0. Defaults to `1e-6`.
        d_coef: multiplier on the estimate, > 0. Defaults to `1.0`.
        growth_rate: largest factor ``d`` may grow by per step, >= 1.
            Defaults to `inf`.
        use_bias_correction: include Adam's bias correction in ``dlr``.
            Defaults to `False`.
        safeguard_warmup: leave the learning rate out of ``s`` (for warmup
            schedules). Defaults to `False`.
        paper_exact: `True` runs Algorithm 4 of the paper as printed:
            ``r = sqrt(beta_2) r + (1 - sqrt(beta_2)) lr d^2 <g, x0 - x>``,
            ``s = sqrt(beta_2) s + (1 - sqrt(beta_2)) lr d^2 g``,
            ``d_new = max(d, r / sum |s|)`` and
            ``x = x - lr d m / (sqrt(v) + d epsilon)`` with the ``d`` the
            step started with. ``beta_3``, ``d_coef``, ``growth_rate``,
            ``use_bias_correction`` and ``safeguard_warmup`` must keep their
            defaults (passing others raises ``ValueError``); weight decay
            (not in the paper) is applied as above. Defaults to `False`.
        {{base_optimizer_keyword_args}}

    Example:
    >>> model.compile(optimizer=Prodigy(), loss="mse")
    >>> model.optimizer.estimated_step_size  # after some training
    """

    decays_in_update = True

    def __init__(
        self,
        learning_rate: Any = 1.0,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        beta_3: float | None = None,
        epsilon: float = 1e-8,
        d0: float = 1e-6,
        d_coef: float = 1.0,
        growth_rate: float = math.inf,
        use_bias_correction: bool = False,
        safeguard_warmup: bool = False,
        paper_exact: bool = False,
        name: str = "prodigy",
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = check_decay_rate("beta_1", beta_1)
        self.beta_2 = check_decay_rate("beta_2", beta_2)
        self.beta_3 = None if beta_3 is None else check_decay_rate("beta_3", beta_3)
        self.epsilon = check_non_negative("epsilon", epsilon)
        self.d0 = check_positive("d0", d0)
        self.d_coef = check_positive("d_coef", d_coef)
        self.growth_rate = check_growth_rate("growth_rate", growth_rate)
        self.use_bias_correction = check_bool("use_bias_correction", use_bias_correction)
        self.safeguard_warmup = check_bool("safeguard_warmup", safeguard_warmup)
        self.paper_exact = check_bool("paper_exact", paper_exact)
        if paper_exact:
            given = {"beta_3": beta_3, "d_coef": d_coef, "growth_rate": growth_rate,
                     "use_bias_correction": use_bias_correction, "safeguard_warmup": safeguard_warmup}
            check_paper_exact("Mishchenko and Defazio 2023, Algorithm 4", given, _PAPER_EXACT)

    def _slot_names(self) -> tuple[str, ...]:
        return ("momentum", "velocity", "s", "initial_value")

    def _scalar_state(self) -> dict[str, Any]:
        return {"d": self.d0, "d_max": self.d0, "numerator": 0.0}

    def _update_all(self, grads, variables, learning_rate, t):
        beta_3 = math.sqrt(self.beta_2) if self.beta_3 is None else self.beta_3
        d, d_max = self._scalars["d"], self._scalars["d_max"]
        d_value = ops.convert_to_tensor(d)
        dlr = d_value * learning_rate * adam_bias_correction(
            self.use_bias_correction, self.beta_1, self.beta_2, t
        )
        # The weight of this step's terms in r and s: the paper's, or the code's
        # (the same up to a constant factor, which cancels in d_hat).
        weight = (1.0 - beta_3) * d_value if self.paper_exact else d_value / self.d0
        s_weight = weight * (d_value if self.safeguard_warmup else dlr)
        first = self._is_first_step()
        # x0 is written once, at the first step (not copied every step).
        self._update_each(self._capture_initial_value, variables, shared=(first,))

        correlation = ops.zeros((), d_value.dtype)
        s_norm = ops.zeros((), d_value.dtype)
        moments = []
        for g, variable in zip(grads, variables):
            dtype = variable.dtype
            x = ops.convert_to_tensor(variable)
            x0_slot = self._slot("initial_value", variable)
            # At the first step x0 is x: the correlation is 0, without a pass over x0.
            correlation += choose(
                first,
                lambda: ops.zeros((), d_value.dtype),
                lambda g=g, x=x, x0_slot=x0_slot: ops.cast(sum_all(g * (x0_slot - x)), d_value.dtype),
            )
            s_slot = self._slot("s", variable)
            s = s_slot * beta_3 + g * ops.cast(s_weight, dtype)
            s_norm += ops.cast(sum_all(ops.abs(s)), d_value.dtype)
            m_slot, v_slot = self._slot("momentum", variable), self._slot("velocity", variable)
            scaled = g * ops.cast(d_value, dtype)
            m = m_slot + (scaled - m_slot) * (1.0 - self.beta_1)
            v = v_slot + (ops.square(scaled) - v_slot) * (1.0 - self.beta_2)
            moments.append((variable, x, s, s_slot, m, m_slot, v, v_slot))

        numerator = beta_3 * self._scalars["numerator"] + weight * dlr * correlation
        moved = s_norm > 0.0
        d_hat = self.d_coef * numerator / ops.where(moved, s_norm, 1.0)
        grown = ops.where(ops.equal(d_value, self.d0), ops.maximum(d_value, d_hat), d_value)
        new_d_max = ops.maximum(d_max, d_hat)
        new_d = ops.minimum(new_d_max, grown * self.growth_rate)
        new_d = ops.where(moved, new_d, d_value)
        new_d_max = ops.where(moved, new_d_max, d_max)

        assignments = [(self._scalars["numerator"], numerator), (d, new_d), (d_max, new_d_max)]
        # epsilon is scaled by the new estimate in the code, by the step's own in the paper.
        epsilon_scale = d_value if self.paper_exact else new_d
        for variable, x, s, s_slot, m, m_slot, v, v_slot in moments:
            dtype = variable.dtype
            step = ops.cast(dlr, dtype)
            if self._decays(variable):
                x = x - x * (step * self._decay_rate(variable, dtype))
            new_x = x - m * step / (ops.sqrt(v) + ops.cast(epsilon_scale, dtype) * self.epsilon)
            assignments += [(s_slot, s), (m_slot, m), (v_slot, v), (variable, new_x)]
        return assignments

    def _capture_initial_value(self, variable: Any, first: Any) -> None:
        x0 = self._slot("initial_value", variable)
        if compiled_by_xla():  # a select fuses into the loop; a conditional would copy x0
            x0.assign(ops.where(first, variable, x0))
            return

        def capture() -> None:
            x0.assign(variable)

        ops.cond(first, capture, lambda: None)
