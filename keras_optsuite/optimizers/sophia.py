"""Sophia: second-order clipped stochastic optimization."""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_optsuite._validation import (
    check_choice,
    check_decay_rate,
    check_positive,
    check_positive_int,
    check_seed,
)
from keras_optsuite.optimizers._base import OptsuiteOptimizer, assign_cast, dense_gradient, snapshot
from keras_optsuite.optimizers.closure import (
    ClosureRequiredError,
    PendingClosure,
    pending_closure,
    replica_id,
)

ESTIMATORS = ("gauss_newton_bartlett", "hutchinson")

# Streams folded into the seed so the draws of different purposes never coincide.
_PROBE_STREAM, _LABEL_STREAM = 1, 2
# Fixed, not "auto_select" (which XLA may resolve differently). Only integer
# draws: XLA's and TensorFlow's kernels agree on them but not on float draws
# (measured: stateless_uniform floats and stateless_normal differ under
# jit_compile), so floats are built from integers below.
_ALGORITHM = "philox"
_RESOLUTION = 2**24  # uniform draws are (k + 1/2) / 2^24, k in [0, 2^24)


def _fold(seed: Any, value: Any) -> Any:
    return tf.random.experimental.stateless_fold_in(seed, tf.cast(value, "int64"), alg=_ALGORITHM)


def _open_uniform(shape: Any, seed: Any, dtype: Any) -> Any:
    """Uniform on (0, 1), the same with and without XLA."""
    bits = tf.random.stateless_uniform(shape, seed, 0, _RESOLUTION, "int32", alg=_ALGORITHM)
    return (tf.cast(bits, dtype) + 0.5) / _RESOLUTION


def _standard_normal(shape: Any, seed: Any, dtype: Any) -> Any:
    """N(0, 1) by Box-Muller from two uniform draws (tails cut at 5.9 sigma)."""
    radius = tf.sqrt(-2.0 * tf.math.log(_open_uniform(shape, _fold(seed, 0), dtype)))
    return radius * tf.cos(2.0 * np.pi * _open_uniform(shape, _fold(seed, 1), dtype))


def _constant(value: float, dtype: Any) -> Any:
    # Not ops.cast: a Python float cast to float64 would go through float32.
    return tf.constant(value, dtype=dtype)


def _sum_over_replicas(tensors: list) -> list:
    """One batched all-reduce (identity outside ``tf.distribute``)."""
    context = tf.distribute.get_replica_context()
    if context is None:
        return tensors
    return list(context.all_reduce(tf.distribute.ReduceOp.SUM, tensors))


def output_distribution(loss: Any) -> tuple[str, bool]:
    """The predictive distribution behind ``loss``: ``("categorical", from_logits)``
    or ``("gaussian", False)``.

    Accepts the Keras losses ``sparse_categorical_crossentropy``,
    ``categorical_crossentropy`` and ``mean_squared_error`` as names, functions
    or ``keras.losses`` objects; raises ``ValueError`` for anything else.

    Example:

    >>> output_distribution(keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ('categorical', True)
    """
    resolved = keras.losses.get(loss) if isinstance(loss, str) else loss
    categorical = (keras.losses.sparse_categorical_crossentropy, keras.losses.categorical_crossentropy)
    if isinstance(resolved, (keras.losses.SparseCategoricalCrossentropy, keras.losses.CategoricalCrossentropy)):
        options = getattr(resolved, "_fn_kwargs", {})
        if options.get("ignore_class") is not None:
            raise ValueError(
                f'estimator="gauss_newton_bartlett" does not support ignore_class='
                f'{options["ignore_class"]!r} in loss={loss!r}; use estimator="hutchinson"'
            )
        return "categorical", bool(options.get("from_logits", False))
    if isinstance(resolved, keras.losses.MeanSquaredError) or resolved is keras.losses.mean_squared_error:
        return "gaussian", False
    if resolved in categorical:
        return "categorical", False
    raise ValueError(
        f'estimator="gauss_newton_bartlett" samples labels from the model\'s predictive '
        f"distribution and supports sparse/categorical cross-entropy and mean squared error; "
        f'got loss={loss!r}. Use Sophia(estimator="hutchinson", ...) for any other loss.'
    )


