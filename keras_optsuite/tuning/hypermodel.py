"""A Keras Tuner hypermodel that searches the optimizer of a user's model."""

from __future__ import annotations

from collections.abc import Sized
from typing import Any, Callable, Sequence

import keras
import keras_tuner

from keras_optsuite.optimizers import closure
from keras_optsuite.optimizers._evaluation_weights import evaluation_weight_optimizers
from keras_optsuite.tuning.space import OPTIMIZER, get_family, optimizer_space, validate_space


class OptimizerHyperModel(keras_tuner.HyperModel):
    """Compile ``build_model(hp)`` with the searched optimizer and fit it the way it needs.

    ``build(hp)`` calls ``build_model(hp)`` (which returns an uncompiled
    model and may declare its own hyperparameters), then compiles it with
    :func:`keras_optsuite.tuning.optimizer_space`'s optimizer, ``loss`` and
    ``metrics``. ``fit(hp, model, ...)`` then trains it correctly for that
    optimizer:

    - closure optimizers (SAM, AdaHessian, Sophia, LBFGS) train through
      keras-optsuite's closure train step (installed by importing the
      package; checked here);
    - optimizers with evaluation weights (SWA, EMA, schedule-free) get
      :class:`keras_optsuite.callbacks.SwapEvaluationWeights` first in the
      callbacks, so validation metrics (the tuner's objective) and the
      tuner's best-epoch checkpoint are taken at the evaluation weights;
    - full-batch methods (LBFGS) get ``batch_size = len(x)``.

    The optimizer is built with the model's variables in ``build``, so the
    best models Keras Tuner reloads (``tuner.get_best_models()``) and
    Hyperband's continued trials get their optimizer state back with their
    weights.

    Args:
        build_model: ``build_model(hp) -> keras.Model``, not compiled.
        loss: the loss given to ``compile``.
        metrics: the metrics given to ``compile``.
        optimizers: family names to search (see
            :data:`keras_optsuite.tuning.FAMILIES`); None searches all.
        wrappers: wrapper choices (``"none"``, ``"Lookahead"``, ``"EMA"``,
            ``"SAM"``), or None for no wrapper.
        schedules: schedule choices (``"constant"``, ``"cosine"``,
            ``"warmup_stable_decay"``, ``"one_cycle"``), or None.
        total_steps: optimizer steps per trial, needed by schedules.
        regularization: None, or a callable ``f(hp) -> float`` returning the
            decoupled weight decay to give every optimizer (for example
            ``lambda hp: regularization_space(hp, layers=[])["weight_decay"]``).
        **compile_kwargs: further ``compile`` arguments.

    Raises:
        ValueError: an unknown optimizer, wrapper or schedule name (before
            any trial runs).

    Example:
    >>> def build_model(hp):
    ...     return keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    >>> hypermodel = OptimizerHyperModel(build_model, "sparse_categorical_crossentropy",
    ...                                  metrics=["accuracy"], optimizers=["Adam", "RAdam"])
    >>> model = hypermodel.build(keras_tuner.HyperParameters())
    >>> type(model.optimizer).__name__
    'Adam'
    """

    def __init__(
        self,
        build_model: Callable[[Any], keras.Model],
        loss: Any,
        metrics: Sequence[Any] | None = None,
        optimizers: Sequence[str] | None = None,
        wrappers: Sequence[str] | None = None,
        schedules: Sequence[str] | None = None,
        total_steps: int | None = None,
        regularization: Callable[[Any], float] | None = None,
        name: str | None = None,
        **compile_kwargs: Any,
    ) -> None:
        super().__init__(name=name, tunable=True)
        if not callable(build_model):
            raise ValueError(f"build_model must be callable, got build_model={build_model!r}")
        self.families = validate_space(optimizers, wrappers, schedules, total_steps)
        self.build_model = build_model
        self.loss = loss
        self.metrics = list(metrics) if metrics is not None else None
        self.optimizers = [family.name for family in self.families]
        self.wrappers = wrappers
        self.schedules = schedules
        self.total_steps = total_steps
        self.regularization = regularization
        self.compile_kwargs = compile_kwargs

    def build(self, hp: Any) -> keras.Model:
        model = self.build_model(hp)
        if not isinstance(model, keras.Model):
            raise ValueError(f"build_model must return a keras.Model, got {type(model).__name__}")
        weight_decay = self.regularization(hp) if self.regularization is not None else None
        optimizer = optimizer_space(
            hp, self.optimizers, wrappers=self.wrappers, schedules=self.schedules,
            total_steps=self.total_steps, weight_decay=weight_decay,
        )
        model.compile(optimizer=optimizer, loss=self.loss, metrics=self.metrics, **self.compile_kwargs)
        if model.built:
            # Its variables exist now, so Keras Tuner's load_weights (best models, Hyperband's
            # continued trials) restores the optimizer state too instead of dropping it.
            model.optimizer.build(model.trainable_variables)
        return model

    def fit(self, hp: Any, model: keras.Model, *args: Any, **kwargs: Any) -> Any:
        optimizer = model.optimizer
        if closure.needs_closure(optimizer):
            status = closure.enable_closure_train_step()["train_step"]  # idempotent
            if status != closure.APPLIED:
                raise RuntimeError(
                    f"{type(optimizer).__name__} needs keras-optsuite's closure train step, which is off: {status}"
                )
        callbacks = list(kwargs.pop("callbacks", None) or [])
        if any(True for _ in evaluation_weight_optimizers(optimizer)):
            from keras_optsuite.callbacks import SwapEvaluationWeights

            if not any(isinstance(c, SwapEvaluationWeights) for c in callbacks):
                callbacks.insert(0, SwapEvaluationWeights())
        family = get_family(hp.values[OPTIMIZER]) if OPTIMIZER in hp.values else None
        if family is not None and family.full_batch:
            x = args[0] if args else kwargs.get("x")
            if isinstance(x, Sized) and not isinstance(x, dict):
                kwargs["batch_size"] = len(x)
        return model.fit(*args, callbacks=callbacks, **kwargs)
