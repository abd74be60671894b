"""The one list of optimizers keras-optsuite ships.

Docs, the contract test suite, the command line, the tuner's search spaces
and the benchmarks all read :data:`REGISTRY`. Adding an optimizer means one
module in this package, one :class:`OptimizerSpec` row below, and one NumPy
reference update in ``tests/references/`` (named in ``tests/subjects.py``,
with any contract check that does not apply: test bookkeeping lives with
the tests, this registry describes the product).

:data:`WRAPPERS` lists the wrappers (Lookahead, averaging, accumulation,
gradient transformations, ...) the same way; the contract suite runs each
around a built-in Keras optimizer and a keras-optsuite one.
:data:`COMPOSITIONS` lists wrapper compositions shipped under their own
name (Ranger); :data:`REGISTRY` includes them.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import keras

from keras_optsuite._config import NamedByClass
from keras_optsuite.optimizers.adabelief import AdaBelief
from keras_optsuite.optimizers.adahessian import AdaHessian
from keras_optsuite.optimizers.adan import Adan
from keras_optsuite.optimizers.ademamix import AdEMAMix
from keras_optsuite.optimizers.adopt import ADOPT
from keras_optsuite.optimizers.aggmo import AggMo
from keras_optsuite.optimizers.averaging import SWA, ExponentialMovingAverage
from keras_optsuite.optimizers.chain import Chain
from keras_optsuite.optimizers.cocob import COCOB
from keras_optsuite.optimizers.dadapt_adam import DAdaptAdam
from keras_optsuite.optimizers.gradient_accumulation import GradientAccumulation
from keras_optsuite.optimizers.gradient_transforms import (
    AGC,
    ClipByGlobalNorm,
    GradientCentralization,
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

SCALES = ("log", "linear")


@dataclasses.dataclass(frozen=True)
class Searchable:
    """One hyperparameter a tuner may search: its range, scale and default.

    Attributes:
        name: the constructor argument it sets (``"learning_rate"``).
        low: the smallest value searched.
        high: the largest value searched (``low < high``).
        scale: ``"log"`` (sampled uniformly in ``log(value)``; ``low > 0``)
            or ``"linear"``.
        default: the value tried first. None means the constructor's own
            default (the documented one), which
            :meth:`OptimizerSpec.search_defaults` reads from the class.
        integer: search integers (``hp.Int``) instead of floats.

    Example:
    >>> Searchable("learning_rate", 1e-4, 1e-1).scale
    'log'
    """

    name: str
    low: float
    high: float
    scale: str = "log"
    default: float | None = None
    integer: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got name={self.name!r}")
        if self.scale not in SCALES:
            raise ValueError(f"scale of {self.name!r} must be one of {SCALES}, got scale={self.scale!r}")
        if not self.low < self.high:
            raise ValueError(
                f"the range of {self.name!r} is empty: low={self.low!r} must be < high={self.high!r}"
            )
        if self.scale == "log" and self.low <= 0:
            raise ValueError(f"a log-scale range needs low > 0, got low={self.low!r} for {self.name!r}")
        if self.default is not None and not self.low <= self.default <= self.high:
            raise ValueError(
                f"default={self.default!r} of {self.name!r} is outside [{self.low!r}, {self.high!r}]"
            )


def _lr(low: float = 1e-4, high: float = 1e-1, default: float | None = None) -> Searchable:
    return Searchable("learning_rate", low, high, "log", default)


def _linear(name: str, low: float, high: float, default: float | None = None) -> Searchable:
    return Searchable(name, low, high, "linear", default)


#: The first-moment decay range most Adam-like rows search.
_BETA_1 = _linear("beta_1", 0.8, 0.99)


@dataclasses.dataclass(frozen=True)
class OptimizerSpec(NamedByClass):
    """One shipped optimizer.

    Attributes:
        cls: the optimizer class.
        family: short grouping used in docs and search spaces.
        paper: citation of the paper whose update rule the class implements.
        url: where to read the paper.
        tuned: hyperparameters that train small dense models well in a few
            hundred steps (the tests, the demo and tuner starting points use them).
        variants: further hyperparameter sets that switch on a documented
            variant (e.g. ``{"amsgrad": True}``); the numerics tests cover each.
        search_space: the hyperparameters a tuner searches
            (``keras_optsuite.tuning.optimizer_space``), each with its range,
            scale and default. Learning-rate-free methods search none for the
            learning rate.
    """

    cls: type[Any]
    family: str
    paper: str
    url: str
    tuned: dict[str, Any] = dataclasses.field(default_factory=dict)
    variants: tuple[dict[str, Any], ...] = ()
    search_space: tuple[Searchable, ...] = ()

    def search_defaults(self) -> dict[str, Any]:
        """``{name: default}`` of :attr:`search_space` (the constructor's when not given)."""
        constructor = self.defaults
        return {p.name: constructor[p.name] if p.default is None else p.default for p in self.search_space}

    @property
    def defaults(self) -> dict[str, Any]:
        """Constructor arguments and their defaults (the class is the source)."""
        return {
            name: p.default
            for name, p in inspect.signature(self.cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty and name != "name"
        }

    def create(self, **overrides: Any) -> keras.optimizers.Optimizer:
        """A new instance with the ``tuned`` hyperparameters and ``overrides``."""
        return self.cls(**{**self.tuned, **overrides})


#: Wrapper compositions with a name and defaults of their own, built without
#: an inner optimizer (``Ranger()`` is ``Lookahead(Chain(RAdam(...),
#: [GradientCentralization()]))``): used, searched and listed like an
#: optimizer, so :data:`REGISTRY` includes them.
COMPOSITIONS: dict[str, OptimizerSpec] = {
    spec.name: spec
    for spec in [
        OptimizerSpec(
            Ranger, "adam",
            "Wright 2019, Ranger (RAdam + Lookahead + gradient centralization)",
            "https://github.com/lessw2020/Ranger-Deep-Learning-Optimizer",
            {"learning_rate": 0.01},
            ({"sync_period": 4, "slow_step_size": 0.75, "beta_1": 0.9},),
            search_space=(_lr(), _linear("slow_step_size", 0.3, 0.8)),
        ),
    ]
}


#: Every optimizer: the methods (one module each) and the :data:`COMPOSITIONS`.
REGISTRY: dict[str, OptimizerSpec] = {
    spec.name: spec
    for spec in [
        OptimizerSpec(
            RAdam, "adam",
            "Liu et al. 2019, On the Variance of the Adaptive Learning Rate and Beyond",
            "https://arxiv.org/abs/1908.03265",
            {"learning_rate": 0.01},
            ({"sma_threshold": 4.0},),
            search_space=(_lr(), _BETA_1),
        ),
        OptimizerSpec(
            AdaBelief, "adam",
            "Zhuang et al. 2020, AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed Gradients",
            "https://arxiv.org/abs/2010.07468",
            {"learning_rate": 0.01},
            ({"amsgrad": True}, {"rectify": True}, {"rectify": True, "amsgrad": True}),
            search_space=(_lr(), _BETA_1),
        ),
        OptimizerSpec(
            Yogi, "adam",
            "Zaheer et al. 2018, Adaptive Methods for Nonconvex Optimization",
            "https://papers.nips.cc/paper/8186-adaptive-methods-for-nonconvex-optimization",
            {"learning_rate": 0.01},
            search_space=(_lr(1e-3, 1.0), _BETA_1),
        ),
        OptimizerSpec(
            LazyAdam, "adam",
            "Kingma and Ba 2015, Adam: A Method for Stochastic Optimization "
            "(lazy sparse updates as in TensorFlow Addons' LazyAdam)",
            "https://arxiv.org/abs/1412.6980",
            {"learning_rate": 0.01},
            search_space=(_lr(), _BETA_1),
        ),
        OptimizerSpec(
            Adan, "adam",
            "Xie et al. 2022, Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing Deep Models",
            "https://arxiv.org/abs/2208.06677",
            {"learning_rate": 0.01},
            search_space=(_lr(), _linear("beta_1", 0.9, 0.99)),
        ),
        OptimizerSpec(
            ADOPT, "adam",
            "Taniguchi et al. 2024, ADOPT: Modified Adam Can Converge with Any beta_2 with the Optimal Rate",
            "https://arxiv.org/abs/2411.02853",
            {"learning_rate": 0.01},
            ({"clip_exponent": None},),
            search_space=(_lr(), _BETA_1),
        ),
        OptimizerSpec(
            AdEMAMix, "adam",
            "Pagliardini et al. 2024, The AdEMAMix Optimizer: Better, Faster, Older",
            "https://arxiv.org/abs/2409.03137",
            {"learning_rate": 0.005, "alpha_warmup_steps": 200, "beta_3_warmup_steps": 200},
            ({"alpha_warmup_steps": 10, "beta_3_warmup_steps": 20},),
            search_space=(_lr(), _linear("alpha", 1.0, 10.0)),
        ),
        OptimizerSpec(
            QHAdam, "adam",
            "Ma and Yarats 2019, Quasi-hyperbolic momentum and Adam for deep learning",
            "https://arxiv.org/abs/1810.06801",
            {"learning_rate": 0.01},
            search_space=(_lr(), _linear("nu_1", 0.5, 1.0)),
        ),
        OptimizerSpec(
            QHM, "momentum",
            "Ma and Yarats 2019, Quasi-hyperbolic momentum and Adam for deep learning",
            "https://arxiv.org/abs/1810.06801",
            {"learning_rate": 0.5, "momentum": 0.9},
            search_space=(_lr(1e-3, 1.0), _linear("nu", 0.5, 1.0)),
        ),
        OptimizerSpec(
            AggMo, "momentum",
            "Lucas et al. 2019, Aggregated Momentum: Stability Through Passive Damping",
            "https://arxiv.org/abs/1804.00325",
            {"learning_rate": 0.05},
            ({"betas": (0.5, 0.75)},),
            search_space=(_lr(1e-3, 1.0),),
        ),
        OptimizerSpec(
            LaProp, "adam",
            "Ziyin, Wang and Ueda 2020, LaProp: Separating Momentum and Adaptivity in Adam",
            "https://arxiv.org/abs/2002.04839",
            {"learning_rate": 0.01},
            search_space=(_lr(), _BETA_1),
        ),
        OptimizerSpec(
            MADGRAD, "dual-averaging",
            "Defazio and Jelassi 2021, Adaptivity without Compromise: A Momentumized, Adaptive, "
            "Dual Averaged Gradient Method for Stochastic Optimization",
            "https://arxiv.org/abs/2101.11075",
            {"learning_rate": 0.01},
            search_space=(_lr(1e-3, 1e-1), _linear("momentum", 0.5, 0.99)),
        ),
        OptimizerSpec(
            Shampoo, "preconditioned",
            "Gupta, Koren and Singer 2018, Shampoo: Preconditioned Stochastic Tensor Optimization "
            "(with grafting, blocking and root refresh of Anil et al. 2020, Scalable Second Order "
            "Optimization for Deep Learning)",
            "https://arxiv.org/abs/1802.09568",
            # Roots from step 2, refreshed every 5 steps: the save/load check
            # (saved after step 5) resumes with stored roots. matrix_epsilon 0.01:
            # with 1e-3 an inverse root amplifies the float32 rounding of a gradient
            # summed from two halves past the 2-worker check's rtol 1e-5 (3.4e-6 seen).
            {"learning_rate": 0.01, "start_preconditioning_step": 2, "precondition_frequency": 5,
             "matrix_epsilon": 0.01},
            ({"statistics_decay": 1.0, "grafting": "adagrad", "precondition_frequency": 1,
              "start_preconditioning_step": 1},
             {"block_size": 2, "grafting": "sgd", "beta_1": 0.0, "precondition_frequency": 3},
             {"grafting": None, "statistics_decay": 0.5, "max_preconditioner_dim": 3,
              "exponent_override": 2, "start_preconditioning_step": 1},
             # Gupta et al. 2018 exactly (tests/references/shampoo_gupta2018.py).
             {"paper_exact": True},
             {"paper_exact": True, "matrix_epsilon": 0.25}),
            search_space=(_lr(), _BETA_1),
        ),
        OptimizerSpec(
            SOAP, "preconditioned",
            "Vyas et al. 2024, SOAP: Improving and Stabilizing Shampoo using Adam",
            "https://arxiv.org/abs/2409.11321",
            # Bases refreshed every 2 steps: the save/load check (saved after
            # step 5) resumes with stored bases and refreshes them at step 6.
            # matrix_epsilon 0.1 (default 1e-3) bounds how much the power
            # iteration amplifies float32 rounding: two workers vs one device
            # differ by 6.8e-6 with 1e-3, 1.3e-6 (54 % of the bound) with 0.1.
            {"learning_rate": 0.01, "precondition_frequency": 2, "matrix_epsilon": 0.1},
            ({"precondition_frequency": 1, "shampoo_beta": 1.0},
             {"block_size": 3, "precondition_frequency": 3, "beta_2": 0.999},
             {"max_preconditioner_dim": 3, "beta_1": 0.0},
             # The authors' code exactly (tests/references/soap_authors.py).
             {"paper_exact": True},
             {"paper_exact": True, "precondition_frequency": 2, "shampoo_beta": 0.75,
              "beta_1": 0.875}),
            search_space=(_lr(), _BETA_1),
        ),
        OptimizerSpec(
            AdaHessian, "hessian",
            "Yao et al. 2021, ADAHESSIAN: An Adaptive Second Order Optimizer for Machine Learning",
            "https://arxiv.org/abs/2006.00719",
            # epsilon 0.01 (default 1e-4): where the Hessian diagonal is ~0 (digits'
            # blank pixels) the step is g / epsilon, which amplified float32 rounding
            # to 2e-3 between XLA and graph runs after 16 steps; 7 % of the bound now.
            {"learning_rate": 0.15, "epsilon": 0.01},
            search_space=(_lr(1e-2, 1.0),),
        ),
        OptimizerSpec(
            Sophia, "hessian",
            "Liu et al. 2023, Sophia: A Scalable Stochastic Second-order Optimizer for Language "
            "Model Pre-training",
            "https://arxiv.org/abs/2305.14342",
            # Hutchinson: its probe vectors depend on the seed and step only, so the
            # 2-device and 2-worker checks hold however the batch is split (the
            # Gauss-Newton-Bartlett labels match one device only for contiguous,
            # even splits: tests/test_sophia.py checks MirroredStrategy). rho 1:
            # about 60 % of the coordinates clip on digits (0.04: 90 %, sign steps).
            # Refresh every 2 steps: the save/load check (saved after step 5)
            # resumes with stored h and seed state and refreshes at step 7.
            {"learning_rate": 0.01, "rho": 1.0, "estimator": "hutchinson",
             "hessian_update_interval": 2, "seed": 0},
            search_space=(_lr(1e-5, 1e-2), Searchable("rho", 0.01, 1.0)),
        ),
        OptimizerSpec(
            LBFGS, "quasi-newton",
            "Liu and Nocedal 1989, On the limited memory BFGS method for large scale optimization "
            "(strong-Wolfe line search of Nocedal and Wright, Numerical Optimization, Alg. 3.5/3.6)",
            "https://doi.org/10.1007/BF01589116",
            # Full-batch method; 4 evaluations bound the unrolled line search
            # under MirroredStrategy (every evaluation runs there).
            {"history_size": 4, "max_evaluations": 4},
            search_space=(Searchable("history_size", 3, 20, "linear", integer=True),),
        ),
        OptimizerSpec(
            Signum, "sign",
            "Bernstein et al. 2018, signSGD: Compressed Optimisation for Non-Convex Problems",
            "https://arxiv.org/abs/1802.04434",
            {"learning_rate": 0.002},
            ({"momentum": 0.0},),
            search_space=(_lr(1e-5, 1e-2), _linear("momentum", 0.0, 0.99)),
        ),
        OptimizerSpec(
            LARS, "layer-wise",
            "You, Gitman and Ginsburg 2017, Large Batch Training of Convolutional Networks",
            "https://arxiv.org/abs/1708.03888",
            {"learning_rate": 5.0},
            ({"weight_decay": 2.0**-4}, {"momentum": 0.5, "trust_coefficient": 2.0**-3}),
            search_space=(_lr(0.1, 10.0), Searchable("trust_coefficient", 1e-4, 1e-2)),
        ),
        OptimizerSpec(
            NovoGrad, "layer-wise",
            "Ginsburg et al. 2019, Stochastic Gradient Methods with Layer-wise Adaptive Moments "
            "for Training of Deep Networks",
            "https://arxiv.org/abs/1905.11286",
            {"learning_rate": 0.01},
            ({"grad_averaging": True}, {"weight_decay": 2.0**-4, "beta_1": 0.875, "beta_2": 0.9375}),
            search_space=(_lr(1e-3, 1e-1), _BETA_1),
        ),
        OptimizerSpec(
            COCOB, "learning-rate-free",
            "Orabona and Tommasi 2017, Training Deep Networks without Learning Rates Through Coin Betting",
            "https://arxiv.org/abs/1705.07795",
            {"learning_rate": 1.0},
            ({"alpha": 8.0},),
            search_space=(Searchable("alpha", 10.0, 1000.0),),
        ),
        OptimizerSpec(
            Prodigy, "learning-rate-free",
            "Mishchenko and Defazio 2023, Prodigy: An Expeditiously Adaptive Parameter-Free Learner",
            "https://arxiv.org/abs/2306.06101",
            {"learning_rate": 1.0},
            ({"d0": 2.0**-10, "growth_rate": 2.0, "beta_3": 0.875},
             {"use_bias_correction": True, "safeguard_warmup": True, "d_coef": 4.0, "d0": 2.0**-10},
             {"weight_decay": 2.0**-4},
             # Algorithm 4 as printed (tests/references/prodigy_mishchenko2023.py);
             # a large epsilon makes its d * epsilon visible at rtol 1e-9.
             {"paper_exact": True},
             {"paper_exact": True, "epsilon": 0.25, "beta_1": 0.875, "beta_2": 0.984375}),
            search_space=(Searchable("d_coef", 0.1, 10.0),),
        ),
        OptimizerSpec(
            DAdaptAdam, "learning-rate-free",
            "Defazio and Mishchenko 2023, Learning-Rate-Free Learning by D-Adaptation",
            "https://arxiv.org/abs/2301.07733",
            # D-Adaptation's estimate overshoots to an Adam step of ~0.12 on
            # digits; halving it keeps float32 runs reproducible across devices.
            {"learning_rate": 0.5},
            ({"d0": 2.0**-10, "growth_rate": 2.0}, {"use_bias_correction": True},
             {"weight_decay": 2.0**-4},
             # The paper's algorithm as printed (tests/references/dadapt_adam_defazio2023.py).
             {"paper_exact": True},
             {"paper_exact": True, "beta_1": 0.875, "beta_2": 0.984375, "epsilon": 2.0**-10}),
            search_space=(_BETA_1,),
        ),
        OptimizerSpec(
            ScheduleFreeSGD, "schedule-free",
            "Defazio et al. 2024, The Road Less Scheduled",
            "https://arxiv.org/abs/2405.15682",
            {"learning_rate": 0.5},
            ({"momentum": 0.5, "warmup_steps": 5, "weight_lr_power": 1.0},
             {"weight_decay": 2.0**-4}),
            search_space=(_lr(1e-2, 10.0), _linear("momentum", 0.5, 0.99)),
        ),
        OptimizerSpec(
            ScheduleFreeAdamW, "schedule-free",
            "Defazio et al. 2024, The Road Less Scheduled",
            "https://arxiv.org/abs/2405.15682",
            {"learning_rate": 0.01},
            ({"warmup_steps": 5}, {"weight_decay": 2.0**-4, "warmup_steps": 3, "weight_lr_power": 1.0}),
            search_space=(_lr(), _BETA_1),
        ),
        OptimizerSpec(
            ScheduleFreeRAdam, "schedule-free",
            "Defazio et al. 2024, The Road Less Scheduled (with RAdam's rectification, "
            "Liu et al. 2019)",
            "https://arxiv.org/abs/2405.15682",
            {"learning_rate": 0.01},
            ({"silent_sgd_phase": False}, {"weight_decay": 2.0**-4, "sma_threshold": 5.0}),
            search_space=(_lr(), _BETA_1),
        ),
    ]
} | COMPOSITIONS


@dataclasses.dataclass(frozen=True)
class WrapperSpec(NamedByClass):
    """One shipped wrapper: takes an inner optimizer and adds one idea.

    Attributes:
        cls: the wrapper class (first constructor argument: ``inner``).
        paper: citation of the method.
        url: where to read it.
        example: wrapper arguments that make its effect visible within a few
            dozen steps (tests and docs use them).
        variants: further argument sets covering documented options.
    """

    cls: type[Any]
    paper: str
    url: str
    example: dict[str, Any] = dataclasses.field(default_factory=dict)
    variants: tuple[dict[str, Any], ...] = ()

    def wrap(self, inner: Any, **overrides: Any) -> keras.optimizers.Optimizer:
        """A new wrapper around ``inner`` with the ``example`` arguments and ``overrides``."""
        return self.cls(inner, **{**self.example, **overrides})


WRAPPERS: dict[str, WrapperSpec] = {
    spec.name: spec
    for spec in [
        WrapperSpec(
            Lookahead,
            "Zhang et al. 2019, Lookahead Optimizer: k steps forward, 1 step back",
            "https://arxiv.org/abs/1907.08610",
            {},
            ({"sync_period": 4, "slow_step_size": 0.75},),
        ),
        WrapperSpec(
            SAM,
            "Foret et al. 2021, Sharpness-Aware Minimization for Efficiently Improving Generalization",
            "https://arxiv.org/abs/2010.01412",
            {"rho": 0.05},
        ),
        WrapperSpec(
            ASAM,
            "Kwon et al. 2021, ASAM: Adaptive Sharpness-Aware Minimization for Scale-Invariant "
            "Learning of Deep Neural Networks",
            "https://arxiv.org/abs/2102.11600",
            {"rho": 0.5, "eta": 0.01},
        ),
        WrapperSpec(
            GSAM,
            "Zhuang et al. 2022, Surrogate Gap Guided Sharpness-Aware Minimization",
            "https://arxiv.org/abs/2203.08065",
            {"rho": 0.05, "alpha": 0.1},
        ),
        WrapperSpec(
            SWA,
            "Izmailov et al. 2018, Averaging Weights Leads to Wider Optima and Better Generalization",
            "https://arxiv.org/abs/1803.05407",
            {"start_step": 10, "average_period": 3},
            (
                {"start_step": 5, "average_period": 4, "swa_learning_rate": 2.0**-6,
                 "swa_min_learning_rate": 2.0**-8},
                {"start_step": 1, "average_period": 1, "swa_learning_rate": 2.0**-6},
            ),
        ),
        WrapperSpec(
            ExponentialMovingAverage,
            "Polyak and Juditsky 1992, Acceleration of Stochastic Approximation by Averaging",
            "https://doi.org/10.1137/0330046",
            {"decay": 0.75},
            ({"decay": 0.9375, "dynamic_decay": True},),
        ),
        WrapperSpec(
            GradientAccumulation,
            "Gradient accumulation: the mean gradient of several micro-batches per update",
            "https://arxiv.org/abs/1706.02677",
            {"steps": 3},
            ({"steps": 1},),
        ),
        WrapperSpec(
            SkipNonFinite,
            "Skip steps with non-finite gradients (as dynamic loss scaling does)",
            "https://arxiv.org/abs/1710.03740",
        ),
        WrapperSpec(
            Chain,
            "Gradient centralization (Yong et al. 2020), adaptive gradient clipping "
            "(Brock et al. 2021) and global-norm clipping, chained",
            "https://arxiv.org/abs/2102.06171",
            # Transformations are stateless, so chains may share these instances.
            {"transforms": [GradientCentralization(), AGC(clip_factor=0.05), ClipByGlobalNorm(1.0)]},
        ),
    ]
}


def get_spec(name: str) -> OptimizerSpec:
    """The registry entry for ``name`` (class name, case-insensitive, or
    ``"keras_optsuite>Name"``)."""
    key = name.split(">", 1)[-1].lower()
    for spec in REGISTRY.values():
        if spec.name.lower() == key:
            return spec
    raise ValueError(
        f"Unknown optimizer name={name!r}; available: {', '.join(REGISTRY)}"
    )
