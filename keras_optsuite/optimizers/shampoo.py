"""Shampoo: per-dimension Kronecker-factored preconditioning."""

from __future__ import annotations

from typing import Any, Callable

import keras
import tensorflow as tf
from keras import ops

from keras_optsuite._validation import (
    check_bool,
    check_choice,
    check_decay_rate,
    check_fraction,
    check_non_negative,
    check_paper_exact,
    check_positive_int,
)
from keras_optsuite.optimizers._base import OptsuiteOptimizer, dense_gradient, power

_GRAFTING = ("adam", "adagrad", "sgd")
# What Shampoo(paper_exact=True) sets, and the constructor's defaults it replaces.
_PAPER_EXACT = {"grafting": None, "beta_1": 0.0, "statistics_decay": 1.0,
                "precondition_frequency": 1, "start_preconditioning_step": 1}
_PAPER_EXACT_DEFAULTS = {"grafting": "adam", "beta_1": 0.9, "statistics_decay": 0.999,
                         "precondition_frequency": 10, "start_preconditioning_step": 10}


def _chunks(size: int, block_size: int) -> list[int]:
    """Sizes of the blocks one dimension is cut into (the last one may be smaller)."""
    sizes = [block_size] * (size // block_size)
    if size % block_size:
        sizes.append(size % block_size)
    return sizes


def _split(tensor: Any, chunks: list[list[int]]) -> list[Any]:
    """The blocks of ``tensor`` in row-major order of the block grid."""
    blocks = [tensor]
    for axis, sizes in enumerate(chunks):
        if len(sizes) > 1:
            blocks = [piece for block in blocks for piece in tf.split(block, sizes, axis=axis)]
    return blocks


def _merge(blocks: list[Any], chunks: list[list[int]]) -> Any:
    """Inverse of :func:`_split`."""
    for axis in reversed(range(len(chunks))):
        count = len(chunks[axis])
        if count > 1:
            blocks = [tf.concat(blocks[i : i + count], axis) for i in range(0, len(blocks), count)]
    return blocks[0]


def _factor_statistic(block: Any, axis: int) -> Any:
    """``G_(axis) G_(axis)^T``: the contraction of the block with itself over every other axis."""
    others = [a for a in range(len(block.shape)) if a != axis]
    return tf.tensordot(block, block, axes=[others, others])


def _mode_product(matrix: Any, block: Any, axis: int) -> Any:
    """``block x_axis matrix``: the mode-``axis`` unfolding multiplied from the left by ``matrix``."""
    product = tf.tensordot(matrix, block, axes=[[1], [axis]])  # the axis moved to the front
    rank = len(block.shape)
    order = list(range(1, axis + 1)) + [0] + list(range(axis + 1, rank))
    return tf.transpose(product, order)


def inverse_pth_root(statistic: Any, exponent: float, matrix_epsilon: float,
                     relative: bool = True) -> Any:
    """``(L + matrix_epsilon * lambda_max(L) * I)^(-1/exponent)`` of a symmetric PSD ``L``.

    ``statistic`` may be a batch of matrices (``(..., n, n)``). Computed by
    symmetric eigendecomposition in the dtype of ``statistic``; negative
    round-off eigenvalues count as 0. The zero matrix (no gradient seen
    yet) gives the identity. ``relative=False``: absolute damping,
    ``(L + matrix_epsilon * I)^(-1/exponent)`` (the zero matrix gives
    ``matrix_epsilon^(-1/exponent) I``).
    """
    # Halved before adding: a finite statistic near the dtype's maximum stays finite.
    symmetric = 0.5 * statistic + 0.5 * tf.linalg.matrix_transpose(statistic)
    eigenvalues, eigenvectors = tf.linalg.eigh(symmetric)
    eigenvalues = tf.maximum(eigenvalues, tf.zeros_like(eigenvalues))
    largest = tf.reduce_max(eigenvalues, axis=-1, keepdims=True)
    epsilon = tf.convert_to_tensor(matrix_epsilon, dtype=statistic.dtype)
    if relative:
        damped = tf.where(largest > 0, eigenvalues + epsilon * largest, tf.ones_like(eigenvalues))
    else:
        damped = eigenvalues + epsilon
    scale = tf.pow(damped, tf.convert_to_tensor(-1.0 / exponent, dtype=statistic.dtype))
    return tf.matmul(eigenvectors * scale[..., None, :], eigenvectors, transpose_b=True)


def _batched(matrices: list[Any], function: Callable[[Any], Any]) -> list[Any]:
    """``function`` of each of ``matrices``, called once per distinct shape on the stacked batch."""
    by_shape: dict[tuple, list[int]] = {}
    for j, matrix in enumerate(matrices):
        by_shape.setdefault(tuple(matrix.shape), []).append(j)
    results: list[Any] = [None] * len(matrices)
    for members in by_shape.values():
        batch = tf.stack([matrices[j] for j in members])
        for j, result in zip(members, tf.unstack(function(batch))):
            results[j] = result
    return results


def _batched_roots(statistics: list[Any], exponent: float, matrix_epsilon: float,
                   relative: bool = True) -> list[Any]:
    """The roots of ``statistics``, one batched eigendecomposition per distinct shape."""
    return _batched(statistics, lambda batch: inverse_pth_root(batch, exponent, matrix_epsilon, relative))


class _Layout:
    """How one variable is preconditioned: its blocks and preconditioned axes (static)."""

    def __init__(self, shape: tuple[int, ...], block_size: int, max_dim: int,
                 exponent_override: int | None, precondition_vectors: bool = False) -> None:
        self.shape = shape
        # Axes larger than max_dim (and every axis of a 0-D variable, and of a
        # 1-D one unless precondition_vectors) are not preconditioned and not
        # cut into blocks.
        smallest_rank = 1 if precondition_vectors else 2
        self.axes = [a for a, d in enumerate(shape) if d <= max_dim] if len(shape) >= smallest_rank else []
        self.chunks = [
            _chunks(d, block_size) if a in self.axes else [d] for a, d in enumerate(shape)
        ]
        grid: list[list[Any]] = [[]]
        for sizes in self.chunks:
            grid = [g + [s] for g in grid for s in sizes]
        self.block_shapes = [tuple(g) for g in grid]
        self.exponent = float(exponent_override or 2 * len(self.axes))

    @property
    def preconditioned(self) -> bool:
        return bool(self.axes)

    def factor_shapes(self) -> list[tuple[int, int]]:
        """One ``(n, n)`` per block and preconditioned axis, block-major."""
        return [(b[a], b[a]) for b in self.block_shapes for a in self.axes]


class KroneckerFactoredOptimizer(OptsuiteOptimizer):
    """Shared machinery of Shampoo and SOAP (not registered, not exported).

    Per variable: a :class:`_Layout` (blocks and preconditioned axes, from
    ``block_size`` and ``max_preconditioner_dim``) and, per block and
    preconditioned axis, one ``(n, n)`` matrix for each name in
    ``_factor_attributes`` (stored in the attribute it maps to, one list per
    variable). Slots and factors are float64 for float64 variables and
    float32 otherwise; ``update_step`` computes in that dtype and subclasses
    return the variable's change from ``_step``.
    """

    whole_variable_statistics = True  # per-variable statistics: not on shards (parameter_server.py)

    # Factor variable name -> attribute holding the per-variable lists.
    _factor_attributes: dict[str, str] = {}
    block_size: int
    max_preconditioner_dim: int
    exponent_override: int | None = None
    paper_exact: bool = False
    # Full-matrix preconditioning of 1-D variables (Shampoo's paper-exact mode).
    _precondition_vectors: bool = False

    def _build_slots(self, var_list: list) -> None:
        # In the state dtype (float32 for float16 variables: g^2 overflows float16).
        self._slots = {
            slot: [
                self.add_variable(v.shape, "zeros", self._state_dtype(v),
                                  name=f"{v.path.replace('/', '_')}_{slot}")
                for v in var_list
            ]
            for slot in self._slot_names()
        }

    def build(self, var_list: list) -> None:
        if self.built:
            return
        super().build(var_list)
        self._skipped_refreshes = self.add_variable((), "zeros", "int64", name="skipped_refreshes")
        self._layouts = []
        for attribute in self._factor_attributes.values():
            setattr(self, attribute, [])
        for variable in var_list:
            # Paper-exact modes do not cut dimensions into blocks.
            block_size = self.max_preconditioner_dim if self.paper_exact else self.block_size
            layout = _Layout(tuple(variable.shape), block_size, self.max_preconditioner_dim,
                             self.exponent_override, self._precondition_vectors)
            dtype = self._state_dtype(variable)
            base = variable.path.replace("/", "_")
            factors: dict[str, list] = {name: [] for name in self._factor_attributes}
            for j, shape in enumerate(layout.factor_shapes()):
                for name in self._factor_attributes:
                    factors[name].append(self.add_variable(shape, "zeros", dtype, name=f"{base}_{name}_{j}"))
            self._layouts.append(layout)
            for name, attribute in self._factor_attributes.items():
                getattr(self, attribute).append(factors[name])

    @staticmethod
    def _state_dtype(variable: Any) -> str:
        return "float64" if keras.backend.standardize_dtype(variable.dtype) == "float64" else "float32"

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        # Compute in float32 at least (a float16 variable's factors would
        # overflow), then cast the step to the variable's dtype.
        dtype = self._state_dtype(variable)
        if keras.backend.standardize_dtype(variable.dtype) == dtype:
            super().update_step(gradient, variable, learning_rate)
            return
        step = self._step(
            ops.cast(dense_gradient(gradient), dtype), variable,
            ops.cast(learning_rate, dtype), ops.cast(self.iterations + 1, dtype),
        )
        self.assign_sub(variable, ops.cast(step, variable.dtype))

    def _update_variable(self, gradient, variable, learning_rate, t):
        self.assign_sub(variable, self._step(gradient, variable, learning_rate, t))

    def _step(self, gradient: Any, variable: Any, learning_rate: Any, t: Any) -> Any:
        raise NotImplementedError

    @property
    def skipped_refreshes(self) -> int:
        """How many refreshes kept the previous roots or bases (one per variable and refresh).

        A refresh is skipped when a factor statistic is not finite (a NaN or
        infinite gradient reached it) or the decomposition's result is not,
        so a diverging run ends in a NaN loss instead of an error inside the
        eigensolver.
        """
        return int(self._skipped_refreshes.numpy()) if self.built else 0

    def _refresh(self, due: Any, statistics: list[Any], previous: list[Any],
                 compute: Callable[[], list[Any]]) -> list[Any]:
        """``compute()`` when ``due`` and every input and result is finite, else ``previous``.

        Counts a due refresh that keeps ``previous`` in ``skipped_refreshes``.
        """
        return self._refresh_if_finite(due, statistics, previous, compute)[0]

    def _refresh_if_finite(self, due: Any, statistics: list[Any], previous: list[Any],
                           compute: Callable[[], list[Any]]) -> tuple[list[Any], Any]:
        """:meth:`_refresh`, and whether the new values were taken."""
        def finite(tensors: list[Any]) -> Any:
            return tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(x)) for x in tensors]))

        def refresh():
            new = compute()
            accepted = finite(new)
            return [tf.where(accepted, n, p) for n, p in zip(new, previous)], accepted

        def keep():
            return [tf.identity(p) for p in previous], tf.constant(False)

        values, accepted = tf.cond(tf.logical_and(due, finite(statistics)), refresh, keep)
        skipped = tf.logical_and(due, tf.logical_not(accepted))
        self.assign_add(self._skipped_refreshes, tf.cast(skipped, "int64"))
        return values, accepted

    def _accumulate_statistics(self, blocks: list[Any], index: int, decay: float) -> None:
        """``L = decay L + (1 - decay) G_(i) G_(i)^T`` per block and axis (``decay=1``: ``L += ...``)."""
        statistics, j = self._statistics[index], 0
        for block in blocks:
            for axis in self._layouts[index].axes:
                new = _factor_statistic(block, axis)
                if decay == 1.0:
                    self.assign_add(statistics[j], new)
                else:
                    self.assign(statistics[j], decay * statistics[j] + (1.0 - decay) * new)
                j += 1


