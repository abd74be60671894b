"""Dropping whole residual branches: per batch (stochastic depth) and per example (drop path)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_optsuite._config import own_config
from keras_optsuite._validation import check_drop_rate, check_fraction, check_seed
from keras_optsuite.layers._base import (
    add_rate_weight,
    bernoulli_keep_mask,
    inverted_scale,
    is_training,
    rate_property,
    rate_tensor,
)


@keras.saving.register_keras_serializable(package="keras_optsuite")
class StochasticDepth(keras.layers.Layer):
    """Stochastic depth: skip a residual branch for the whole batch with probability ``1 - p``.

    Huang, Sun, Liu, Sedra, Weinberger, 2016, "Deep Networks with Stochastic
    Depth", https://arxiv.org/abs/1603.09382 (section 3). Called on
    ``[shortcut, residual]`` (the block's identity path and its residual
    branch ``f(x)``), with ``b ~ Bernoulli(p)`` drawn once per batch::

        training:   shortcut + b * residual
        inference:  shortcut + p * residual

    so the inference output is the expectation of the training output: this
    is the paper's rule, not the identity (for the per-example, inverted
    variant, ``x + DropPath(rate)(f(x))``, see :class:`DropPath`). The paper
    decays ``p`` linearly with depth, from 1 at the input to 0.5 at the last
    block: give each block its own ``survival_probability``.

    ``survival_probability`` is held in a variable: assigning it (as
    :class:`keras_optsuite.callbacks.DropoutScheduler` does, with
    ``attribute="survival_probability"``) takes effect at the next step
    without retracing. Under ``tf.distribute`` each replica draws its own
    ``b``.

    Args:
        survival_probability: ``p``, the probability of keeping the branch,
            in [0, 1]. Defaults to `0.5` (the paper's value for the last block).
        seed: seed of the layer's ``keras.random.SeedGenerator``, or None.

    Example:
    >>> x = keras.Input((32,))
    >>> branch = keras.layers.Dense(32, activation="relu")(x)
    >>> y = StochasticDepth(survival_probability=0.8)([x, branch])
    """

    def __init__(self, survival_probability: float = 0.5, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._survival_probability_weight = add_rate_weight(
            self, "survival_probability", check_fraction("survival_probability", survival_probability)
        )
        self.seed = check_seed("seed", seed)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    survival_probability = rate_property("survival_probability", check_fraction)

    def call(self, inputs: Any, training: Any = None) -> Any:
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            raise ValueError(
                "StochasticDepth is called on [shortcut, residual], got "
                f"inputs={inputs!r}"
            )
        shortcut, residual = inputs
        survival = rate_tensor(self._survival_probability_weight, residual.dtype)
        if is_training(training):
            gate = bernoulli_keep_mask(self.seed_generator, (), survival, residual.dtype)
        else:
            gate = survival
        return shortcut + gate * residual

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape[0]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **own_config(self)}


@keras.saving.register_keras_serializable(package="keras_optsuite")
class DropPath(keras.layers.Layer):
    """Drop path: zero a residual branch per example with probability ``rate``, scaled to keep its mean.

    The per-sample form of stochastic depth used by modern residual
    networks and vision transformers (Larsson, Maire, Shakhnarovich, 2017,
    "FractalNet: Ultra-Deep Neural Networks without Residuals",
    https://arxiv.org/abs/1605.07648, section 3.2 "drop-path"; as written
    in timm's ``drop_path``). Applied to the residual branch,
    ``x + DropPath(rate)(f(x))``, with ``m_i ~ Bernoulli(1 - rate)`` drawn
    per example ``i``::

        training:   out_i = m_i / (1 - rate) * f(x)_i
        inference:  out_i = f(x)_i

    so the expected training output equals the inference output, which is
    the identity. ``rate`` is held in a variable: assigning it (as
    :class:`keras_optsuite.callbacks.DropoutScheduler` does) takes effect at
    the next step without retracing. Under ``tf.distribute`` each replica
    draws its own masks.

    Args:
        rate: the probability of dropping an example's branch, in [0, 1).
            Defaults to `0.1`.
        seed: seed of the layer's ``keras.random.SeedGenerator``, or None.

    Example:
    >>> x = keras.Input((32,))
    >>> branch = keras.layers.Dense(32, activation="relu")(x)
    >>> y = keras.layers.Add()([x, DropPath(0.1)(branch)])
    """

    def __init__(self, rate: float = 0.1, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._rate_weight = add_rate_weight(self, "rate", check_drop_rate("rate", rate))
        self.seed = check_seed("seed", seed)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    rate = rate_property("rate", check_drop_rate)

    def call(self, inputs: Any, training: Any = None) -> Any:
        if not is_training(training):
            return inputs
        keep = 1.0 - rate_tensor(self._rate_weight, "float32")
        per_example = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        mask = bernoulli_keep_mask(self.seed_generator, per_example, keep, "float32")
        return inputs * ops.cast(inverted_scale(mask, keep), inputs.dtype)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **own_config(self)}
