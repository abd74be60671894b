"""Shampoo beyond the contract suite: its preconditioner state against an
independent NumPy/SciPy computation, its memory layout, and its advantage
over Adam on a badly conditioned quadratic.

The per-step update rule (grafting, momentum, refresh schedule, blocks) is
checked against ``tests/references/shampoo.py`` by the contract suite.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf
from references import conditioned_quadratic

from keras_optsuite.optimizers import Shampoo


def _root(statistic, p, epsilon):
    """(L + epsilon lambda_max I)^(-1/p) by SciPy's Schur-Pade algorithm (not eigh)."""
    damped = statistic + epsilon * np.linalg.eigvalsh(statistic).max() * np.eye(len(statistic))
    return np.real(scipy.linalg.fractional_matrix_power(damped, -1.0 / p))


def _gram(block, axis):
    unfolding = np.moveaxis(block, axis, 0).reshape(block.shape[axis], -1)
    return unfolding @ unfolding.T


def _state(optimizer, variable):
    """Per block (row-major) and axis: the statistics and the roots."""
    return optimizer.factor_matrices(variable, "statistic"), optimizer.factor_matrices(variable, "root")


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-9), ("float32", 1e-5)])
def test_blocked_factors_and_inverse_roots_match_an_independent_computation(dtype, rtol):
    """A 3-D tensor cut into blocks: each block's factors and roots (``root_method="eigh"``).

    float32 tolerance: the factors are summed in float32 (relative error
    ~1e-7 each) and float32 eigh perturbs eigenvalues by ~1e-7 lambda_max:
    measured 1.2e-7 (factors) and 3.6e-7 (roots) of the largest entry;
    in float64 the roots agree with SciPy to 1.5e-15.
    """
    rng = np.random.default_rng(0)
    shape, block_size, decay, epsilon = (3, 4, 5), 3, 0.75, 1e-3
    gradients = [rng.normal(size=shape) for _ in range(7)]
    variable = keras.Variable(np.zeros(shape), dtype=dtype)
    optimizer = Shampoo(
        learning_rate=0.0625, statistics_decay=decay, matrix_epsilon=epsilon,
        block_size=block_size, start_preconditioning_step=1, precondition_frequency=3, root_method="eigh",
    )
    for g in gradients:
        optimizer.apply([tf.constant(g, dtype)], [variable])

    # Blocks in row-major order of the grid: axis 0 -> [0:3], axis 1 -> [0:3], [3:4],
    # axis 2 -> [0:3], [3:5]; one factor per block and axis.
    cuts = [[(0, 3)], [(0, 3), (3, 4)], [(0, 3), (3, 5)]]
    statistics, roots = _state(optimizer, variable)
    assert len(statistics) == 4 * 3
    j = 0
    for a in cuts[0]:
        for b in cuts[1]:
            for c in cuts[2]:
                for axis in range(3):
                    want = np.zeros((statistics[j].shape))
                    for g in gradients:
                        block = g[a[0]:a[1], b[0]:b[1], c[0]:c[1]]
                        want = decay * want + (1 - decay) * _gram(block, axis)
                    scale = rtol * np.abs(want).max()  # float32 errors scale with the largest entry
                    np.testing.assert_allclose(statistics[j], want, rtol=rtol, atol=scale)
                    # Roots were last refreshed at step 7 (steps 1, 4, 7): from the final
                    # statistics, with p = 2 * 3 dimensions.
                    root = _root(want, 6, epsilon)
                    np.testing.assert_allclose(
                        roots[j], root, rtol=rtol, atol=rtol * np.abs(root).max(),
                        err_msg=f"block {a, b, c} axis {axis}",
                    )
                    j += 1


def test_step_is_the_kronecker_preconditioned_gradient():
    """Raw Shampoo (no grafting, no momentum): w -= lr (L^-1/4 kron R^-1/4) vec(G)."""
    rng = np.random.default_rng(1)
    gradients = [rng.normal(size=(5, 4)) for _ in range(4)]
    variable = keras.Variable(np.zeros((5, 4)), dtype="float64")
    lr = 0.25
    optimizer = Shampoo(
        learning_rate=lr, beta_1=0.0, statistics_decay=1.0, grafting=None,
        start_preconditioning_step=1, precondition_frequency=1, root_method="eigh",
    )
    for g in gradients[:-1]:
        optimizer.apply([tf.constant(g)], [variable])
    before = variable.numpy()
    optimizer.apply([tf.constant(gradients[-1])], [variable])

    left = sum(g @ g.T for g in gradients)  # the original paper's sums
    right = sum(g.T @ g for g in gradients)
    kron = np.kron(_root(left, 4, 1e-3), _root(right, 4, 1e-3))  # row-major vec(L G R) = (L kron R) vec(G)
    expected = before - lr * (kron @ gradients[-1].reshape(-1)).reshape(5, 4)
    np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-9, atol=1e-12)


