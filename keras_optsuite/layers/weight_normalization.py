"""Weight normalization: a Dense or Conv kernel written as a length times a direction."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import ops

from keras_optsuite._config import own_config
from keras_optsuite._upstream import AutocastScope
from keras_optsuite._validation import check_bool
from keras_optsuite.layers._base import KernelReparameterization, is_training

# sigma = sqrt(variance + epsilon) in the data-dependent initialization: a unit
# whose pre-activations are constant on the first batch gets a large, finite g.
DATA_INIT_EPSILON = 1e-6

# Layers whose kernel does not keep the output units on its last axis:
# transposed convolutions are (..., out, in), depthwise ones (..., in, multiplier).
_UNSUPPORTED_LAYERS = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
)


def _inverse_column_norms(kernel: Any) -> Any:
    """``1 / ||v||`` per output unit: the norm over every kernel axis but the last."""
    squares = ops.sum(ops.square(kernel), axis=tuple(range(len(kernel.shape) - 1)))
    tiny = ops.convert_to_tensor(keras.config.epsilon() ** 4, kernel.dtype)  # a zero column stays zero
    return ops.rsqrt(ops.maximum(squares, tiny))


def _sum_over_replicas(value: Any) -> Any:
    """``value`` summed over the replicas of a ``tf.distribute`` strategy (itself without one)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def _assign_on_this_replica(variable: keras.Variable, value: Any) -> None:
    """Assign this replica's copy of ``variable`` only, without synchronizing.

    A ``MirroredVariable`` assigned in a replica context synchronizes the
    replicas (``merge_call``), which TensorFlow refuses inside a ``tf.cond``
    branch. Every replica assigns the same all-reduced value to its own
    copy instead, so the copies stay identical.
    """
    context = tf.distribute.get_replica_context()
    stored = variable._value  # the tf.Variable (a MirroredVariable under a strategy)
    distributed = isinstance(stored, tf.distribute.DistributedValues)
    if distributed and context is not None and context.num_replicas_in_sync > 1:
        local = stored._get_on_device_or_primary()
        local.assign(ops.cast(value, local.dtype))
    else:
        variable.assign(value)  # cast to the storage dtype (`variable.dtype` may be the autocast one)


