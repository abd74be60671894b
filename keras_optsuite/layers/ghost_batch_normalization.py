"""Ghost Batch Normalization: batch normalization over small virtual batches."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_optsuite._validation import (
    check_bool,
    check_fraction,
    check_positive,
    check_positive_int,
)
from keras_optsuite.layers._base import ReplicaMeanStatistics


@keras.saving.register_keras_serializable(package="keras_optsuite")
class GhostBatchNormalization(ReplicaMeanStatistics, keras.layers.BatchNormalization):
    """Batch normalization whose training statistics come from small "ghost" batches.

    Hoffer, Hubara & Soudry, 2017, "Train longer, generalize better: closing
    the generalization gap in large batch training of neural networks",
    https://arxiv.org/abs/1705.08741 (section 4.1). Large batches give
    batch normalization nearly noiseless statistics, and lose the
    regularization small batches bring; ghost batch normalization keeps the
    large batch for the gradient but normalizes with small-batch statistics.
    In training, the batch (axis 0) is split into consecutive virtual
    batches of ``virtual_batch_size`` examples, and each is normalized with
    its own statistics, per channel of ``axis``:

    - ``mean_g``, ``var_g``: the mean and (biased) variance of ghost batch
      ``g`` over its examples and every non-channel axis;
    - ``y = gamma (x - mean_g) / sqrt(var_g + epsilon) + beta`` for ``x``
      in ghost batch ``g``.

    A batch whose size is not a multiple of ``virtual_batch_size`` gets a
    smaller last ghost batch (padded and masked, so shapes stay static for
    XLA). With ``virtual_batch_size`` >= the batch size it is batch
    normalization.

    Moving statistics are updated once per training call, from the
    count-weighted means of the ghost statistics: ``mean = sum_g n_g mean_g
    / sum_g n_g`` (the batch mean) and ``variance = sum_g n_g var_g / sum_g
    n_g`` (the average within-ghost variance, i.e. the scale the outputs
    were normalized with; it excludes the spread between ghost means), then
    ``moving = momentum * moving + (1 - momentum) * statistic``. (The
    paper's Algorithm 1 applies the moving average once per ghost batch
    instead.) Inference is exactly ``keras.layers.BatchNormalization``'s:
    ``gamma (x - moving_mean) / sqrt(moving_variance + epsilon) + beta``.

    Distribution. Under ``MirroredStrategy`` each replica splits its own
    share of the batch, so ghost statistics are per replica; the moving
    averages are the mean of the replicas' updates (Keras 3.15's own
    ``BatchNormalization`` keeps one moving mean per replica).

    Masks: masked positions (a mask of the input's shape without the last
    axis, as in Keras) count in no statistic. Mixed precision: statistics
    are computed in float32 (float64 for a float64 layer) and the output is
    in the layer's compute dtype.

    Args:
        virtual_batch_size: the examples per ghost batch, a positive integer
            (per replica). Defaults to `128`.
        axis: the channel axis (a statistic per channel); not 0, the batch
            axis. Defaults to `-1`.
        momentum: the moving-average coefficient, in [0, 1]. Defaults to
            `0.99`.
        epsilon: added to the variance, > 0. Defaults to `1e-3`.
        center: whether to add ``beta``. Defaults to `True`.
        scale: whether to multiply by ``gamma``. Defaults to `True`.
        beta_initializer: Defaults to `"zeros"`.
        gamma_initializer: Defaults to `"ones"`.
        moving_mean_initializer: Defaults to `"zeros"`.
        moving_variance_initializer: Defaults to `"ones"`.
        beta_regularizer: Defaults to `None`.
        gamma_regularizer: Defaults to `None`.
        beta_constraint: Defaults to `None`.
        gamma_constraint: Defaults to `None`.
        **kwargs: base layer arguments (``name``, ``dtype``, ...).

    Example:
    >>> layer = GhostBatchNormalization(virtual_batch_size=4)
    >>> x = keras.random.normal((10, 3))
    >>> y = layer(x, training=True)  # ghost batches of 4, 4 and 2 examples
    >>> y.shape
    TensorShape([10, 3])
    """

    def __init__(
        self,
        virtual_batch_size: int = 128,
        axis: int = -1,
        momentum: float = 0.99,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        beta_initializer: Any = "zeros",
        gamma_initializer: Any = "ones",
        moving_mean_initializer: Any = "zeros",
        moving_variance_initializer: Any = "ones",
        beta_regularizer: Any = None,
        gamma_regularizer: Any = None,
        beta_constraint: Any = None,
        gamma_constraint: Any = None,
        **kwargs: Any,
    ) -> None:
        virtual_batch_size = check_positive_int("virtual_batch_size", virtual_batch_size)
        super().__init__(
            axis=axis,
            momentum=check_fraction("momentum", momentum),
            epsilon=check_positive("epsilon", epsilon),
            center=check_bool("center", center),
            scale=check_bool("scale", scale),
            beta_initializer=beta_initializer,
            gamma_initializer=gamma_initializer,
            moving_mean_initializer=moving_mean_initializer,
            moving_variance_initializer=moving_variance_initializer,
            beta_regularizer=beta_regularizer,
            gamma_regularizer=gamma_regularizer,
            beta_constraint=beta_constraint,
            gamma_constraint=gamma_constraint,
            **kwargs,
        )
        self.virtual_batch_size = virtual_batch_size

    def build(self, input_shape: Any) -> None:
        if self.axis % len(input_shape) == 0:
            raise ValueError(
                f"axis must be a channel axis, not the batch axis 0, got axis={self.axis} "
                f"for inputs of rank {len(input_shape)}"
            )
        super().build(input_shape)

    def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        if not (training and self.trainable):
            return super().call(inputs, training=False, mask=mask)
        if mask is not None and len(mask.shape) != len(inputs.shape) - 1:
            raise ValueError(
                "The mask provided should be one dimension less than the inputs. "
                f"Received: mask.shape={mask.shape}, inputs.shape={inputs.shape}"
            )
        # Statistics in float32 at least (float16 overflows), as Keras does.
        stats_dtype = keras.backend.result_type(inputs.dtype, "float32")
        x = ops.cast(inputs, stats_dtype)
        ndim = len(x.shape)
        channel_axis = self.axis % ndim
        size = self.virtual_batch_size

        # Weights: 1 for a position that counts, 0 for a masked one or padding.
        weights = ops.ones_like(x)
        if mask is not None:
            weights = weights * ops.expand_dims(ops.cast(mask, stats_dtype), -1)

        # Pad the batch to whole ghost batches: (ghosts, size, *example shape).
        batch = ops.shape(x)[0]
        padding = (size - batch % size) % size
        pad_width = [[0, padding]] + [[0, 0]] * (ndim - 1)
        example_shape = [
            dim if dim is not None else ops.shape(x)[i] for i, dim in enumerate(x.shape) if i > 0
        ]
        ghost_shape = [-1, size] + example_shape
        x = ops.reshape(ops.pad(x, pad_width), ghost_shape)
        weights = ops.reshape(ops.pad(weights, pad_width), ghost_shape)

        axes = [1] + [i + 1 for i in range(1, ndim) if i != channel_axis]
        counts = ops.sum(weights, axis=axes, keepdims=True)  # n_g (per channel)
        denominators = ops.maximum(counts, 1.0)  # a fully masked ghost has no statistics
        ghost_mean = ops.sum(weights * x, axis=axes, keepdims=True) / denominators
        squares = weights * ops.square(x - ghost_mean)
        ghost_variance = ops.sum(squares, axis=axes, keepdims=True) / denominators

        # y = (x - mean_g) * gamma / sqrt(var_g + epsilon) + beta. Centring first
        # (not Keras's x * inv + (beta - mean * inv)) avoids cancellation when
        # a small ghost batch's spread is small against its mean.
        channels_shape = [1] * (ndim + 1)
        channels_shape[channel_axis + 1] = x.shape[channel_axis + 1]
        inverse = ops.rsqrt(ghost_variance + self.epsilon)  # a Python float: exact in float64
        if self.scale:
            inverse = inverse * ops.reshape(ops.cast(self.gamma, stats_dtype), channels_shape)
        normalized = (x - ghost_mean) * inverse
        if self.center:
            normalized = normalized + ops.reshape(ops.cast(self.beta, stats_dtype), channels_shape)
        outputs = ops.reshape(normalized, [-1] + example_shape)[:batch]

        # Count-weighted means of the ghost statistics update the moving ones.
        total = ops.maximum(ops.sum(counts, axis=0), 1.0)
        mean = ops.reshape(ops.sum(counts * ghost_mean, axis=0) / total, (-1,))
        variance = ops.reshape(ops.sum(counts * ghost_variance, axis=0) / total, (-1,))
        for moving, statistic in ((self.moving_mean, mean), (self.moving_variance, variance)):
            value = ops.cast(moving, stats_dtype)
            moving.assign(value * self.momentum + statistic * (1.0 - self.momentum))
        return ops.cast(outputs, self.compute_dtype)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        for name in ("renorm", "renorm_clipping", "renorm_momentum", "synchronized"):
            del config[name]
        config["virtual_batch_size"] = self.virtual_batch_size
        return config
