"""keras-optsuite: research optimizers and regularization layers for Keras 3 on TensorFlow.

Importing the package registers every optimizer, schedule, layer and
regularizer with Keras, so ``model.compile(optimizer="keras_optsuite>RAdam")``
and ``keras.models.load_model`` of a model using them work after
``import keras_optsuite``. It also makes ``model.fit`` work under
``MultiWorkerMirroredStrategy`` on Keras 3.15 (see
:mod:`keras_optsuite.distribute`).
"""

from keras_optsuite._version import __version__
from keras_optsuite import distribute, layers, optimizers, regularizers, schedules

__all__ = ["__version__", "distribute", "layers", "optimizers", "regularizers", "schedules"]
