"""Shampoo: per-dimension Kronecker-factored preconditioning."""

from __future__ import annotations

import itertools
import math
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
from keras_optsuite.optimizers._base import OptsuiteOptimizer, adam_step_size, dense_gradient

_GRAFTING = ("adam", "adagrad", "sgd")
_ROOT_METHODS = ("newton", "eigh")
# What Shampoo(paper_exact=True) sets, and the constructor's defaults it replaces.
_PAPER_EXACT = {"grafting": None, "beta_1": 0.0, "statistics_decay": 1.0,
                "precondition_frequency": 1, "start_preconditioning_step": 1, "root_method": "eigh",
                "statistics_compute_steps": 1}
_PAPER_EXACT_DEFAULTS = {"grafting": "adam", "beta_1": 0.9, "statistics_decay": 0.999,
                         "precondition_frequency": 10, "start_preconditioning_step": 10,
                         "root_method": "eigh", "statistics_compute_steps": 1}

# Coupled Newton iteration (Anil et al. 2020's Distributed Shampoo): at most this
# many iterations; it stops once max|M - I| <= the tolerance of the dtype, or when
# an iteration raises that error by more than 1.2x (the previous root is kept).
NEWTON_MAX_ITERATIONS = 100
NEWTON_TOLERANCE = {"float32": 1e-5, "float64": 1e-12}
NEWTON_GROWTH = 1.2
# Power iterations that estimate lambda_max for the relative damping.
POWER_ITERATIONS = 16


def _split(tensor: Any, chunks: list[list[int]]) -> list[Any]:
    """The pieces of ``tensor`` cut along each axis into ``chunks[axis]``, row-major."""
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


def _symmetric(statistic: Any) -> Any:
    # Halved before adding: a finite statistic near the dtype's maximum stays finite.
    return 0.5 * statistic + 0.5 * tf.linalg.matrix_transpose(statistic)


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
    eigenvalues, eigenvectors = tf.linalg.eigh(_symmetric(statistic))
    eigenvalues = tf.maximum(eigenvalues, tf.zeros_like(eigenvalues))
    largest = tf.reduce_max(eigenvalues, axis=-1, keepdims=True)
    epsilon = tf.convert_to_tensor(matrix_epsilon, dtype=statistic.dtype)
    if relative:
        damped = tf.where(largest > 0, eigenvalues + epsilon * largest, tf.ones_like(eigenvalues))
    else:
        damped = eigenvalues + epsilon
    scale = tf.pow(damped, tf.convert_to_tensor(-1.0 / exponent, dtype=statistic.dtype))
    return tf.matmul(eigenvectors * scale[..., None, :], eigenvectors, transpose_b=True)


def largest_eigenvalue(statistic: Any, iterations: int = POWER_ITERATIONS) -> Any:
    """Power-iteration estimate of ``lambda_max`` of symmetric PSD matrices ``(..., n, n)``: ``(..., 1, 1)``.

    ``iterations`` power iterations with ``(L / ||L||_F)^4`` (two matrix
    squarings: as many as ``4 * iterations`` with ``L``) from
    ``x_i = 2 + cos(i)`` (fixed, so runs are reproducible); returns the
    Rayleigh quotient ``x^T L x`` of the last unit iterate (at most
    ``lambda_max``; 0 for the zero matrix).
    """
    n = statistic.shape[-1]
    norm = tf.norm(statistic, ord="fro", axis=[-2, -1], keepdims=True)
    scaled = tf.math.divide_no_nan(statistic, norm)
    square = tf.matmul(scaled, scaled)
    fourth = tf.matmul(square, square)
    start = 2.0 + tf.cos(tf.range(n, dtype=statistic.dtype))
    vector = tf.broadcast_to(start[:, None], tf.concat([tf.shape(statistic)[:-1], [1]], 0))
    vector = tf.math.l2_normalize(vector, axis=-2)
    for _ in range(iterations):
        vector = tf.math.l2_normalize(tf.matmul(fourth, vector), axis=-2)
    return tf.matmul(vector, tf.matmul(statistic, vector), transpose_a=True)


