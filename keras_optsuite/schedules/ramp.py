"""A value held, then moved to another between two steps: for rates and bounds."""

from __future__ import annotations

from typing import Any

import keras

from keras_optsuite._validation import check_choice, check_non_negative_int, check_real
from keras_optsuite.schedules._base import ANNEALING_SHAPES, ScaledSchedule, anneal, fraction


@keras.saving.register_keras_serializable(package="keras_optsuite")
class Ramp(ScaledSchedule):
    """``start_value`` until ``start_step``, then to ``end_value`` at ``end_step``, then held.

    The ramps that regularization papers prescribe: DropBlock raises its
    drop rate linearly from 0 (Ghiasi et al., 2018,
    https://arxiv.org/abs/1810.12890, section 3); Batch Renormalization
    keeps ``r_max = 1, d_max = 0`` for the first 5k steps, then relaxes them
    to 3 and 5 (Ioffe, 2017, https://arxiv.org/abs/1702.03275, section 4).
    At the 0-based ``step``::

        step <= start_step:  start_value
        step >= end_step:    end_value
        between:             anneal(start_value, end_value, (step - start_step) / (end_step - start_step))

    with ``shape`` one of ``"linear"``, ``"cosine"``, ``"1-sqrt"``. Values
    may rise or fall, and be negative. It is a Keras ``LearningRateSchedule``
    (so it also serves as a learning rate, e.g. a warmup with a delay) and
    is used by :class:`keras_optsuite.layers.BatchRenormalization` for its
    clipping bounds and by :class:`keras_optsuite.callbacks.DropoutScheduler`
    for drop rates.

    Args:
        start_value: the value up to ``start_step``.
        end_value: the value from ``end_step`` on.
        start_step: the last step at ``start_value``, >= 0. Defaults to `0`.
        end_step: the first step at ``end_value``, > ``start_step``.
        shape: how the value moves between them. Defaults to `"linear"`.

    Example:
    >>> r_max = Ramp(1.0, 3.0, start_step=5_000, end_step=40_000)
    >>> float(r_max(22_500))
    2.0
    """

    def __init__(
        self,
        start_value: float,
        end_value: float,
        start_step: int = 0,
        end_step: int = 1,
        shape: str = "linear",
    ) -> None:
        super().__init__()
        self.start_value = check_real("start_value", start_value)
        self.end_value = check_real("end_value", end_value)
        self.start_step = check_non_negative_int("start_step", start_step)
        self.end_step = check_non_negative_int("end_step", end_step)
        if self.end_step <= self.start_step:
            raise ValueError(
                f"end_step must be > start_step={self.start_step}, got end_step={end_step!r}"
            )
        self.shape = check_choice("shape", shape, ANNEALING_SHAPES)

    def _closed_form(self, step: Any) -> Any:
        length = float(self.end_step - self.start_step)
        progress = fraction(step - float(self.start_step), length)
        remaining = fraction(float(self.end_step) - step, length)
        return anneal(self.start_value, self.end_value, progress, remaining, self.shape)
