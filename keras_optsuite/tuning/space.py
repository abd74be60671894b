"""Search spaces over optimizers, read from the registry.

Every searchable optimizer is a *family*: a row of
:data:`keras_optsuite.optimizers.REGISTRY` (its ``search_space`` field) or a
row of :data:`BUILTINS` below (Keras's own optimizers, which the registry
does not ship). :func:`optimizer_space` turns them into Keras Tuner
hyperparameters: the family is an ``hp.Choice`` named ``"optimizer"`` and
each family's hyperparameters live in a conditional scope of that choice,
named ``"<family>/<argument>"``, so an oracle (Bayesian optimization
included) sees only the chosen family's values.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import keras

from keras_optsuite.optimizers.registry import (
    _BETA_1,
    REGISTRY,
    Searchable,
    _linear,
    _lr,
)

#: The name of the family choice (and the prefix-free key a tuner tags runs with).
OPTIMIZER = "optimizer"
WRAPPER = "wrapper"
SCHEDULE = "schedule"

WRAPPER_CHOICES = ("none", "Lookahead", "EMA", "SAM")
SCHEDULE_CHOICES = ("constant", "cosine", "warmup_stable_decay", "one_cycle")

#: The cooldown of ``"warmup_stable_decay"``, as a fraction of the run.
WSD_DECAY_FRACTION = 0.2


@dataclasses.dataclass(frozen=True)
class Family:
    """One searchable optimizer: how to build it and what to search.

    Attributes:
        name: the value of the ``"optimizer"`` choice.
        build: ``build(**arguments) -> keras.optimizers.Optimizer``.
        search_space: the searched constructor arguments.
        defaults: the value of each searched argument tried first.
        fixed: constructor arguments every trial of the family gets.
        learning_rate_free: True when the method estimates its own step size
            (no learning rate is searched).
        needs_closure: True for methods trained through the closure train
            step (SAM is not offered around them).
        full_batch: True for methods that need the whole data set per step (LBFGS).
    """

    name: str
    build: Callable[..., keras.optimizers.Optimizer]
    search_space: tuple[Searchable, ...]
    defaults: dict[str, Any]
    fixed: dict[str, Any] = dataclasses.field(default_factory=dict)
    learning_rate_free: bool = False
    needs_closure: bool = False
    full_batch: bool = False

    def create(self, **values: Any) -> keras.optimizers.Optimizer:
        """The optimizer with the defaults, ``fixed`` arguments and ``values``."""
        return self.build(**{**self.defaults, **self.fixed, **values})


def _builtin(name: str, cls: type, space: tuple[Searchable, ...], **fixed: Any) -> Family:
    defaults = {p.name: p.default for p in space}
    return Family(name, cls, space, defaults, fixed)


#: Keras's built-in optimizers for the classic methods. Defaults are Keras's,
#: except where the method's documented default differs: SGD with momentum
#: 0.9 (the usual choice; Keras's ``SGD`` defaults to no momentum), and
#: Adadelta with learning rate 1.0 (Zeiler 2012 has no learning rate, i.e.
#: 1.0; Keras's 0.001 barely moves the weights).
BUILTINS: dict[str, Family] = {
    family.name: family
    for family in [
        _builtin("SGD", keras.optimizers.SGD, (_lr(1e-3, 1.0, 0.01),)),
        _builtin("SGDMomentum", keras.optimizers.SGD,
                 (_lr(1e-3, 1.0, 0.01), _linear("momentum", 0.5, 0.99, 0.9))),
        _builtin("SGDNesterov", keras.optimizers.SGD,
                 (_lr(1e-3, 1.0, 0.01), _linear("momentum", 0.5, 0.99, 0.9)), nesterov=True),
        _builtin("Adam", keras.optimizers.Adam,
                 (_lr(1e-4, 1e-1, 1e-3), dataclasses.replace(_BETA_1, default=0.9))),
        _builtin("AdamW", keras.optimizers.AdamW,
                 (_lr(1e-4, 1e-1, 1e-3), Searchable("weight_decay", 1e-5, 1e-1, default=0.004))),
        _builtin("Adagrad", keras.optimizers.Adagrad, (_lr(1e-3, 1.0, 1e-3),)),
        _builtin("Adadelta", keras.optimizers.Adadelta,
                 (_lr(1e-2, 10.0, 1.0), _linear("rho", 0.8, 0.99, 0.95))),
        _builtin("RMSprop", keras.optimizers.RMSprop,
                 (_lr(1e-4, 1e-1, 1e-3), _linear("rho", 0.8, 0.99, 0.9))),
        _builtin("Nadam", keras.optimizers.Nadam,
                 (_lr(1e-4, 1e-1, 1e-3), dataclasses.replace(_BETA_1, default=0.9))),
        _builtin("Lion", keras.optimizers.Lion,
                 (_lr(1e-5, 1e-2, 1e-4), dataclasses.replace(_BETA_1, default=0.9))),
    ]
}


def _from_registry(name: str) -> Family:
    spec = REGISTRY[name]
    return Family(
        name,
        spec.cls,
        spec.search_space,
        spec.search_defaults(),
        learning_rate_free=spec.family == "learning-rate-free",
        needs_closure=bool(getattr(spec.cls, "needs_closure", False)),
        full_batch=spec.family == "quasi-newton",
    )


#: Every searchable family: Keras's built-ins, then the registry's rows.
FAMILIES: dict[str, Family] = {
    **BUILTINS,
    **{name: _from_registry(name) for name, spec in REGISTRY.items() if spec.search_space},
}


def get_family(name: str) -> Family:
    """The family called ``name`` (case-insensitive; ``"keras_optsuite>Name"`` accepted).

    Raises:
        ValueError: no family has that name.

    Example:
    >>> get_family("radam").name
    'RAdam'
    """
    if not isinstance(name, str):
        raise ValueError(f"optimizer names must be strings, got {name!r}")
    key = name.split(">", 1)[-1].lower()
    for family in FAMILIES.values():
        if family.name.lower() == key:
            return family
    raise ValueError(f"Unknown optimizer name={name!r}; searchable: {', '.join(FAMILIES)}")


def resolve_families(optimizers: Sequence[str] | None) -> list[Family]:
    """The families named by ``optimizers`` (all of them for None), validated."""
    if optimizers is None:
        return list(FAMILIES.values())
    if isinstance(optimizers, str):
        optimizers = [optimizers]
    families = [get_family(name) for name in optimizers]
    if not families:
        raise ValueError("optimizers must name at least one optimizer, got optimizers=[]")
    names = [family.name for family in families]
    if len(set(names)) != len(names):
        raise ValueError(f"optimizers names an optimizer twice: optimizers={list(optimizers)!r}")
    return families


def _declare(hp: Any, name: str, parameter: Searchable, default: Any) -> Any:
    sampling = "log" if parameter.scale == "log" else "linear"
    if parameter.integer:
        return hp.Int(name, int(parameter.low), int(parameter.high), sampling=sampling, default=int(default))
    return hp.Float(name, float(parameter.low), float(parameter.high), sampling=sampling,
                    default=float(default))


def _check_choices(argument: str, values: Sequence[str] | None, allowed: Sequence[str]) -> list[str]:
    if values is None:
        return []
    values = [values] if isinstance(values, str) else list(values)
    if not values:
        raise ValueError(f"{argument} must name at least one choice, got {argument}=[]")
    for value in values:
        if value not in allowed:
            raise ValueError(f"Unknown {argument} choice {value!r}; allowed: {', '.join(allowed)}")
    return values


def validate_space(
    optimizers: Sequence[str] | None = None,
    wrappers: Sequence[str] | None = None,
    schedules: Sequence[str] | None = None,
    total_steps: int | None = None,
) -> list[Family]:
    """Check the arguments of :func:`optimizer_space` without building anything.

    Raises:
        ValueError: an unknown optimizer, wrapper or schedule name, an empty
            list, SAM offered around a closure optimizer, or schedules without
            a positive ``total_steps``.
    """
    families = resolve_families(optimizers)
    wrappers = _check_choices("wrappers", wrappers, WRAPPER_CHOICES)
    schedules = _check_choices("schedules", schedules, SCHEDULE_CHOICES)
    if "SAM" in wrappers:
        closure = [family.name for family in families if family.needs_closure]
        if closure:
            raise ValueError(
                f"wrappers offers SAM, which cannot wrap the closure optimizers {closure}: "
                "leave SAM out or those optimizers out"
            )
    total_steps_valid = isinstance(total_steps, int) and not isinstance(total_steps, bool) and total_steps >= 1
    if any(schedule != "constant" for schedule in schedules) and not total_steps_valid:
        raise ValueError(
            f"schedules other than 'constant' need total_steps >= 1 (the optimizer steps of a "
            f"trial), got total_steps={total_steps!r}"
        )
    return families


def optimizer_space(
    hp: Any,
    optimizers: Sequence[str] | None = None,
    *,
    wrappers: Sequence[str] | None = None,
    schedules: Sequence[str] | None = None,
    total_steps: int | None = None,
    weight_decay: float | None = None,
) -> keras.optimizers.Optimizer:
    """Declare the optimizer search space on ``hp`` and return this trial's optimizer.

    Hyperparameters declared (only the chosen ones are active):

    - ``"optimizer"``: ``hp.Choice`` over ``optimizers`` (default: the first).
    - ``"<family>/<argument>"`` for each family's :class:`Searchable` rows, in
      the conditional scope ``optimizer == family``. Learning-rate-free
      families (Prodigy, D-Adaptation, COCOB) have no learning rate.
    - with ``wrappers``: ``"wrapper"`` (``"none"``, ``"Lookahead"``,
      ``"EMA"``, ``"SAM"``) and ``"Lookahead/sync_period"``,
      ``"Lookahead/slow_step_size"``, ``"EMA/decay"``, ``"SAM/rho"``.
    - with ``schedules``: ``"schedule"`` (``"constant"``, ``"cosine"``
      (cosine decay to 0 after a linear warmup), ``"warmup_stable_decay"``
      (linear warmup, constant, linear cooldown over the last 20 %),
      ``"one_cycle"``) and ``"<schedule>/warmup_fraction"``, the warmup as a
      fraction of ``total_steps``. The schedule's peak is the family's
      learning rate (for learning-rate-free families, the multiplier 1.0).

    Args:
        hp: a ``keras_tuner.HyperParameters``.
        optimizers: family names (:data:`FAMILIES`); None searches them all.
        wrappers: wrapper choices to search, or None for no wrapper.
        schedules: schedule choices to search, or None for a constant rate.
        total_steps: optimizer steps of a trial (needed by schedules).
        weight_decay: decoupled weight decay given to every family
            (e.g. from :func:`regularization_space`); None leaves each
            family's own.

    Returns:
        A new optimizer for this trial.

    Raises:
        ValueError: see :func:`validate_space`.

    Example:
    >>> hp = keras_tuner.HyperParameters()
    >>> optimizer = optimizer_space(hp, ["Adam", "RAdam", "Prodigy"])
    >>> sorted(hp.values)
    ['Adam/beta_1', 'Adam/learning_rate', 'optimizer']
    """
    families = validate_space(optimizers, wrappers, schedules, total_steps)
    wrappers = _check_choices("wrappers", wrappers, WRAPPER_CHOICES)
    schedules = _check_choices("schedules", schedules, SCHEDULE_CHOICES)
    chosen_name = hp.Choice(OPTIMIZER, [family.name for family in families], default=families[0].name)
    chosen, arguments = None, {}
    for family in families:
        with hp.conditional_scope(OPTIMIZER, [family.name]):
            values = {
                p.name: _declare(hp, f"{family.name}/{p.name}", p, family.defaults[p.name])
                for p in family.search_space
            }
        if family.name == chosen_name:
            chosen, arguments = family, values
    if weight_decay is not None:
        arguments["weight_decay"] = float(weight_decay)
    if schedules:
        assert chosen is not None and total_steps is not None  # validate_space requires total_steps
        schedule = _schedule(hp, schedules, chosen, arguments, total_steps)
        if schedule is not None:
            arguments["learning_rate"] = schedule
    assert chosen is not None  # chosen_name is one of the families
    optimizer = chosen.create(**arguments)
    if wrappers:
        optimizer = _wrap(hp, wrappers, optimizer)
    return optimizer


def _schedule(hp: Any, schedules: list[str], family: Family, arguments: dict, total_steps: int) -> Any:
    from keras_optsuite.schedules import OneCycle, WarmupStableDecay

    name = hp.Choice(SCHEDULE, schedules, default=schedules[0])
    fractions = {}
    for schedule in schedules:
        if schedule == "constant":
            continue
        low, high, default = (0.1, 0.5, 0.3) if schedule == "one_cycle" else (0.0, 0.3, 0.1)
        with hp.conditional_scope(SCHEDULE, [schedule]):
            fractions[schedule] = hp.Float(f"{schedule}/warmup_fraction", low, high, default=default)
    if name == "constant":
        return None
    peak = arguments.get("learning_rate", family.create().learning_rate)
    peak = float(keras.ops.convert_to_numpy(peak)) if not isinstance(peak, float) else peak
    warmup = int(round(fractions[name] * total_steps))
    if name == "one_cycle":
        return OneCycle(peak, total_steps=total_steps, warmup_fraction=fractions[name])
    if name == "cosine":
        if warmup == 0:
            return keras.optimizers.schedules.CosineDecay(peak, decay_steps=total_steps)
        return keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=max(total_steps - warmup, 1), warmup_target=peak, warmup_steps=warmup
        )
    decay = max(int(round(WSD_DECAY_FRACTION * total_steps)), 1)
    return WarmupStableDecay(peak, warmup_steps=warmup, stable_steps=max(total_steps - warmup - decay, 0),
                             decay_steps=decay)


def _wrap(hp: Any, wrappers: list[str], optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    from keras_optsuite.optimizers import SAM, ExponentialMovingAverage, Lookahead

    name = hp.Choice(WRAPPER, wrappers, default=wrappers[0])
    values: dict[str, dict[str, Any]] = {}
    declarations = {
        "Lookahead": lambda: {
            "sync_period": hp.Int("Lookahead/sync_period", 3, 10, default=6),
            "slow_step_size": hp.Float("Lookahead/slow_step_size", 0.3, 0.8, default=0.5),
        },
        "EMA": lambda: {"decay": hp.Float("EMA/decay", 0.9, 0.999, default=0.99)},
        "SAM": lambda: {"rho": hp.Float("SAM/rho", 0.01, 0.5, sampling="log", default=0.05)},
    }
    for wrapper in wrappers:
        if wrapper in declarations:
            with hp.conditional_scope(WRAPPER, [wrapper]):
                values[wrapper] = declarations[wrapper]()
    classes = {"Lookahead": Lookahead, "EMA": ExponentialMovingAverage, "SAM": SAM}
    if name == "none":
        return optimizer
    return classes[name](optimizer, **values[name])


#: Search ranges of regularization rates, by the layer attribute's name.
_RATE_RANGES = {
    "rate": _linear("rate", 0.0, 0.5, 0.1),
    "survival_probability": _linear("survival_probability", 0.5, 1.0, 0.8),
}
WEIGHT_DECAY = Searchable("weight_decay", 1e-6, 1e-1, "log", 1e-4)


def regularization_space(
    hp: Any, layers: Sequence[str] | None = None, weight_decay: bool = True
) -> dict[str, float]:
    """Declare regularization hyperparameters on ``hp`` and return their values.

    ``"regularization/weight_decay"`` is decoupled weight decay (log scale,
    1e-6 to 0.1, default 1e-4): pass it to :func:`optimizer_space`
    (``weight_decay=``). ``"regularization/<Layer>.<attribute>"`` is the rate
    of each keras-optsuite regularization layer named in ``layers``
    (:data:`keras_optsuite.layers.LAYERS` rows with a rate; all of them for
    None): drop rates 0 to 0.5 (default 0.1), survival probabilities 0.5 to
    1 (default 0.8).

    Args:
        hp: a ``keras_tuner.HyperParameters``.
        layers: layer class names, or None for every layer with a rate.
        weight_decay: whether to search weight decay.

    Returns:
        ``{"weight_decay": ..., "<Layer>.<attribute>": ...}``.

    Raises:
        ValueError: a name that is not a regularization layer with a rate.

    Example:
    >>> values = regularization_space(keras_tuner.HyperParameters(), ["DropConnect"])
    >>> values
    {'weight_decay': 0.0001, 'DropConnect.rate': 0.1}
    """
    from keras_optsuite.layers import LAYERS

    with_rates = {name: attribute for name, spec in LAYERS.items() if (attribute := spec.rate_attribute)}
    names = list(with_rates) if layers is None else ([layers] if isinstance(layers, str) else list(layers))
    for name in names:
        if name not in with_rates:
            raise ValueError(
                f"Unknown regularization layer {name!r}; layers with a rate: {', '.join(with_rates)}"
            )
    values: dict[str, float] = {}
    if weight_decay:
        values["weight_decay"] = _declare(hp, "regularization/weight_decay", WEIGHT_DECAY, WEIGHT_DECAY.default)
    for name in names:
        attribute = with_rates[name]
        parameter = _RATE_RANGES[attribute]
        values[f"{name}.{attribute}"] = _declare(
            hp, f"regularization/{name}.{attribute}", parameter, parameter.default
        )
    return values
