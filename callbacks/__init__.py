"""Keras callbacks of keras-optsuite (installed as ``keras_optsuite.callbacks``).

- :class:`SwapEvaluationWeights`: validate, evaluate and checkpoint with the
  averaged weights of SWA / EMA (and schedule-free) optimizers.
- :class:`DropoutScheduler`: ramp drop rates (or any rate attribute of
  layers) over training, per epoch or per batch.
- :class:`ReduceLROnPlateau`: Keras's callback, also for built-in Keras
  optimizers that follow a keras-optsuite schedule.
"""

from keras_optsuite.callbacks.dropout_scheduler import DropoutScheduler
from keras_optsuite.callbacks.evaluation_weights import SwapEvaluationWeights
from keras_optsuite.callbacks.reduce_lr_on_plateau import ReduceLROnPlateau

__all__ = ["DropoutScheduler", "ReduceLROnPlateau", "SwapEvaluationWeights"]
