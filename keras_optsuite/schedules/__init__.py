"""Learning-rate schedules shipped by keras-optsuite.

Every schedule is a ``keras.optimizers.schedules.LearningRateSchedule``
(use it with any Keras optimizer), computes its closed form in float32 so it
runs in compiled and XLA train functions, and multiplies it by a ``scale``
that :func:`set_learning_rate` changes, so ``ReduceLROnPlateau`` can lower a
scheduled learning rate (see ``keras_optsuite.callbacks.ReduceLROnPlateau``).
"""

from keras_optsuite._learning_rate import set_learning_rate
from keras_optsuite.schedules._base import ScaledSchedule
from keras_optsuite.schedules.cyclical import CyclicalLearningRate
from keras_optsuite.schedules.inverse_sqrt import InverseSqrtDecay
from keras_optsuite.schedules.linear_warmup import LinearWarmup
from keras_optsuite.schedules.one_cycle import OneCycle
from keras_optsuite.schedules.ramp import Ramp
from keras_optsuite.schedules.warmup_stable_decay import WarmupStableDecay

__all__ = [
    "CyclicalLearningRate",
    "InverseSqrtDecay",
    "LinearWarmup",
    "OneCycle",
    "Ramp",
    "ScaledSchedule",
    "WarmupStableDecay",
    "set_learning_rate",
]
