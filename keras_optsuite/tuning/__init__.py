"""Tune optimizers with Keras Tuner, every trial tracked in MLflow.

- :func:`optimizer_space`, :func:`regularization_space`: search spaces read
  from the registry (``OptimizerSpec.search_space``) and :data:`BUILTINS`.
- :class:`OptimizerHyperModel`: compiles and fits a user's model with the
  searched optimizer, the way that optimizer needs.
"""

from keras_optsuite.tuning.hypermodel import OptimizerHyperModel
from keras_optsuite.tuning.space import (
    BUILTINS,
    FAMILIES,
    Family,
    get_family,
    optimizer_space,
    regularization_space,
)

__all__ = [
    "BUILTINS",
    "FAMILIES",
    "Family",
    "OptimizerHyperModel",
    "get_family",
    "optimizer_space",
    "regularization_space",
]
