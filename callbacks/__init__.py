"""Keras callbacks of keras-optsuite (installed as ``keras_optsuite.callbacks``).

- :class:`SwapEvaluationWeights`: validate, evaluate and checkpoint with the
  averaged weights of SWA / EMA (and schedule-free) optimizers.
- :class:`DropoutScheduler`: ramp drop rates (or any rate attribute of
  layers) over training, per epoch or per batch.
- :class:`MLflowTracking`: every run's params, metrics and artifacts in
  MLflow (embedded ``mlruns/`` store or a server), spooled to a journal
  while the server is down, never left RUNNING.
- :func:`compare_runs`, :func:`plot_learning_curves`: an experiment's runs
  (or a parent run's children) as a table and as overlaid curves.
- :class:`ReduceLROnPlateau`: Keras's callback, also for built-in Keras
  optimizers that follow a keras-optsuite schedule.
"""

from keras_optsuite.callbacks.compare import compare_runs, plot_learning_curves
from keras_optsuite.callbacks.dropout_scheduler import DropoutScheduler
from keras_optsuite.callbacks.evaluation_weights import SwapEvaluationWeights
from keras_optsuite.callbacks.mlflow_tracking import MLflowTracking
from keras_optsuite.callbacks.reduce_lr_on_plateau import ReduceLROnPlateau

__all__ = [
    "DropoutScheduler",
    "MLflowTracking",
    "ReduceLROnPlateau",
    "SwapEvaluationWeights",
    "compare_runs",
    "plot_learning_curves",
]
