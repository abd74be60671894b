"""Soft orthogonality penalties on kernels: Frobenius (SO) and spectral (SRIP).

Keras 3.15's ``keras.regularizers.OrthogonalRegularizer`` penalizes the mean
absolute cosine between distinct rows (or columns) of a rank-2 kernel: it
is blind to the norms (a kernel whose columns are orthogonal but of norm 10
costs nothing) and rejects convolution kernels. The two penalties here push
``W^T W`` towards the identity, so the columns become orthonormal: the
paper's soft orthogonality (SO) and spectral restricted isometry (SRIP)
regularizers.

Both view a kernel of any rank >= 2 as the matrix ``W`` of shape
``(-1, units)`` (a Dense kernel ``(in, out)`` as is; a Conv2D kernel
``(kh, kw, in, out)`` as ``(kh * kw * in, out)``, one filter per column) and
take the Gram matrix of its smaller side: ``W^T W`` (``out x out``) when
``rows >= columns``, else ``W W^T`` (``rows x rows``). An over-complete
kernel (more columns than rows) cannot have ``W^T W = I`` (its rank is at
most ``rows``), but can have orthonormal rows, ``W W^T = I``; this is the
choice of the authors' PyTorch code. Below, ``W^T W`` stands for that Gram.
Computations run in float32 (float64 for a float64 kernel).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from keras_optsuite._config import own_config
from keras_optsuite._validation import check_non_negative, check_positive_int


def gram_minus_identity(kernel: Any) -> Any:
    """``G - I`` for the Gram ``G`` of the smaller side of ``kernel`` viewed as ``(-1, units)``."""
    shape = tuple(kernel.shape)
    if len(shape) < 2 or any(size is None for size in shape):
        raise ValueError(
            f"an orthogonality regularizer needs a kernel of known shape and rank >= 2 "
            f"(Dense, Conv); got a weight of shape {shape}"
        )
    dtype = "float64" if keras.backend.standardize_dtype(kernel.dtype) == "float64" else "float32"
    matrix = ops.reshape(ops.cast(kernel, dtype), (-1, shape[-1]))
    rows, columns = int(np.prod(shape[:-1])), shape[-1]
    if rows >= columns:
        gram = ops.matmul(ops.transpose(matrix), matrix)
    else:
        gram = ops.matmul(matrix, ops.transpose(matrix))
    return gram - ops.eye(min(rows, columns), dtype=dtype)


def _column_norms(matrix: Any) -> Any:
    """Euclidean norms of the columns, with a finite gradient at 0 (an orthonormal kernel)."""
    tiny = float(np.finfo(keras.backend.standardize_dtype(matrix.dtype)).tiny)
    return ops.sqrt(ops.maximum(ops.sum(ops.square(matrix), axis=0, keepdims=True), tiny))


@keras.saving.register_keras_serializable(package="keras_optsuite")
class SoftOrthogonal(keras.regularizers.Regularizer):
    """Soft orthogonality: ``factor * ||W^T W - I||_F^2``.

    Bansal, Chen, Wang, 2018, "Can We Gain More from Orthogonality
    Regularizations in Training Deep CNNs?", https://arxiv.org/abs/1810.09102
    (section 3.1, "SO"). The squared Frobenius norm of ``W^T W - I`` sums the
    squared deviations of every column norm from 1 (diagonal) and of every
    pair of columns from orthogonality (off-diagonal, counted twice); it is
    zero exactly when the columns are orthonormal. ``W`` is the kernel viewed
    as ``(-1, units)`` and ``W^T W`` the Gram of its smaller side (see the
    module docstring). Unlike ``keras.regularizers.OrthogonalRegularizer``
    (mean absolute cosine of rank-2 rows or columns) it also fixes the column
    norms to 1, and it takes convolution kernels.

    Args:
        factor: the penalty's coefficient, >= 0. Defaults to `1e-4`.

    Example:
    >>> layer = keras.layers.Dense(8, kernel_regularizer=SoftOrthogonal(1e-4))
    """

    def __init__(self, factor: float = 1e-4) -> None:
        self.factor = check_non_negative("factor", factor)

    def __call__(self, kernel: Any) -> Any:
        residual = gram_minus_identity(kernel)
        return ops.cast(self.factor, residual.dtype) * ops.sum(ops.square(residual))

    def get_config(self) -> dict[str, Any]:
        return own_config(self)


@keras.saving.register_keras_serializable(package="keras_optsuite")
class SpectralRestrictedIsometry(keras.regularizers.Regularizer):
    """SRIP: ``factor * sigma(W^T W - I)``, the spectral norm estimated by power iteration.

    Bansal, Chen, Wang, 2018, "Can We Gain More from Orthogonality
    Regularizations in Training Deep CNNs?", https://arxiv.org/abs/1810.09102
    (section 3.4, "SRIP"). ``sigma(A)`` is the largest singular value of the
    symmetric ``A = W^T W - I``, i.e. the largest ``|s^2 - 1|`` over the
    singular values ``s`` of ``W``: the worst-case stretch of ``||W v||^2``
    away from ``||v||^2``, zero exactly when the columns are orthonormal.
    ``W`` is the kernel viewed as ``(-1, units)`` and ``W^T W`` the Gram of its
    smaller side, ``n x n`` (see the module docstring).

    As in the paper, ``sigma`` is estimated by power iteration, not computed:
    from a unit vector ``v``, ``k = power_iterations`` products by ``A``
    (normalizing after each) give ``||A^k v|| / ||A^(k-1) v||``, which never
    exceeds ``sigma`` and rises towards it with ``k``. The authors' code does
    two products (``power_iterations=2``) from one random start vector,
    drawn anew at every step in their PyTorch code and once, when the model
    is built, in their Keras code. A single *fixed* start ``v_0`` makes the
    penalty vanish as soon as ``A v_0 = 0``, a constraint on one direction
    only: gradient descent on it (measured, 16x8 kernels) stalled at an
    estimate of 0.013 with a true ``sigma`` of 0.39. A fresh draw per step
    would need random state in the regularizer. So the iteration runs from every
    vector of the standard basis at once (the columns of the identity, so
    the first product is ``A`` itself) and keeps the largest estimate::

        sigma_k = max_i ||A^k e_i|| / ||A^(k-1) e_i||

    It is a deterministic, stateless function of ``W``, zero only when
    ``A = 0``, and bracketed as ``sigma * max_i |u_i|^(1/k) <= sigma_k <= sigma``
    with ``u`` the unit top eigenvector of ``A``; since ``max_i |u_i| >=
    1/sqrt(n)``, always ``sigma_k >= sigma * n^(-1/(2k))``. It adds ``k - 1``
    products of ``n x n`` matrices, each no dearer than the Gram itself (at
    most twice the cost of :class:`SoftOrthogonal` at ``k = 2``). Gradients flow
    through the whole iteration, as in the authors' code (their PyTorch
    code adds ``sigma^2``; the paper and their Keras code, ``sigma``, as here).

    Args:
        factor: the penalty's coefficient, >= 0. Defaults to `1e-4`.
        power_iterations: the number ``k`` of products by ``A``, >= 1.
            Defaults to `2` (the paper's).

    Example:
    >>> layer = keras.layers.Conv2D(16, 3, kernel_regularizer=SpectralRestrictedIsometry(1e-4))
    """

    def __init__(self, factor: float = 1e-4, power_iterations: int = 2) -> None:
        self.factor = check_non_negative("factor", factor)
        self.power_iterations = check_positive_int("power_iterations", power_iterations)

    def __call__(self, kernel: Any) -> Any:
        residual = gram_minus_identity(kernel)
        iterates = residual  # A @ I: column i is the first product from e_i
        for _ in range(self.power_iterations - 1):
            iterates = ops.matmul(residual, iterates / _column_norms(iterates))
        return ops.cast(self.factor, residual.dtype) * ops.max(_column_norms(iterates))

    def get_config(self) -> dict[str, Any]:
        return own_config(self)
