"""LU factorisation of a batch of small square matrices, factored once and solved many times.

A Rosenbrock step solves six linear systems with the same matrix :math:`I - h\\gamma J` for
every sample of the batch, and its discrete adjoint solves six with the transpose.
NumPy's ``linalg.solve`` refactors on every call, so the factorisation here is kept: row
operations vectorised over the batch, a Python loop over the (small) matrix size. It keeps
the dtype it is given, so complex input flows through for the complex-step check (partial
pivoting chooses rows by magnitude; any choice gives the same analytic function).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["BatchedLU", "SingularMatrix"]


class SingularMatrix(ArithmeticError):
    """A pivot is zero or not finite: the matrix is singular (to working precision) or the
    Jacobian it was built from is not finite."""


class BatchedLU:
    r"""Partial-pivoting LU factors of ``matrices``, shape ``(B, m, m)``: :math:`P A = L U`.

    Parameters
    ----------
    matrices : ndarray, shape (B, m, m)

    Raises
    ------
    SingularMatrix
        When a pivot is zero or not finite in any sample.
    """

    def __init__(self, matrices: NDArray):
        lu = np.array(matrices, copy=True)
        batch, m, _ = lu.shape
        perm = np.tile(np.arange(m), (batch, 1))
        rows = np.arange(batch)
        for k in range(m):
            pivot = k + np.argmax(np.abs(lu[:, k:, k]), axis=1)
            swap = pivot != k
            if np.any(swap):
                which = rows[swap]
                lu[which, k], lu[which, pivot[swap]] = (lu[which, pivot[swap]].copy(),
                                                        lu[which, k].copy())
                perm[which, k], perm[which, pivot[swap]] = (perm[which, pivot[swap]].copy(),
                                                            perm[which, k].copy())
            diagonal = lu[:, k, k]
            if not np.all(np.isfinite(diagonal)) or np.any(diagonal == 0):
                raise SingularMatrix(f"zero or non-finite pivot in column {k}")
            if k + 1 < m:
                lu[:, k + 1 :, k] /= diagonal[:, None]
                lu[:, k + 1 :, k + 1 :] -= lu[:, k + 1 :, k, None] * lu[:, None, k, k + 1 :]
        self.lu = lu
        self.perm = perm
        self._rows = rows[:, None]

    @property
    def size(self) -> int:
        return self.lu.shape[1]

    def solve(self, r: NDArray) -> NDArray:
        """:math:`A^{-1} r` for ``r`` of shape ``(B, m)`` or ``(B, m, K)``."""
        x = self._columns(r)
        x = x[self._rows, self.perm]
        lu, m = self.lu, self.size
        for k in range(m - 1):  # L y = P r, unit diagonal
            x[:, k + 1 :] -= lu[:, k + 1 :, k, None] * x[:, k, None]
        for k in range(m - 1, -1, -1):  # U x = y
            x[:, k] /= lu[:, k, k, None]
            if k:
                x[:, :k] -= lu[:, :k, k, None] * x[:, k, None]
        return x[..., 0] if r.ndim == 2 else x

    def solve_transposed(self, r: NDArray) -> NDArray:
        """:math:`A^{-T} r` for ``r`` of shape ``(B, m)`` or ``(B, m, K)``:
        :math:`U^T L^T P x = r`."""
        x = self._columns(r)
        lu, m = self.lu, self.size
        for k in range(m):  # U^T y = r: U^T is lower triangular
            if k:
                x[:, k] -= np.einsum("bj,bjk->bk", lu[:, :k, k], x[:, :k])
            x[:, k] /= lu[:, k, k, None]
        for k in range(m - 2, -1, -1):  # L^T w = y: unit upper triangular
            x[:, k] -= np.einsum("bj,bjk->bk", lu[:, k + 1 :, k], x[:, k + 1 :])
        out = np.empty_like(x)
        out[self._rows, self.perm] = x
        return out[..., 0] if r.ndim == 2 else out

    def _columns(self, r: NDArray) -> NDArray:
        r = np.asarray(r)
        x = r[..., None] if r.ndim == 2 else r
        return x.astype(np.result_type(x, self.lu), copy=True)
