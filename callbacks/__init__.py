"""Keras callbacks of keras-optsuite (installed as ``keras_optsuite.callbacks``).

- :class:`SwapEvaluationWeights`: validate, evaluate and checkpoint with the
  averaged weights of SWA / EMA (and schedule-free) optimizers.
"""

from keras_optsuite.callbacks.evaluation_weights import SwapEvaluationWeights

__all__ = ["SwapEvaluationWeights"]
