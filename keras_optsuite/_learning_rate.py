"""Setting an optimizer's learning rate, also under a keras-optsuite schedule.

This module depends on neither the optimizers nor the schedules: both import
it (the optimizers for their ``learning_rate`` setter). It names the two
roles it needs as abstract classes the other modules register with:
:class:`RescalableSchedule` (``ScaledSchedule``) and
:class:`LearningRateDelegate` (``OptimizerWrapper``, whose learning rate is
its inner optimizer's).
"""

from __future__ import annotations

import abc
import numbers
from typing import Any

import keras
from keras import ops


class RescalableSchedule(abc.ABC):
    """A schedule whose later values can be multiplied by a factor (``ScaledSchedule``)."""

    @abc.abstractmethod
    def rescale(self, learning_rate: float, current: float) -> None:
        """Make the current value ``current`` become ``learning_rate`` from now on."""


class LearningRateDelegate(abc.ABC):
    """An optimizer reporting the learning rate of the optimizer it wraps (``inner``)."""

    inner: keras.optimizers.Optimizer


def _inner_optimizer(optimizer: Any) -> Any:
    """The optimizer whose learning rate ``optimizer`` reports, if it delegates."""
    if isinstance(optimizer, LearningRateDelegate):
        return optimizer.inner
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.inner_optimizer
    return None


def set_learning_rate(optimizer: keras.optimizers.Optimizer, learning_rate: Any) -> None:
    """Set ``optimizer``'s learning rate, also when it follows a keras-optsuite schedule.

    If the optimizer (or the optimizer inside a keras-optsuite wrapper or a
    ``LossScaleOptimizer``) follows a :class:`ScaledSchedule` and
    ``learning_rate`` is a number, the schedule's ``scale`` changes so that
    its current value (at the optimizer's ``iterations``) becomes
    ``learning_rate``: every later value is multiplied by
    ``learning_rate / current``. The schedule keeps its shape; a floor such
    as ``ReduceLROnPlateau``'s ``min_lr`` applies to the value now, not to
    later ones. Anything else goes to Keras's own setter (a schedule replaces
    the current one; a float is assigned; a float on an optimizer with any
    other schedule raises Keras's ``TypeError``).

    keras-optsuite optimizers and wrappers call this from their
    ``learning_rate`` setter, so ``keras.callbacks.ReduceLROnPlateau`` works
    with them; ``keras_optsuite.callbacks.ReduceLROnPlateau`` calls it for
    built-in Keras optimizers, whose setter cannot be changed.

    Example:
    >>> optimizer = keras.optimizers.Adam(OneCycle(1e-2, total_steps=1000))
    >>> set_learning_rate(optimizer, 0.5 * float(optimizer.learning_rate))  # halve from now on
    """
    inner = _inner_optimizer(optimizer)
    if inner is not None:
        set_learning_rate(inner, learning_rate)
        return
    schedule = getattr(optimizer, "_learning_rate", None)
    is_number = isinstance(learning_rate, numbers.Real) and not isinstance(learning_rate, bool)
    if isinstance(schedule, RescalableSchedule) and is_number:
        # The getter evaluates the schedule where the optimizer does (Keras
        # passes its raw step counter), and is what ReduceLROnPlateau read.
        current = float(ops.convert_to_numpy(optimizer.learning_rate))
        schedule.rescale(float(learning_rate), current)
    elif isinstance(optimizer, keras.optimizers.MultiOptimizer):
        optimizer.learning_rate = learning_rate  # Keras's own error: set sub-optimizers
    else:
        keras.optimizers.Optimizer.learning_rate.fset(optimizer, learning_rate)