def _matrix_power(matrix: Any, exponent: int) -> Any:
    """``matrix^exponent`` for an integer ``exponent >= 1``, by repeated squaring."""
    result, square = None, matrix
    while exponent:
        if exponent & 1:
            result = square if result is None else tf.matmul(result, square)
        exponent >>= 1
        if exponent:
            square = tf.matmul(square, square)
    return result


def newton_inverse_pth_root(statistic: Any, exponent: int, matrix_epsilon: float,
                            max_iterations: int = NEWTON_MAX_ITERATIONS,
                            tolerance: float | None = None) -> Any:
    """``(L + matrix_epsilon * lambda I)^(-1/p)`` by the coupled Newton iteration (matrix products only).

    ``lambda`` is :func:`largest_eigenvalue`'s estimate of ``lambda_max(L)``.
    Guo and Higham 2006's coupled iteration as in Anil et al. 2020's
    Distributed Shampoo: ``A = L + matrix_epsilon lambda I``,
    ``z = (p + 1) / (2 ||A||_F)``, ``X = z^(1/p) I``, ``M = z A``; then
    ``T = ((p + 1) I - M) / p``, ``X = X T``, ``M = T^p M`` (so
    ``M = X^p A`` and ``X -> A^(-1/p)`` as ``M -> I``), per matrix until
    ``max|M - I| <= tolerance`` (:data:`NEWTON_TOLERANCE` of the dtype),
    ``max_iterations``, or an iteration that raises ``max|M - I|`` by more
    than :data:`NEWTON_GROWTH` (whose ``X`` is then discarded). The zero
    matrix gives the identity. The eigenvalues of ``M`` start in
    ``(0, (p + 1) / 2]``, where the iteration converges; the stopping error
    bounds the result's relative error by about ``n * tolerance / p``.
    """
    dtype = statistic.dtype
    if tolerance is None:
        tolerance = NEWTON_TOLERANCE[dtype.name]
    p = int(exponent)
    symmetric = _symmetric(statistic)
    n = symmetric.shape[-1]
    identity = tf.eye(n, batch_shape=tf.shape(symmetric)[:-2], dtype=dtype)
    largest = largest_eigenvalue(symmetric)
    epsilon = tf.convert_to_tensor(matrix_epsilon, dtype=dtype)
    damped = symmetric + epsilon * largest * identity
    norm = tf.norm(damped, ord="fro", axis=[-2, -1], keepdims=True)
    zero = tf.equal(norm, 0.0)
    z = tf.where(zero, tf.ones_like(norm), (p + 1.0) / (2.0 * tf.where(zero, tf.ones_like(norm), norm)))
    root = identity * tf.pow(z, tf.convert_to_tensor(1.0 / p, dtype))
    product = tf.where(zero, identity, z * damped)

    def error(m):
        return tf.reduce_max(tf.abs(m - identity), axis=[-2, -1], keepdims=True)

    def body(i, root, product, current, running):
        factor = ((p + 1.0) * identity - product) / p
        new_product = tf.matmul(_matrix_power(factor, p), product)
        new_root = tf.matmul(root, factor)
        new_error = error(new_product)
        accept = tf.logical_and(running, new_error < NEWTON_GROWTH * current)
        root = tf.where(accept, new_root, root)
        product = tf.where(accept, new_product, product)
        current = tf.where(accept, new_error, current)
        return i + 1, root, product, current, tf.logical_and(accept, new_error > tolerance)

    first = error(product)
    _, root, _, _, _ = tf.while_loop(
        lambda i, root, product, current, running: tf.logical_and(i < max_iterations, tf.reduce_any(running)),
        body, (tf.constant(0), root, product, first, first > tolerance),
    )
    return root


def _batched_roots(statistics: list[Any], exponent: float, matrix_epsilon: float,
                   relative: bool = True, method: str = "eigh") -> list[Any]:
    """The inverse roots of each batch ``(count, n, n)`` in ``statistics``.

    ``method="newton"`` damps relative to ``lambda_max`` only (``relative=False``
    is ``paper_exact``'s, which always uses ``"eigh"``).
    """
    if method == "newton":
        return [newton_inverse_pth_root(s, int(exponent), matrix_epsilon) for s in statistics]
    return [inverse_pth_root(s, exponent, matrix_epsilon, relative) for s in statistics]


