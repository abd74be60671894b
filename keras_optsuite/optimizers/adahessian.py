"""AdaHessian: Adam with the Hutchinson estimate of the Hessian diagonal as its second moment."""

from __future__ import annotations

import random
from typing import Any, ClassVar, Sequence

import keras
import tensorflow as tf
from keras import ops

from keras_optsuite._validation import (
    check_bool,
    check_choice,
    check_decay_rate,
    check_fraction,
    check_non_negative,
    check_seed,
)
from keras_optsuite.optimizers._base import (
    CrossVariableOptimizer,
    _tf_variable,
    dense_gradient,
    power,
)
from keras_optsuite.optimizers.closure import (
    HVP_MODES,
    PendingClosure,
    pending_closure,
    replica_id,
)

#: The faster mode in ``benchmarks/hvp_modes.py`` (2 CPUs, TensorFlow 2.21):
#: 1.85x vs 2.49x a plain gradient on a 1.07M-parameter MLP, 2.11x vs 2.49x
#: on a small convnet (1.46x vs 2.22x and 1.85x vs 2.64x under XLA).
DEFAULT_HVP_MODE = "back_over_back"


def hutchinson_estimate(probe: Any, product: Any) -> Any:
    """``z * (H z)``: one Hutchinson sample of ``diag(H)``.

    Unbiased for a Rademacher ``z``: ``E[z_i (H z)_i] = H_ii``, because
    ``E[z_i z_j] = 0`` for ``i != j``.

    Example:

    >>> hutchinson_estimate(tf.constant([1.0, -1.0]), tf.constant([3.0, -1.0])).numpy()
    array([3., 1.], dtype=float32)
    """
    return probe * product


def spatial_average(estimate: Any) -> Any:
    """Mean of ``estimate`` over the spatial axes of a convolution kernel.

    Keras kernels are ``(*spatial, in, out)``: rank 3 (``Conv1D``) averages
    axis 0, rank 4 (``Conv2D``) axes 0 and 1, rank 5 (``Conv3D``) axes 0-2,
    keeping the shape broadcastable. Ranks 0-2 (biases, ``Dense`` kernels,
    embeddings) are returned unchanged. This is the reference code's rule
    (its rank-3 tensors are taken to be 1-D convolutions; a rank-3 kernel
    that is not a convolution, such as ``MultiHeadAttention``'s, is averaged
    the same way: pass ``spatial_average=False`` to avoid it).
    """
    rank = len(estimate.shape)
    if rank < 3:
        return estimate
    return ops.mean(estimate, axis=tuple(range(rank - 2)), keepdims=True)


