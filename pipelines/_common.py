"""What every pipeline command shares: its output directory, store, experiment, data and score."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any, Mapping

import keras
import numpy as np

from keras_optsuite.callbacks._durable import replace_file
from keras_optsuite.callbacks.compare import lower_is_better
from keras_optsuite.pipelines.config import ConfigError
from keras_optsuite.pipelines.data import Data, load_data
from keras_optsuite.pipelines.models import build_model, default_metric, is_autoencoder, loss_and_metrics

OUTPUT_ROOT = Path("outputs")

# A contestant: an optimizer family, optionally inside one wrapper: "RAdam", "Lookahead(RAdam)".
_CONTESTANT = re.compile(r"^\s*(?:(?P<wrapper>[A-Za-z]+)\((?P<inner>[^()]+)\)|(?P<plain>[^()]+))\s*$")


@dataclasses.dataclass(frozen=True)
class Contestant:
    """One optimizer of a comparison or search: a family and, optionally, a wrapper around it."""

    label: str
    family: str
    wrapper: str | None = None


def parse_contestant(text: str, key: str) -> Contestant:
    """``"Adam"``, ``"keras_optsuite>RAdam"`` or ``"Lookahead(RAdam)"``; ConfigError naming ``key`` if unknown."""
    from keras_optsuite.tuning.space import WRAPPER_CHOICES, get_family

    match = _CONTESTANT.match(text)
    if match is None:
        raise ConfigError(f"{key}: {text!r} is not an optimizer name or Wrapper(Optimizer)")
    wrapper = match["wrapper"]
    if wrapper is not None:
        known = [choice for choice in WRAPPER_CHOICES if choice != "none"]
        lookup = {choice.lower(): choice for choice in known}
        if wrapper.lower() not in lookup:
            raise ConfigError(f"{key}: unknown wrapper {wrapper!r} in {text!r}; wrappers: {', '.join(known)}")
        wrapper = lookup[wrapper.lower()]
    name = (match["inner"] or match["plain"]).strip()
    try:
        family = get_family(name).name
    except ValueError as error:
        from keras_optsuite.optimizers import WRAPPERS

        wrappers = {spec.name.lower(): spec.name for spec in WRAPPERS.values()}
        wrapper_name = wrappers.get(name.split(">", 1)[-1].lower())
        if wrapper_name is not None:
            searchable = [choice for choice in WRAPPER_CHOICES if choice != "none"]
            raise ConfigError(
                f"{key}: name={name!r} is a wrapper: it adds one idea to an optimizer it wraps; write "
                f"'{wrapper_name}(Adam)'" + ("" if wrapper_name in searchable else
                                             f" (the wrappers a comparison can use: {', '.join(searchable)})")
            ) from None
        raise ConfigError(f"{key}: {error}") from None
    label = f"{wrapper}({family})" if wrapper else family
    return Contestant(label, family, wrapper)


@dataclasses.dataclass
class Context:
    """A pipeline run's setting, resolved from its config before any training."""

    command: str
    config: Mapping[str, Any]
    name: str
    output: Path
    experiment: str
    tracking_uri: str
    data: Data
    metric: str

    @property
    def direction(self) -> str:
        return "min" if lower_is_better(self.metric) else "max"

    def better(self, a: float, b: float) -> bool:
        return a < b if self.direction == "min" else a > b

    def build_model(self, seed: int) -> Any:
        """A new model with the initial weights of ``seed`` (the same for every optimizer)."""
        keras.utils.set_random_seed(int(seed))
        return build_model(self.config, self.data)

    def loss_and_metrics(self) -> tuple[Any, list[str]]:
        return loss_and_metrics(self.data)

    def strategy(self) -> Any:
        """The ``[training] strategy``, built once per pipeline run (every model of the run shares it)."""
        if "_strategy" not in self.__dict__:
            from keras_optsuite.distribute import get_strategy

            self.__dict__["_strategy"] = get_strategy(self.config["training"]["strategy"])
        return self.__dict__["_strategy"]


def context(config: Mapping[str, Any], command: str, metric_key: str | None = None,
            output_root: Path = OUTPUT_ROOT, data: Data | None = None) -> Context:
    """Resolve the config of ``command``: data loaded and split (unless given), store and experiment named."""
    from keras_optsuite.callbacks._store import resolve_tracking_uri

    name = config["_source"]["name"]
    if data is None:
        data = load_data(config, reconstruction=is_autoencoder(config))
    metric = (config[metric_key]["metric"] if metric_key else None) or default_metric(data)
    if not metric.startswith("val_"):
        raise ConfigError(f"{metric_key}.metric = {metric!r}: the score is a validation metric (val_...)")
    tracking = config["tracking"]
    return Context(
        command=command,
        config=config,
        name=name,
        output=Path(output_root) / command / name,
        experiment=tracking["experiment"] or f"keras-optsuite-{name}",
        tracking_uri=resolve_tracking_uri(tracking["tracking_uri"]),
        data=data,
        metric=metric,
    )


def evaluate(model: Any, x: np.ndarray, y: np.ndarray, batch_size: int) -> dict[str, float]:
    """``model.evaluate`` at the optimizer's evaluation weights (SWA, EMA, schedule-free) when it has them."""
    from keras_optsuite.optimizers._evaluation_weights import evaluation_weight_optimizers

    callbacks = []
    if any(True for _ in evaluation_weight_optimizers(model.optimizer)):
        from keras_optsuite.callbacks import SwapEvaluationWeights

        callbacks.append(SwapEvaluationWeights())
    logs = model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True, callbacks=callbacks)
    return {key: float(value) for key, value in logs.items()}


class Curve(keras.callbacks.Callback):
    """A Keras callback recording, per epoch, the optimizer step, the seconds of training and the logs.

    With ``path`` the rows are also written there at every epoch's end, and
    a fit resumed after a crash (``BackupAndRestore``) starts from them: the
    curve keeps its first epochs and the seconds go on from the last saved
    row's (a re-run epoch replaces its row).
    """

    def __init__(self, path: Path | None = None) -> None:
        super().__init__()
        self.path = path

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.rows: list[dict[str, float]] = []
        if self.path is not None and self.path.exists():
            self.rows = json.loads(self.path.read_text())
        self.started = time.perf_counter() - (self.rows[-1]["seconds"] if self.rows else 0.0)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.rows = [row for row in self.rows if row["epoch"] < epoch + 1]
        self.rows.append({
            "epoch": epoch + 1,
            "step": int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)),
            "seconds": time.perf_counter() - self.started,
            **{k: float(v) for k, v in (logs or {}).items()},
        })  # fmt: skip
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            replace_file(self.path, json.dumps(self.rows))  # whole or not at all, even under kill -9


def first_reaching(rows: list[dict[str, float]], metric: str, target: float, lower: bool) -> dict[str, float] | None:
    """The first epoch row whose ``metric`` reaches ``target`` (<= when lower is better), or None."""
    for row in rows:
        value = row.get(metric)
        if value is not None and np.isfinite(value) and (value <= target if lower else value >= target):
            return row
    return None
