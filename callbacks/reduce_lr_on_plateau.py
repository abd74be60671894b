"""ReduceLROnPlateau that also lowers keras-optsuite schedules on built-in Keras optimizers."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from keras_optsuite._upstream import io_utils
from keras_optsuite.schedules import set_learning_rate


# keras_optsuite._upstream checks on import that _reduce_optimizer_lr still exists.
class ReduceLROnPlateau(keras.callbacks.ReduceLROnPlateau):
    """``keras.callbacks.ReduceLROnPlateau`` that also works under a schedule.

    Same arguments and behaviour as Keras's callback (a drop-in
    replacement), except how the new learning rate is set: through
    :func:`keras_optsuite.schedules.set_learning_rate`. When the optimizer
    follows a keras-optsuite schedule (``OneCycle``,
    ``CyclicalLearningRate``, ``WarmupStableDecay``, ``LinearWarmup``,
    ``InverseSqrtDecay``), the schedule's ``scale`` is multiplied by
    ``factor``: the rate drops by ``factor`` now and every later value of
    the schedule is ``factor`` times its closed form. ``min_lr`` bounds the
    value at the reduction only (a floor would change the schedule's shape).

    Keras's own callback already works with keras-optsuite optimizers and
    wrappers (their ``learning_rate`` setter rescales the schedule). It
    raises ``TypeError`` with a *built-in* Keras optimizer that has a
    schedule, e.g. ``keras.optimizers.Adam(OneCycle(...))``: that setter
    belongs to Keras and cannot be changed from outside. Use this callback
    there. Schedules that are not keras-optsuite's (Keras's ``CosineDecay``)
    have no ``scale``: with them this callback raises Keras's ``TypeError``
    as well.

    Args:
        monitor: quantity to watch. Defaults to `"val_loss"`.
        factor: ``new_lr = lr * factor``, < 1. Defaults to `0.1`.
        patience: epochs without improvement before a reduction. Defaults to `10`.
        verbose: 1 prints each reduction. Defaults to `0`.
        mode: ``"auto"``, ``"min"`` or ``"max"``. Defaults to `"auto"`.
        min_delta: smallest change that counts as an improvement. Defaults to `1e-4`.
        cooldown: epochs to wait after a reduction. Defaults to `0`.
        min_lr: lower bound of the learning rate at a reduction. Defaults to `0.0`.

    Example:
    >>> optimizer = keras.optimizers.Adam(OneCycle(1e-2, total_steps=epochs * steps_per_epoch))
    >>> model.compile(optimizer=optimizer, loss="mse")
    >>> model.fit(x, y, validation_split=0.1, epochs=epochs,
    ...           callbacks=[keras_optsuite.callbacks.ReduceLROnPlateau(factor=0.5, patience=2)])
    """

    def _reduce_optimizer_lr(self, optimizer: Any, epoch: int, name: str = "") -> bool:
        old_lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        if old_lr <= np.float32(self.min_lr):
            return False
        new_lr = max(old_lr * self.factor, self.min_lr)
        set_learning_rate(optimizer, new_lr)
        if self.verbose > 0:
            name_str = f" {name}" if name else ""
            io_utils.print_msg(
                f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing{name_str} learning rate to {new_lr}."
            )
        return True
