"""Optimizers shipped by keras-optsuite; :data:`REGISTRY` lists them all."""

from keras_optsuite.optimizers._base import OptsuiteOptimizer
from keras_optsuite.optimizers.adabelief import AdaBelief
from keras_optsuite.optimizers.adan import Adan
from keras_optsuite.optimizers.ademamix import AdEMAMix
from keras_optsuite.optimizers.adopt import ADOPT
from keras_optsuite.optimizers.aggmo import AggMo
from keras_optsuite.optimizers.laprop import LaProp
from keras_optsuite.optimizers.madgrad import MADGRAD
from keras_optsuite.optimizers.qhadam import QHM, QHAdam
from keras_optsuite.optimizers.radam import RAdam
from keras_optsuite.optimizers.registry import REGISTRY, OptimizerSpec, get_spec
from keras_optsuite.optimizers.signum import Signum
from keras_optsuite.optimizers.yogi import Yogi

__all__ = [
    "ADOPT", "AdaBelief", "AdEMAMix", "Adan", "AggMo", "LaProp", "MADGRAD",
    "OptimizerSpec", "OptsuiteOptimizer", "QHAdam", "QHM", "RAdam", "REGISTRY",
    "Signum", "Yogi", "get_spec",
]
