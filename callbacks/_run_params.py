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
        else:
            flat[key] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)

    visit(config, prefix)
    return {key[:MAX_PARAM_KEY]: value[:MAX_PARAM_VALUE] for key, value in flat.items()}


def parameter_counts(model: keras.Model) -> dict[str, str]:
    def count(weights: list) -> int:
        return int(sum(int(keras.ops.size(w)) for w in weights))

    return {
        "model.trainable_params": str(count(model.trainable_weights)),
        "model.non_trainable_params": str(count(model.non_trainable_weights)),
    }


def strategy_name(strategy: Any) -> str:
    """The public ``tf.distribute`` name of ``strategy``'s class.

    ``tf.distribute.MultiWorkerMirroredStrategy`` is the class
    ``CollectiveAllReduceStrategy``; users know it by the exported name.
    """
    import tensorflow as tf

    cls = type(strategy)
    for name in dir(tf.distribute):
        if name.endswith("Strategy") and getattr(tf.distribute, name) is cls:
            return name
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
