"""SOAP: Adam in the eigenbasis of Shampoo's Kronecker factors."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import ops

from keras_optsuite._validation import (
    check_bool,
    check_decay_rate,
    check_fraction,
    check_non_negative,
    check_paper_exact,
    check_positive_int,
)
from keras_optsuite.optimizers._base import adam_step_size, power
from keras_optsuite.optimizers.shampoo import KroneckerFactoredOptimizer, _block_mode_product


def power_iteration_basis(statistic: Any, basis: Any, matrix_epsilon: float) -> Any:
    """One shifted power iteration from ``basis``: ``Q`` of ``QR((L + matrix_epsilon tr(L) I) basis)``.

    Works on batches ``(..., n, n)``. The shift keeps the product well
    conditioned (condition number at most ``1 + 1 / matrix_epsilon``), so
    the new basis is a continuous function of ``L`` and ``basis`` even
    when ``L`` is rank-deficient; in the null space of ``L`` the previous
    basis is kept. A zero ``statistic`` (no gradient seen) keeps ``basis``.
    """
    trace = tf.linalg.trace(statistic)[..., None, None]
    epsilon = tf.convert_to_tensor(matrix_epsilon, dtype=statistic.dtype)
    q, _ = tf.linalg.qr(tf.matmul(statistic, basis) + epsilon * trace * basis)
    return tf.where(trace > 0, q, basis)


def descending_eigenbasis(statistic: Any) -> Any:
    """Eigenvectors of a symmetric ``statistic`` as columns, largest eigenvalue first."""
    _, eigenvectors = tf.linalg.eigh(statistic)
    return tf.reverse(eigenvectors, axis=[-1])


def sorting_order(statistic: Any, basis: Any) -> Any:
    """The columns of ``basis`` by estimated eigenvalue ``diag(Q^T L Q)``, largest first (stable)."""
    estimated = tf.reduce_sum(basis * tf.matmul(statistic, basis), axis=-2)
    return tf.argsort(estimated, direction="DESCENDING", stable=True)


def sorted_power_iteration(statistic: Any, basis: Any, order: Any) -> Any:
    """The authors' refresh: ``Q`` of ``QR(L Q[:, order])`` (one unshifted power iteration)."""
    q, _ = tf.linalg.qr(tf.matmul(statistic, tf.gather(basis, order, axis=-1)))
    return q


