"""Behaviour every keras-optsuite learning-rate schedule shares, written once.

A schedule computes its closed form with ``keras.ops`` in float32 (so it runs
inside compiled and XLA train functions; ``step`` is the optimizer's 0-based
``iterations``) and multiplies it by ``scale``: a non-trainable float32
``keras.Variable``, 1.0 until something lowers the learning rate. A Python
float would be frozen into the traced train function; a variable is read at
every step, so :func:`set_learning_rate` (what ``ReduceLROnPlateau`` reaches
through the optimizer's ``learning_rate`` setter) can rescale a running
schedule. ``get_config`` holds the current ``scale``, so ``.keras`` files
keep a reduction.

:func:`set_learning_rate` lives in ``keras_optsuite._learning_rate``, which
depends on neither the schedules nor the optimizers.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from keras_optsuite._config import own_config
from keras_optsuite._learning_rate import RescalableSchedule
from keras_optsuite._validation import check_non_negative

ANNEALING_SHAPES = ("linear", "cosine", "1-sqrt")


# -- shared arithmetic ----------------------------------------------------------
def fraction(numerator: Any, denominator: float) -> Any:
    """``numerator / denominator`` clipped to [0, 1]."""
    return ops.clip(numerator / denominator, 0.0, 1.0)


def anneal(start: Any, end: Any, progress: Any, remaining: Any, shape: str) -> Any:
    """Move from ``start`` (``progress = 0``) to ``end`` (``progress = 1``).

    ``remaining = 1 - progress``, passed separately because each is computed
    from whole step counts: the one near 0 stays accurate to float32's
    relative precision. The value is the convex combination
    ``w start + (1 - w) end`` with ``w`` for each shape:

    - ``"linear"``: ``w = 1 - p``;
    - ``"cosine"``: ``w = (1 + cos(pi p)) / 2``, evaluated as ``sin^2(pi (1 - p) / 2)``;
    - ``"1-sqrt"``: ``w = 1 - sqrt(p)``, evaluated as ``(1 - p) / (1 + sqrt(p))``.

    Writing both weights without cancellation keeps a decay to 0 accurate
    to its last step (``(1 + cos(pi p)) / 2`` in float32 is off by ~1e-4
    relative one step before the end of a 70-step decay).
    """
    if shape == "linear":
        start_weight, end_weight = remaining, progress
    elif shape == "cosine":
        start_weight = ops.square(ops.sin(0.5 * math.pi * remaining))
        end_weight = ops.square(ops.sin(0.5 * math.pi * progress))
    elif shape == "1-sqrt":
        start_weight = remaining / (1.0 + ops.sqrt(progress))
        end_weight = ops.sqrt(progress)
    else:  # pragma: no cover - constructors check the shape
        raise ValueError(f"unknown annealing shape {shape!r}")
    return start * start_weight + end * end_weight


# -- the schedules' base class ------------------------------------------------------
class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Base class of keras-optsuite schedules (not used directly).

    Subclasses store each constructor argument under an attribute of the
    same name (``get_config`` is built from the signature) and write the
    closed form in ``_closed_form(step)`` for a float32 ``step``; calling the
    schedule returns ``scale * closed_form(step)``.

    ``scale`` is a non-trainable float32 ``keras.Variable``, 1.0 initially;
    :func:`set_learning_rate` changes it. It is not an optimizer variable
    (the optimizer's variable count, and so old checkpoints, stay valid):
    ``get_config`` carries its current value instead, which is what
    ``model.save`` stores. ``model.save_weights`` and ``BackupAndRestore``
    save variables only, so they do not keep a reduction.
    """

    def __init__(self) -> None:
        self.scale = keras.Variable(
            1.0,
            dtype="float32",
            trainable=False,
            name="learning_rate_scale",
            aggregation="only_first_replica",
        )

    def __call__(self, step: Any) -> Any:
        step = ops.cast(step, "float32")
        return self._closed_form(step) * ops.convert_to_tensor(self.scale, dtype="float32")

    def _closed_form(self, step: Any) -> Any:
        """The schedule's value at the 0-based float32 ``step`` (override)."""
        raise NotImplementedError

    def rescale(self, learning_rate: float, current: float) -> None:
        """Multiply every later value by ``learning_rate / current``.

        ``current`` is this schedule's value now, so afterwards it is
        ``learning_rate``. Runs eagerly (callbacks call it between steps).
        """
        learning_rate = check_non_negative("learning_rate", learning_rate)
        if current == learning_rate:
            return
        if current == 0.0:
            raise ValueError(
                f"learning_rate cannot be set to {learning_rate!r} at a step where "
                f"{type(self).__name__} is 0: rescaling the schedule cannot make it non-zero"
            )
        scale = float(ops.convert_to_numpy(self.scale))
        self.scale.assign(scale * (learning_rate / current))

    # -- config ------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        config = own_config(self)
        config["scale"] = float(ops.convert_to_numpy(self.scale))
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ScaledSchedule:
        config = dict(config)
        scale = check_non_negative("scale", config.pop("scale", 1.0))
        schedule = cls(**config)
        schedule.scale.assign(scale)
        return schedule


# set_learning_rate (keras_optsuite._learning_rate) treats these schedules as rescalable.
RescalableSchedule.register(ScaledSchedule)
