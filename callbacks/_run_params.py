"""What a tracked run records about itself: flattened configs, counts, versions, code.

Kept apart from the callback so pipelines and the tuner can log the same
parameters for runs they create themselves.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import types
from typing import Any, Mapping

import keras

# MLflow's limits (mlflow.utils.validation): longer keys or values are rejected.
MAX_PARAM_KEY = 250
MAX_PARAM_VALUE = 6000

# A key segment that names a credential: never logged, whatever its value.
_SECRET = re.compile(r"(^|[._\-])(password|passwd|token|secret|key|api_?key|access_?key|credentials?)($|[._\-])", re.I)
REDACTED = "<redacted>"


def is_secret(key: str) -> bool:
    """Whether ``key`` looks like it holds a credential (password, token, key, secret)."""
    return bool(_SECRET.search(key))


def flatten(config: Any, prefix: str) -> dict[str, str]:
    """A nested config as ``{"prefix.a.b": "value"}``; lists index as ``prefix.a.0``.

    Keras serializes nested objects (an optimizer inside a wrapper, a
    learning-rate schedule) as ``{"class_name", "config", "module", ...}``
    dicts: their ``config`` level is dropped from the key, so a Lookahead's
    inner learning rate reads ``optimizer.inner.learning_rate`` and its class
    ``optimizer.inner.class_name``. Secrets are redacted by key.
    """
    flat: dict[str, str] = {}

    def visit(value: Any, key: str) -> None:
        if value is None:
            return  # an option left unset: omitted, never the string "None"
        if is_secret(key.rsplit(".", 1)[-1]):
            flat[key] = REDACTED
        elif isinstance(value, Mapping):
            if "class_name" in value and isinstance(value.get("config"), Mapping):
                flat[f"{key}.class_name"] = str(value["class_name"])
                for name, item in value["config"].items():
                    visit(item, f"{key}.{name}")
            elif not value:
                flat[key] = "{}"
            else:
                for name, item in value.items():
                    visit(item, f"{key}.{name}")
        elif isinstance(value, (list, tuple)) and value and any(isinstance(v, (Mapping, list, tuple)) for v in value):
            for index, item in enumerate(value):
                visit(item, f"{key}.{index}")
        elif isinstance(value, (list, tuple)):
            flat[key] = json.dumps([as_written(item) if isinstance(item, float) else item for item in value])
        else:
            flat[key] = format_value(value)

    visit(config, prefix)
    return {key[:MAX_PARAM_KEY]: value[:MAX_PARAM_VALUE] for key, value in flat.items()}


def as_written(value: float) -> float:
    """``value`` as the user wrote it, when Keras stored it in float32.

    Keras keeps hyperparameters in float32 variables, so a learning rate
    typed as ``0.001`` serializes as ``0.0010000000474974513``. A float that
    float32 represents exactly is replaced by the shortest decimal that
    round-trips through float32 (``0.001``); any other float is kept.
    """
    import numpy as np

    single = np.float32(value)
    if not np.isfinite(single) or float(single) != float(value):
        return float(value)
    return float(str(single))


def format_value(value: Any) -> str:
    """A param value as text: floats as written (see :func:`as_written`), the rest with ``str``."""
    import numpy as np

    if isinstance(value, (float, np.floating)) and not isinstance(value, bool):
        return repr(as_written(float(value)))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def fit_settings(model: keras.Model) -> dict[str, str] | None:
    """The arguments of the ``model.fit`` call running now, as ``fit.*`` params; None outside one.

    Keras hands callbacks only ``epochs`` and ``steps``, so the settings are
    read from the frame of the ``fit`` that called ``on_train_begin`` (the
    frame of Keras's trainer, found by its ``epoch_iterator`` local and its
    ``self``; this is the only place the package reads it). After a
    ``validation_split``, ``x`` there is the training part. Logged:
    ``batch_size`` (the effective one: Keras's default 32 for arrays when
    none is given), ``validation_split``, ``validation_batch_size``,
    ``validation_freq``, ``shuffle``, ``initial_epoch``, ``steps_per_epoch``
    (the number of batches of an epoch), ``train_samples`` and
    ``validation_samples`` (for arrays), ``validation`` (how validation data
    was given: ``split``, ``data`` or ``none``), ``class_weight`` (JSON) and
    ``sample_weight`` (``true``/``false``). Options left unset are omitted.
    """
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None:
        local = frame.f_locals
        if frame.f_code.co_name == "fit" and local.get("self") is model and "epoch_iterator" in local:
            break
        frame = frame.f_back
    if frame is None:
        return None
    local = frame.f_locals
    iterator = local["epoch_iterator"]
    adapter = getattr(iterator, "data_adapter", None)
    batch_size = getattr(adapter, "batch_size", None) or local.get("batch_size")
    validation_data = local.get("validation_data")
    split = float(local.get("validation_split") or 0.0)
    settings: dict[str, Any] = {
        "batch_size": batch_size,
        "steps_per_epoch": getattr(iterator, "num_batches", None),
        "initial_epoch": local.get("initial_epoch"),
        "shuffle": local.get("shuffle"),
        "validation": "split" if split else ("data" if validation_data is not None else "none"),
        "validation_split": split or None,
        "validation_batch_size": local.get("validation_batch_size"),
        "validation_freq": local.get("validation_freq") if validation_data is not None else None,
        "train_samples": _samples(local.get("x")),
        "validation_samples": _samples(_first(validation_data)) if validation_data is not None else None,
        "class_weight": json.dumps({str(k): v for k, v in local["class_weight"].items()})
        if local.get("class_weight")
        else None,
        "sample_weight": "true" if local.get("sample_weight") is not None else "false",
    }
    return {f"fit.{key}": format_value(value) for key, value in settings.items() if value is not None}


def _first(data: Any) -> Any:
    return data[0] if isinstance(data, (tuple, list)) and data else data


def _samples(x: Any) -> int | None:
    """The number of rows of array-like ``x`` (the first array of a dict or list), else None."""
    if isinstance(x, Mapping):
        x = next(iter(x.values()), None)
    elif isinstance(x, (tuple, list)):
        x = x[0] if x else None
    shape = getattr(x, "shape", None)
    if shape is None or not len(shape) or shape[0] is None:
        return None
    return int(shape[0])


def compile_settings(model: keras.Model) -> dict[str, str]:
    """The loss, metrics and other ``compile`` arguments (not the optimizer) as ``compile.*`` params."""
    try:
        config = dict(model.get_compile_config() or {})
    except Exception:  # noqa: BLE001 - a model compiled with objects Keras cannot serialize
        return {}
    config.pop("optimizer", None)
    return flatten(config, "compile")


def parameter_counts(model: keras.Model) -> dict[str, str]:
    def count(weights: list) -> int:
        return int(sum(int(keras.ops.size(w)) for w in weights))

    return {
        "model.trainable_params": str(count(model.trainable_weights)),
        "model.non_trainable_params": str(count(model.non_trainable_weights)),
    }


ONE_DEVICE = "one device"
"""The strategy name logged when no ``tf.distribute`` strategy is in use."""


def strategy_name(strategy: Any) -> str:
    """The public ``tf.distribute`` name of ``strategy``'s class; "one device" for no strategy.

    ``tf.distribute.MultiWorkerMirroredStrategy`` is the class
    ``CollectiveAllReduceStrategy``; users know it by the exported name.
    TensorFlow's default strategy (no strategy at all) is the private
    ``_DefaultDistributionStrategy``.
    """
    import tensorflow as tf

    cls = type(strategy)
    for name in dir(tf.distribute):
        if name.endswith("Strategy") and getattr(tf.distribute, name) is cls:
            return name
    if cls is type(tf.distribute.get_strategy()) and not tf.distribute.has_strategy():
        return ONE_DEVICE
    if cls.__name__ == "_DefaultDistributionStrategy":  # read inside another strategy's scope
        return ONE_DEVICE
    return cls.__name__


def distribution(strategy: Any) -> dict[str, str]:
    return {
        "distribution.strategy": strategy_name(strategy),
        "distribution.replicas": str(strategy.num_replicas_in_sync),
    }


def versions() -> dict[str, str]:
    import mlflow
    import tensorflow as tf

    from keras_optsuite import __version__

    return {
        "version.python": platform.python_version(),
        "version.tensorflow": tf.__version__,
        "version.keras": keras.__version__,
        "version.keras_optsuite": __version__,
        "version.mlflow": mlflow.__version__,
    }


def context_tags(tags: Mapping[str, str] | None = None) -> dict[str, str]:
    """The tags ``mlflow.start_run`` adds from its context providers, then ``tags``.

    ``mlflow.user``, ``mlflow.source.name``, ``mlflow.source.type``, the git
    commit and entry point where MLflow finds them, through MLflow's own
    context providers (``MlflowClient.create_run`` adds none: the UI showed
    User "unknown" and Source "-"). Resolved when the fit starts, so a run
    created later by a journal replay gets the same.
    """
    from mlflow.tracking.context.registry import resolve_tags

    return {key: str(value) for key, value in resolve_tags(dict(tags or {})).items()}


def git_commit(directory: str | os.PathLike | None = None) -> str | None:
    """The commit checked out in ``directory`` (default: the working directory), if any."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=directory or os.getcwd(),
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", commit) else None