@keras.saving.register_keras_serializable(package="keras_optsuite")
class WeightNormalization(KernelReparameterization):
    """Runs a Dense or Conv layer with its kernel reparameterized as ``g * v / ||v||``.

    Weight normalization (Salimans & Kingma, 2016, "Weight Normalization: A
    Simple Reparameterization to Accelerate Training of Deep Neural
    Networks", https://arxiv.org/abs/1602.07868) writes each output unit's
    weight vector ``w`` as a length ``g`` (a scalar) times a direction
    ``v / ||v||`` (eq. 2), and trains ``v`` and ``g`` instead of ``w``. The
    stored kernel of the wrapped layer is ``v``; the wrapper adds ``g``, of
    shape ``(units,)``; ``||v||`` is the norm over every kernel axis but the
    last (Dense kernels are ``(inputs, units)``, ConvND kernels
    ``(*kernel_size, in_channels, filters)``). The gradients are the
    paper's eq. 3: ``dL/dg = dL/dw . v / ||v||`` and
    ``dL/dv = g / ||v|| (I - w w^T / ||w||^2) dL/dw``.

    ``g`` starts at ``||v||``, so wrapping a layer leaves its output
    unchanged. With ``data_init=True`` the first *training* call instead
    performs the paper's data-dependent initialization (section 3): with
    ``t = x . v / ||v||`` the pre-activation without bias, and ``mu``,
    ``sigma`` its mean and standard deviation per unit over every other
    axis of that batch (batch and, for convolutions, positions), it sets
    ``g = 1 / sigma`` and ``bias = -mu / sigma`` (when the layer has a
    bias), so the pre-activations ``g t + bias`` of the first training batch
    have mean 0 and standard deviation 1 per unit; the batch is then
    processed with these values. It runs once: a non-trainable
    ``initialized`` weight (saved with the model) records it.
    ``sigma = sqrt(variance + 1e-6)``. It happens inside the compiled train
    step, so it works in ``model.fit``, under ``jit_compile`` and under
    ``MirroredStrategy``, where the statistics are summed over the replicas
    and every replica assigns the statistics of the whole global batch. The
    first batch should therefore be representative (shuffle the data);
    with ``data_init=True`` every training step also all-reduces
    ``4 * units`` floats (zeros after the first step) under a strategy,
    because TensorFlow cannot synchronize replicas inside a conditional.

    Args:
        layer: the layer to wrap: a ``keras.layers.Dense``, ``Conv1D``,
            ``Conv2D`` or ``Conv3D`` (a layer whose ``kernel`` keeps the
            output units on its last axis; transposed and depthwise
            convolutions are rejected).
        data_init: whether to initialize ``g`` and the bias from the first
            training batch. Defaults to `False`.
        **kwargs: base layer arguments (``name``, ``dtype``, ...). The
            ``dtype`` defaults to the wrapped layer's.

    Example:
    >>> layer = WeightNormalization(keras.layers.Conv2D(8, 3, activation="relu"))
    >>> x = keras.random.normal((2, 16, 16, 3))
    >>> tuple(layer(x).shape), tuple(layer.g.shape)
    ((2, 14, 14, 8), (8,))
    """

    def __init__(self, layer: keras.layers.Layer, data_init: bool = False, **kwargs: Any) -> None:
        if isinstance(layer, _UNSUPPORTED_LAYERS):
            raise ValueError(
                f"layer must keep its output units on the kernel's last axis (Dense, Conv1D/2D/3D); "
                f"{type(layer).__name__} kernels do not, got layer={layer.name!r}"
            )
        super().__init__(layer, **kwargs)
        self.data_init = check_bool("data_init", data_init)

    def _build_parameters(self, input_shape: Any) -> None:
        kernel = self.layer.kernel

        def initial_norms(shape: Any, dtype: Any = None) -> Any:
            with AutocastScope(None):  # the float32 kernel under mixed precision
                v = ops.convert_to_tensor(kernel.value)
            return ops.cast(1.0 / _inverse_column_norms(v), dtype)

        self.g = self.add_weight(name="g", shape=(kernel.shape[-1],), initializer=initial_norms, trainable=True)
        if self.data_init:
            self.initialized = self.add_weight(
                name="initialized", shape=(), dtype="float32", initializer="zeros", trainable=False, autocast=False
            )

    def _effective_kernel(self, kernel: Any, training: bool) -> Any:
        g = ops.convert_to_tensor(self.g)
        return kernel * (g * _inverse_column_norms(kernel))

    def call(self, inputs: Any, training: Any = None) -> Any:
        if self.data_init and is_training(training):
            self._initialize_from_batch(inputs)
        return super().call(inputs, training)

    def _initialize_from_batch(self, inputs: Any) -> None:
        """The paper's data-dependent initialization, if it has not run yet.

        Two conditionals around an unconditional all-reduce: computing the
        batch moments and assigning run only on the first training step;
        the replicas' moments are summed in between.
        """
        kernel = self.layer.kernel
        bias = getattr(self.layer, "bias", None)
        units = kernel.shape[-1]
        pending = ops.convert_to_tensor(self.initialized) < 0.5

        def batch_moments() -> Any:
            with AutocastScope(None):
                v = ops.convert_to_tensor(kernel.value)
            replacements = [(kernel, v * _inverse_column_norms(v))]
            if bias is not None:
                replacements.append((bias, ops.zeros(bias.shape, v.dtype)))
            # t = x . v / ||v||: the wrapped layer without its bias nor its activation.
            activation = self.layer.activation
            self.layer.activation = keras.activations.linear
            try:
                t = ops.cast(self._call_with(inputs, replacements), "float32")
            finally:
                self.layer.activation = activation
            channels_first = getattr(self.layer, "data_format", "channels_last") == "channels_first"
            channel_axis = 1 if channels_first and len(t.shape) > 2 else len(t.shape) - 1
            axes = tuple(axis for axis in range(len(t.shape)) if axis != channel_axis)
            count = ops.cast(ops.size(t) // units, "float32")
            mean = ops.mean(t, axis=axes, keepdims=True)
            squared_deviations = ops.sum(ops.square(t - mean), axis=axes)
            mean = ops.reshape(mean, (units,))
            # Per replica: n, n mean, sum of squared deviations, n mean^2 (Chan et al.'s pooled variance).
            return ops.stack([ops.full((units,), count), count * mean, squared_deviations, count * ops.square(mean)])

        moments = ops.cond(pending, batch_moments, lambda: ops.zeros((4, units), "float32"))
        count, total, squared_deviations, weighted_squared_means = ops.unstack(_sum_over_replicas(moments))

        def assign() -> Any:
            mean = total / count
            variance = (squared_deviations + weighted_squared_means - count * ops.square(mean)) / count
            inverse_sigma = ops.rsqrt(ops.maximum(variance, 0.0) + DATA_INIT_EPSILON)
            _assign_on_this_replica(self.g, inverse_sigma)
            if bias is not None:
                _assign_on_this_replica(bias, -mean * inverse_sigma)
            _assign_on_this_replica(self.initialized, 1.0)
            return ops.ones(())

        ops.cond(pending, assign, lambda: ops.zeros(()))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **own_config(self, skip=frozenset({"self", "layer", "kwargs"}))}
