"""Read the global gradient norm out of a training step, for any Keras optimizer.

Keras's ``train_step`` hands the gradients to the optimizer and keeps
nothing. Under ``tf.distribute`` each replica holds only its own share until
the optimizer sums them (``TFOptimizer._all_reduce_sum_gradients``, called
by the outermost keras-optsuite wrapper, or by the optimizer itself in its
update step). That sum is the one place where the gradient the optimizer
steps with exists in full, on every replica, so the probe sits there: it
wraps that method on the one optimizer that sums, computes the L2 norm of
the summed gradient every ``period``-th step, and stores it in a variable
the tracking callback reads.

What the norm is of: the gradient the optimizer receives, after Keras's
``clipnorm``/``clipvalue`` (which Keras applies per replica, before the sum)
and after ``LossScaleOptimizer`` unscaling; sparse (``IndexedSlices``)
gradients with their duplicate rows summed.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import ops

from keras_optsuite._upstream import listen_to_gradient_sum
from keras_optsuite.optimizers._wrapper import OptimizerWrapper, deduplicate, iter_optimizers

_ATTRIBUTE = "_optsuite_gradient_norm_probe"


def _summing_optimizer(optimizer: Any) -> Any | None:
    """The optimizer whose gradient sum (``_all_reduce_sum_gradients``) forms the global gradient.

    None for a ``MultiOptimizer`` (each sub-optimizer sums only its own
    variables, so no single place sees the whole gradient).
    """
    for nested in iter_optimizers(optimizer):
        if isinstance(nested, keras.optimizers.MultiOptimizer):
            return None
        if isinstance(nested, keras.optimizers.LossScaleOptimizer):
            continue
        if isinstance(nested, OptimizerWrapper) and not nested._sums_gradients:
            continue
        return nested
    return None


class GradientNormProbe:
    """The global gradient norm of every ``period``-th step of ``optimizer``.

    Use :func:`gradient_norm_probe` (which installs at most one probe per
    optimizer); read :attr:`value` after a step whose 1-based number
    (``optimizer.iterations`` after the step) is a multiple of ``period``.
    Other steps store NaN, so a stale value is never mistaken for a new one.
    """

    def __init__(self, optimizer: Any, target: Any, strategy: Any) -> None:
        self.optimizer = optimizer
        with strategy.scope():
            # Every replica computes the same norm from the summed gradient.
            self.variable = keras.Variable(
                float("nan"), dtype="float32", trainable=False,
                aggregation="only_first_replica", name="gradient_norm_probe",
            )  # fmt: skip
            self.period = keras.Variable(
                1, dtype="int64", trainable=False,
                aggregation="only_first_replica", name="gradient_norm_period",
            )  # fmt: skip

        def probe(pairs: list) -> None:
            step = ops.cast(self.optimizer.iterations, "int64") + 1
            gradients = [g for g, _ in pairs if g is not None]
            self.variable.assign(
                ops.cond(
                    ops.equal(step % self.period, 0),
                    lambda: _global_norm(gradients),
                    lambda: ops.cast(float("nan"), "float32"),
                )
            )

        # Chained onto the bound method, or a wrapper's override.
        listen_to_gradient_sum(target, probe)

    @property
    def value(self) -> float:
        """The norm stored by the last step (NaN if that step was not probed)."""
        return float(keras.ops.convert_to_numpy(self.variable))

    def set_period(self, period: int) -> None:
        self.period.assign(int(period))


def _global_norm(gradients: list) -> Any:
    if not gradients:
        return ops.cast(0.0, "float32")
    squares = [
        ops.sum(ops.square(ops.cast(_values(g), "float32"))) for g in gradients
    ]
    return ops.sqrt(ops.sum(ops.stack(squares)))


def _values(gradient: Any) -> Any:
    gradient = deduplicate(gradient)
    return gradient.values if isinstance(gradient, tf.IndexedSlices) else gradient


def gradient_norm_probe(
    optimizer: Any, strategy: Any, period: int = 1
) -> tuple[GradientNormProbe | None, bool]:
    """The probe of ``optimizer`` (installed on first use) and whether it is new.

    A new probe changes what the training step computes: a ``train_function``
    traced before must be rebuilt (``model.make_train_function(force=True)``).
    Returns ``(None, False)`` for optimizers with no single summation point
    (``MultiOptimizer``).

    Example:
    >>> probe, new = gradient_norm_probe(model.optimizer, model.distribute_strategy, period=10)
    >>> if new:
    ...     model.make_train_function(force=True)
    """
    existing = optimizer.__dict__.get(_ATTRIBUTE)
    if existing is not None:
        existing.set_period(period)
        return existing, False
    target = _summing_optimizer(optimizer)
    if target is None:
        return None, False
    probe = GradientNormProbe(optimizer, target, strategy)
    probe.set_period(period)
    optimizer.__dict__[_ATTRIBUTE] = probe
    return probe, True
