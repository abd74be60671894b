"""What the contract suite tests: every registered optimizer, and every
registered wrapper around a built-in Keras optimizer and around one of ours.

A ``Subject`` knows how to build its optimizer (with exact hyperparameters
for the float64 numerics, or with tuned ones for training checks) and how
to build the matching NumPy reference (``references/_harness.py``).

The test bookkeeping of each registry row lives here, not in the product's
registry: :data:`REFERENCES` names its NumPy reference module in
``tests/references/`` and :data:`EXCLUSIONS` the contract checks that do not
apply to it (keys are names in ``test_optimizer_contract.py``'s
``EXCLUDABLE_CHECKS``), each with the reason and the test covering the
behaviour instead.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from typing import Any, Callable

import keras

from keras_optsuite.optimizers import REGISTRY, WRAPPERS, GradientCentralization, RAdam
from references import chain as chain_reference
from references._harness import PerTensor, reference_for

#: The NumPy reference module (``tests/references/<module>.py``) of every
#: registry row (optimizers, compositions and wrappers), by class name.
REFERENCES = {
    "RAdam": "radam", "AdaBelief": "adabelief", "Yogi": "yogi", "LazyAdam": "lazy_adam",
    "Adan": "adan", "ADOPT": "adopt", "AdEMAMix": "ademamix", "QHAdam": "qhadam", "QHM": "qhm",
    "AggMo": "aggmo", "LaProp": "laprop", "MADGRAD": "madgrad", "Shampoo": "shampoo",
    "SOAP": "soap", "AdaHessian": "adahessian", "Sophia": "sophia", "LBFGS": "lbfgs",
    "Signum": "signum", "LARS": "lars", "NovoGrad": "novograd", "COCOB": "cocob",
    "Prodigy": "prodigy", "DAdaptAdam": "dadapt_adam", "ScheduleFreeSGD": "schedule_free_sgd",
    "ScheduleFreeAdamW": "schedule_free_adamw", "ScheduleFreeRAdam": "schedule_free_radam",
    # Compositions (registry.COMPOSITIONS).
    "Ranger": "ranger",
    # Wrappers (registry.WRAPPERS): each module holds a class of the wrapper's name.
    "Lookahead": "lookahead", "SAM": "sam", "ASAM": "sam", "GSAM": "sam", "SWA": "swa",
    "ExponentialMovingAverage": "ema", "GradientAccumulation": "gradient_accumulation",
    "SkipNonFinite": "skip_non_finite", "Chain": "chain",
}

#: The contract checks that step with ``apply(gradients)`` alone.
_APPLY_ONLY_CHECKS = ("paper_update_rule", "convex_quadratic", "schedule", "weight_decay",
                      "norm_clipping", "clipvalue", "sparse_matches_dense")


def closure_exclusions(covered_by: str) -> dict[str, str]:
    """The exclusions of a method that needs a closure (SAM, AdaHessian, Sophia, L-BFGS).

    The contract's checks that call ``apply`` with gradients only cannot run
    it (``ClosureRequiredError`` by design); ``covered_by`` says where the
    method's own tests check the same behaviour through ``model.fit``.
    """
    reason = f"apply() without a closure raises ClosureRequiredError by design; {covered_by}"
    return {check: reason for check in _APPLY_ONLY_CHECKS}


_CLOSURE_WRAPPER_EXCLUSIONS = closure_exclusions(
    "the update rule, learning rate, fit/train_on_batch, sample weights, sparse gradients, "
    "mixed precision and MirroredStrategy are tested through the closure train step in "
    "tests/test_closure_and_sam.py"
)

#: Contract checks that do not apply to a registry row, by class name: the
#: reason, and where the row's own behaviour is tested instead.
EXCLUSIONS: dict[str, dict[str, str]] = {
    "LazyAdam": {
        "sparse_matches_dense": "LazyAdam updates only the rows in the batch by design; "
        "tests/test_lazy_adam.py checks its sparse update against a NumPy reference",
    },
    "AdaHessian": closure_exclusions(
        "tests/test_adahessian.py checks model.fit steps against tests/references/adahessian.py "
        "(with decoupled weight decay, a learning-rate schedule and clipnorm), the Hutchinson "
        "estimator and both Hessian-vector-product modes on Embedding (densified) gradients"
    ),
    "Sophia": closure_exclusions(
        "tests/test_sophia.py checks model.fit steps of both estimators against "
        "tests/references/sophia.py (decoupled weight decay, a learning-rate schedule, "
        "clipnorm, refresh every k steps, both clip branches) and the estimators' "
        "expectations; Embedding gradients are densified (dense state, as AdaHessian)"
    ),
    "LBFGS": closure_exclusions(
        "sparse gradients raise ValueError (a full-batch method); tests/test_lbfgs.py checks "
        "the iterations against tests/references/lbfgs.py, the strong-Wolfe conditions, "
        "learning-rate schedules and the convex optimum of scipy's L-BFGS-B through model.fit"
    ),
    "SAM": _CLOSURE_WRAPPER_EXCLUSIONS,
    "ASAM": _CLOSURE_WRAPPER_EXCLUSIONS,
    "GSAM": _CLOSURE_WRAPPER_EXCLUSIONS,
}

# Forwarded to every optimizer the suite builds; set on the inner optimizer of a wrapper.
BASE_OPTIONS = ("learning_rate", "weight_decay", "clipnorm", "clipvalue", "global_clipnorm")


@dataclasses.dataclass(frozen=True)
class Inner:
    """An optimizer to wrap: how to build it and its reference update."""

    id: str
    build: Callable[..., keras.optimizers.Optimizer]
    reference: str
    hyper: dict[str, Any]
    tuned_learning_rate: float


INNERS = [
    # Betas exactly representable in float32: Keras casts Python floats
    # through float32, and the numerics run in float64 at rtol 1e-9.
    Inner("keras.Adam", keras.optimizers.Adam, "keras_adam",
          {"beta_1": 0.875, "beta_2": 0.9990234375}, 0.01),
    Inner("RAdam", RAdam, "radam", {}, 0.01),
]


@dataclasses.dataclass(frozen=True)
class Subject:
    id: str
    cls: type  # the outermost optimizer class
    numeric_cases: tuple[dict[str, Any], ...]  # hyperparameter sets for the numerics test
    _build: Callable[..., keras.optimizers.Optimizer]
    _reference: Callable[..., Any]
    registered_name: str | None = None  # usable as compile(optimizer="...")
    own_arguments: tuple[str, ...] = ()  # arguments the invalid-values test probes
    micro_steps: int = 1  # calls to apply() per weight update (gradient accumulation)
    tuned: dict[str, Any] = dataclasses.field(default_factory=dict)
    # NumPy reference of the gradient transformations in front of the
    # optimizer that owns the Keras clip options (identity if there are none).
    seen_by_inner: Callable[[list, list], list] = lambda grads, params: grads
    # Contract checks that do not apply, with the reason (EXCLUSIONS).
    exclusions: dict[str, str] = dataclasses.field(default_factory=dict)
    inner: str | None = None  # a wrapper's inner optimizer (Inner.id)
    # Whole-model float32 comparisons (XLA, MirroredStrategy) widen their
    # tolerance to what a one-ulp change of the data does (test_optimizer_contract.py).
    rounding_calibrated: bool = False

    @property
    def decays_in_update(self) -> bool:
        """Whether weight decay is part of the method's update (its reference applies it)."""
        return getattr(self.cls, "decays_in_update", False)

    def build(self, hyper: dict[str, Any] | None = None, **options: Any) -> keras.optimizers.Optimizer:
        """The optimizer with ``hyper`` (its own arguments) and base ``options``."""
        return self._build(dict(hyper or {}), options)

    def create(self, **options: Any) -> keras.optimizers.Optimizer:
        """The optimizer with tuned hyperparameters (for training checks)."""
        return self._build({}, {**self.tuned, **options})

    def reference(self, hyper: dict[str, Any], learning_rate: float) -> Any:
        return self._reference(dict(hyper), learning_rate)

    def __repr__(self) -> str:
        return self.id