def test_memory_layout_matches_the_documented_cost():
    kernel = keras.Variable(np.zeros((6, 4), "float32"))
    wide = keras.Variable(np.zeros((300, 5), "float32"))  # 300 > max_preconditioner_dim
    bias = keras.Variable(np.zeros((4,), "float32"))
    optimizer = Shampoo(block_size=4, max_preconditioner_dim=100)
    optimizer.build([kernel, wide, bias])

    def floats(variable):
        statistics, roots = _state(optimizer, variable)
        return sum(s.size for s in statistics + roots), [s.shape for s in statistics]

    # 6 x 4 kernel, 6 cut into 4 + 2: blocks (4, 4) and (2, 4), factors 4,4 and 2,4.
    kernel_floats, kernel_shapes = floats(kernel)
    assert kernel_shapes == [(4, 4), (4, 4), (2, 2), (4, 4)]
    assert kernel_floats == 2 * (16 + 16 + 4 + 16)
    # Only the 5-dim is preconditioned (cut into 4 + 1; 300 is not cut); p = 2 * 1.
    wide_floats, wide_shapes = floats(wide)
    assert wide_shapes == [(4, 4), (1, 1)] and wide_floats == 2 * (16 + 1)
    assert optimizer._layouts[optimizer._get_variable_index(wide)].exponent == 2.0
    assert floats(bias) == (0, [])
    # Momentum and Adam's second moment for every variable, plus iterations and learning rate.
    per_parameter = sum(int(np.prod(v.shape)) for v in (kernel, wide, bias))
    total = sum(int(np.prod(v.shape)) for v in optimizer.variables)
    # Plus iterations, learning rate and the skipped-refresh counter.
    assert total == 3 + 2 * per_parameter + kernel_floats + wide_floats


@pytest.mark.parametrize(
    "arguments,name",
    [({"grafting": "lbfgs"}, "grafting"), ({"statistics_decay": 1.5}, "statistics_decay"),
     ({"exponent_override": 0}, "exponent_override"), ({"block_size": 0}, "block_size"),
     ({"matrix_epsilon": -1.0}, "matrix_epsilon"),
     ({"precondition_frequency": 2.5}, "precondition_frequency"),
     ({"paper_exact": True, "grafting": "sgd"}, "grafting"),
     ({"paper_exact": True, "beta_1": 0.5}, "beta_1"),
     ({"paper_exact": True, "matrix_epsilon": 0.0}, "matrix_epsilon")],
)
def test_invalid_arguments_name_the_argument(arguments, name):
    with pytest.raises(ValueError, match=name):
        Shampoo(**arguments)


def test_beats_adam_by_100x_on_a_quadratic_with_condition_number_1e4():
    """The problem of ``references/conditioned_quadratic.py``: Hessian A kron B,
    cond = 100 * 100, randomly rotated, 200 full-batch steps from W = 0.
    Adam's learning rate is the best of a grid around its optimum. Shampoo is set up for a small deterministic problem
    (roots refreshed every step from step 1, grafting beta_2 0.99,
    matrix_epsilon 1e-4) and must win by 100x at every learning rate of its
    grid (measured: 0.2 -> 1.1e-3, 0.3 -> 9.6e-5, 0.5 -> 6.4e-4). With all
    defaults (roots every 10 steps from step 10) it reaches 0.16 at lr 0.3.
    """
    a, b, _ = conditioned_quadratic.problem()
    np.testing.assert_allclose(np.linalg.cond(np.kron(a, b)), 1e4, rtol=1e-6)
    adam = conditioned_quadratic.tuned_adam_final_loss()
    settings = dict(start_preconditioning_step=1, precondition_frequency=1, beta_2=0.99,
                    matrix_epsilon=1e-4)
    shampoo = [conditioned_quadratic.final_loss(Shampoo(lr, **settings)) for lr in (0.2, 0.3, 0.5)]
    assert all(np.isfinite(shampoo))
    assert max(shampoo) < adam / 100, f"Shampoo {shampoo} vs Adam {adam:.3g}"


