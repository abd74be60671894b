"""Pipeline configs: TOML files validated on load, before any work starts.

A config has the sections ``[data]``, ``[model]``, ``[training]``,
``[compare]``, ``[tune]``, ``[tracking]`` and ``[promote]``; every key is
optional and has a documented default (:data:`SCHEMA` is the one list of
keys, types and defaults; ``optsuite <command> --help`` prints it). Every
error names the file, the key path and what was expected; an unknown key is
an error with a "did you mean" suggestion. ``--set key.path=value``
overrides are parsed as TOML values (``--set training.epochs=3``,
``--set compare.optimizers='["adam", "RAdam"]'``; a bare word is a string)
and validated the same way.

Example:
>>> config = load_config("pipelines/configs/demo.toml", overrides=["training.epochs=2"])
>>> config["training"]["epochs"]
2
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import tomllib

__all__ = ["ConfigError", "SCHEMA", "load_config", "parse_config", "describe_schema"]


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file, the key path and what was expected."""


@dataclasses.dataclass(frozen=True)
class Key:
    """One config key: what it must be, its default, what it means."""

    kind: str  # "int", "float", "bool", "str", "list[str]", "list[int]", "list[float]"
    default: Any
    help: str
    check: Callable[[Any], str | None] | None = None  # returns what was expected, or None when fine


def _at_least(low: float, strict: bool = False) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        values = value if isinstance(value, list) else [value]
        bad = [v for v in values if (v <= low if strict else v < low)]
        return f"a value {'>' if strict else '>='} {low}" if bad else None

    return check


def _between(low: float, high: float, low_open: bool = False) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        fine = (low < value if low_open else low <= value) and value < high
        return None if fine else f"a number in {'(' if low_open else '['}{low}, {high})"

    return check


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in choices else "one of " + ", ".join(repr(c) for c in choices)

    return check


def _function_reference(value: Any) -> str | None:
    module, _, name = value.partition(":")
    return None if module and name else "'module:function'"


def _non_empty(value: Any) -> str | None:
    return None if value else "a non-empty list"


DATASETS = ("digits", "breast_cancer", "wine", "diabetes", "mnist1d", "synthetic_classification",
            "synthetic_regression", "sequence_memory")
MODELS = ("mlp", "cnn1d", "autoencoder", "sequence")
TUNERS = ("random", "bayesian", "grid", "hyperband")

SCHEMA: dict[str, dict[str, Key]] = {
    "data": {
        "name": Key("str", "digits", "built-in data set", _one_of(*DATASETS)),
        "function": Key("str", None, "'module:function' returning (x, y) arrays, or a dict with "
                        "'x', 'y' and optionally 'task' ('classification' or 'regression'); replaces name",
                        _function_reference),
        "samples": Key("int", 2000, "rows of the synthetic data sets, mnist1d and sequence_memory",
                       _at_least(10)),
        "features": Key("int", 20, "columns of the synthetic data sets (sequence_memory: its length)",
                        _at_least(1)),
        "classes": Key("int", 3, "classes of synthetic_classification", _at_least(2)),
        "noise": Key("float", 0.1, "noise of the synthetic data sets", _at_least(0.0)),
    },
    "model": {
        "name": Key("str", "mlp", "built-in model", _one_of(*MODELS)),
        "function": Key("str", None, "'module:function' called with input_shape=, outputs=, task= and "
                        "returning an uncompiled keras.Model; replaces name", _function_reference),
        "hidden": Key("list[int]", [64], "units (mlp, autoencoder) or filters (cnn1d, sequence) per layer",
                      _at_least(1)),
        "dropout": Key("float", 0.0, "dropout rate after each hidden layer", _between(0.0, 1.0)),
        "activation": Key("str", "relu", "activation of the hidden layers"),
    },
    "training": {
        "epochs": Key("int", 10, "epochs of every training run", _at_least(1)),
        "batch_size": Key("int", 64, "batch size", _at_least(1)),
        "validation_split": Key("float", 0.2, "share of the non-test rows used for validation",
                                _between(0.0, 1.0, low_open=True)),
        "test_split": Key("float", 0.2, "share of the rows held out for the final test (touched only by "
                          "compare and promote)", _between(0.0, 1.0)),
        "seeds": Key("list[int]", [0, 1, 2], "seeds of the final runs (the first also splits the data)",
                     _non_empty),
        "strategy": Key("str", "default", "keras_optsuite.distribute.get_strategy kind",
                        _one_of("auto", "default", "mirrored", "multi_worker")),
        "optimizer": Key("str", "Adam", "the optimizer of `optsuite train` (a name as in compare.optimizers, "
                         "with its documented defaults)"),
        "learning_rate": Key("float", None, "the learning rate of `optsuite train` (default: the optimizer's)",
                             _at_least(0.0, strict=True)),
    },
    "compare": {
        "optimizers": Key("list[str]", ["adam", "RAdam"], "optimizers to compare: Keras names ('adam', "
                          "'sgd_nesterov', ...) or keras-optsuite names", _non_empty),
        "baseline": Key("str", "adam", "the optimizer whose tuned final score is the target"),
        "trials": Key("int", 4, "tuning trials per optimizer (the same for each; 1 = the defaults only)",
                      _at_least(1)),
        "tuning_epochs": Key("int", None, "epochs of a tuning trial (default: training.epochs)", _at_least(1)),
        "tuner": Key("str", "random", "the search", _one_of(*TUNERS)),
        "pruning": Key("bool", True, "stop trials far below the median of finished trials"),
        "metric": Key("str", None, "the score (default: val_accuracy for classification, val_loss for "
                      "regression)"),
    },
    "tune": {
        "optimizers": Key("list[str]", ["adam", "RAdam"], "optimizers the search chooses from", _non_empty),
        "trials": Key("int", 8, "trials of the search", _at_least(1)),
        "tuner": Key("str", "random", "the search", _one_of(*TUNERS)),
        "pruning": Key("bool", True, "stop trials far below the median of finished trials"),
        "metric": Key("str", None, "the objective (default as compare.metric)"),
    },
    "tracking": {
        "experiment": Key("str", None, "MLflow experiment (default: keras-optsuite-<config name>)"),
        "tracking_uri": Key("str", None, "MLflow tracking URI (default: MLflow's, else mlruns/mlflow.db)"),
    },
    "promote": {
        "model_name": Key("str", "keras-optsuite-best", "registered model name"),
        "metric": Key("str", None, "held-out score that decides (default: test_<compare.metric without val_>)"),
        "min_improvement": Key("float", 0.0, "how much better than the champion a candidate must be",
                               _at_least(0.0)),
        "alias": Key("str", "champion", "the alias moved to a better model"),
    },
}