class _Region:
    """A part of a variable cut into equal blocks: where it starts, its size, its block shape."""

    def __init__(self, start: tuple[int, ...], size: tuple[int, ...], block: tuple[int, ...]) -> None:
        self.start, self.size, self.block = start, size, block
        self.counts = tuple(s // b for s, b in zip(size, block))
        self.count = math.prod(self.counts)

    def to_blocks(self, piece: Any) -> Any:
        """The region's ``(count, *block)`` batch of blocks, row-major over its grid."""
        if self.count == 1:
            return piece[None]
        rank = len(self.block)
        interleaved = [d for pair in zip(self.counts, self.block) for d in pair]
        order = list(range(0, 2 * rank, 2)) + list(range(1, 2 * rank, 2))
        grid = tf.transpose(tf.reshape(piece, interleaved), order)
        return tf.reshape(grid, (self.count, *self.block))

    def from_blocks(self, blocks: Any) -> Any:
        """Inverse of :meth:`to_blocks`."""
        if self.count == 1:
            return blocks[0]
        rank = len(self.block)
        grid = tf.reshape(blocks, (*self.counts, *self.block))
        order = [i for axis in range(rank) for i in (axis, rank + axis)]
        return tf.reshape(tf.transpose(grid, order), self.size)


class _Layout:
    """How one variable is preconditioned: its blocks and preconditioned axes (static).

    Each preconditioned axis longer than ``block_size`` is cut into blocks of
    ``block_size`` and a smaller last one. The blocks of equal shape form at
    most two regions per cut axis (the full blocks and the remainder), and
    each region's blocks are processed as one batch ``(count, *block)``:
    its factors are ``(count, n, n)`` variables.
    """

    def __init__(self, shape: tuple[int, ...], block_size: int, max_dim: int,
                 exponent_override: int | None, precondition_vectors: bool = False) -> None:
        self.shape = shape
        # Axes larger than max_dim (and every axis of a 0-D variable, and of a
        # 1-D one unless precondition_vectors) are not preconditioned and not
        # cut into blocks.
        smallest_rank = 1 if precondition_vectors else 2
        self.axes = [a for a, d in enumerate(shape) if d <= max_dim] if len(shape) >= smallest_rank else []
        pieces = []  # per axis: (start, size, block length) of its full blocks and remainder
        for axis, d in enumerate(shape):
            full, rest = divmod(d, block_size)
            if axis in self.axes and full and (full > 1 or rest):
                remainder = [(full * block_size, rest, rest)] if rest else []
                pieces.append([(0, full * block_size, block_size)] + remainder)
            else:
                pieces.append([(0, d, d)])
        self._axis_pieces = pieces
        self.pieces = [[size for _, size, _ in axis_pieces] for axis_pieces in pieces]
        self.regions = [
            _Region(tuple(p[0] for p in combo), tuple(p[1] for p in combo), tuple(p[2] for p in combo))
            for combo in itertools.product(*pieces)
        ]
        self.exponent = float(exponent_override or 2 * len(self.axes))

    @property
    def preconditioned(self) -> bool:
        return bool(self.axes)

    def factor_shapes(self) -> list[tuple[int, int, int]]:
        """One ``(count, n, n)`` per region and preconditioned axis, region-major."""
        return [(r.count, r.block[a], r.block[a]) for r in self.regions for a in self.axes]

    def to_blocks(self, tensor: Any) -> list[Any]:
        """One ``(count, *block)`` batch per region."""
        return [r.to_blocks(piece) for r, piece in zip(self.regions, _split(tensor, self.pieces))]

    def from_blocks(self, batches: list[Any]) -> Any:
        """Inverse of :meth:`to_blocks`."""
        return _merge([r.from_blocks(b) for r, b in zip(self.regions, batches)], self.pieces)

    def block_matrices(self, factors: list[Any]) -> list[Any]:
        """``factors`` (as :meth:`factor_shapes`) as one ``(n, n)`` array per block and axis.

        Blocks in row-major order of the whole variable's block grid, axes
        inner: for inspection and tests.
        """
        per_axis = [  # per axis: (piece, block within the piece), in order along the axis
            [(i, k) for i, (_, size, length) in enumerate(axis_pieces) for k in range(size // length)]
            for axis_pieces in self._axis_pieces
        ]
        matrices = []
        for block in itertools.product(*per_axis):
            r = 0
            for (i, _), axis_pieces in zip(block, self._axis_pieces):
                r = r * len(axis_pieces) + i
            position = 0
            for (_, k), count in zip(block, self.regions[r].counts):
                position = position * count + k
            per_region = len(self.axes)
            matrices += [f[position] for f in factors[r * per_region : (r + 1) * per_region]]
        return matrices


def _block_statistic(blocks: Any, axis: int) -> Any:
    """``G_(axis) G_(axis)^T`` of each block of the batch ``(count, *block)``: ``(count, n, n)``."""
    rank = len(blocks.shape) - 1
    n = blocks.shape[axis + 1]
    if axis == rank - 1:
        unfolded = tf.reshape(blocks, (blocks.shape[0], -1, n))
        return tf.matmul(unfolded, unfolded, transpose_a=True)
    if axis != 0:
        order = [0, axis + 1] + [a for a in range(1, rank + 1) if a != axis + 1]
        blocks = tf.transpose(blocks, order)
    unfolded = tf.reshape(blocks, (blocks.shape[0], n, -1))
    return tf.matmul(unfolded, unfolded, transpose_b=True)


def _block_mode_product(matrices: Any, blocks: Any, axis: int, transpose: bool = False) -> Any:
    """``block x_axis M`` (``M^T`` if ``transpose``) for each block and its ``(n, n)`` matrix ``M``."""
    rank = len(blocks.shape) - 1
    shape = blocks.shape
    n = shape[axis + 1]
    if axis == rank - 1:
        product = tf.matmul(tf.reshape(blocks, (shape[0], -1, n)), matrices, transpose_b=not transpose)
        return tf.reshape(product, shape)
    if axis == 0:
        product = tf.matmul(matrices, tf.reshape(blocks, (shape[0], n, -1)), transpose_a=transpose)
        return tf.reshape(product, shape)
    order = [0, axis + 1] + [a for a in range(1, rank + 1) if a != axis + 1]
    moved = tf.transpose(blocks, order)
    product = tf.matmul(matrices, tf.reshape(moved, (shape[0], n, -1)), transpose_a=transpose)
    inverse = [order.index(a) for a in range(rank + 1)]
    return tf.transpose(tf.reshape(product, moved.shape), inverse)


class KroneckerFactoredOptimizer(OptsuiteOptimizer):
    """Shared machinery of Shampoo and SOAP (not registered, not exported).

    Per variable: a :class:`_Layout` (blocks and preconditioned axes, from
    ``block_size`` and ``max_preconditioner_dim``) and, per region of equal
    blocks and preconditioned axis, one ``(count, n, n)`` batch of matrices
    for each name in ``_factor_attributes`` (stored in the attribute it maps
    to, one list per variable). Slots and factors are float64 for float64
    variables and float32 otherwise; ``update_step`` computes in that dtype
    and subclasses return the variable's change from ``_step``.
    """

    whole_variable_statistics = True  # per-variable statistics: not on shards (parameter_server.py)

    # Factor variable name -> attribute holding the per-variable lists.
    _factor_attributes: dict[str, str] = {}
    # Factor variable name -> initial value ("zeros" or "identity").
    _factor_initializers: dict[str, str] = {}
    block_size: int
    max_preconditioner_dim: int
    statistics_compute_steps: int = 1
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
                    initializer = _identities if self._factor_initializers.get(name) == "identity" else "zeros"
                    factors[name].append(self.add_variable(shape, initializer, dtype, name=f"{base}_{name}_{j}"))
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

    def factor_matrices(self, variable: Any, name: str) -> list[Any]:
        """The ``(n, n)`` NumPy matrices of factor ``name`` of ``variable``, one per block and axis.

        ``name`` is one of the keys of ``_factor_attributes`` (Shampoo:
        ``"statistic"``, ``"root"``; SOAP: ``"statistic"``, ``"basis"``).
        Blocks in row-major order of the variable's block grid, the
        preconditioned axes inner.
        """
        index = self._get_variable_index(variable)
        factors = getattr(self, self._factor_attributes[name])[index]
        return self._layouts[index].block_matrices([f.numpy() for f in factors])

    @property
    def skipped_refreshes(self) -> int:
        """How many refreshes kept the previous roots or bases (one per variable and refresh).

        A refresh is skipped when a factor statistic is not finite (a NaN or
        infinite gradient reached it) or the decomposition's result is not,
        so a diverging run ends in a NaN loss instead of an error inside the
        eigensolver.
        """
        return int(self._skipped_refreshes.numpy()) if self.built else 0

    def _refresh(self, due: Any, statistics: list[Any], targets: list[Any],
                 compute: Callable[[], list[Any]],
                 on_accept: Callable[[list[Any]], None] | None = None) -> Any:
        """Assign ``compute()`` to ``targets`` when ``due`` and every input and result is finite.

        Otherwise the targets keep their values, and a due refresh that
        keeps them counts in ``skipped_refreshes``. ``on_accept(new values)``
        runs (before the assignments) when the new values are taken. Returns
        whether they were. Nothing is read or written when not ``due``.
        """
        def finite(tensors: list[Any]) -> Any:
            return tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(x)) for x in tensors]))

        def refresh():
            new = compute()
            accepted = finite(new)

            def take():
                if on_accept is not None:
                    on_accept(new)
                for target, value in zip(targets, new):
                    self.assign(target, value)
                return tf.constant(True)

            return tf.cond(accepted, take, lambda: tf.constant(False))

        def check():
            return tf.cond(finite([tf.convert_to_tensor(s) for s in statistics]), refresh,
                           lambda: tf.constant(False))

        accepted = tf.cond(due, check, lambda: tf.constant(False))
        skipped = tf.logical_and(due, tf.logical_not(accepted))
        self.assign_add(self._skipped_refreshes, tf.cast(skipped, "int64"))
        return accepted

    def _statistics_due(self, t: Any) -> Any:
        """Whether step ``t`` accumulates statistics: steps 1, 1 + k, 1 + 2k, ... (``k = statistics_compute_steps``)."""
        return tf.equal(tf.math.floormod(t - 1.0, float(self.statistics_compute_steps)), 0)

    def _accumulate_statistics(self, blocks: list[Any], index: int, decay: float, t: Any) -> None:
        """``L = decay L + (1 - decay) G_(i) G_(i)^T`` per block and axis (``decay=1``: ``L += ...``).

        Only at the steps :meth:`_statistics_due` names.
        """
        def accumulate():
            statistics, j = self._statistics[index], 0
            for batch in blocks:
                for axis in self._layouts[index].axes:
                    new = _block_statistic(batch, axis)
                    if decay == 1.0:
                        self.assign_add(statistics[j], new)
                    else:
                        self.assign(statistics[j], decay * statistics[j] + (1.0 - decay) * new)
                    j += 1
            return tf.constant(True)

        if self.statistics_compute_steps == 1:
            accumulate()
        else:
            tf.cond(self._statistics_due(t), accumulate, lambda: tf.constant(False))


