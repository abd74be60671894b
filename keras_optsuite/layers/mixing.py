"""Batch mixing for inputs of any rank: MixUp and CutMix on ``(inputs, labels)`` pairs.

Keras 3.15 ships ``keras.layers.MixUp`` and ``keras.layers.CutMix``, image
preprocessing layers (read in ``keras/src/layers/preprocessing/
image_preprocessing/mix_up.py`` and ``cut_mix.py``; measured on 3.15.1):

- they take a ``{"images": ..., "labels": ...}`` dict or an image tensor:
  two positional arguments, hence ``dataset.map(layer)`` on ``(x, y)``
  tuples, raise ``TypeError``;
- they are image-only: a rank-2 (tabular) batch raises ``ValueError``, and a
  rank-3 batch of sequences ``(batch, time, channels)`` is taken for *one*
  image ``(height, width, channels)``: MixUp then mixes it with itself and
  returns it unchanged, silently;
- labels must already be float ``(batch, classes)``: integer class ids fail
  inside the multiplication;
- both draw one mixing weight per example (Beta); CutMix draws the Beta
  parameter itself from ``U(factor)`` per batch (its ``alpha`` is not an
  argument), keeps the box inside the image (no clipping), and weights the
  labels by the area of the *continuous* box, not by the pixels it actually
  replaces: over 400 16x16 examples the label weight and the fraction of
  pixels kept differed in 327, by up to 0.12.

:class:`MixUp` and :class:`CutMix` here are the same two methods for any
rank, with ``(inputs, labels)`` pairs, integer labels, and (CutMix) label
weights equal to the fraction of elements actually kept. They reuse Keras's
own samplers (``keras.random.beta``, ``keras.random.shuffle``) and Keras's
input-pipeline convention: apply them to a *batched* ``tf.data`` dataset
with ``dataset.map(layer)``, or call them on tensors.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_optsuite._config import own_config
from keras_optsuite._validation import (
    check_choice,
    check_positive,
    check_positive_int,
    check_seed,
)

_MIXING_DTYPE = "float32"  # lambda is drawn in float32; the mixing runs in the label dtype


def _is_integer(dtype: Any) -> bool:
    name = keras.backend.standardize_dtype(dtype)
    return name.startswith(("int", "uint")) or name == "bool"


class _BatchMixing(keras.layers.Layer):
    """Shared machinery: argument checks, label handling, lambda and partner draws.

    Subclasses implement ``_mix_inputs(inputs, partner, mix_weight)``
    returning the mixed inputs and each example's label weight (the weight
    of its own labels; its partner's get one minus it).
    """

    def __init__(
        self, alpha: float, num_classes: int | None = None, seed: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.alpha = check_positive("alpha", alpha)
        self.num_classes = check_positive_int("num_classes", num_classes, allow_none=True)
        self.seed = check_seed("seed", seed)
        self.seed_generator = keras.random.SeedGenerator(seed)
        # Labels must not be autocast to a float16 compute dtype (it would round
        # the label weights), and integer labels must stay integer: inputs are
        # converted in `call`, by rule, instead of by Layer.__call__.
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        self.built = True

    # -- labels -------------------------------------------------------------------
    def _labels_as_distributions(self, labels: Any) -> Any:
        """Float ``(batch, classes)`` labels in the policy's variable dtype."""
        dtype = self.variable_dtype  # float32 under mixed_float16: label weights unrounded
        shape = tuple(labels.shape)
        if _is_integer(labels.dtype):
            if self.num_classes is None:
                raise ValueError(
                    f"{type(self).__name__} got integer labels (class ids) but num_classes is "
                    "None: pass num_classes=... to one-hot them, or give labels as one-hot/soft "
                    f"floats of shape (batch, classes); got labels of dtype {labels.dtype} and "
                    f"shape {shape}"
                )
            if len(shape) == 2 and shape[-1] == 1:
                labels = ops.squeeze(labels, axis=-1)
            elif len(shape) != 1:
                raise ValueError(
                    "integer labels must be class ids of shape (batch,) or (batch, 1), got "
                    f"labels of shape {shape}"
                )
            return ops.one_hot(labels, self.num_classes, dtype=dtype)
        if len(shape) != 2:
            raise ValueError(
                "float labels must be one-hot or soft, of shape (batch, classes); integer class "
                f"ids need an integer dtype and num_classes; got labels of shape {shape}"
            )
        if self.num_classes is not None and shape[-1] is not None and shape[-1] != self.num_classes:
            raise ValueError(
                f"labels have {shape[-1]} classes but num_classes={self.num_classes}: got labels "
                f"of shape {shape}"
            )
        return ops.cast(labels, dtype)

    # -- the layer ------------------------------------------------------------------
    def call(self, inputs: Any, labels: Any) -> tuple[Any, Any]:
        inputs = ops.convert_to_tensor(inputs)
        labels = self._labels_as_distributions(ops.convert_to_tensor(labels))
        batch_in, batch_labels = inputs.shape[0], labels.shape[0]
        if batch_in is not None and batch_labels is not None and batch_in != batch_labels:
            raise ValueError(
                f"inputs and labels must have the same batch size, got inputs of shape "
                f"{tuple(inputs.shape)} and labels of shape {tuple(labels.shape)}"
            )
        batch_size = ops.shape(inputs)[0]
        mix_weight = keras.random.beta(
            (batch_size,), self.alpha, self.alpha, dtype=_MIXING_DTYPE, seed=self.seed_generator
        )
        partner = keras.random.shuffle(
            ops.arange(batch_size, dtype="int32"), seed=self.seed_generator
        )
        mixed_inputs, label_weight = self._mix_inputs(inputs, partner, mix_weight)
        label_weight = ops.reshape(ops.cast(label_weight, labels.dtype), (-1, 1))
        partner_labels = ops.take(labels, partner, axis=0)
        mixed_labels = label_weight * labels + (1.0 - label_weight) * partner_labels
        return mixed_inputs, mixed_labels

    def _mix_inputs(self, inputs: Any, partner: Any, mix_weight: Any) -> tuple[Any, Any]:
        raise NotImplementedError

    def compute_output_shape(self, inputs_shape: Any, labels_shape: Any) -> tuple[Any, Any]:
        class_ids = len(labels_shape) < 2 or labels_shape[-1] == 1
        classes = self.num_classes if class_ids else labels_shape[-1]
        return tuple(inputs_shape), (labels_shape[0], classes)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **own_config(self)}


