"""Tune optimizers with Keras Tuner, every trial tracked in MLflow.

- :func:`optimizer_space`, :func:`regularization_space`: search spaces read
  from the registry (``OptimizerSpec.search_space``) and :data:`BUILTINS`.
- :class:`OptimizerHyperModel`: compiles and fits a user's model with the
  searched optimizer, the way that optimizer needs.
- :class:`RandomSearch`, :class:`GridSearch`, :class:`BayesianOptimization`,
  :class:`Hyperband`: Keras Tuner's tuners with one MLflow parent run per
  search and one child run per trial; :class:`MedianPruning`.
- :func:`releasing_custom_gradients`: frees what TensorFlow keeps of each
  trained model (the tuners use it per trial; for your own loops).
"""

from keras_optsuite.tuning._memory import releasing_custom_gradients
from keras_optsuite.tuning.hypermodel import OptimizerHyperModel
from keras_optsuite.tuning.pruning import MedianPruning
from keras_optsuite.tuning.space import (
    BUILTINS,
    FAMILIES,
    Family,
    get_family,
    optimizer_space,
    regularization_space,
)
from keras_optsuite.tuning.tuners import BayesianOptimization, GridSearch, Hyperband, RandomSearch

__all__ = [
    "BayesianOptimization",
    "GridSearch",
    "Hyperband",
    "MedianPruning",
    "RandomSearch",
    "BUILTINS",
    "FAMILIES",
    "Family",
    "OptimizerHyperModel",
    "get_family",
    "optimizer_space",
    "regularization_space",
    "releasing_custom_gradients",
]
