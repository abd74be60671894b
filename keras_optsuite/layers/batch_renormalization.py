"""Batch Renormalization: batch normalization corrected towards the moving statistics."""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from keras_optsuite._validation import check_bool, check_fraction, check_positive, check_range
from keras_optsuite.layers._base import ReplicaMeanStatistics
from keras_optsuite.schedules.ramp import Ramp

Schedule = keras.optimizers.schedules.LearningRateSchedule

# The paper's schedule (section 4): plain batch norm for the first 5k steps,
# then r_max relaxed to 3 by step 40k and d_max to 5 by step 25k.
PAPER_R_MAX = {"start_value": 1.0, "end_value": 3.0, "start_step": 5_000, "end_step": 40_000}
PAPER_D_MAX = {"start_value": 0.0, "end_value": 5.0, "start_step": 5_000, "end_step": 25_000}


def _check_bound(
    name: str, value: Any, low: float, paper: dict[str, Any]
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """A clipping bound: a number >= ``low``, a schedule, or None for the paper's ramp."""
    if value is None:
        return Ramp(**paper)
    if isinstance(value, dict):  # a serialized schedule, from get_config
        value = keras.saving.deserialize_keras_object(value)
    if isinstance(value, Ramp):  # its values lie between its two ends
        check_range(f"{name}.start_value", value.start_value, low=low)
        check_range(f"{name}.end_value", value.end_value, low=low)
        return value
    if isinstance(value, Schedule):
        return value
    return check_range(name, value, low=low)


@keras.saving.register_keras_serializable(package="keras_optsuite")
class BatchRenormalization(ReplicaMeanStatistics, keras.layers.BatchNormalization):
    """Batch normalization whose training output is corrected towards the moving statistics.

    Ioffe, 2017, "Batch Renormalization: Towards Reducing Minibatch
    Dependence in Batch-Normalized Models", https://arxiv.org/abs/1702.03275
    (Algorithm 1). Batch normalization trains on the minibatch's mean
    ``mu_B`` and standard deviation ``sigma_B = sqrt(var_B + epsilon)`` but
    predicts with moving averages ``mu``, ``sigma``: with small or non-i.i.d.
    minibatches the two differ. Batch renormalization trains with the
    affine correction that maps one onto the other, clipped:

    - ``r = stop_gradient(clip(sigma_B / sigma, 1 / r_max, r_max))``;
    - ``d = stop_gradient(clip((mu_B - mu) / sigma, -d_max, d_max))``;
    - ``y = gamma * ((x - mu_B) / sigma_B * r + d) + beta``;
    - then ``mu += (1 - renorm_momentum) (mu_B - mu)`` and
      ``sigma += (1 - renorm_momentum) (sigma_B - sigma)``.

    Per channel of ``axis``, reducing over every other axis. With
    ``r_max = 1, d_max = 0`` it is batch normalization; without clipping,
    the training output equals the inference output ``gamma (x - mu) /
    sigma + beta``. Gradients flow through ``mu_B`` and ``sigma_B`` (not
    through ``r`` and ``d``).

    Two pairs of moving statistics, as in Keras's ``renorm=True`` (this
    layer is ``keras.layers.BatchNormalization`` with scheduled clipping):
    ``renorm_mean``/``renorm_stddev`` (the ``mu``, ``sigma`` above, updated
    with ``renorm_momentum``) give ``r`` and ``d``; ``moving_mean`` and
    ``moving_stddev`` (updated the same way with ``momentum``) are used at
    inference, where ``y = gamma (x - moving_mean) / moving_stddev + beta``
    (``moving_variance = moving_stddev**2 - epsilon`` is kept for Keras's
    inference path). With ``renorm_momentum == momentum`` both pairs are the
    paper's single ``mu``, ``sigma``.

    Clipping schedule. ``r_max`` and ``d_max`` are numbers or schedules
    (any ``keras.optimizers.schedules.LearningRateSchedule``, e.g.
    :class:`keras_optsuite.schedules.Ramp`) evaluated at the layer's own
    0-based training-step counter ``iterations``: a non-trainable int64
    weight incremented once per training call (and saved with the model).
    By default they follow the paper (section 4): ``r_max`` stays 1 and
    ``d_max`` 0 (batch normalization) for the first 5,000 training steps,
    then rise linearly to ``r_max = 3`` at step 40,000 and ``d_max = 5`` at
    step 25,000. Those step counts are the paper's (Inception on ImageNet,
    minibatches of 32); for a short run pass your own ``Ramp`` or numbers
    (``r_max=3.0, d_max=5.0`` corrects from the first step). A schedule's
    value is used as at least 1 (``r_max``) and at least 0 (``d_max``).

    Distribution. Under ``MirroredStrategy`` the batch statistics ``mu_B``,
    ``sigma_B`` (and so ``r``, ``d``) are per replica, unless
    ``synchronized=True``; the moving averages are the mean of the replicas'
    updates (Keras 3.15's own ``BatchNormalization`` keeps one moving mean
    per replica). ``iterations`` counts steps, not replicas.

    Mixed precision: statistics are computed in float32 (float64 for a
    float64 layer) and the output is in the layer's compute dtype.

    Args:
        r_max: the largest correction ``r`` (and 1 / the smallest), >= 1:
            a number or a schedule. Defaults to `None`: the paper's
            ``Ramp(1.0, 3.0, start_step=5000, end_step=40000)``.
        d_max: the largest ``|d|``, >= 0: a number or a schedule. Defaults
            to `None`: the paper's ``Ramp(0.0, 5.0, start_step=5000,
            end_step=25000)``.
        axis: the channel axis (a statistic per channel). Defaults to `-1`.
        momentum: the moving-average coefficient of the inference
            statistics, in [0, 1]. Defaults to `0.99`.
        epsilon: added to the variance, > 0. Defaults to `1e-3`.
        center: whether to add ``beta``. Defaults to `True`.
        scale: whether to multiply by ``gamma``. Defaults to `True`.
        beta_initializer: Defaults to `"zeros"`.
        gamma_initializer: Defaults to `"ones"`.
        moving_mean_initializer: initializer of both moving means. Defaults
            to `"zeros"`.
        moving_variance_initializer: its square root initializes both
            moving standard deviations. Defaults to `"ones"`.
        beta_regularizer: Defaults to `None`.
        gamma_regularizer: Defaults to `None`.
        beta_constraint: Defaults to `None`.
        gamma_constraint: Defaults to `None`.
        renorm_momentum: the moving-average coefficient of ``mu``, ``sigma``
            used for ``r`` and ``d``, in [0, 1]. It affects training: too
            small is noisy, too large stale. Defaults to `0.99`.
        synchronized: if `True`, the batch statistics are all-reduced over
            the replicas (TensorFlow backend). Defaults to `False`.
        **kwargs: base layer arguments (``name``, ``dtype``, ...).

    Example:
    >>> layer = BatchRenormalization(r_max=Ramp(1.0, 3.0, 100, 1000), d_max=2.0)
    >>> y = layer(keras.ops.ones((8, 4)), training=True)
    >>> int(layer.iterations.numpy())
    1
    """

    def __init__(
        self,
        r_max: float | keras.optimizers.schedules.LearningRateSchedule | None = None,
        d_max: float | keras.optimizers.schedules.LearningRateSchedule | None = None,
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
        renorm_momentum: float = 0.99,
        synchronized: bool = False,
        **kwargs: Any,
    ) -> None:
        r_max = _check_bound("r_max", r_max, 1.0, PAPER_R_MAX)
        d_max = _check_bound("d_max", d_max, 0.0, PAPER_D_MAX)
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
            renorm=True,
            renorm_clipping={},  # unused: _renorm_correction_and_moments clips
            renorm_momentum=check_fraction("renorm_momentum", renorm_momentum),
            synchronized=check_bool("synchronized", synchronized),
            **kwargs,
        )
        self.r_max = r_max
        self.d_max = d_max
        self.iterations: Any = None

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self.iterations = self.add_weight(
            shape=(),
            dtype="int64",
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
            name="iterations",
        )

    def _bound(
        self, bound: float | keras.optimizers.schedules.LearningRateSchedule, step: Any, floor: float, dtype: Any
    ) -> Any:
        value = bound(step) if isinstance(bound, Schedule) else bound
        return ops.maximum(ops.cast(value, dtype), floor)

    # Keras 3.15's BatchNormalization clips r and d with the fixed numbers of
    # its `renorm_clipping` dict in this private method; overriding it is the
    # narrowest way to clip with scheduled bounds (keras is pinned < 3.16).
    # Keras calls it once per training call, so it also counts the steps.
    def _renorm_correction_and_moments(self, mean: Any, variance: Any) -> tuple[Any, Any, Any, Any]:
        dtype = mean.dtype
        step = ops.convert_to_tensor(self.iterations)
        r_max = self._bound(self.r_max, step, 1.0, dtype)
        d_max = self._bound(self.d_max, step, 0.0, dtype)
        self.iterations.assign_add(1)

        stddev = ops.sqrt(variance + self.epsilon)  # sigma_B
        renorm_mean = ops.cast(self.renorm_mean, dtype)  # mu
        # Keras's floor on sigma, against a division by 0 early in training.
        renorm_stddev = ops.maximum(ops.cast(self.renorm_stddev, dtype), math.sqrt(self.epsilon))
        r = ops.stop_gradient(ops.clip(stddev / renorm_stddev, 1.0 / r_max, r_max))
        d = ops.stop_gradient(ops.clip((mean - renorm_mean) / renorm_stddev, -d_max, d_max))
        return r, d, mean, variance

    def _update_renorm_statistics(self, mean: Any, variance: Any) -> None:
        super()._update_renorm_statistics(mean, variance)
        # Keras derives moving_variance from the replica's own new
        # moving_stddev; under MirroredStrategy the mean of those is not the
        # square of the averaged moving_stddev. Derive it again from the
        # averaged value, as inference reads moving_variance.
        moving_stddev = ops.convert_to_tensor(self.moving_stddev)
        self.moving_variance.assign(ops.relu(moving_stddev * moving_stddev - self.epsilon))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        del config["renorm"], config["renorm_clipping"]
        for name in ("r_max", "d_max"):
            bound = getattr(self, name)
            if isinstance(bound, Schedule):
                bound = keras.saving.serialize_keras_object(bound)
            config[name] = bound
        return config