def _suggest(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(choices)})"


def _type_error(value: Any, kind: str) -> str | None:
    """None when ``value`` is of ``kind``, else what was expected."""
    if kind.startswith("list["):
        item = kind[5:-1]
        if not isinstance(value, list) or any(_type_error(v, item) for v in value):
            return f"a list of {item}"
        return None
    if kind == "bool":
        return None if isinstance(value, bool) else "true or false"
    if kind == "int":
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if kind == "float":
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "a number"
    return None if isinstance(value, str) and value.strip() else "a non-empty string"


def parse_config(raw: Mapping[str, Any], source: str = "<config>") -> dict[str, dict[str, Any]]:
    """Validate ``raw`` (a parsed TOML document) and return it with every default filled in.

    Raises:
        ConfigError: naming ``source``, the key path and what was expected.
    """
    config = {section: {name: copy.deepcopy(key.default) for name, key in keys.items()}
              for section, keys in SCHEMA.items()}
    for section, table in raw.items():
        if section not in SCHEMA:
            raise ConfigError(f"{source}: unknown section [{section}]{_suggest(section, list(SCHEMA))}")
        if not isinstance(table, Mapping):
            raise ConfigError(f"{source}: {section} must be a table ([{section}]), got {table!r}")
        for name, value in table.items():
            keys = SCHEMA[section]
            if name not in keys:
                raise ConfigError(f"{source}: unknown key {section}.{name}{_suggest(name, list(keys))}")
            key = keys[name]
            expected = _type_error(value, key.kind) or (key.check(value) if key.check else None)
            if expected:
                raise ConfigError(f"{source}: {section}.{name} must be {expected}, got {value!r}")
            config[section][name] = float(value) if key.kind == "float" else value
    return config


def _override(document: dict[str, Any], assignment: str) -> None:
    path, equals, text = assignment.partition("=")
    parts = path.strip().split(".")
    if not equals or len(parts) != 2 or not all(parts):
        raise ConfigError(f"--set {assignment}: expected section.key=value, e.g. --set training.epochs=3")
    try:
        value = tomllib.loads(f"value = {text.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        value = text.strip()  # a bare word: a string
    section, name = parts
    table = document.setdefault(section, {})
    if not isinstance(table, dict):
        raise ConfigError(f"--set {assignment}: {section} is not a table")
    table[name] = value


def load_config(
    path: str | os.PathLike | None, overrides: Sequence[str] = ()
) -> dict[str, dict[str, Any]]:
    """Read, override and validate a TOML config; ``path`` None means every default.

    Overrides are validated like the file; an error in one names the
    ``--set`` that caused it.

    Raises:
        ConfigError: a file that cannot be read or parsed, an unknown key,
            a wrong type or value.
    """
    source = str(path) if path is not None else "<defaults>"
    document: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as handle:
                document = tomllib.load(handle)
        except FileNotFoundError:
            raise ConfigError(f"{source}: no such config file") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{source}: not valid TOML: {error}") from None
    parse_config(document, source)  # the file alone first: its errors name the file
    for assignment in overrides:
        _override(document, assignment)
        try:
            parse_config(document, source)
        except ConfigError as error:
            message = str(error).removeprefix(f"{source}: ")
            raise ConfigError(f"--set {assignment}: {message}") from None
    config = parse_config(document, source)
    config["_source"] = {"path": None if path is None else str(Path(path).absolute()),
                         "name": "defaults" if path is None else Path(path).stem}
    return config


def describe_schema() -> str:
    """Every section and key with its type, default and meaning (for ``--help``)."""
    lines = []
    for section, keys in SCHEMA.items():
        lines.append(f"[{section}]")
        for name, key in keys.items():
            default = "unset" if key.default is None else repr(key.default)
            lines.append(f"  {name} ({key.kind}, default {default}): {key.help}")
    return "\n".join(lines)
