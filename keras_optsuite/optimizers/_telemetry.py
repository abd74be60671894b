"""Read the global gradient norm out of a training step, for any Keras optimizer.

Keras's ``train_step`` hands the gradients to the optimizer and keeps
nothing. Under ``tf.distribute`` each replica holds only its own share until
the optimizer sums them (``TFOptimizer._all_reduce_sum_gradients``, called
by the outermost keras-optsuite wrapper, or by the optimizer itself in its
update step). That sum is the one place where the gradient the optimizer
steps with exists in full, on every replica, so the probe sits there: it
wraps that method on the one optimizer that sums, computes the L2 norm of
the summed gradient in the step functions traced while it captures (the
tracking callback's logging step), and stores it in a variable read with
the rest of that step's telemetry.

What the norm is of: the gradient the optimizer receives, after Keras's
``clipnorm``/``clipvalue`` (which Keras applies per replica, before the sum)
and after ``LossScaleOptimizer`` unscaling; sparse (``IndexedSlices``)
gradients with their duplicate rows summed.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

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
    """The global gradient norm of the steps traced while :meth:`capturing`.

    Use :func:`gradient_norm_probe` (which installs at most one probe per
    optimizer). The probe adds nothing to a training step traced outside
    :meth:`capturing`: Keras's own train function is unchanged, and only a
    step function that captures (the tracking callback's logging step)
    computes the norm and stores it in :attr:`variable`.
    """

    def __init__(self, optimizer: Any, target: Any, strategy: Any) -> None:
        self.optimizer = optimizer
        # A count, not a flag: under MirroredStrategy every replica's thread enters the capturing
        # step function before any of them leaves it (they meet at the gradient sum).
        self._capturing = 0
        with strategy.scope():
            # Every replica computes the same norm from the summed gradient.
            self.variable = keras.Variable(
                float("nan"), dtype="float32", trainable=False,
                aggregation="only_first_replica", name="gradient_norm_probe",
            )  # fmt: skip

        def probe(pairs: list) -> None:
            if self._capturing:  # read when the step is traced (or run eagerly), not at every step
                self.variable.assign(_global_norm([g for g, _ in pairs if g is not None]))

        # Chained onto the bound method, or a wrapper's override.
        listen_to_gradient_sum(target, probe)

    @contextlib.contextmanager
    def capturing(self) -> Iterator[None]:
        """Steps traced (or run eagerly) inside store their global gradient norm in :attr:`variable`."""
        self._capturing += 1
        try:
            yield
        finally:
            self._capturing -= 1


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


def gradient_norm_probe(optimizer: Any, strategy: Any) -> GradientNormProbe | None:
    """The probe of ``optimizer``, installed on first use.

    Installing it changes no train function already traced or traced later
    outside :meth:`GradientNormProbe.capturing`. None for optimizers with
    no single summation point (``MultiOptimizer``).

    Example:
    >>> probe = gradient_norm_probe(model.optimizer, model.distribute_strategy)
    >>> with probe.capturing():
    ...     logs = model.train_step(data)  # inside a tf.function: stores the norm in probe.variable
    """
    existing = optimizer.__dict__.get(_ATTRIBUTE)
    if existing is not None:
        return existing
    target = _summing_optimizer(optimizer)
    if target is None:
        return None
    probe = GradientNormProbe(optimizer, target, strategy)
    optimizer.__dict__[_ATTRIBUTE] = probe
    return probe