def test_float16_variables_keep_float32_factors():
    """Squared float16 gradients overflow above 256: factors and roots stay float32."""
    rng = np.random.default_rng(2)
    gradients = [300.0 * rng.normal(size=(3, 4)) for _ in range(3)]
    half = keras.Variable(np.ones((3, 4)), dtype="float16")
    single = keras.Variable(np.ones((3, 4)), dtype="float32")
    optimizers = [Shampoo(0.0625, statistics_decay=1.0, start_preconditioning_step=1) for _ in range(2)]
    for g in gradients:
        optimizers[0].apply([tf.constant(g, "float16")], [half])
        optimizers[1].apply([tf.constant(g, "float32")], [single])
    statistics, roots = _state(optimizers[0], half)
    assert {s.dtype for s in statistics + roots} == {np.dtype("float32")}
    assert np.all(np.isfinite(statistics[0])) and statistics[0].max() > 65504  # beyond float16
    np.testing.assert_allclose(half.numpy().astype("float32"), single.numpy(), rtol=2e-3, atol=2e-3)
    assert not np.allclose(single.numpy(), 1.0)


def _psd_matrices(rng, n):
    """PSD test matrices: full rank, rank-deficient, badly conditioned, tiny scale, zero."""
    g = rng.normal(size=(n, 3 * n))
    low_rank = rng.normal(size=(n, 2))
    q = np.linalg.qr(rng.normal(size=(n, n)))[0]
    return [
        g @ g.T,
        low_rank @ low_rank.T,
        q @ np.diag(np.logspace(-8, 0, n)) @ q.T,
        1e-20 * (g @ g.T),
        np.zeros((n, n)),
    ]


@pytest.mark.parametrize("p", [2, 4, 6])
def test_newton_roots_match_the_numpy_transcription_and_the_exact_root(p):
    """``newton_inverse_pth_root`` (float64, batched) against ``references/coupled_newton.py``
    (one matrix at a time, same scaling, stopping rule and power iteration) at rtol 1e-9; and
    against the exact root of the same damped matrix by NumPy's eigh, to the error the
    stopping rule allows: ``X = M^(1/p) A^(-1/p)`` with ``max|M - I| = e``, so
    ``|X - A^(-1/p)|_2 <= (n e / p + O(e^2)) |A^(-1/p)|_2``."""
    from references import coupled_newton

    from keras_optsuite.optimizers.shampoo import largest_eigenvalue, newton_inverse_pth_root

    rng = np.random.default_rng(p)
    n, epsilon = 12, 1e-3
    matrices = _psd_matrices(rng, n)
    roots = newton_inverse_pth_root(tf.constant(np.stack(matrices)), p, epsilon).numpy()
    estimates = largest_eigenvalue(tf.constant(np.stack(matrices))).numpy()[:, 0, 0]
    for matrix, root, estimate in zip(matrices, roots, estimates):
        expected, iterations, error = coupled_newton.inverse_root(matrix, p, epsilon)
        np.testing.assert_allclose(root, expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())
        lam = coupled_newton.largest_eigenvalue(matrix)
        np.testing.assert_allclose(estimate, lam, rtol=1e-9, atol=1e-300)
        largest = np.linalg.eigvalsh(matrix).max()
        assert lam <= largest * (1 + 1e-12) and lam >= 0.9 * largest
        if largest == 0:
            np.testing.assert_array_equal(root, np.eye(n))
            continue
        assert iterations < coupled_newton.MAX_ITERATIONS and error <= coupled_newton.TOLERANCE
        w, v = np.linalg.eigh(matrix + epsilon * lam * np.eye(n))
        exact = (v * w ** (-1.0 / p)) @ v.T
        # Plus the float64 rounding of both computations (measured up to 1.1e-12 of the largest entry).
        bound = 2 * (n * error / p) * w.min() ** (-1.0 / p) + 1e-11 * np.abs(exact).max()
        assert np.abs(root - exact).max() <= bound, (np.abs(root - exact).max(), bound)


def test_newton_in_float32_is_close_to_the_exact_root():
    """float32, tolerance 1e-5: max|M - I| <= 1e-5 bounds the relative error by about n 1e-5 / p."""
    from keras_optsuite.optimizers.shampoo import newton_inverse_pth_root

    rng = np.random.default_rng(7)
    n, p, epsilon = 16, 4, 1e-3
    matrices = _psd_matrices(rng, n)[:3]
    roots = newton_inverse_pth_root(tf.constant(np.stack(matrices), tf.float32), p, epsilon).numpy()
    for matrix, root in zip(matrices, roots):
        w, v = np.linalg.eigh(matrix)
        w = np.maximum(w, 0) + epsilon * w.max()
        exact = (v * w ** (-1.0 / p)) @ v.T
        # The power-iteration estimate of lambda_max is within 10 % here: damping off by < 1e-4 lambda_max.
        np.testing.assert_allclose(root, exact, rtol=0, atol=2e-3 * np.abs(exact).max())


