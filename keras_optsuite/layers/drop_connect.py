"""DropConnect: drop entries of a Dense or Conv layer's kernel instead of its outputs."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_optsuite._config import own_config
from keras_optsuite._validation import check_drop_rate, check_seed
from keras_optsuite.layers._base import (
    KernelReparameterization,
    add_rate_weight,
    bernoulli_keep_mask,
    inverted_scale,
    rate_property,
    rate_tensor,
)


@keras.saving.register_keras_serializable(package="keras_optsuite")
class DropConnect(KernelReparameterization):
    """Runs a Dense or Conv layer with a randomly thinned kernel while training.

    DropConnect (Wan, Zeiler, Zhang, LeCun & Fergus, 2013, "Regularization
    of Neural Networks using DropConnect",
    http://proceedings.mlr.press/v28/wan13.html) drops connections rather
    than units: in training each entry of the kernel ``W`` is kept with
    probability ``1 - rate`` and set to zero otherwise, and the layer
    computes ``activation(x . (M * W) + b)`` with the 0/1 mask ``M``. Here
    the kept entries are scaled by ``1 / (1 - rate)`` ("inverted"
    DropConnect, as Keras's ``Dropout`` scales), so the expected
    pre-activation equals the full kernel's ``x . W + b``.

    - **One mask per call.** A mask is drawn once per call and shared by
      every example of the batch (the paper draws one per example, which
      costs a kernel-sized mask per example). Under ``MirroredStrategy``
      each replica draws its own mask for its share of the batch.
    - **The bias and the activation are untouched**: only the kernel is
      masked; the gradient reaches the stored kernel through the kept
      entries only (times ``1 / (1 - rate)``).
    - **Inference deviates from the paper.** With ``training=False`` the
      layer uses the full kernel, which is the mean of the scaled masked
      kernel. The paper's inference instead moment-matches a Gaussian to
      each unit's pre-activation and averages the activation over samples
      of it (section 3); for a linear or nearly linear activation the two
      agree.

    ``rate`` is held in a non-trainable variable: assigning ``layer.rate``
    (e.g. from ``keras_optsuite.callbacks.DropoutScheduler``) takes effect at
    the next step without retracing, and is saved with the model.

    Args:
        layer: the layer to wrap: a ``keras.layers.Dense``, ``Conv1D``,
            ``Conv2D`` or ``Conv3D`` (any layer whose weight is ``kernel``).
        rate: probability that a kernel entry is dropped, in ``[0, 1)``.
            Defaults to `0.5` (the paper's value).
        seed: integer seed for the masks, or `None` for a random one.
            Defaults to `None`.
        **kwargs: base layer arguments (``name``, ``dtype``, ...). The
            ``dtype`` defaults to the wrapped layer's.

    Example:
    >>> layer = DropConnect(keras.layers.Dense(16, activation="relu"), rate=0.3, seed=1)
    >>> x = keras.random.normal((8, 32))
    >>> tuple(layer(x, training=True).shape)
    (8, 16)
    """

    def __init__(self, layer: keras.layers.Layer, rate: float = 0.5, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(layer, **kwargs)
        rate = check_drop_rate("rate", rate)
        self.seed = check_seed("seed", seed)
        self._rate_weight = add_rate_weight(self, "rate", rate)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    rate = rate_property("rate", check_drop_rate)

    def _effective_kernel(self, kernel: Any, training: bool) -> Any:
        if not training:
            return kernel
        keep_probability = 1.0 - rate_tensor(self._rate_weight, kernel.dtype)
        mask = bernoulli_keep_mask(self.seed_generator, ops.shape(kernel), keep_probability, kernel.dtype)
        return kernel * inverted_scale(mask, keep_probability)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **own_config(self, skip=frozenset({"self", "layer", "kwargs"}))}