@keras.saving.register_keras_serializable(package="keras_optsuite")
class SOAP(KroneckerFactoredOptimizer):
    """SOAP: ShampoO with Adam in the Preconditioner's eigenbasis.

    Vyas et al., 2024, "SOAP: Improving and Stabilizing Shampoo using
    Adam", https://arxiv.org/abs/2409.11321 (Algorithms 3 and 4).

    For each variable of rank ``k >= 2`` and each of its dimensions ``i``
    (size ``d_i <= max_preconditioner_dim``; larger dimensions are cut into
    blocks of ``block_size``, each with its own factors, exactly as in
    :class:`Shampoo`) SOAP keeps Shampoo's Kronecker factor
    ``L_i = s L_i + (1 - s) G_(i) G_(i)^T`` (``s = shampoo_beta``) and an
    orthonormal basis ``Q_i`` of its eigenvectors. Step ``t``, with the
    bases of the previous step (identity before the first refresh):

    - rotate: ``g' = g x_1 Q_1^T x_2 Q_2^T ...`` (a matrix: ``Q_L^T G Q_R``),
    - ``m' = beta_1 m' + (1 - beta_1) g'``: the paper's
      ``m = beta_1 m + (1 - beta_1) g`` rotated like ``g`` (the rotation is
      linear and the bases only change at refreshes, which carry ``m'``
      into the new bases, ``m' <- m' x_i (Q_i,new^T Q_i,old)``; the paper
      keeps ``m`` and rotates it every step),
    - ``v = beta_2 v + (1 - beta_2) g'^2`` (kept in the rotated space),
    - ``n' = (m' / (1 - beta_1^t)) / (sqrt(v / (1 - beta_2^t)) + epsilon)``,
    - rotate back ``n = n' x_1 Q_1 x_2 Q_2 ...`` and ``w -= lr n``,
    - then accumulate ``L_i`` with ``g`` (at steps 1, ``1 + k``,
      ``1 + 2k``, ... with ``k = statistics_compute_steps``; every step by
      default) and, at step 1 and every
      ``precondition_frequency`` steps, refresh the bases by one power
      iteration from the previous basis (the identity at step 1):
      ``Q_i = QR((L_i + matrix_epsilon tr(L_i) I) Q_i)``, the paper's
      Algorithm 4 with a shift.

    Deviations from the paper, both for reproducibility: the paper
    initialises the bases by an eigendecomposition, whose basis of a
    degenerate eigenspace (the null space of the rank-deficient factors of
    the first steps) is arbitrary: XLA's and TensorFlow's CPU
    eigensolvers, or one and two replicas, picked different ones and the
    weights of a small MLP differed by 0.04 after 16 float32 steps. Power
    iteration from the identity is continuous in the factors (the shift bounds the condition
    number of ``L Q`` by ``1 + 1 / matrix_epsilon``) and converges to the
    eigenbasis over the refreshes; ``matrix_epsilon=0`` is the unshifted
    iteration. The authors' code also reorders the basis by estimated
    eigenvalue before each iteration; this one does not.
    ``paper_exact=True`` runs the authors' code instead (see below).

    So step 1 is a plain Adam step, as are every step of 1-D variables and
    of variables with no dimension ``<= max_preconditioner_dim`` (identity
    basis). ``weight_decay`` is the base class's decoupled decay.

    Memory per variable (floats): twice its size (``m``, ``v``, as Adam),
    plus, per block and preconditioned dimension of size ``n``, ``2 n^2``
    (factor and basis). An unblocked ``d1 x d2`` kernel costs
    ``2 d1 d2 + 2 (d1^2 + d2^2)``; a kernel cut into ``b x b`` blocks costs
    ``2 + 4 = 6`` floats per parameter (Adam: 2, Shampoo: 6).

    Compute per step, per ``b x b`` block of a 2-D variable (blocks of equal
    shape batched): four block matrix products (``g`` into the bases, ``n``
    back), ``8 b^3`` flops or ``8 b`` per parameter, which Adam does not
    do; plus two for the factors on statistics steps. A train step of a
    dense layer costs ``6 * batch`` flops per parameter, so the rotations
    alone add about ``(4/3) b / batch`` of a train step (1.33 at
    ``b = batch = 128``) and the factors ``(2/3) b / batch`` divided by
    ``statistics_compute_steps``. Every ``precondition_frequency`` steps
    and at step 1: one power iteration and QR decomposition (``O(n^3)``)
    per factor and the carry of ``m'`` (two block products). Measured with
    ``benchmarks/step_cost.py`` (784-1024-256-10 MLP, batch 128, 2 CPU
    cores; see the README for the table against ``block_size``,
    ``precondition_frequency`` and ``statistics_compute_steps``).

    Numerics: factors and bases are float64 for float64 variables and
    float32 otherwise (float16 variables too). A refresh that finds a NaN
    or infinite factor (or whose new bases are not finite) keeps the
    previous bases and adds one to :attr:`skipped_refreshes`: a diverging
    run ends in NaN weights, never in an error.

    Args:
        learning_rate: float, schedule or callable. Defaults to `0.003`.
        beta_1: decay of the first moment, in [0, 1). Defaults to `0.95`.
        beta_2: decay of the rotated second moment, in [0, 1).
            Defaults to `0.95`.
        epsilon: added to the denominator, >= 0. Defaults to `1e-8`.
        shampoo_beta: decay of the Kronecker factors, in [0, 1]; `1.0`
            sums them. Defaults to `0.95`.
        matrix_epsilon: shift of each power iteration, relative to the
            factor's trace, >= 0 (0: the paper's unshifted iteration).
            Defaults to `1e-3`.
        precondition_frequency: steps between basis refreshes (one power
            iteration + QR each), >= 1. Defaults to `10`.
        block_size: largest block along a preconditioned dimension, >= 1.
            Defaults to `128`.
        max_preconditioner_dim: dimensions larger than this keep the
            identity basis and are not blocked, >= 1. Defaults to `8192`.
        statistics_compute_steps: steps between updates of the factors,
            >= 1 (1: every step). Defaults to `1`.
        paper_exact: `True` runs the SOAP authors' code
            (github.com/nikhilvyas/SOAP, the release of the paper) exactly:
            the first call only accumulates the factors and sets the bases
            to their eigenvectors (largest eigenvalue first), without
            changing the weights or moments; every later call ``c`` takes
            an Adam step in those bases with ``s = c - 1`` as its step
            count, ``n = m' / (sqrt(v) + epsilon)`` and step size
            ``lr sqrt(1 - beta_2^s) / (1 - beta_1^s)``, then accumulates the
            factors and, when ``s`` is a multiple of
            ``precondition_frequency``, sorts each basis by its estimated
            eigenvalues ``diag(Q^T L Q)`` (permuting ``v`` alike) and runs
            one unshifted power iteration ``Q = QR(L Q)``. No blocks
            (``block_size`` is not used). It sets ``matrix_epsilon=0`` and
            ``statistics_compute_steps=1`` (other values raise
            ``ValueError``). ``weight_decay`` stays
            Keras's decoupled decay before the step (the authors decay
            after it). Defaults to `False`.
        {{base_optimizer_keyword_args}}

    Example:
    >>> model.compile(optimizer=keras_optsuite.optimizers.SOAP(3e-3), loss="mse")
    """

    _factor_attributes = {"statistic": "_statistics", "basis": "_bases"}
    _factor_initializers = {"basis": "identity"}

    def __init__(
        self,
        learning_rate: Any = 0.003,
        beta_1: float = 0.95,
        beta_2: float = 0.95,
        epsilon: float = 1e-8,
        shampoo_beta: float = 0.95,
        matrix_epsilon: float = 1e-3,
        precondition_frequency: int = 10,
        block_size: int = 128,
        max_preconditioner_dim: int = 8192,
        statistics_compute_steps: int = 1,
        paper_exact: bool = False,
        name: str = "soap",
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.paper_exact = check_bool("paper_exact", paper_exact)
        if paper_exact:
            check_paper_exact("the authors' code",
                              {"matrix_epsilon": matrix_epsilon, "statistics_compute_steps": statistics_compute_steps},
                              {"matrix_epsilon": 0.0, "statistics_compute_steps": 1},
                              {"matrix_epsilon": 1e-3, "statistics_compute_steps": 1})
            matrix_epsilon, statistics_compute_steps = 0.0, 1
        self.beta_1 = check_decay_rate("beta_1", beta_1)
        self.beta_2 = check_decay_rate("beta_2", beta_2)
        self.epsilon = check_non_negative("epsilon", epsilon)
        self.shampoo_beta = check_fraction("shampoo_beta", shampoo_beta)
        self.matrix_epsilon = check_non_negative("matrix_epsilon", matrix_epsilon)
        self.precondition_frequency = check_positive_int("precondition_frequency", precondition_frequency)
        self.block_size = check_positive_int("block_size", block_size)
        self.max_preconditioner_dim = check_positive_int("max_preconditioner_dim", max_preconditioner_dim)
        self.statistics_compute_steps = check_positive_int("statistics_compute_steps", statistics_compute_steps)

    def _slot_names(self) -> tuple[str, ...]:
        return ("momentum", "velocity")

    def _rotate_blocks(self, blocks: list[Any], index: int, bases: list[Any], back: bool) -> list[Any]:
        """``block x_i Q_i^T`` over the preconditioned axes (``back``: ``x_i Q_i``), per region batch."""
        rotated, j = [], 0
        for batch in blocks:
            for axis in self._layouts[index].axes:
                batch = _block_mode_product(bases[j], batch, axis, transpose=not back)
                j += 1
            rotated.append(batch)
        return rotated

    def _rotate(self, tensor: Any, index: int, bases: list[Any], back: bool) -> Any:
        """:meth:`_rotate_blocks` of the whole variable."""
        layout = self._layouts[index]
        return layout.from_blocks(self._rotate_blocks(layout.to_blocks(tensor), index, bases, back))

    def _refresh_bases(self, index: int, t: Any) -> None:
        """Every ``precondition_frequency`` steps (and at step 1): one power iteration per basis.

        The first moment, kept in the rotated space, is carried into the
        new bases: ``m' <- m' x_i (Q_i,new^T Q_i,old)``.
        """
        statistics, bases = self._statistics[index], self._bases[index]
        momentum = self._slots["momentum"][index]

        def iterate():
            return [power_iteration_basis(tf.convert_to_tensor(s), tf.convert_to_tensor(q), self.matrix_epsilon)
                    for s, q in zip(statistics, bases)]

        def carry_momentum(new):
            changes = [tf.matmul(q_new, tf.convert_to_tensor(q_old), transpose_a=True)
                       for q_new, q_old in zip(new, bases)]
            self.assign(momentum, self._rotate(tf.convert_to_tensor(momentum), index, changes, back=True))

        due = tf.logical_or(
            tf.equal(t, 1.0), tf.equal(tf.math.floormod(t, float(self.precondition_frequency)), 0)
        )
        self._refresh(due, statistics, bases, iterate, on_accept=carry_momentum)

    def _step(self, gradient: Any, variable: Any, learning_rate: Any, t: Any) -> Any:
        """The change ``lr * n`` of the variable (updates every state)."""
        if self.paper_exact:
            return self._authors_step(gradient, variable, learning_rate, t)
        index = self._get_variable_index(variable)
        layout = self._layouts[index]
        momentum, velocity = self._slot("momentum", variable), self._slot("velocity", variable)
        if layout.preconditioned:
            bases = [tf.convert_to_tensor(b) for b in self._bases[index]]
            blocks = layout.to_blocks(gradient)
            rotated_gradient = layout.from_blocks(self._rotate_blocks(blocks, index, bases, back=False))
        else:
            rotated_gradient = gradient
        # m' = Q^T m Q directly: m = beta_1 m + (1 - beta_1) g is linear and the
        # bases only change at refreshes, which carry m' into the new bases.
        self.assign_add(momentum, (rotated_gradient - momentum) * (1.0 - self.beta_1))
        self.assign_add(velocity, (ops.square(rotated_gradient) - velocity) * (1.0 - self.beta_2))
        # (m' / (1 - beta_1^t)) / (sqrt(v / (1 - beta_2^t)) + epsilon), corrections folded into scalars.
        step_size, epsilon = adam_step_size(learning_rate, self.beta_1, self.beta_2, self.epsilon, t)
        direction = momentum / (ops.sqrt(velocity) + epsilon)
        if layout.preconditioned:
            direction = tf.identity(self._rotate(direction, index, bases, back=True))
            with tf.control_dependencies([direction]):
                self._accumulate_statistics(blocks, index, self.shampoo_beta, t)
                self._refresh_bases(index, t)
        return step_size * direction

    def _authors_step(self, gradient: Any, variable: Any, learning_rate: Any, t: Any) -> Any:
        """One call of the authors' ``step`` (``paper_exact``): the change of the variable."""
        index = self._get_variable_index(variable)
        layout = self._layouts[index]
        momentum, velocity = self._slot("momentum", variable), self._slot("velocity", variable)
        first = tf.equal(t, 1.0)
        s = tf.maximum(t - 1.0, 1.0)  # the authors' step count (unused at the first call)
        bases = [tf.convert_to_tensor(b) for b in self._bases[index]]
        new_first = self.beta_1 * momentum + (1.0 - self.beta_1) * gradient
        if layout.preconditioned:
            rotated_gradient = self._rotate(gradient, index, bases, back=False)
            rotated_first = self._rotate(new_first, index, bases, back=False)
        else:
            rotated_gradient, rotated_first = gradient, new_first
        new_second = self.beta_2 * velocity + (1.0 - self.beta_2) * ops.square(rotated_gradient)
        direction = rotated_first / (ops.sqrt(new_second) + self.epsilon)
        if layout.preconditioned:
            direction = self._rotate(direction, index, bases, back=True)
        step_size = learning_rate * ops.sqrt(1.0 - power(self.beta_2, s)) / (1.0 - power(self.beta_1, s))
        change = tf.where(first, tf.zeros_like(direction), step_size * direction)
        change = tf.identity(change)
        self.assign(momentum, tf.where(first, tf.convert_to_tensor(momentum.value), new_first))
        new_second = tf.where(first, tf.convert_to_tensor(velocity.value), new_second)
        if layout.preconditioned:
            with tf.control_dependencies([change]):
                self._accumulate_statistics([gradient[None]], index, self.shampoo_beta, t)
                new_second = self._authors_refresh(index, first, t - 1.0, new_second)
        self.assign(velocity, new_second)
        return change

    def _authors_refresh(self, index: int, first: Any, s: Any, second: Any) -> Any:
        """Eigenbases at the first call, sorted power iteration when due; returns ``v`` (permuted)."""
        layout = self._layouts[index]
        # One block per variable (no blocks in this mode): batches of one matrix.
        statistics = [tf.convert_to_tensor(f)[0] for f in self._statistics[index]]
        previous = [tf.convert_to_tensor(b)[0] for b in self._bases[index]]
        orders = [sorting_order(f, q) for f, q in zip(statistics, previous)]

        def compute():
            return [basis[None] for basis in tf.cond(
                first,
                lambda: [descending_eigenbasis(f) for f in statistics],
                lambda: [sorted_power_iteration(f, q, o) for f, q, o in zip(statistics, previous, orders)],
            )]

        due = tf.logical_or(
            first,
            tf.logical_and(s > 0, tf.equal(tf.math.floormod(s, float(self.precondition_frequency)), 0)),
        )
        accepted = self._refresh(due, self._statistics[index], self._bases[index], compute)
        # Factor j is axis layout.axes[j].
        permuted = second
        for order, axis in zip(orders, layout.axes):
            permuted = tf.gather(permuted, order, axis=axis)
        sort = tf.logical_and(accepted, tf.logical_not(first))
        return tf.where(sort, permuted, second)