def _module(name: str):
    return importlib.import_module(f"references.{name}")


def _transform_reference(transforms) -> Callable[[list, list], list]:
    return chain_reference.Chain(None, transforms).transform


# Gradient transformations inside composite optimizers (the Keras clip
# options of the inner optimizer act after them).
_TRANSFORMS = {"Ranger": lambda: [GradientCentralization()]}


def _optimizer_subject(spec) -> Subject:
    cases = [{}]
    tuned = {k: v for k, v in spec.tuned.items() if k != "learning_rate"}
    if tuned:
        cases.append(tuned)
    cases.extend(spec.variants)
    own = tuple(
        name for name in inspect.signature(spec.cls.__init__).parameters
        if name not in ("self", "name", "kwargs")
    ) + BASE_OPTIONS
    return Subject(
        id=spec.name,
        cls=spec.cls,
        numeric_cases=tuple(cases),
        _build=lambda hyper, options: spec.cls(**{**hyper, **options}),
        _reference=lambda hyper, lr: reference_for(_module(REFERENCES[spec.name]), lr, **hyper),
        registered_name=spec.registered_name,
        own_arguments=tuple(dict.fromkeys(own)),
        tuned=dict(spec.tuned),
        exclusions=dict(EXCLUSIONS.get(spec.name, {})),
        seen_by_inner=(
            _transform_reference(_TRANSFORMS[spec.name]())
            if spec.name in _TRANSFORMS else Subject.seen_by_inner
        ),
    )