@keras.saving.register_keras_serializable(package="keras_optsuite")
class MixUp(_BatchMixing):
    """MixUp for a batch of any rank: convex combinations of example pairs and of their labels.

    Zhang, Cisse, Dauphin, Lopez-Paz, 2018, "mixup: Beyond Empirical Risk
    Minimization", https://arxiv.org/abs/1710.09412 (section 2). Each example
    ``i`` of the batch is paired with example ``j = pi(i)`` of a random
    permutation ``pi`` of the batch, and with ``lambda_i ~ Beta(alpha, alpha)``::

        x_i <- lambda_i * x_i + (1 - lambda_i) * x_j
        y_i <- lambda_i * y_i + (1 - lambda_i) * y_j

    for inputs of any rank: tabular ``(batch, features)``, sequences
    ``(batch, time, channels)``, images, volumes. The paper's code draws one
    ``lambda`` per batch; like ``keras.layers.MixUp`` (and timm's
    ``mode="elem"``) this draws one per example. A permutation may pair an
    example with itself, which leaves it unchanged.

    Called as ``layer(inputs, labels)``, it returns ``(mixed_inputs,
    mixed_labels)``. Labels are one-hot or soft floats ``(batch, classes)``,
    or integer class ids ``(batch,)`` / ``(batch, 1)`` when ``num_classes``
    is given (one-hot inside; ids outside ``[0, num_classes)`` give an
    all-zero row, as ``keras.ops.one_hot`` does). Mixed labels are floats in
    the dtype policy's variable dtype (float32 under ``mixed_float16``, so
    the label weights are not rounded); mixed inputs are in its compute dtype.

    It is an input-pipeline layer, applied to the *training* data only, so
    it has no ``training`` argument: map it over a batched ``tf.data``
    dataset (it runs in the dataset's TensorFlow graph), or call it on
    tensors. It is not meant to sit inside a model.

    When to use which: ``keras.layers.MixUp`` for batches of images given as
    ``{"images": ..., "labels": ...}`` dicts (it also mixes bounding boxes and
    segmentation masks); this layer for other ranks (a rank-3 batch is a
    single image to Keras's layer, which then returns it unmixed),
    ``(x, y)`` tuples and integer labels.

    Args:
        alpha: the Beta parameter, > 0; small values keep examples close to
            themselves. Defaults to `0.2` (the paper's ImageNet range is
            0.1 to 0.4; it uses 1.0 on CIFAR-10).
        num_classes: the number of classes, to accept integer labels.
            Defaults to `None` (labels must be float).
        seed: seed of the layer's ``keras.random.SeedGenerator``, or None.

    Example:
    >>> import tensorflow as tf
    >>> x = np.random.rand(64, 20).astype("float32")
    >>> y = np.random.randint(0, 3, size=64)
    >>> train = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    >>> train = train.map(MixUp(alpha=0.2, num_classes=3, seed=0))
    >>> [tuple(t.shape) for t in next(iter(train))]
    [(16, 20), (16, 3)]
    """

    def __init__(
        self, alpha: float = 0.2, num_classes: int | None = None, seed: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(alpha=alpha, num_classes=num_classes, seed=seed, **kwargs)

    def _mix_inputs(self, inputs: Any, partner: Any, mix_weight: Any) -> tuple[Any, Any]:
        # Mix in the label dtype (float32, or float64 under a float64 policy), so
        # inputs and labels are combined with the very same lambda.
        dtype = self.variable_dtype
        inputs = ops.cast(inputs, dtype)
        weight = ops.reshape(ops.cast(mix_weight, dtype), (-1,) + (1,) * (len(inputs.shape) - 1))
        mixed = weight * inputs + (1.0 - weight) * ops.take(inputs, partner, axis=0)
        return ops.cast(mixed, self.compute_dtype), mix_weight


@keras.saving.register_keras_serializable(package="keras_optsuite")
class CutMix(_BatchMixing):
    """CutMix for sequences, images and volumes: paste a box from another example, mix labels by area.

    Yun, Han, Oh, Chun, Choe, Yoo, 2019, "CutMix: Regularization Strategy to
    Train Strong Classifiers with Localizable Features",
    https://arxiv.org/abs/1905.04899 (section 3.1). Each example ``i`` is
    paired with example ``j = pi(i)`` of a random permutation ``pi`` of the
    batch; with ``lambda_i ~ Beta(alpha, alpha)``, a box covering about
    ``1 - lambda_i`` of the ``d`` spatial axes is cut from ``x_j`` and pasted
    into ``x_i`` at the same place. On each spatial axis of length ``L`` the
    box has side ``floor(L * (1 - lambda_i) ** (1 / d))`` (the paper's
    ``W * sqrt(1 - lambda)`` for ``d = 2``), is centred at a uniform integer
    position in ``[0, L)`` (it starts ``side // 2`` before it; the paper's
    code, centre +- ``side // 2``, makes odd sides one shorter), and is
    clipped to the axis, so near the borders it is smaller. The labels are
    then mixed by the area actually pasted::

        x_i <- x_i outside the box, x_j inside it
        y_i <- w_i * y_i + (1 - w_i) * y_j,  w_i = 1 - (elements in the box) / (spatial elements)

    so ``w_i`` equals the fraction of ``x_i``'s elements that remain (the
    paper's lambda adjustment; it is exact here, computed from integer
    counts). One implementation covers a span of a sequence ``(batch, time,
    channels)`` (``d = 1``), a rectangle of an image (``d = 2``), a box of a
    volume (``d = 3``); every channel of a pasted position is pasted. The
    paper's code draws one ``lambda`` and one box per batch; this draws them
    per example, as ``keras.layers.CutMix`` does.

    Called as ``layer(inputs, labels)``, it returns ``(mixed_inputs,
    mixed_labels)``. Labels are as for :class:`MixUp` (one-hot/soft floats,
    or integer ids with ``num_classes``; mixed labels in the policy's
    variable dtype). Floating inputs come back in the compute dtype, integer
    inputs (``uint8`` images, token ids with a channel axis) in their own
    dtype: pasting needs no arithmetic.

    An input-pipeline layer for the training data, with no ``training``
    argument: map it over a batched ``tf.data`` dataset, or call it on
    tensors.

    When to use which: ``keras.layers.CutMix`` for batches of images given as
    ``{"images": ..., "labels": ...}`` dicts (its Beta parameter is drawn from
    a ``factor`` range, its box stays inside the image, and its label weight
    is the area of a continuous box, which can differ from the fraction of
    pixels it replaces); this layer for sequences and volumes, ``(x, y)``
    tuples, integer labels, and label weights that match the pasted area.

    Args:
        alpha: the Beta parameter, > 0. Defaults to `1.0` (the paper's
            value: ``lambda`` uniform on [0, 1]).
        num_classes: the number of classes, to accept integer labels.
            Defaults to `None` (labels must be float).
        data_format: ``"channels_last"`` (spatial axes ``1 .. rank - 2``) or
            ``"channels_first"`` (axes ``2 .. rank - 1``). Defaults to `None`:
            ``keras.config.image_data_format()``.
        seed: seed of the layer's ``keras.random.SeedGenerator``, or None.

    Example:
    >>> import tensorflow as tf
    >>> x = np.random.rand(64, 100, 3).astype("float32")  # sequences
    >>> y = np.random.randint(0, 5, size=64)
    >>> train = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    >>> train = train.map(CutMix(num_classes=5, seed=0))
    >>> [tuple(t.shape) for t in next(iter(train))]
    [(16, 100, 3), (16, 5)]
    """

    def __init__(
        self,
        alpha: float = 1.0,
        num_classes: int | None = None,
        data_format: str | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(alpha=alpha, num_classes=num_classes, seed=seed, **kwargs)
        if data_format is None:
            data_format = keras.config.image_data_format()
        self.data_format = check_choice("data_format", data_format, ("channels_last", "channels_first"))

    def _mix_inputs(self, inputs: Any, partner: Any, mix_weight: Any) -> tuple[Any, Any]:
        rank = len(inputs.shape)
        if rank < 3:
            raise ValueError(
                "CutMix needs inputs of shape (batch, *spatial, channels) (or channels first), "
                f"rank >= 3; add a channel axis to a (batch, time) batch; got inputs of shape "
                f"{tuple(inputs.shape)}"
            )
        if not _is_integer(inputs.dtype):
            inputs = ops.cast(inputs, self.compute_dtype)
        spatial_axes = range(1, rank - 1) if self.data_format == "channels_last" else range(2, rank)
        side_fraction = ops.power(1.0 - mix_weight, 1.0 / len(spatial_axes))
        batch_size = ops.shape(inputs)[0]
        shape = ops.shape(inputs)

        inside = None
        box_elements = ops.ones((batch_size,), dtype="int64")
        total_elements = ops.convert_to_tensor(1, dtype="int64")
        for axis in spatial_axes:
            length = ops.cast(shape[axis], "int32")
            length_float = ops.cast(length, _MIXING_DTYPE)
            side = ops.cast(ops.floor(side_fraction * length_float), "int32")
            draw = keras.random.uniform((batch_size,), dtype=_MIXING_DTYPE, seed=self.seed_generator)
            center = ops.minimum(ops.cast(ops.floor(draw * length_float), "int32"), length - 1)
            start = ops.clip(center - side // 2, 0, length)
            stop = ops.clip(center - side // 2 + side, 0, length)
            positions = ops.arange(length, dtype="int32")
            on_axis = ops.logical_and(
                positions[None, :] >= start[:, None], positions[None, :] < stop[:, None]
            )
            broadcast_shape = [-1] + [1] * (rank - 1)
            broadcast_shape[axis] = length
            on_axis = ops.reshape(on_axis, broadcast_shape)
            inside = on_axis if inside is None else ops.logical_and(inside, on_axis)
            box_elements = box_elements * ops.cast(stop - start, "int64")
            total_elements = total_elements * ops.cast(length, "int64")

        mixed = ops.where(inside, ops.take(inputs, partner, axis=0), inputs)
        # Integer counts, one division: the weight is the kept fraction, rounded once.
        kept = ops.cast(total_elements - box_elements, "float64") / ops.cast(total_elements, "float64")
        return mixed, kept
