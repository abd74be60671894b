"""DropBlock: dropout of contiguous blocks of a convolutional feature map."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_optsuite._config import own_config
from keras_optsuite._validation import (
    check_bool,
    check_choice,
    check_drop_rate,
    check_positive_int,
    check_seed,
)
from keras_optsuite.layers._base import add_rate_weight, is_training, random_uniform, rate_property

_DATA_FORMATS = ("channels_last", "channels_first")


class _DropBlock(keras.layers.Layer):
    """DropBlock over ``_spatial_rank`` spatial dimensions (see DropBlock1D/2D)."""

    _spatial_rank: int = 0

    def __init__(
        self,
        rate: float,
        block_size: int = 7,
        data_format: str | None = None,
        shared_across_channels: bool = False,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        rate = check_drop_rate("rate", rate)
        self.block_size = check_positive_int("block_size", block_size)
        if data_format is None:
            data_format = keras.config.image_data_format()
        self.data_format = check_choice("data_format", data_format, _DATA_FORMATS)
        self.shared_across_channels = check_bool("shared_across_channels", shared_across_channels)
        self.seed = check_seed("seed", seed)
        self._rate_weight = add_rate_weight(self, "rate", rate)
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        self.input_spec = keras.InputSpec(ndim=self._spatial_rank + 2)
        self.supports_masking = True

    rate = rate_property("rate", check_drop_rate)

    def build(self, input_shape: Any) -> None:
        self.built = True

    def _keep_mask(self, mask_shape: tuple[Any, ...]) -> Any:
        """The float32 0/1 keep mask of ``mask_shape`` = (batch, *spatial, channels or 1)."""
        spatial = mask_shape[1:-1]
        block_size = self.block_size
        # Per dimension: the clipped block size k = min(block_size, n) and the
        # pooling window (k when n is known now; block_size when n is only
        # known at run time, which drops the same positions: a block of k = n
        # covers the whole dimension, and so does the wider window).
        clipped, windows = [], []
        for n in spatial:
            if isinstance(n, int):
                clipped.append(min(block_size, n))
                windows.append(min(block_size, n))
            else:
                clipped.append(ops.minimum(block_size, n))
                windows.append(block_size)

        # Equation 1, with a block size per dimension:
        # gamma = rate / prod(k_i) * prod(n_i) / prod(n_i - k_i + 1).
        rate = ops.convert_to_tensor(self._rate_weight)
        gamma = rate
        for n, k in zip(spatial, clipped):
            n = ops.cast(n, "float32")
            k = ops.cast(k, "float32")
            gamma = gamma * n / (k * (n - k + 1.0))

        # Valid centres: the block of a centre c spans [c - k//2, c + (k-1)//2]
        # (the "same" max-pool below), so c lies in [k//2, n - 1 - (k-1)//2].
        valid = None
        for axis, (n, k) in enumerate(zip(spatial, clipped)):
            position = ops.arange(n, dtype="int32")
            inside = ops.logical_and(position >= k // 2, position <= n - 1 - (k - 1) // 2)
            broadcast_shape = [1] * len(mask_shape)
            broadcast_shape[axis + 1] = -1
            inside = ops.reshape(inside, broadcast_shape)
            valid = inside if valid is None else ops.logical_and(valid, inside)

        draws = random_uniform(self.seed_generator, mask_shape, "float32")
        centres = ops.cast(ops.logical_and(draws < gamma, valid), "float32")
        dropped = ops.max_pool(
            centres,
            pool_size=tuple(windows),
            strides=1,
            padding="same",
            data_format="channels_last",
        )
        return 1.0 - dropped

    def call(self, inputs: Any, training: Any = None) -> Any:
        if not is_training(training):
            return inputs
        shape = ops.shape(inputs)
        if self.data_format == "channels_first":
            batch, channels, spatial = shape[0], shape[1], tuple(shape[2:])
        else:
            batch, channels, spatial = shape[0], shape[-1], tuple(shape[1:-1])
        mask_channels = 1 if self.shared_across_channels else channels
        # The mask is drawn and expanded channels-last whatever the data
        # format (CPU max-pooling is channels-last only, and one seed gives
        # the same blocks in both formats), then moved to the input's layout.
        mask = self._keep_mask((batch, *spatial, mask_channels))
        if self.data_format == "channels_first":
            mask = ops.moveaxis(mask, -1, 1)
        count = ops.cast(ops.size(mask), "float32")
        kept = ops.sum(mask)
        scale = ops.where(kept > 0.0, count / ops.maximum(kept, 1.0), 0.0)
        return inputs * ops.cast(mask * scale, inputs.dtype)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **own_config(self)}


_DOCSTRING = """DropBlock: zeroes contiguous {block_word} of a feature map in training.

    Ghiasi, Lin & Le, 2018, "DropBlock: A regularization method for
    convolutional networks", https://arxiv.org/abs/1810.12890 (Algorithm 1).
    Dropout of single units barely regularizes convolutional features, whose
    neighbours carry the same information; DropBlock drops whole
    ``block_size``{block_shape} regions instead. In training, for a feature
    map with spatial sizes ``n_1..n_d`` (here d = {rank}):

    1. ``gamma = rate / block_size**d * prod(n_i) / prod(n_i - block_size + 1)``
       (equation 1): the probability of a block centre, chosen so that a
       fraction of about ``rate`` of the positions is dropped.
    2. Block centres are Bernoulli(``gamma``) among the positions whose block
       fits inside the map (``n_i - block_size + 1`` of them per dimension).
    3. Each centre is expanded to a block of zeros (a max-pool of the centre
       mask with a ``block_size`` window): mask ``M`` is 0 inside a block.
    4. ``output = inputs * M * count(M) / sum(M)``: renormalized so that the
       expected *sum* of the features is kept. (Positions near the border are
       covered by fewer centres and are dropped less often than interior ones,
       so per position the expectation is not the input; only the total is.)

    In inference (``training`` False or None) the layer is the identity.

    Conventions. A block centred at position ``c`` spans
    ``[c - block_size // 2, c + (block_size - 1) // 2]`` along each
    dimension: for an odd size it is centred; for an even size it has one
    more position before ``c`` than after it. Centres therefore lie at least
    ``block_size // 2`` from the start and ``(block_size - 1) // 2`` from the
    end of each dimension. Where ``block_size`` exceeds a spatial size it is
    clipped to that size (the block then spans the whole dimension, and
    equation 1 uses the clipped size for that dimension). Spatial sizes
    unknown when the model is built are read from the input at run time.

    Scheduled DropBlock. The paper raises the drop rate linearly from 0 to
    its final value during training ("scheduled DropBlock", section 3), which
    works better than a fixed rate. The rate lives in a variable, so
    ``layer.rate = r`` takes effect at the next step without retracing; the
    ramp is ``keras_optsuite.callbacks.DropoutScheduler(Ramp(0.0, rate, 0,
    steps), frequency="batch")`` (``Ramp`` from ``keras_optsuite.schedules``).

    Args:
        rate: the fraction of positions to drop, in [0, 1). The paper's best
            ImageNet ResNet-50 setting drops 0.1 (keep_prob 0.9).
        block_size: the side of the dropped blocks, a positive integer.
            Defaults to `7`{default_note}.
        data_format: `"channels_last"` ({layout_last}) or `"channels_first"`
            ({layout_first}). Defaults to `keras.config.image_data_format()`.
        shared_across_channels: if `False` (default), every channel gets its
            own mask, as Algorithm 1 is applied per feature map; if `True`,
            one mask per example drops the same blocks in all channels.
            Either way the renormalization counts the positions of the mask.
        seed: an integer >= 0 seeding the layer's
            `keras.random.SeedGenerator`, or `None` (default). Under a
            distribution strategy each replica draws its own blocks.

    Example:
    >>> layer = {name}(rate=0.1, block_size={example_block})
    >>> x = keras.ops.ones({example_shape})
    >>> y = layer(x, training=True)  # some {block_word} zeroed, the rest scaled up
    >>> bool(keras.ops.all(layer(x) == x))  # inference: identity
    True
    """


@keras.saving.register_keras_serializable(package="keras_optsuite")
class DropBlock1D(_DropBlock):
    _spatial_rank = 1
    __doc__ = _DOCSTRING.format(
        block_word="segments",
        block_shape="-long",
        rank=1,
        default_note=(
            ", the paper's 2D default, i.e. the same extent along the axis as"
            " a 2D block along each of its axes"
        ),
        layout_last="inputs `(batch, steps, channels)`",
        layout_first="inputs `(batch, channels, steps)`",
        name="DropBlock1D",
        example_block=3,
        example_shape="(2, 20, 4)",
    )


@keras.saving.register_keras_serializable(package="keras_optsuite")
class DropBlock2D(_DropBlock):
    _spatial_rank = 2
    __doc__ = _DOCSTRING.format(
        block_word="squares",
        block_shape=" x ``block_size``",
        rank=2,
        default_note=", the paper's ImageNet setting",
        layout_last="inputs `(batch, height, width, channels)`",
        layout_first="inputs `(batch, channels, height, width)`",
        name="DropBlock2D",
        example_block=3,
        example_shape="(2, 8, 8, 4)",
    )