def _wrapped_subject(spec, inner: Inner) -> Subject:
    def build(hyper, options):
        return spec.wrap(inner.build(**{**inner.hyper, **options}), **hyper)

    def reference(hyper, lr):
        wrapper_args = {**spec.example, **hyper}
        inner_reference = PerTensor(_module(inner.reference), lr, **inner.hyper)
        wrapper_class = getattr(_module(REFERENCES[spec.name]), spec.name)
        return wrapper_class(inner_reference, **wrapper_args)

    own = tuple(
        name for name in inspect.signature(spec.cls.__init__).parameters
        if name not in ("self", "name")
    )
    return Subject(
        id=f"{spec.name}({inner.id})",
        cls=spec.cls,
        numeric_cases=({}, *spec.variants),
        _build=build,
        _reference=reference,
        own_arguments=own,
        micro_steps=spec.example.get("steps", 1),
        exclusions=dict(EXCLUSIONS.get(spec.name, {})),
        inner=inner.id,
        tuned={"learning_rate": inner.tuned_learning_rate},
        seen_by_inner=(
            _transform_reference(spec.example["transforms"])
            if "transforms" in spec.example else Subject.seen_by_inner
        ),
    )


OPTIMIZERS = [_optimizer_subject(spec) for spec in REGISTRY.values()]


def inners_for(spec) -> list[Inner]:
    """The inner optimizers a wrapper is tested around.

    Wrappers that need a closure (the SAM family) run two forward/backward
    passes per step and skip the apply()-only checks: around Keras's Adam
    only, which keeps the suite within its time budget.
    """
    return INNERS[:1] if getattr(spec.cls, "needs_closure", False) else INNERS


WRAPPED = [_wrapped_subject(spec, inner) for spec in WRAPPERS.values() for inner in inners_for(spec)]
SUBJECTS = OPTIMIZERS + WRAPPED

#: The subjects of the checks that train whole models (digits fit, XLA,
#: mixed precision, MirroredStrategy): every optimizer, and every wrapper
#: around Keras's Adam. A wrapper around one of ours (RAdam) adds nothing a
#: model fit can see that the float64 numerics, the save/load check and the
#: two-worker equivalence (tests/test_multi_worker_equivalence.py, both
#: inners) do not already check, and these checks are the suite's slowest.
TRAINING_SUBJECTS = [s for s in SUBJECTS if s.inner in (None, INNERS[0].id)]
# Sophia's registry row tunes the Hutchinson estimator; its default,
# Gauss-Newton-Bartlett, samples labels inside the train step: the
# whole-model checks run it too.
TRAINING_SUBJECTS.append(dataclasses.replace(
    next(s for s in OPTIMIZERS if s.id == "Sophia"),
    id="Sophia(gauss_newton_bartlett)",
    tuned={**REGISTRY["Sophia"].tuned, "estimator": "gauss_newton_bartlett"},
))

#: Shampoo, SOAP and AdaHessian at their default numerical safeguards. Their
#: registry rows raise ``matrix_epsilon`` (Shampoo 0.01, SOAP 0.1) and
#: ``epsilon`` (AdaHessian 0.01) so float32 rounding stays within the fixed
#: tolerances of the two-worker check; these subjects run the XLA and
#: MirroredStrategy checks with the defaults instead. Shampoo and SOAP pass
#: them at the fixed tolerance (rtol 1e-4, atol 1e-5; measured differences
#: up to 1.5e-6 and 6.2e-6). AdaHessian's default ``epsilon`` 1e-4 makes
#: steps of ``lr g / epsilon`` where the Hessian diagonal is ~0, which turn a
#: one-ulp change of the data into a 3e-3 weight change: its tolerance is
#: calibrated to that (``rounding_calibrated``). The two-worker check
#: (tests/test_multi_worker_equivalence.py) runs them too, calibrated the same
#: way for all three (its fixed tolerance is 10x tighter).
SAFEGUARDED = {"Shampoo": "matrix_epsilon", "SOAP": "matrix_epsilon", "AdaHessian": "epsilon"}
AT_DEFAULTS = [
    dataclasses.replace(
        subject,
        id=f"{subject.id}(default {SAFEGUARDED[subject.id]})",
        tuned={k: v for k, v in subject.tuned.items() if k != SAFEGUARDED[subject.id]},
        rounding_calibrated=subject.id == "AdaHessian",
    )
    for subject in OPTIMIZERS
    if subject.id in SAFEGUARDED
]
