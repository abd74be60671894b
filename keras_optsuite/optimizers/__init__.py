"""Optimizers shipped by keras-optsuite; :data:`REGISTRY` lists them all.

Wrappers (:data:`WRAPPERS`) take any Keras optimizer and add one idea;
gradient transformations go in front of an optimizer with :func:`chain`.
"""

from keras_optsuite.optimizers import closure
from keras_optsuite.optimizers._base import LearningRateFree, OptsuiteOptimizer
from keras_optsuite.optimizers._evaluation_weights import EvaluationWeights
from keras_optsuite.optimizers._wrapper import OptimizerWrapper, applied_updates, iter_optimizers
from keras_optsuite.optimizers.adabelief import AdaBelief
from keras_optsuite.optimizers.adahessian import AdaHessian
from keras_optsuite.optimizers.adan import Adan
from keras_optsuite.optimizers.ademamix import AdEMAMix
from keras_optsuite.optimizers.adopt import ADOPT
from keras_optsuite.optimizers.aggmo import AggMo
from keras_optsuite.optimizers.averaging import SWA, ExponentialMovingAverage, SWALearningRate
from keras_optsuite.optimizers.chain import Chain, chain
from keras_optsuite.optimizers.closure import apply_with_closure, closure_train_step
from keras_optsuite.optimizers.cocob import COCOB
from keras_optsuite.optimizers.dadapt_adam import DAdaptAdam
from keras_optsuite.optimizers.gradient_accumulation import GradientAccumulation
from keras_optsuite.optimizers.gradient_transforms import (
    AGC,
    ClipByGlobalNorm,
    GradientCentralization,
    GradientTransformation,
)
from keras_optsuite.optimizers.laprop import LaProp
from keras_optsuite.optimizers.lars import LARS
from keras_optsuite.optimizers.lazy_adam import LazyAdam
from keras_optsuite.optimizers.lbfgs import LBFGS
from keras_optsuite.optimizers.lookahead import Lookahead
from keras_optsuite.optimizers.madgrad import MADGRAD
from keras_optsuite.optimizers.novograd import NovoGrad
from keras_optsuite.optimizers.prodigy import Prodigy
from keras_optsuite.optimizers.qhadam import QHM, QHAdam
from keras_optsuite.optimizers.radam import RAdam
from keras_optsuite.optimizers.ranger import Ranger
from keras_optsuite.optimizers.registry import (
    COMPOSITIONS,
    REGISTRY,
    WRAPPERS,
    OptimizerSpec,
    WrapperSpec,
    get_spec,
)
from keras_optsuite.optimizers.sam import ASAM, GSAM, SAM
from keras_optsuite.optimizers.schedule_free import (
    ScheduleFreeAdamW,
    ScheduleFreeRAdam,
    ScheduleFreeSGD,
)
from keras_optsuite.optimizers.shampoo import Shampoo
from keras_optsuite.optimizers.signum import Signum
from keras_optsuite.optimizers.skip_non_finite import SkipNonFinite
from keras_optsuite.optimizers.soap import SOAP
from keras_optsuite.optimizers.sophia import Sophia
from keras_optsuite.optimizers.yogi import Yogi

__all__ = [
    "ASAM", "GSAM", "SAM", "apply_with_closure", "closure", "closure_train_step",
    "COCOB", "LARS", "NovoGrad", "Shampoo", "SOAP", "AdaHessian", "Sophia", "LBFGS",
    "ADOPT", "AGC", "COMPOSITIONS", "AdaBelief", "AdEMAMix", "Adan", "AggMo", "Chain", "ClipByGlobalNorm",
    "EvaluationWeights", "ExponentialMovingAverage", "GradientAccumulation",
    "GradientCentralization", "GradientTransformation", "LaProp", "LazyAdam", "Lookahead",
    "MADGRAD", "OptimizerSpec", "OptimizerWrapper", "OptsuiteOptimizer", "QHAdam", "QHM", "RAdam",
    "REGISTRY", "Ranger", "SWA", "SWALearningRate", "Signum", "SkipNonFinite", "WRAPPERS",
    "WrapperSpec", "Yogi", "applied_updates", "chain", "get_spec", "iter_optimizers",
    "DAdaptAdam", "LearningRateFree", "Prodigy", "ScheduleFreeAdamW", "ScheduleFreeRAdam",
    "ScheduleFreeSGD",
]

# Closure optimizers (SAM family) train through model.fit: see closure.py.
closure.enable_closure_train_step()