@pytest.mark.parametrize("hyper", [
    {"root_method": "newton"},
    {"root_method": "newton", "statistics_compute_steps": 3, "statistics_decay": 0.75},
    {"statistics_compute_steps": 2, "grafting": "adagrad"},
])
def test_newton_roots_and_sparse_statistics_match_the_reference(hyper):
    """30 float64 steps of blocked order-2 and order-3 variables against ``references/shampoo.py``
    (whose Newton path is ``references/coupled_newton.py``) at rtol 1e-9."""
    from references import shampoo as shampoo_reference
    from references._harness import reference_for, run_beside

    hyper = dict(hyper, block_size=3, start_preconditioning_step=2, precondition_frequency=4)
    lr = 2.0**-6
    optimizer = Shampoo(learning_rate=lr, **hyper)
    weights, params = run_beside(optimizer, reference_for(shampoo_reference, lr, **hyper),
                                 [(7, 5), (4, 3, 5), (6,)], seed=4)
    for actual, expected in zip(weights, params):
        np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=1e-12)
    assert optimizer.skipped_refreshes == 0


def test_statistics_compute_steps_accumulates_every_kth_step_only():
    """k = 3: statistics from the gradients of steps 1, 4, 7 only (a closed form)."""
    rng = np.random.default_rng(5)
    gradients = [rng.normal(size=(4, 3)) for _ in range(8)]
    variable = keras.Variable(np.zeros((4, 3)), dtype="float64")
    optimizer = Shampoo(statistics_decay=1.0, statistics_compute_steps=3)
    for g in gradients:
        optimizer.apply([tf.constant(g)], [variable])
    left, right = optimizer.factor_matrices(variable, "statistic")
    np.testing.assert_allclose(left, sum(gradients[i] @ gradients[i].T for i in (0, 3, 6)), rtol=1e-12)
    np.testing.assert_allclose(right, sum(gradients[i].T @ gradients[i] for i in (0, 3, 6)), rtol=1e-12)


def test_newton_roots_beat_adam_by_100x_on_the_conditioned_quadratic():
    """The quality check above with ``root_method="newton"`` (measured: 0.2 -> 1.1e-3, 0.3 -> 9.6e-5,
    0.5 -> 6.4e-4, as with eigh)."""
    adam = conditioned_quadratic.tuned_adam_final_loss()
    settings = dict(start_preconditioning_step=1, precondition_frequency=1, beta_2=0.99,
                    matrix_epsilon=1e-4, root_method="newton")
    shampoo = [conditioned_quadratic.final_loss(Shampoo(lr, **settings)) for lr in (0.2, 0.3, 0.5)]
    assert all(np.isfinite(shampoo))
    assert max(shampoo) < adam / 100, f"Shampoo {shampoo} vs Adam {adam:.3g}"


def test_newton_without_damping_on_rank_deficient_statistics_does_not_crash():
    """matrix_epsilon=0 and rank-1 statistics: the iteration cannot converge (M keeps a zero
    eigenvalue); it stops after at most 100 iterations and the grafted step stays finite."""
    variable = keras.Variable(np.zeros((5, 4), "float32"))
    optimizer = Shampoo(0.01, root_method="newton", matrix_epsilon=0.0, start_preconditioning_step=1,
                        precondition_frequency=1)
    gradient = tf.constant(np.outer(np.arange(1.0, 6.0), np.ones(4)), tf.float32)
    for _ in range(3):
        optimizer.apply([gradient], [variable])
    assert np.all(np.isfinite(variable.numpy())) and not np.allclose(variable.numpy(), 0.0)


def test_new_arguments_are_validated_and_round_trip_through_the_config():
    for arguments, name in [({"root_method": "cholesky"}, "root_method"),
                            ({"statistics_compute_steps": 0}, "statistics_compute_steps"),
                            ({"paper_exact": True, "root_method": "newton"}, "root_method"),
                            ({"paper_exact": True, "statistics_compute_steps": 2}, "statistics_compute_steps")]:
        with pytest.raises(ValueError, match=name):
            Shampoo(**arguments)
    config = Shampoo(root_method="newton", statistics_compute_steps=3).get_config()
    assert config["root_method"] == "newton" and config["statistics_compute_steps"] == 3
    assert Shampoo.from_config(config).statistics_compute_steps == 3
