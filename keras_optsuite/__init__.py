"""keras-optsuite: research optimizers and regularization layers for Keras 3 on TensorFlow.

Importing the package registers every optimizer, schedule, layer and
regularizer with Keras, so ``model.compile(optimizer="keras_optsuite>RAdam")``
and ``keras.models.load_model`` of a model using them work after
``import keras_optsuite``.
"""

from keras_optsuite._version import __version__
from keras_optsuite import layers, optimizers, regularizers, schedules

__all__ = ["__version__", "layers", "optimizers", "regularizers", "schedules"]