def _identities(shape: tuple[int, ...], dtype: Any = None) -> Any:
    """Initializer of a ``(count, n, n)`` batch of identity matrices."""
    return tf.eye(shape[-1], batch_shape=shape[:-2], dtype=dtype)


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
    where ``G_(i)`` is the gradient unfolded along dimension ``i``,
    accumulated at steps 1, ``1 + k``, ``1 + 2k``, ... with
    ``k = statistics_compute_steps`` (every step by default; Distributed
    Shampoo's ``statistics_compute_steps``). From
    step ``start_preconditioning_step`` on, every ``precondition_frequency``
    steps it stores
    ``R_i = (L_i + matrix_epsilon * lambda_max(L_i) I)^(-1/p)`` with
    ``p = 2 * (number of preconditioned dimensions)`` (or
    ``exponent_override``) and preconditions ``P = G x_1 R_1 x_2 R_2 ...``
    (for a matrix: ``R_1 G R_2``). Dimensions larger than ``block_size`` are
    cut into blocks of ``block_size`` (the last one smaller); each block
    has its own factors, and the blocks of equal shape are processed as one
    batch of matrix products.

    Roots: ``root_method="eigh"`` computes ``R_i`` exactly by a symmetric
    eigendecomposition; ``"newton"`` by the coupled Newton iteration of
    Distributed Shampoo (Anil et al. 2020; Guo and Higham 2006), matrix
    products only, with ``lambda_max`` estimated by power iteration (see
    :func:`newton_inverse_pth_root`): it stops once ``max|M - I|`` is below
    1e-5 (float32; 1e-12 in float64), so a root is within about
    ``n 1e-5 / p`` relative of the exact root of its damped factor. It
    starts cold, from ``z^(1/p) I``: a warm start from the previous root
    is not valid for the coupled iteration, whose invariant
    ``M = X^p A`` needs ``X`` to commute with the new factor.

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
    Compute per step, per ``b x b`` block of a 2-D variable: two block
    matrix products for ``P`` and (on statistics steps) two for the
    factors, ``8 b^3`` flops, i.e. ``4 b`` flops per parameter each for
    ``P`` and the factors; a train step of a dense layer costs
    ``6 * batch`` flops per parameter, so each adds about
    ``(2/3) b / batch`` of a train step (0.67 at ``b = batch = 128``).
    Every ``precondition_frequency`` steps, one root per factor (batched
    per shape): an eigendecomposition, or about 11 coupled Newton
    iterations of 4 matrix products each (``p = 4``), which on 2 CPU cores
    cost about 3x TensorFlow's ``eigh`` (Eigen's solver; hence the default
    ``"eigh"``); under ``jit_compile=True``, where XLA's CPU eigensolver is
    ~50x slower, use ``root_method="newton"``. Measured with
    ``benchmarks/step_cost.py`` (784-1024-256-10 MLP, batch 128, 2 CPU
    cores; see the README for the table against ``block_size``,
    ``precondition_frequency`` and ``statistics_compute_steps``).

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
            eigenvalue (with ``root_method="newton"``: its power-iteration
            estimate), >= 0 (see Numerics before lowering it). Defaults
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
        root_method: `"eigh"` (symmetric eigendecomposition, exact) or
            `"newton"` (coupled Newton iteration, matrix products only:
            faster on accelerators and under XLA). Defaults to `"eigh"`.
        statistics_compute_steps: steps between updates of the factor
            statistics, >= 1 (1: every step). Defaults to `1`.
        paper_exact: `True` runs Gupta et al. 2018's Algorithm 2 exactly:
            ``H_i = matrix_epsilon I + sum_t G_(i) G_(i)^T`` (absolute
            damping, added once), roots ``H_i^(-1/2k)`` recomputed every
            step from step 1, ``w -= lr G x_1 H_1^(-1/2k) ... x_k H_k^(-1/2k)``
            with no grafting and no momentum; a 1-D variable is an order-1
            tensor, full-matrix preconditioned by ``H^(-1/2)``; no blocks
            (dimensions above ``max_preconditioner_dim`` and 0-D variables
            take the plain gradient step). It sets ``grafting=None``,
            ``beta_1=0``, ``statistics_decay=1``,
            ``precondition_frequency=1``, ``start_preconditioning_step=1``,
            ``statistics_compute_steps=1`` and ``root_method="eigh"``
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
        root_method: str = "eigh",
        statistics_compute_steps: int = 1,
        paper_exact: bool = False,
        name: str = "shampoo",
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.paper_exact = check_bool("paper_exact", paper_exact)
        if paper_exact:
            given = {"grafting": grafting, "beta_1": beta_1, "statistics_decay": statistics_decay,
                     "precondition_frequency": precondition_frequency,
                     "start_preconditioning_step": start_preconditioning_step,
                     "root_method": root_method, "statistics_compute_steps": statistics_compute_steps}
            check_paper_exact("Gupta et al. 2018", given, _PAPER_EXACT, _PAPER_EXACT_DEFAULTS)
            if not matrix_epsilon > 0:
                raise ValueError(f"paper_exact=True needs matrix_epsilon > 0 (H_0 = matrix_epsilon I), "
                                 f"got matrix_epsilon={matrix_epsilon!r}")
            grafting, beta_1, statistics_decay = None, 0.0, 1.0
            precondition_frequency = start_preconditioning_step = statistics_compute_steps = 1
            root_method = "eigh"
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
        self.root_method = check_choice("root_method", root_method, _ROOT_METHODS)
        self.statistics_compute_steps = check_positive_int("statistics_compute_steps", statistics_compute_steps)

    # -- state -------------------------------------------------------------
    _factor_attributes = {"statistic": "_statistics", "root": "_roots"}

    def _slot_names(self) -> tuple[str, ...]:
        return ("momentum", "grafting_moment") if self.grafting in ("adam", "adagrad") else ("momentum",)

    def _grafting_direction(self, gradient: Any, variable: Any, t: Any) -> tuple[Any, Any]:
        """``(direction, scale)`` with the grafting step ``D = scale * direction`` (``scale`` a scalar)."""
        one = ops.ones_like(t)
        if self.grafting in (None, "sgd"):
            return gradient, one
        moment = self._slot("grafting_moment", variable)
        if self.grafting == "adagrad":
            self.assign_add(moment, ops.square(gradient))
            return gradient / (ops.sqrt(moment) + self.epsilon), one
        self.assign_add(moment, (ops.square(gradient) - moment) * (1.0 - self.beta_2))
        # g / (sqrt(v / (1 - beta_2^t)) + epsilon), with the correction folded into scalars.
        scale, epsilon = adam_step_size(one, 0.0, self.beta_2, self.epsilon, t)
        return gradient / (ops.sqrt(moment) + epsilon), scale

    def _preconditioned(self, gradient: Any, index: int, t: Any) -> Any:
        """Update the factors, refresh the roots when due, and return ``P``."""
        layout = self._layouts[index]
        statistics, roots = self._statistics[index], self._roots[index]
        blocks = layout.to_blocks(gradient)
        self._accumulate_statistics(blocks, index, self.statistics_decay, t)

        start = float(self.start_preconditioning_step)
        since_start = t - start
        refresh = tf.logical_and(
            since_start >= 0,
            tf.equal(tf.math.floormod(since_start, float(self.precondition_frequency)), 0),
        )
        self._refresh(
            refresh, statistics, roots,
            lambda: _batched_roots([tf.convert_to_tensor(s) for s in statistics], layout.exponent,
                                   self.matrix_epsilon, relative=not self.paper_exact,
                                   method=self.root_method),
        )

        preconditioned, j = [], 0
        for batch in blocks:
            for axis in layout.axes:
                batch = _block_mode_product(tf.convert_to_tensor(roots[j]), batch, axis)
                j += 1
            preconditioned.append(batch)
        return layout.from_blocks(preconditioned)

    def _step(self, gradient: Any, variable: Any, learning_rate: Any, t: Any) -> Any:
        """The change ``lr * m`` of the variable (updates every state)."""
        index = self._get_variable_index(variable)
        direction, scale = self._grafting_direction(gradient, variable, t)
        # (1 - beta_1) U, with every scalar factor applied in one pass.
        if self._layouts[index].preconditioned:
            preconditioned = self._preconditioned(gradient, index, t)
            ratio = ops.ones_like(t)
            if self.grafting is not None:
                ratio = tf.math.divide_no_nan(scale * tf.norm(direction), tf.norm(preconditioned))
            update = tf.cond(t >= float(self.start_preconditioning_step),
                             lambda: ((1.0 - self.beta_1) * ratio) * preconditioned,
                             lambda: ((1.0 - self.beta_1) * scale) * direction)
        else:
            update = ((1.0 - self.beta_1) * scale) * direction
        momentum = self._slot("momentum", variable)
        if self.beta_1 == 0.0:
            self.assign(momentum, update)
        else:
            self.assign_add(momentum, update - (1.0 - self.beta_1) * momentum)
        return learning_rate * momentum