@keras.saving.register_keras_serializable(package="keras_optsuite")
class Sophia(OptsuiteOptimizer):
    """Sophia: second-order clipped stochastic optimization.

    Liu, Li, Hall, Liang and Ma, 2023, "Sophia: A Scalable Stochastic
    Second-order Optimizer for Language Model Pre-training",
    https://arxiv.org/abs/2305.14342 (Algorithm 3).

    Per parameter, with ``g`` the gradient (summed across replicas) and ``t``
    the 1-based step:

    * ``m = beta_1 m + (1 - beta_1) g`` every step;
    * on steps ``t = 1, 1 + k, 1 + 2k, ...`` (``k = hessian_update_interval``)
      a diagonal curvature estimate ``h_hat`` is computed at the current
      weights on the same batch and ``h = beta_2 h + (1 - beta_2) h_hat``;
      the other steps keep ``h`` and do not pay for the estimate
      (``tf.cond`` on the step);
    * decoupled weight decay ``w = w - lr * weight_decay * w`` (after the
      estimate, as in Algorithm 3), then
      ``w = w - lr * clip(m / max(rho * h, epsilon), -1, 1)``.

    Estimators:

    * ``"gauss_newton_bartlett"`` (Sophia-G): labels ``y_hat`` are sampled
      from the model's predictive distribution (softmax of the outputs for
      sparse/categorical cross-entropy; ``y_pred + N(0, d/2)`` for mean squared
      error over ``d`` outputs, the Gaussian whose negative log-likelihood is
      that loss) and ``h_hat = B * g_hat * g_hat`` with ``g_hat`` the gradient of
      the mean loss on the sampled labels over the ``B`` predictions of the
      batch; ``E[h_hat]`` is the diagonal of the Gauss-Newton matrix. Sample
      weights ``w_i`` enter as ``sqrt(w_i)`` so that the expectation is the
      Gauss-Newton matrix of the weighted loss.
    * ``"hutchinson"`` (Sophia-H): ``h_hat = u * (H u)`` with ``u`` Rademacher
      (the paper draws ``u`` Gaussian; both are unbiased for the diagonal,
      Rademacher with lower variance), ``H`` the Hessian of the training loss.
      Works with any loss; ``h_hat`` may be negative, where
      ``max(rho * h, epsilon)`` turns the step into ``lr * sign(m)``.

    Conventions, checked against the authors' released ``SophiaG``: it
    computes ``sign(m) * min(|m| / (rho * bs * h' + 1e-15), 1)`` with ``h'`` the
    moving average of ``g_hat * g_hat`` and ``bs`` the number of predictions
    per step. Here ``B`` is inside ``h_hat`` (the paper's form), so ``rho *
    h`` equals their ``rho * bs * h'`` and their ``rho`` carries over
    unchanged; the paper's ``max(rho * h, epsilon)`` replaces their ``+ 1e-15``
    because the Hutchinson estimate can be negative. Their training script
    first refreshes ``h`` after step ``k`` (the first ``k`` steps are sign
    momentum steps); this follows Algorithm 3 and refreshes at step 1.

    Needs a closure (``model.fit`` provides it after ``import
    keras_optsuite``; :mod:`keras_optsuite.optimizers.closure`). Under
    ``tf.distribute`` each replica computes its part of the estimate and one
    all-reduce outside the ``tf.cond`` sums it together with the gradients (a
    collective inside a ``cond`` branch cannot be traced per replica); the
    probe vectors ``u`` are the same on every replica and each replica takes
    its rows of the batch's label noise (:meth:`sample_targets`), so the
    result does not depend on the number of replicas (for Sophia-G: when the
    batch splits evenly).

    Memory: two tensors per parameter (``m``, ``h``), as Adam, plus transient
    probe vectors / products on refresh steps. Cost: every step one gradient;
    every ``k``-th step also one forward/backward pass (Gauss-Newton-Bartlett)
    or one Hessian-vector product, about two backward passes (Hutchinson).
    Measured by ``benchmarks/step_cost.py``'s MLP (1.07M parameters, batch
    128, CPU): whole ``fit`` step 1.27x Adam's for Sophia-G and 1.35x for
    Sophia-H with ``k = 10``; 1.69x and 2.69x with ``k = 1``. Under
    ``tf.distribute`` the all-reduce carries the estimate buffer on every
    step (zeros between refreshes): twice the gradient's traffic.

    Args:
        learning_rate: step size ``lr``, a float, schedule or callable.
            Defaults to `1e-4` (the released code's default).
        beta_1: momentum decay, in [0, 1). Defaults to `0.965`.
        beta_2: decay of the curvature average (applied once per refresh),
            in [0, 1). Defaults to `0.99`.
        rho: ``rho`` (the paper's ``gamma``), > 0; larger values clip fewer
            coordinates. Defaults to `0.04` (the released GPT-2 setting).
        epsilon: floor of the denominator, > 0. Defaults to `1e-12`.
        estimator: ``"gauss_newton_bartlett"`` or ``"hutchinson"``. Defaults
            to `"gauss_newton_bartlett"`.
        hessian_update_interval: ``k``, steps between curvature refreshes,
            >= 1. Defaults to `10`.
        seed: seed of the probe vectors and sampled labels (an integer >= 0,
            or `None` for a random one; the seed state is saved with the
            optimizer).
        {{base_optimizer_keyword_args}}

    Example:

    >>> import keras_optsuite
    >>> model.compile(optimizer=Sophia(learning_rate=1e-3), loss="sparse_categorical_crossentropy")
    >>> model.fit(x, y)  # the closure train step supplies the curvature pass
    """

    needs_closure: ClassVar[bool] = True
    needs_hessian_vector_product: ClassVar[bool] = True
    # Weight decay is applied inside the step, after the curvature pass, which
    # must see the weights of step t (Algorithm 3), not the decayed ones.
    decays_in_update: ClassVar[bool] = True

    def __init__(
        self,
        learning_rate: Any = 1e-4,
        beta_1: float = 0.965,
        beta_2: float = 0.99,
        rho: float = 0.04,
        epsilon: float = 1e-12,
        estimator: str = "gauss_newton_bartlett",
        hessian_update_interval: int = 10,
        seed: int | None = None,
        name: str = "sophia",
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = check_decay_rate("beta_1", beta_1)
        self.beta_2 = check_decay_rate("beta_2", beta_2)
        self.rho = check_positive("rho", rho)
        self.epsilon = check_positive("epsilon", epsilon)
        self.estimator = check_choice("estimator", estimator, ESTIMATORS)
        self.hessian_update_interval = check_positive_int("hessian_update_interval", hessian_update_interval)
        self.seed = check_seed("seed", seed)
        self._closures: dict[int, PendingClosure] = {}  # by replica, set during apply

    def _slot_names(self) -> tuple[str, ...]:
        return ("momentum", "hessian")

    def build(self, var_list: list) -> None:
        if self.built:
            return
        super().build(var_list)
        with self._distribution_strategy.scope():
            self._seed_generator = keras.random.SeedGenerator(self.seed, name="sophia_seed")
        # Read (never advanced): each draw folds the step in, so the draws are
        # the same on every replica and after a save/load.
        self._track_variable(self._seed_generator.state)

    # -- the step ----------------------------------------------------------------
    def apply(self, grads: list, trainable_variables: list | None = None) -> Any:
        pending_closure(self)
        return super().apply(grads, trainable_variables)

    def _backend_update_step(self, grads: list, trainable_variables: list, learning_rate: Any) -> None:
        variables = list(trainable_variables)
        grads = [ops.cast(dense_gradient(g), v.dtype) for g, v in zip(grads, variables)]
        pending = self._closures[replica_id()]
        step = snapshot(self.iterations)
        refresh = tf.equal(tf.math.floormod(step, self.hessian_update_interval), 0)
        count_dtype = "float64" if any(v.dtype == "float64" for v in variables) else "float32"

        def estimate() -> tuple[list, Any]:
            pieces, count = self._local_estimate(pending, variables, step)
            return [ops.cast(p, v.dtype) for p, v in zip(pieces, variables)], ops.cast(count, count_dtype)

        def skip() -> tuple[list, Any]:
            return [tf.zeros_like(v.value) for v in variables], tf.zeros((), count_dtype)

        pieces, count = tf.cond(refresh, estimate, skip)
        # Gradients and this replica's part of the estimate in one collective,
        # outside the cond (every replica reaches it on every step).
        reduced = _sum_over_replicas([*grads, *pieces, count])
        n = len(variables)
        grads, pieces, count = reduced[:n], reduced[n : 2 * n], reduced[2 * n]
        if self.estimator == "gauss_newton_bartlett":
            # pieces: gradient of the SUM of sampled losses over the B predictions
            # (B = count): B * (S / B)^2 = S^2 / B.
            pieces = [ops.square(s) / ops.cast(ops.maximum(count, 1.0), s.dtype) for s in pieces]
        if pending.skips_non_finite:
            # mixed_float16: an overflowing curvature pass keeps the previous h.
            finite = ops.all(ops.stack([ops.all(ops.isfinite(p)) for p in pieces]))
            refresh = ops.logical_and(refresh, finite)

        targets, values = [], []
        for gradient, h_hat, variable in zip(grads, pieces, variables):
            targets_i, values_i = self._new_values(gradient, h_hat, variable, learning_rate, refresh)
            targets.extend(targets_i)
            values.extend(values_i)
        self._update_each(assign_cast, targets, per_variable=(values,))

    def _new_values(self, gradient: Any, h_hat: Any, variable: Any, learning_rate: Any, refresh: Any):
        dtype = variable.dtype
        m_slot, h_slot = self._slot("momentum", variable), self._slot("hessian", variable)
        beta_1, beta_2 = _constant(self.beta_1, dtype), _constant(self.beta_2, dtype)
        lr = ops.cast(learning_rate, dtype)
        m = beta_1 * m_slot + (1.0 - beta_1) * gradient
        h = ops.where(refresh, beta_2 * h_slot + (1.0 - beta_2) * ops.cast(h_hat, dtype), h_slot)
        weights = snapshot(variable)
        weights = weights - weights * self._decay_rate(variable, dtype) * lr
        denominator = ops.maximum(_constant(self.rho, dtype) * h, _constant(self.epsilon, dtype))
        weights = weights - lr * ops.clip(m / denominator, -1.0, 1.0)
        return (variable, m_slot, h_slot), (weights, m, h)

    # -- curvature ------------------------------------------------------------------
    def _local_estimate(self, pending: PendingClosure, variables: list, step: Any) -> tuple[list, Any]:
        """This replica's part of ``h_hat`` and its number of predictions.

        Hutchinson: ``u * (H_r u)`` (``H_r`` the Hessian of this replica's share
        of the loss; the shares sum to the loss). Gauss-Newton-Bartlett: the
        gradient of the sum of sampled-label losses over this replica's
        predictions, and their count.
        """
        if self.estimator == "hutchinson":
            probes = self.draw_probe_vectors(variables, step)
            assert pending.hessian_vector_product is not None  # needs_hessian_vector_product is set
            _, products, _ = pending.hessian_vector_product(probes)
            pieces = [ops.cast(u, p.dtype) * p for u, p in zip(probes, products)]
            return pieces, tf.ones((), "float32")
        if pending.output_loss_gradients is None:
            raise ClosureRequiredError(
                'Sophia(estimator="gauss_newton_bartlett") needs output_loss_gradients: train '
                "with model.fit / closure_train_step, or pass output_loss_gradients= and "
                "model_loss= to apply_with_closure."
            )
        kind, from_logits = output_distribution(pending.model_loss)
        holder: dict[str, Any] = {}

        def sampled_loss(y_pred: Any, y: Any, sample_weight: Any) -> Any:
            if isinstance(y_pred, (list, tuple, dict)):
                raise ValueError(
                    'estimator="gauss_newton_bartlett" supports single-output models; '
                    'use estimator="hutchinson"'
                )
            y_pred = ops.cast(y_pred, "float32" if y_pred.dtype == "float16" else y_pred.dtype)
            y_hat = tf.stop_gradient(self.sample_targets(y_pred, kind, from_logits, step))
            if kind == "categorical":
                losses = keras.losses.categorical_crossentropy(y_hat, y_pred, from_logits=from_logits)
            else:
                losses = keras.losses.mean_squared_error(y_hat, y_pred)
            holder["count"] = ops.cast(ops.size(losses), "float32")
            if sample_weight is not None:
                weight = ops.cast(sample_weight, losses.dtype)
                while len(weight.shape) < len(losses.shape):
                    weight = ops.expand_dims(weight, -1)
                while len(weight.shape) > len(losses.shape):
                    weight = ops.squeeze(weight, -1)
                losses = losses * ops.sqrt(weight)
            # The mean, not the sum: under mixed_float16 the loss scale
            # multiplies this loss, and a sum over the batch (B times the
            # compiled loss, a mean) overflowed float16 in the backward pass,
            # so h was never refreshed. The gradient of the sum is B times
            # the gradient of the mean, taken below in the variables' dtype.
            return ops.sum(losses) / ops.cast(holder["count"], losses.dtype)

        pieces = pending.output_loss_gradients(sampled_loss)
        pieces = [
            tf.zeros_like(v.value) if p is None else dense_gradient(p) * ops.cast(holder["count"], p.dtype)
            for p, v in zip(pieces, variables)
        ]
        return pieces, holder["count"]

    def _seed(self, step: Any, stream: int, *salt: Any) -> Any:
        seed = _fold(tf.cast(snapshot(self._seed_generator.state), "int64"), step)
        for value in (stream, *salt):
            seed = _fold(seed, value)
        return seed

    def draw_probe_vectors(self, variables: Sequence[Any], step: Any) -> list:
        """Rademacher probe vectors ``u`` for the Hutchinson estimate at ``step``.

        The same on every replica (seed state and step only). Override to
        inject known vectors (tests do).
        """
        return [
            ops.cast(
                tf.random.stateless_uniform(
                    v.shape, self._seed(step, _PROBE_STREAM, i), 0, 2, "int32", alg=_ALGORITHM
                ) * 2 - 1,
                v.dtype,
            )
            for i, v in enumerate(variables)
        ]

    def sample_targets(self, y_pred: Any, kind: str, from_logits: bool, step: Any) -> Any:
        """Labels drawn from the model's predictive distribution at ``step``.

        Returns one-hot targets (``kind="categorical"``, class axis last;
        Gumbel-max sampling) or real targets ``y_pred + N(0, d / 2)``
        (``kind="gaussian"``, ``d`` the last axis). The noise is drawn for the
        whole batch from the seed state and the step; replica ``r`` with ``b``
        rows uses rows ``r*b ... r*b + b - 1`` of it, so a batch split evenly
        across replicas gets the labels one device draws. (A final batch split
        unevenly can reuse one row's noise for a row of another replica: each
        label is still drawn from its own distribution.) Override to inject
        known labels (tests do).
        """
        seed = self._seed(step, _LABEL_STREAM)
        shape = tf.shape(y_pred)
        rows = shape[0]
        offset = replica_id() * rows
        noise_shape = tf.concat([[offset + rows], shape[1:]], 0)
        if kind == "gaussian":
            variance = ops.cast(shape[-1], y_pred.dtype) / 2.0
            noise = _standard_normal(noise_shape, seed, y_pred.dtype)[offset:]
            return y_pred + ops.sqrt(variance) * noise
        logits = y_pred if from_logits else ops.log(ops.maximum(y_pred, keras.config.epsilon()))
        gumbel = -tf.math.log(-tf.math.log(_open_uniform(noise_shape, seed, y_pred.dtype)[offset:]))
        return tf.one_hot(tf.argmax(logits + gumbel, axis=-1), y_pred.shape[-1], dtype=y_pred.dtype)
