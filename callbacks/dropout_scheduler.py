"""Ramp a drop rate (or any rate attribute of layers) over training."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import keras
from keras import ops

from keras_optsuite._validation import check_choice, check_fraction
from keras_optsuite.layers._base import holds_rate_in_variable

FREQUENCIES = ("epoch", "batch")


class DropoutScheduler(keras.callbacks.Callback):
    """Set a rate attribute of a model's layers from a schedule, every epoch or every batch.

    ``schedule`` maps a step to the rate: a Keras ``LearningRateSchedule``
    (e.g. :class:`keras_optsuite.schedules.Ramp`), or any callable. The step
    is the 0-based epoch with ``frequency="epoch"`` (set before each epoch),
    or the optimizer's ``iterations`` with ``frequency="batch"`` (set before
    each batch); both are restored by ``BackupAndRestore``, so a resumed job
    continues the ramp where it stopped.

    Which layers: every layer of the model (nested ones included) that has
    the attribute ``attribute`` holding a number, or only those in
    ``layers`` (layer names, layer classes or layer objects). keras-optsuite
    layers keep their rates in variables, so a new value takes effect at the
    next step of the already-compiled train function. Keras's own layers
    (``keras.layers.Dropout.rate``, ``SpatialDropout*``, ``GaussianDropout``)
    hold a Python float that the train function froze when it was traced:
    with ``frequency="epoch"`` the callback rebuilds the train function
    when such a value changes (one retrace, or XLA recompile, per change);
    ``frequency="batch"`` refuses them with a ``ValueError``.

    The rates set are added to the epoch's logs as ``"<layer name>.<attribute>"``
    (so ``History``, ``CSVLogger`` and tracking callbacks record them).

    DropBlock's schedule (Ghiasi et al., 2018, https://arxiv.org/abs/1810.12890,
    section 3: the drop rate rises linearly from 0 to its target)::

        DropoutScheduler(Ramp(0.0, 0.1, end_step=5_000), frequency="batch",
                         layers=[DropBlock2D])

    Args:
        schedule: ``step -> rate``: a ``LearningRateSchedule`` or a callable.
        attribute: the attribute to set, e.g. ``"rate"`` or
            ``"survival_probability"``. Defaults to `"rate"`.
        layers: names, classes or objects selecting the layers, or None for
            every layer with ``attribute``. Defaults to `None`.
        frequency: ``"epoch"`` or ``"batch"``. Defaults to `"epoch"`.
        verbose: 1 prints each change of the rate. Defaults to `0`.

    Example:
    >>> ramp = DropoutScheduler(Ramp(0.0, 0.3, end_step=10))  # 0 -> 0.3 over 10 epochs
    >>> model.fit(x, y, epochs=20, callbacks=[ramp])
    """

    def __init__(
        self,
        schedule: Callable[[Any], Any],
        attribute: str = "rate",
        layers: Sequence[str | type | keras.layers.Layer] | None = None,
        frequency: str = "epoch",
        verbose: int = 0,
    ) -> None:
        super().__init__()
        if not callable(schedule):
            raise ValueError(f"schedule must be callable (step -> rate), got schedule={schedule!r}")
        if not isinstance(attribute, str) or not attribute.isidentifier():
            raise ValueError(f"attribute must be an attribute name, got attribute={attribute!r}")
        if layers is not None and (
            isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or not layers
        ):
            raise ValueError(
                f"layers must be a non-empty list of names, classes or layers, got layers={layers!r}"
            )
        self.schedule = schedule
        self.attribute = attribute
        self.layers = None if layers is None else list(layers)
        self.frequency = check_choice("frequency", frequency, FREQUENCIES)
        self.verbose = verbose
        self._targets: list[keras.layers.Layer] = []

    # -- which layers ------------------------------------------------------
    def _selected(self, layer: keras.layers.Layer) -> bool:
        if self.layers is None:
            return True
        for selector in self.layers:
            if isinstance(selector, str) and layer.name == selector:
                return True
            if isinstance(selector, type) and isinstance(layer, selector):
                return True
            if selector is layer:
                return True
        return False

    def _find_targets(self) -> list[keras.layers.Layer]:
        targets = []
        for layer in self.model._flatten_layers(include_self=False, recursive=True):
            value = getattr(layer, self.attribute, None)
            is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if is_number and self._selected(layer):
                targets.append(layer)
        if not targets:
            which = "any layer" if self.layers is None else f"the layers {self.layers!r}"
            raise ValueError(
                f"DropoutScheduler found no numeric attribute {self.attribute!r} on {which} "
                f"of model {self.model.name!r} (check attribute={self.attribute!r} and layers=)"
            )
        for target in targets:
            if hasattr(target, "seed") and not hasattr(target, "seed_generator"):
                # Keras's Dropout layers create no random generator at rate 0,
                # and state cannot be added to a built layer.
                raise ValueError(
                    f"layer {target.name!r} was built with {self.attribute}=0 and has no random "
                    f"generator, so it can never drop: build it with the final rate (e.g. "
                    f"{type(target).__name__}(0.5)); DropoutScheduler sets the scheduled rate "
                    "before the first step"
                )
        frozen = [t.name for t in targets if not holds_rate_in_variable(t, self.attribute)]
        if frozen and self.frequency == "batch":
            raise ValueError(
                f"frequency='batch' needs rates held in variables, but {self.attribute!r} of "
                f"{frozen} is a Python float frozen into the compiled train function; use "
                "frequency='epoch' (the train function is rebuilt when the rate changes) or a "
                "keras-optsuite layer"
            )
        return targets

    # -- setting the rate ----------------------------------------------------
    def _rate_at(self, step: int) -> float:
        value = self.schedule(step)
        return check_fraction(self.attribute, float(ops.convert_to_numpy(value)))

    def _apply(self, step: int) -> None:
        rate = self._rate_at(step)
        retrace = False
        for layer in self._targets:
            if getattr(layer, self.attribute) == rate:
                continue
            setattr(layer, self.attribute, rate)
            retrace |= not holds_rate_in_variable(layer, self.attribute)
            if self.verbose:
                print(f"DropoutScheduler: step {step}: {layer.name}.{self.attribute} = {rate:g}")
        if retrace:
            self.model.make_train_function(force=True)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._targets = self._find_targets()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.frequency == "epoch":
            self._apply(epoch)

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if self.frequency == "batch":
            self._apply(int(ops.convert_to_numpy(self.model.optimizer.iterations)))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            for layer in self._targets:
                logs[f"{layer.name}.{self.attribute}"] = float(getattr(layer, self.attribute))