@keras.saving.register_keras_serializable(package="keras_optsuite")
class AdaHessian(CrossVariableOptimizer):
    """AdaHessian.

    Yao, Gholami, Shen, Mustafa, Keutzer and Mahoney, 2021, "ADAHESSIAN: An
    Adaptive Second Order Optimizer for Machine Learning", AAAI 2021,
    https://arxiv.org/abs/2006.00719 (Algorithm 1, with the defaults and the
    convolution averaging of the authors' reference code).

    Each step draws a Rademacher vector ``z`` (entries +-1), gets ``H z`` on
    the same batch at the current weights (a Hessian-vector product through
    the closure train step, summed across replicas), and forms the
    Hutchinson diagonal ``D = |z * H z|``, averaged over the spatial axes of
    convolution kernels when ``spatial_average`` (:func:`spatial_average`).
    Then, with ``t`` the 1-based step and ``k = hessian_power``:
    ``m = beta_1 m + (1 - beta_1) g``, ``v = beta_2 v + (1 - beta_2) D^2``,
    ``w = w - lr (m / (1 - beta_1^t)) / ((sqrt(v) / sqrt(1 - beta_2^t))^k + epsilon)``.
    ``g`` is the gradient Keras hands to ``apply`` (so ``clipnorm`` and the
    other base options act on it as for any optimizer). Weight decay is
    decoupled (``w -= lr weight_decay w``, as the reference code does),
    applied by the base class after ``H z`` was taken at the undecayed
    weights.

    Needs a closure: train with ``model.fit`` after ``import keras_optsuite``
    (:mod:`keras_optsuite.optimizers.closure`); ``apply`` alone raises
    ``ClosureRequiredError``. Cost per step: the train step's gradient plus
    one Hessian-vector product (about 1.9 gradients' worth with
    back-over-back; ``benchmarks/hvp_modes.py``), about 2.5x Adam's whole
    ``fit`` step on a 1M-parameter MLP (``benchmarks/step_cost.py``). A step
    whose product overflows under ``mixed_float16`` loss scaling leaves the
    weights and moments unchanged (``iterations`` still advances). Memory:
    two float tensors per parameter (``m`` and ``v``) plus the transient
    ``z`` and ``H z``.

    Where the curvature is ~0 (inputs that are almost always zero) the step
    is about ``lr g / epsilon``: the default ``epsilon=1e-4`` then amplifies
    float32 rounding, and ``1e-2`` (the registry's tuned value) is steadier.

    The probe vectors come from stateless random ops seeded by
    ``(probe_seed, iterations, variable index)``: every replica draws the same
    ``z`` (so the replica sum is the full batch's ``H z``), ``probe_seed`` is
    optimizer state saved with the model, and with ``seed=None`` it is drawn
    from Python's ``random`` when the optimizer is built, which
    ``keras.utils.set_random_seed`` seeds.

    Sparse (``IndexedSlices``) gradients and products are densified: every
    row of an embedding gets ``m`` and ``v`` updates on every step, as in the
    reference code.

    Args:
        learning_rate: float, schedule or callable. Defaults to `0.15` (the
            reference code's default).
        beta_1: decay of the gradient average. Defaults to `0.9`.
        beta_2: decay of the average of ``D^2``. Defaults to `0.999`.
        epsilon: added to the denominator, >= 0. Defaults to `1e-4`.
        hessian_power: ``k`` in ``[0, 1]``; 1 is the paper's method, 0 is
            momentum SGD (with ``1 + epsilon`` in the denominator). Defaults to `1.0`.
        spatial_average: average ``D`` over the spatial axes of convolution
            kernels (rank >= 3). Defaults to `True`.
        hvp_mode: ``"back_over_back"`` or ``"forward_over_back"``: how the
            Hessian-vector product differentiates twice (same result).
            Defaults to the faster one measured here, `"back_over_back"`.
        seed: integer seed of the probe vectors, or None to draw one at build
            time (reproducible after ``keras.utils.set_random_seed``).
            Defaults to `None`.
        {{base_optimizer_keyword_args}}

    Example:
    >>> import keras_optsuite  # installs the closure train step
    >>> model.compile(optimizer=AdaHessian(learning_rate=0.15), loss="mse")
    >>> model.fit(x, y)
    """

    built: bool  # set by keras.optimizers.Optimizer
    needs_closure: ClassVar[bool] = True
    needs_hessian_vector_product: ClassVar[bool] = True

    def __init__(
        self,
        learning_rate: Any = 0.15,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-4,
        hessian_power: float = 1.0,
        spatial_average: bool = True,
        hvp_mode: str = DEFAULT_HVP_MODE,
        seed: int | None = None,
        name: str = "adahessian",
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = check_decay_rate("beta_1", beta_1)
        self.beta_2 = check_decay_rate("beta_2", beta_2)
        self.epsilon = check_non_negative("epsilon", epsilon)
        self.hessian_power = check_fraction("hessian_power", hessian_power)
        self.spatial_average = check_bool("spatial_average", spatial_average)
        self.hvp_mode = check_choice("hvp_mode", hvp_mode, HVP_MODES)
        self.seed = check_seed("seed", seed)
        self._closures: dict[int, PendingClosure] = {}  # by replica, set during apply
        self._curvature: dict[int, tuple[dict[int, Any], Any]] = {}  # by replica, during apply

    def _slot_names(self) -> tuple[str, ...]:
        return ("momentum", "hessian_diagonal_squared")

    def build(self, var_list: list) -> None:
        if self.built:
            return
        super().build(var_list)
        initial = self.seed if self.seed is not None else random.randint(1, 2**31 - 1)
        self._probe_seed = self.add_variable(
            shape=(),
            dtype="int64",
            initializer=lambda shape, dtype="int64": tf.fill(shape, tf.constant(initial, "int64")),
            name="probe_seed",
        )

    # -- curvature -------------------------------------------------------------
    def _probe_vectors(self, variables: Sequence[Any]) -> list:
        """The Rademacher vectors ``z`` of this step, one per variable (override to inject).

        Called once per step in the replica context, before the update, with
        every variable the step was given; ``self.iterations`` is the 0-based
        step number.
        """
        seed = tf.convert_to_tensor(_tf_variable(self._probe_seed))
        step = tf.cast(tf.convert_to_tensor(_tf_variable(self.iterations)), tf.int64)
        count = len(variables)
        vectors = []
        for index, variable in enumerate(variables):
            pair = tf.stack([seed, step * count + index])
            bits = tf.random.stateless_uniform(
                variable.shape, seed=pair, minval=0, maxval=2, dtype=tf.int64
            )
            vectors.append(tf.cast(2 * bits - 1, variable.dtype))
        return vectors

    def _diagonal(self, probe: Any, product: Any) -> Any:
        """``D`` for one variable: ``|z * H z|``, spatially averaged for kernels."""
        estimate = ops.abs(hutchinson_estimate(probe, product))
        return spatial_average(estimate) if self.spatial_average else estimate

    def apply(self, grads: list, trainable_variables: list | None = None) -> None:
        replica = replica_id()
        pending = pending_closure(self)
        if len(grads) == 0:
            return
        if trainable_variables is None:
            if not self.built:  # Keras's own error: build first or pass the variables
                return super().apply(grads, trainable_variables)
            variables = list(self._trainable_variables)
        else:
            variables = list(trainable_variables)
            if not self.built:
                with keras.name_scope(self.name, caller=self):
                    self.build(variables)
                self.built = True

        # H z at the current weights, before the base class applies weight decay.
        probes = self._probe_vectors(variables)
        assert pending.hessian_vector_product is not None  # needs_hessian_vector_product is set
        _, products, _ = pending.hessian_vector_product(probes)
        products = [
            tf.zeros_like(z) if h is None else ops.cast(dense_gradient(h), z.dtype)
            for z, h in zip(probes, products)
        ]
        pairs = self._all_reduce_sum_gradients(
            list(zip(products, [_tf_variable(v) for v in variables]))
        )
        diagonals = {
            self._get_variable_index(variable): self._diagonal(z, ops.cast(hz, z.dtype))
            for variable, z, (hz, _) in zip(variables, probes, pairs)
        }
        finite = None
        if pending.skips_non_finite:
            # Loss scaling: a product that overflowed skips the step.
            finite = ops.all(ops.stack([ops.all(ops.isfinite(d)) for d in diagonals.values()]))
        self._curvature[replica] = (diagonals, finite)
        try:
            super().apply(grads, trainable_variables)
        finally:
            self._curvature.pop(replica, None)

    # -- the step ----------------------------------------------------------------
    def _update_all(self, grads, variables, learning_rate, t):
        diagonals, finite = self._curvature[replica_id()]
        assignments = []
        for g, variable in zip(grads, variables):
            dtype = variable.dtype
            step_t = ops.cast(t, dtype)
            lr = ops.cast(learning_rate, dtype)
            m_slot = self._slot("momentum", variable)
            v_slot = self._slot("hessian_diagonal_squared", variable)
            diagonal = ops.cast(diagonals[self._get_variable_index(variable)], dtype)
            m = self.beta_1 * m_slot + (1.0 - self.beta_1) * g
            v = self.beta_2 * v_slot + (1.0 - self.beta_2) * ops.square(diagonal)
            first_correction = 1.0 - power(self.beta_1, step_t)
            second_correction = 1.0 - power(self.beta_2, step_t)
            scale = ops.sqrt(v) / ops.sqrt(second_correction)
            denominator = ops.power(scale, self.hessian_power) + self.epsilon
            x = ops.convert_to_tensor(variable)
            new_x = x - lr * (m / first_correction) / denominator
            for target, value in ((m_slot, m), (v_slot, v), (variable, new_x)):
                value = ops.broadcast_to(value, target.shape)
                if finite is not None:
                    value = ops.where(finite, value, ops.convert_to_tensor(target))
                assignments.append((target, value))
        return assignments