@keras.saving.register_keras_serializable(package="keras_optsuite")
class Shampoo(KroneckerFactoredOptimizer):
    """Shampoo: preconditioned stochastic tensor optimization, with grafting.

    Gupta, Koren and Singer, 2018, "Shampoo: Preconditioned Stochastic
    Tensor Optimization", https://arxiv.org/abs/1802.09568 (Algorithm 2),
    with the practical choices of Anil et al., 2020, "Scalable Second Order
    Optimization for Deep Learning", https://arxiv.org/abs/2002.09018
    (exponential moving averages of the statistics, inverse roots refreshed
    every few steps, block partitioning, learning-rate grafting, momentum).

    For each variable of rank ``k >= 2`` and each of its dimensions ``i``
    (size ``d_i <= max_preconditioner_dim``) Shampoo keeps a Kronecker factor
    ``L_i`` (``d_i x d_i``) of the gradient statistics:
    ``L_i = s L_i + (1 - s) G_(i) G_(i)^T`` with ``s = statistics_decay``
    (``s=1``: ``L_i += G_(i) G_(i)^T``, the sum of the original paper),
    where ``G_(i)`` is the gradient unfolded along dimension ``i``. From
    step ``start_preconditioning_step`` on, every ``precondition_frequency``
    steps it stores
    ``R_i = (L_i + matrix_epsilon * lambda_max(L_i) I)^(-1/p)`` with
    ``p = 2 * (number of preconditioned dimensions)`` (or
    ``exponent_override``) and preconditions ``P = G x_1 R_1 x_2 R_2 ...``
    (for a matrix: ``R_1 G R_2``). Dimensions larger than ``block_size`` are
    cut into blocks of ``block_size`` (the last one smaller); each block
    has its own factors.

    Grafting: the step has the direction of ``P`` and, per variable, the
    norm of the grafting optimizer's step ``D``: Adam
    (``v = beta_2 v + (1 - beta_2) g^2``,
    ``D = g / (sqrt(v / (1 - beta_2^t)) + epsilon)``),
    AdaGrad (``v += g^2``, ``D = g / (sqrt(v) + epsilon)``) or SGD
    (``D = g``); ``U = P * ||D|| / ||P||``. With ``grafting=None``,
    ``U = P``. Before ``start_preconditioning_step``, 1-D variables and
    variables with no dimension ``<= max_preconditioner_dim`` use ``U = D``
    (``U = g`` when ``grafting=None``). Momentum then averages the update:
    ``m = beta_1 m + (1 - beta_1) U``, ``w -= lr m``.

    With ``grafting=None`` the steps before ``start_preconditioning_step``
    are plain gradient steps at ``learning_rate``: a learning rate sized for
    the preconditioned step can diverge there on badly scaled problems
    (0.1 on a quadratic of condition number 1e4 does); use
    ``start_preconditioning_step=1`` with ``grafting=None``.

    Non-finite input: a refresh that finds a NaN or infinite statistic (or
    whose roots come out non-finite) keeps the previous roots and adds one
    to :attr:`skipped_refreshes`, so a diverging run ends in NaN weights and
    loss (which ``keras.callbacks.TerminateOnNaN`` and the tuner handle),
    never in an error inside the eigensolver. Statistics that have seen a
    non-finite gradient stay non-finite: wrap the optimizer in
    ``SkipNonFinite`` to skip such steps instead.

    Memory per variable (floats): the variable's size each for momentum and
    (Adam/AdaGrad grafting) the second moment; plus, per block and
    preconditioned dimension, ``2 n^2`` (factor and its inverse root). A
    ``d1 x d2`` kernel with ``d1, d2 <= block_size`` costs
    ``2 (d1^2 + d2^2) + 2 d1 d2``; a kernel cut into ``b x b`` blocks costs
    about ``4 d1 d2 + 2 d1 d2``, i.e. 6 floats per parameter (Adam: 2).
    Compute: one eigendecomposition (``O(n^3)``) per factor every
    ``precondition_frequency`` steps (factors of equal shape batched into
    one call), and ``O(d1 d2 (d1 + d2))`` matrix products per step.
    Measured with ``benchmarks/step_cost.py`` (784-1024-256-10 MLP, 2 CPU
    cores): a whole train step costs 4.3x Adam's. On CPU avoid
    ``jit_compile=True`` (Keras's ``"auto"`` leaves it off there): XLA's
    CPU eigensolver is ~50x slower than LAPACK's and the step costs ~120x
    Adam's.

    Numerics: statistics and roots are in float64 for float64 variables and
    in float32 otherwise (float16 variables too). In float64 the roots
    match a NumPy eigendecomposition to about 1e-13. In float32,
    ``tf.linalg.eigh`` perturbs each eigenvalue by about 1e-7 ``lambda_max``
    (XLA's eigensolver under ``jit_compile=True``: about 1e-6), so a damped
    eigenvalue ``lambda + matrix_epsilon * lambda_max`` is known to about
    ``1e-7 / matrix_epsilon`` relative. Two float32 runs that differ only
    in rounding (XLA vs not, one vs two replicas) drift apart accordingly:
    after 16 steps of a small MLP, XLA and non-XLA weights differ by
    1.6e-6 with the default ``1e-3``, 1e-5 with ``1e-4`` and 4e-4 with
    ``1e-6``.

    Args:
        learning_rate: float, schedule or callable. Defaults to `0.001`.
        beta_1: momentum on the grafted update, in [0, 1). Defaults to `0.9`.
        beta_2: second-moment decay of Adam grafting, in [0, 1).
            Defaults to `0.999`.
        epsilon: added to the grafting denominator (Adam, AdaGrad), >= 0.
            Defaults to `1e-8`.
        statistics_decay: decay of the factor statistics, in [0, 1]; `1.0`
            sums them as in the original paper. Defaults to `0.999`.
        matrix_epsilon: damping relative to the factor's largest
            eigenvalue, >= 0 (see Numerics before lowering it). Defaults
            to `1e-3`.
        precondition_frequency: steps between inverse-root refreshes, >= 1.
            Defaults to `10`.
        start_preconditioning_step: first step (1-based) that uses the
            preconditioner (its roots are computed at that step); earlier
            steps take the grafting step. Defaults to `10`.
        block_size: largest block along a preconditioned dimension, >= 1.
            Defaults to `128`.
        max_preconditioner_dim: dimensions larger than this are neither
            preconditioned nor blocked, >= 1. Defaults to `8192`.
        exponent_override: the root ``p`` of every factor (a positive
            integer), or `None` for ``2 *`` (number of preconditioned
            dimensions). Defaults to `None`.
        grafting: `"adam"`, `"adagrad"`, `"sgd"` or `None` (raw Shampoo
            step). Defaults to `"adam"`.
        paper_exact: `True` runs Gupta et al. 2018's Algorithm 2 exactly:
            ``H_i = matrix_epsilon I + sum_t G_(i) G_(i)^T`` (absolute
            damping, added once), roots ``H_i^(-1/2k)`` recomputed every
            step from step 1, ``w -= lr G x_1 H_1^(-1/2k) ... x_k H_k^(-1/2k)``
            with no grafting and no momentum; a 1-D variable is an order-1
            tensor, full-matrix preconditioned by ``H^(-1/2)``; no blocks
            (dimensions above ``max_preconditioner_dim`` and 0-D variables
            take the plain gradient step). It sets ``grafting=None``,
            ``beta_1=0``, ``statistics_decay=1``,
            ``precondition_frequency=1`` and ``start_preconditioning_step=1``
            (passing other values of these raises ``ValueError``) and needs
            ``matrix_epsilon > 0``. Defaults to `False`.
        {{base_optimizer_keyword_args}}

    Example:
    >>> model.compile(optimizer=keras_optsuite.optimizers.Shampoo(1e-3), loss="mse")
    """

    def __init__(
        self,
        learning_rate: Any = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        statistics_decay: float = 0.999,
        matrix_epsilon: float = 1e-3,
        precondition_frequency: int = 10,
        start_preconditioning_step: int = 10,
        block_size: int = 128,
        max_preconditioner_dim: int = 8192,
        exponent_override: int | None = None,
        grafting: str | None = "adam",
        paper_exact: bool = False,
        name: str = "shampoo",
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.paper_exact = check_bool("paper_exact", paper_exact)
        if paper_exact:
            given = {"grafting": grafting, "beta_1": beta_1, "statistics_decay": statistics_decay,
                     "precondition_frequency": precondition_frequency,
                     "start_preconditioning_step": start_preconditioning_step}
            check_paper_exact("Gupta et al. 2018", given, _PAPER_EXACT, _PAPER_EXACT_DEFAULTS)
            if not matrix_epsilon > 0:
                raise ValueError(f"paper_exact=True needs matrix_epsilon > 0 (H_0 = matrix_epsilon I), "
                                 f"got matrix_epsilon={matrix_epsilon!r}")
            grafting, beta_1, statistics_decay = None, 0.0, 1.0
            precondition_frequency = start_preconditioning_step = 1
            self._precondition_vectors = True
        self.beta_1 = check_decay_rate("beta_1", beta_1)
        self.beta_2 = check_decay_rate("beta_2", beta_2)
        self.epsilon = check_non_negative("epsilon", epsilon)
        self.statistics_decay = check_fraction("statistics_decay", statistics_decay)
        self.matrix_epsilon = check_non_negative("matrix_epsilon", matrix_epsilon)
        self.precondition_frequency = check_positive_int("precondition_frequency", precondition_frequency)
        self.start_preconditioning_step = check_positive_int(
            "start_preconditioning_step", start_preconditioning_step
        )
        self.block_size = check_positive_int("block_size", block_size)
        self.max_preconditioner_dim = check_positive_int("max_preconditioner_dim", max_preconditioner_dim)
        self.exponent_override = check_positive_int(
            "exponent_override", exponent_override, allow_none=True
        )
        if grafting is not None:
            check_choice("grafting", grafting, _GRAFTING)
        self.grafting = grafting

    # -- state -------------------------------------------------------------
    _factor_attributes = {"statistic": "_statistics", "root": "_roots"}

    def _slot_names(self) -> tuple[str, ...]:
        return ("momentum", "grafting_moment") if self.grafting in ("adam", "adagrad") else ("momentum",)

    def _grafting_direction(self, gradient: Any, variable: Any, t: Any) -> Any:
        if self.grafting in (None, "sgd"):
            return gradient
        moment = self._slot("grafting_moment", variable)
        if self.grafting == "adagrad":
            self.assign_add(moment, ops.square(gradient))
            return gradient / (ops.sqrt(moment) + self.epsilon)
        self.assign(moment, self.beta_2 * moment + (1.0 - self.beta_2) * ops.square(gradient))
        corrected = moment / (1.0 - power(self.beta_2, t))
        return gradient / (ops.sqrt(corrected) + self.epsilon)

    def _preconditioned(self, gradient: Any, index: int, t: Any) -> Any:
        """Update the factors, refresh the roots when due, and return ``P``."""
        layout = self._layouts[index]
        statistics, roots = self._statistics[index], self._roots[index]
        blocks = _split(gradient, layout.chunks)
        self._accumulate_statistics(blocks, index, self.statistics_decay)

        start = float(self.start_preconditioning_step)
        since_start = t - start
        refresh = tf.logical_and(
            since_start >= 0,
            tf.equal(tf.math.floormod(since_start, float(self.precondition_frequency)), 0),
        )

        values = [tf.convert_to_tensor(s.value) for s in statistics]
        new_roots = self._refresh(
            refresh, values, [tf.convert_to_tensor(r.value) for r in roots],
            lambda: _batched_roots(values, layout.exponent, self.matrix_epsilon,
                                   relative=not self.paper_exact),
        )
        for root, value in zip(roots, new_roots):
            self.assign(root, value)

        preconditioned, j = [], 0
        for block in blocks:
            for axis in layout.axes:
                block = _mode_product(roots[j].value, block, axis)
                j += 1
            preconditioned.append(block)
        return _merge(preconditioned, layout.chunks)

    def _step(self, gradient: Any, variable: Any, learning_rate: Any, t: Any) -> Any:
        """The change ``lr * m`` of the variable (updates every state)."""
        index = self._get_variable_index(variable)
        direction = self._grafting_direction(gradient, variable, t)
        if self._layouts[index].preconditioned:
            preconditioned = self._preconditioned(gradient, index, t)
            if self.grafting is not None:
                preconditioned_norm = tf.norm(preconditioned)
                ratio = tf.math.divide_no_nan(tf.norm(direction), preconditioned_norm)
                preconditioned = preconditioned * ratio
            active = t >= float(self.start_preconditioning_step)
            update = tf.where(active, preconditioned, direction)
        else:
            update = direction
        momentum = self._slot("momentum", variable)
        self.assign(momentum, self.beta_1 * momentum + (1.0 - self.beta_1) * update)
        return learning_rate * momentum
