"""What a logging step records, computed inside the compiled training step.

The tracking callback logs, every ``log_every_n_steps`` optimizer steps, the
learning rate applied, the global gradient norm, the update norm and the
update-to-weight ratio, and ``SkipNonFinite``'s skipped steps. Reading each
from the host after the step costs about 0.1 ms per read whatever its size
(two reads of every trainable weight, the counter, the norm). Instead,
:class:`StepTelemetry` builds a second train function, the *logging*
function: Keras's own train step with, around it, a copy of the trainable
weights before the step (on the device), the gradient-norm probe capturing
(:mod:`keras_optsuite.optimizers._telemetry`), and after it the sums of
squares of the change and of the weights before it, accumulated in float64.
Everything lands in one float64 vector variable, read with one transfer.

The callback puts the logging function in ``model.train_function`` for the
steps that log and Keras's own back for the others, so a step that logs
nothing runs exactly Keras's train function. Every worker of a
multi-worker job swaps at the same steps (the same graphs everywhere, in the
same order: their collectives must match).
"""

from __future__ import annotations

from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_optsuite.optimizers._telemetry import gradient_norm_probe
from keras_optsuite.optimizers._wrapper import iter_optimizers

_ATTRIBUTE = "_optsuite_step_telemetry"
#: The telemetry vector: the optimizer's counter after the last logging call, then the record of
#: the last step that logged (its counter, learning rate, gradient norm, sums of squares of the
#: update and of the weights before it, skipped steps). NaN where a value does not apply.
FIELDS = ("iterations", "step", "learning_rate", "gradient_norm", "update_squares", "weight_squares",
          "skipped_steps")


class StepTelemetry:
    """The logging train function of one model and the telemetry it records.

    Use :meth:`of` (one per model and optimizer, kept across fits, so the
    logging function is traced once, as Keras's own is).
    """

    def __init__(self, model: keras.Model) -> None:
        self.optimizer = model.optimizer
        self.probe = gradient_norm_probe(model.optimizer, model.distribute_strategy)
        with model.distribute_strategy.scope():
            self.variable = keras.Variable(
                np.full(len(FIELDS), np.nan), dtype="float64", trainable=False,
                aggregation="only_first_replica", name="step_telemetry",
            )  # fmt: skip
            self.every = keras.Variable(
                1, dtype="int64", trainable=False, aggregation="only_first_replica", name="step_telemetry_every"
            )
        self._plain: Any = None
        self._logging: Any = None

    @classmethod
    def of(cls, model: keras.Model, every: int) -> StepTelemetry:
        """The telemetry of ``model`` (created on first use), recording every ``every``-th step."""
        existing = model.__dict__.get(_ATTRIBUTE)
        if existing is None or existing.optimizer is not model.optimizer:
            existing = model.__dict__[_ATTRIBUTE] = cls(model)
        existing.every.assign(int(every))
        return existing

    # -- the train functions -------------------------------------------------
    def swap_in(self, model: keras.Model) -> None:
        """Make ``model.train_function`` the logging function (built for Keras's current one)."""
        current = model.train_function
        if current is self._logging and current is not None:
            return
        if current is not self._plain or self._logging is None:
            # Keras's function is new (first use, a recompile, a callback that retraced it):
            # the logging function is built afresh, so it sees what the new one sees.
            self._plain, self._logging = current, self._make_logging_function(model)
        model.train_function = self._logging

    def swap_out(self, model: keras.Model) -> None:
        """Give ``model`` back Keras's train function (unless something replaced it meanwhile)."""
        if self._logging is not None and model.train_function is self._logging:
            model.train_function = self._plain

    def _make_logging_function(self, model: keras.Model) -> Callable[..., Any]:
        """Keras's train function for the step :meth:`_logging_step` (distribution and XLA alike)."""
        train_step = model.train_step
        current = model.train_function

        def logging_step(data: Any) -> Any:
            return self._logging_step(model, train_step, data)

        # make_train_function wraps whatever ``model.train_step`` is: ours, for this one build.
        model.__dict__["train_step"] = logging_step
        try:
            model.make_train_function(force=True)
            return model.train_function
        finally:
            del model.__dict__["train_step"]
            model.train_function = current

    def _logging_step(self, model: keras.Model, train_step: Callable[[Any], Any], data: Any) -> Any:
        """One replica's train step and its telemetry; traced once, runs on logging steps only."""
        weights = list(model.trainable_weights)
        before = [tf.convert_to_tensor(w) for w in weights]
        learning_rate = _learning_rate(model.optimizer)
        if self.probe is not None:
            self.probe.variable.assign(float("nan"))
            with self.probe.capturing():
                logs = train_step(data)
            gradient_norm = ops.cast(tf.convert_to_tensor(self.probe.variable), "float64")
        else:
            logs = train_step(data)
            gradient_norm = _nan()
        update_squares, weight_squares = _sums_of_squares(before, [tf.convert_to_tensor(w) for w in weights])
        iterations = ops.cast(tf.convert_to_tensor(model.optimizer.iterations), "float64")
        record = ops.stack([iterations, learning_rate, gradient_norm, update_squares, weight_squares,
                            _skipped_steps(model.optimizer)])
        # Several steps per call (steps_per_execution): the record kept is the one of the step that logs.
        logs_here = ops.equal(ops.cast(iterations, "int64") % tf.convert_to_tensor(self.every), 0)
        previous = tf.convert_to_tensor(self.variable)
        self.variable.assign(ops.concatenate([ops.reshape(iterations, (1,)),
                                              ops.where(logs_here, record, previous[1:])]))
        return logs

    # -- reading -------------------------------------------------------------
    def reset(self) -> None:
        """Forget the last record (a new fit must not log the previous fit's)."""
        self.variable.assign(np.full(len(FIELDS), np.nan))

    def read(self) -> dict[str, float]:
        """The telemetry vector, in one transfer from the device."""
        return dict(zip(FIELDS, (float(v) for v in self.variable.value.numpy())))


