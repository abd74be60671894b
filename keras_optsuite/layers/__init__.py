"""Regularization layers Keras 3 lacks; ``LAYERS`` lists them with their papers.

Every layer is registered with Keras (package ``keras_optsuite``), round-trips
through ``.keras`` files with its state, runs under ``mixed_float16``,
``jit_compile=True`` and ``tf.distribute.MirroredStrategy``. Drop rates live
in variables: assigning ``layer.rate`` never retraces (see
:class:`keras_optsuite.callbacks.DropoutScheduler`).
"""

from keras_optsuite.layers.batch_renormalization import BatchRenormalization
from keras_optsuite.layers.drop_connect import DropConnect
from keras_optsuite.layers.dropblock import DropBlock1D, DropBlock2D
from keras_optsuite.layers.ghost_batch_normalization import GhostBatchNormalization
from keras_optsuite.layers.mixing import CutMix, MixUp
from keras_optsuite.layers.registry import LAYERS, REGULARIZERS, LayerSpec, rates
from keras_optsuite.layers.stochastic_depth import DropPath, StochasticDepth
from keras_optsuite.layers.weight_normalization import WeightNormalization

__all__ = [
    "LAYERS",
    "REGULARIZERS",
    "CutMix",
    "BatchRenormalization",
    "DropBlock1D",
    "DropBlock2D",
    "DropConnect",
    "DropPath",
    "GhostBatchNormalization",
    "LayerSpec",
    "MixUp",
    "StochasticDepth",
    "WeightNormalization",
    "rates",
]
