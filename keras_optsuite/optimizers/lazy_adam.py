"""LazyAdam: Adam that updates only the embedding rows a sparse gradient touches."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import ops

from keras_optsuite._validation import check_decay_rate, check_non_negative
from keras_optsuite.optimizers._base import OptsuiteOptimizer, _tf_variable, power
from keras_optsuite.optimizers._wrapper import deduplicate


def _rows(variable: Any, indices: Any) -> Any:
    # sparse_read on this device's copy: never reads the whole table.
    return tf.gather(_tf_variable(variable), indices)


@keras.saving.register_keras_serializable(package="keras_optsuite")
class LazyAdam(OptsuiteOptimizer):
    """Adam with lazy (touched-rows-only) updates for sparse gradients.

    Kingma and Ba, 2015, "Adam: A Method for Stochastic Optimization",
    https://arxiv.org/abs/1412.6980 (Algorithm 1, with the epsilon-hat form
    of section 2, as ``keras.optimizers.Adam``); the lazy variant is
    TensorFlow Addons' ``LazyAdam``.

    Keras's optimizers turn a sparse ``Embedding`` gradient
    (``tf.IndexedSlices``) into arithmetic over the whole table on every
    step (keras-team/keras#19992). For ``IndexedSlices`` gradients LazyAdam
    reads and writes only the rows in the batch: the weights and both
    moments of every other row are left exactly as they are. Rows that
    share an index are summed first (``keras.optimizers.Adam`` squares each
    occurrence separately). Dense gradients get exactly Keras's Adam.

    This is not Adam on sparse data: the moments of a row that is not in
    the batch do not decay, so a rare row keeps its old momentum until it
    is seen again, and the bias correction uses the global step ``t``
    whenever the row is updated. Use it for large embedding tables, where
    the step time of dense Adam grows with the table and not with the batch.

    Update of each row in the batch (every row for a dense gradient), with
    ``t`` the global 1-based step and ``g`` the row's summed gradient:
    ``alpha_t = lr sqrt(1 - beta_2^t) / (1 - beta_1^t)``,
    ``m = beta_1 m + (1 - beta_1) g``, ``v = beta_2 v + (1 - beta_2) g^2``,
    ``w -= alpha_t m / (sqrt(v) + epsilon)``.

    Weight decay is Keras's decoupled form ``w -= lr * weight_decay * w``,
    applied before the Adam step as Keras orders it, to the whole variable
    for a dense gradient and only to the rows in the batch for a sparse one
    (rows that are not trained are not decayed either).

    Args:
        learning_rate: float, schedule or callable. Defaults to `0.001`.
        beta_1: decay of the first-moment average, in [0, 1). Defaults to `0.9`.
        beta_2: decay of the second-moment average, in [0, 1). Defaults to `0.999`.
        epsilon: added to the denominator, >= 0. Defaults to `1e-7`.
        {{base_optimizer_keyword_args}}

    Example:
    >>> model.compile(optimizer=keras_optsuite.optimizers.LazyAdam(1e-3), loss="mse")
    """

    decays_in_update = True

    def __init__(
        self,
        learning_rate: Any = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        name: str = "lazy_adam",
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = check_decay_rate("beta_1", beta_1)
        self.beta_2 = check_decay_rate("beta_2", beta_2)
        self.epsilon = check_non_negative("epsilon", epsilon)

    def _slot_names(self) -> tuple[str, ...]:
        return ("momentum", "velocity")

    def _adam(self, weights, m, v, gradient, learning_rate, t, decay):
        """Decay then one Adam step on the rows of a sparse step; returns the new ``(weights, m, v)``.

        The arithmetic is ``keras.optimizers.Adam``'s, operation for
        operation (as the dense step's in ``_update_variable``), so dense
        steps agree with it to the last bit in float32.
        """
        weights = weights - weights * decay * learning_rate
        alpha = (
            learning_rate * ops.sqrt(1.0 - power(self.beta_2, t)) / (1.0 - power(self.beta_1, t))
        )
        m = m + (gradient - m) * (1.0 - self.beta_1)
        v = v + (ops.square(gradient) - v) * (1.0 - self.beta_2)
        weights = weights - m * alpha / (ops.sqrt(v) + self.epsilon)
        return weights, m, v

    def _update_variable(self, gradient, variable, learning_rate, t):
        # Dense: Keras's Adam, in place (decay only where it applies).
        m = self._slot("momentum", variable)
        v = self._slot("velocity", variable)
        if self._decays(variable):
            self.assign_sub(variable, variable * self._decay_rate(variable, variable.dtype) * learning_rate)
        alpha = (
            learning_rate * ops.sqrt(1.0 - power(self.beta_2, t)) / (1.0 - power(self.beta_1, t))
        )
        self._moving_average(m, gradient, self.beta_1)
        self._moving_average(v, ops.square(gradient), self.beta_2)
        self.assign_sub(variable, m * alpha / (ops.sqrt(v) + self.epsilon))

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        if not isinstance(gradient, tf.IndexedSlices):
            super().update_step(gradient, variable, learning_rate)  # dense: whole variable
            return
        gradient = deduplicate(gradient)
        rows = gradient.indices
        dtype = variable.dtype
        m = self._slot("momentum", variable)
        v = self._slot("velocity", variable)
        new_values = self._adam(
            _rows(variable, rows),
            _rows(m, rows),
            _rows(v, rows),
            ops.cast(gradient.values, dtype),
            ops.cast(learning_rate, dtype),
            ops.cast(self.iterations + 1, dtype),
            self._decay_rate(variable, dtype),
        )
        # Scatter updates of this device's copies (Keras's assign scatters IndexedSlices).
        for target, value in zip((variable, m, v), new_values):
            self.assign(target, tf.IndexedSlices(value, rows, gradient.dense_shape))