def metrics(record: dict[str, float]) -> dict[str, float]:
    """The metrics a record logs: NaN values (not applicable) left out."""
    values = {}
    if np.isfinite(record["learning_rate"]):
        values["learning_rate"] = record["learning_rate"]
    if np.isfinite(record["gradient_norm"]):
        values["gradient_norm"] = record["gradient_norm"]
    norm = float(np.sqrt(record["update_squares"]))
    size = record["weight_squares"]
    values["update_norm"] = norm
    values["update_to_weight_ratio"] = norm / float(np.sqrt(size)) if size > 0 else 0.0
    if np.isfinite(record["skipped_steps"]):
        values["skipped_steps"] = record["skipped_steps"]
    return values


def _sums_of_squares(before: list[Any], after: list[Any]) -> tuple[Any, Any]:
    """``(sum (after - before)^2, sum before^2)`` over all the weights, in float64.

    The change is taken in the weights' own dtype, exact where old and new
    are within a factor 2 of each other (Sterbenz); squares and sums in
    float64, each weight's as the product of a row vector with itself:
    TensorFlow's CPU kernels for float64 elementwise squares and reductions
    cost 2-3x a float64 matrix product here (0.5 ms against 0.2 ms a logging
    step for the benchmark's MLP, measured).
    """
    update_squares, weight_squares = [], []
    for old, new in zip(before, after):
        change = tf.reshape(tf.cast(new - old, "float64"), [1, -1])
        old = tf.reshape(tf.cast(old, "float64"), [1, -1])
        update_squares.append(tf.reshape(tf.matmul(change, change, transpose_b=True), []))
        weight_squares.append(tf.reshape(tf.matmul(old, old, transpose_b=True), []))
    zero = tf.constant(0.0, "float64")
    return tf.add_n(update_squares or [zero]), tf.add_n(weight_squares or [zero])


def _nan() -> Any:
    return ops.convert_to_tensor(float("nan"), "float64")


def _learning_rate(optimizer: Any) -> Any:
    """The learning rate this step applies (read before the step), as a float64 scalar; NaN if none."""
    try:
        value = tf.convert_to_tensor(optimizer.learning_rate)
    except (AttributeError, TypeError, ValueError):
        return _nan()
    if value.shape.rank != 0 or not value.dtype.is_floating:
        return _nan()
    return ops.cast(value, "float64")


def _skipped_steps(optimizer: Any) -> Any:
    """``SkipNonFinite``'s count (the innermost one's if nested), NaN without one."""
    value = _nan()
    for inner in iter_optimizers(optimizer):
        skipped = getattr(inner, "skipped_steps", None)
        if skipped is not None and not callable(skipped):
            value = ops.cast(tf.convert_to_tensor(skipped), "float64")
    return value

