"""keras-optsuite: research optimizers and regularization layers for Keras 3 on TensorFlow.

Importing the package registers every optimizer, schedule, layer and
regularizer with Keras, so ``model.compile(optimizer="keras_optsuite>RAdam")``
and ``keras.models.load_model`` of a model using them work after
``import keras_optsuite``. It also makes ``model.fit`` work under
``MultiWorkerMirroredStrategy`` on Keras 3.15 (see
:mod:`keras_optsuite.distribute`). :func:`diagnose` (``optsuite doctor``)
says which of these patches of Keras are active, and why the others are not.
"""

from keras_optsuite import distribute, layers, optimizers, regularizers, schedules
from keras_optsuite._upstream import diagnose
from keras_optsuite._version import __version__

__all__ = ["__version__", "diagnose", "distribute", "layers", "optimizers", "regularizers", "schedules"]
