"""The one list of optimizers keras-optsuite ships.

Docs, the contract test suite, the command line, the tuner's search spaces
and the benchmarks all read :data:`REGISTRY`. Adding an optimizer means one
module in this package, one :class:`OptimizerSpec` row below, and one NumPy
reference update in ``tests/references/<reference>.py``.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import keras

from keras_optsuite.optimizers.adabelief import AdaBelief
from keras_optsuite.optimizers.adan import Adan
from keras_optsuite.optimizers.ademamix import AdEMAMix
from keras_optsuite.optimizers.adopt import ADOPT
from keras_optsuite.optimizers.aggmo import AggMo
from keras_optsuite.optimizers.laprop import LaProp
from keras_optsuite.optimizers.madgrad import MADGRAD
from keras_optsuite.optimizers.qhadam import QHM, QHAdam
from keras_optsuite.optimizers.radam import RAdam
from keras_optsuite.optimizers.signum import Signum
from keras_optsuite.optimizers.yogi import Yogi


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """One shipped optimizer.

    Attributes:
        cls: the optimizer class.
        family: short grouping used in docs and search spaces.
        paper: citation of the paper whose update rule the class implements.
        url: where to read the paper.
        reference: module name of the NumPy reference update in ``tests/references``.
        tuned: hyperparameters that train small dense models well in a few
            hundred steps (the tests, the demo and tuner starting points use them).
        variants: further hyperparameter sets that switch on a documented
            variant (e.g. ``{"amsgrad": True}``); the numerics tests cover each.
    """

    cls: type
    family: str
    paper: str
    url: str
    reference: str
    tuned: dict[str, Any] = dataclasses.field(default_factory=dict)
    variants: tuple[dict[str, Any], ...] = ()

    @property
    def name(self) -> str:
        return self.cls.__name__

    @property
    def registered_name(self) -> str:
        """The string accepted by ``model.compile(optimizer=...)``."""
        return keras.saving.get_registered_name(self.cls)

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


REGISTRY: dict[str, OptimizerSpec] = {
    spec.name: spec
    for spec in [
        OptimizerSpec(
            RAdam, "adam",
            "Liu et al. 2019, On the Variance of the Adaptive Learning Rate and Beyond",
            "https://arxiv.org/abs/1908.03265", "radam",
            {"learning_rate": 0.01},
            ({"sma_threshold": 4.0},),
        ),
        OptimizerSpec(
            AdaBelief, "adam",
            "Zhuang et al. 2020, AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed Gradients",
            "https://arxiv.org/abs/2010.07468", "adabelief",
            {"learning_rate": 0.01},
            ({"amsgrad": True}, {"rectify": True}, {"rectify": True, "amsgrad": True}),
        ),
        OptimizerSpec(
            Yogi, "adam",
            "Zaheer et al. 2018, Adaptive Methods for Nonconvex Optimization",
            "https://papers.nips.cc/paper/8186-adaptive-methods-for-nonconvex-optimization",
            "yogi",
            {"learning_rate": 0.01},
        ),
        OptimizerSpec(
            Adan, "adam",
            "Xie et al. 2022, Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing Deep Models",
            "https://arxiv.org/abs/2208.06677", "adan",
            {"learning_rate": 0.01},
        ),
        OptimizerSpec(
            ADOPT, "adam",
            "Taniguchi et al. 2024, ADOPT: Modified Adam Can Converge with Any beta_2 with the Optimal Rate",
            "https://arxiv.org/abs/2411.02853", "adopt",
            {"learning_rate": 0.01},
            ({"clip_exponent": None},),
        ),
        OptimizerSpec(
            AdEMAMix, "adam",
            "Pagliardini et al. 2024, The AdEMAMix Optimizer: Better, Faster, Older",
            "https://arxiv.org/abs/2409.03137", "ademamix",
            {"learning_rate": 0.005, "alpha_warmup_steps": 200, "beta_3_warmup_steps": 200},
            ({"alpha_warmup_steps": 10, "beta_3_warmup_steps": 20},),
        ),
        OptimizerSpec(
            QHAdam, "adam",
            "Ma and Yarats 2019, Quasi-hyperbolic momentum and Adam for deep learning",
            "https://arxiv.org/abs/1810.06801", "qhadam",
            {"learning_rate": 0.01},
        ),
        OptimizerSpec(
            QHM, "momentum",
            "Ma and Yarats 2019, Quasi-hyperbolic momentum and Adam for deep learning",
            "https://arxiv.org/abs/1810.06801", "qhm",
            {"learning_rate": 0.5, "momentum": 0.9},
        ),
        OptimizerSpec(
            AggMo, "momentum",
            "Lucas et al. 2019, Aggregated Momentum: Stability Through Passive Damping",
            "https://arxiv.org/abs/1804.00325", "aggmo",
            {"learning_rate": 0.05},
            ({"betas": (0.5, 0.75)},),
        ),
        OptimizerSpec(
            LaProp, "adam",
            "Ziyin, Wang and Ueda 2020, LaProp: Separating Momentum and Adaptivity in Adam",
            "https://arxiv.org/abs/2002.04839", "laprop",
            {"learning_rate": 0.01},
        ),
        OptimizerSpec(
            MADGRAD, "dual-averaging",
            "Defazio and Jelassi 2021, Adaptivity without Compromise: A Momentumized, Adaptive, "
            "Dual Averaged Gradient Method for Stochastic Optimization",
            "https://arxiv.org/abs/2101.11075", "madgrad",
            {"learning_rate": 0.01},
        ),
        OptimizerSpec(
            Signum, "sign",
            "Bernstein et al. 2018, signSGD: Compressed Optimisation for Non-Convex Problems",
            "https://arxiv.org/abs/1802.04434", "signum",
            {"learning_rate": 0.002},
            ({"momentum": 0.0},),
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
