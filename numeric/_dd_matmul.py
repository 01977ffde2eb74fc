r"""Matrix products of double-double arrays by error-free splitting into float64 BLAS calls.

A product :math:`X M` (``X`` of shape ``(B, k)``, ``M`` of shape ``(k, m)``, both
double-double) is computed from float64 matrix products that are *exact*: the high words
are cut into slices (Ozaki et al.), each row of ``X`` and each column of ``M`` on its own
binary grid,

.. math:: X_{hi} = S_1 + S_2 + R_X, \qquad M_{hi} = T_1 + T_2 + T_3 + R_M,

where slice :math:`S_a` holds ``b_x`` bits of its row below the row's largest entry and
:math:`T_b` holds ``b_m`` bits of its column, with :math:`b_x + b_m + \lceil\log_2 k\rceil
\le 52`. Every entry of :math:`S_a T_b` is then a sum of at most :math:`k` products of
integers on a common grid whose magnitudes add up to less than :math:`2^{53}` units: BLAS
computes it without any rounding, in whatever order and with or without fused
multiply-adds. The slice products are summed in double-double (cascaded TwoSum, largest
first); what remains,

.. math:: (R_X + X_{lo}) M_{hi} + X_{hi} (R_M + M_{lo}) + \text{slice products below }
          2^{-53},

is below :math:`2^{-53}` of the product and is computed in plain float64. The error of an
entry is a few units of :math:`2^{-106}` times :math:`\sum_k |x_{bk}| |m_{kj}|`, as for a
double-double dot product, at the cost of about eight float64 products.

The right operand is usually fixed (parameters, their directions): :class:`Sliced`
prepares its slices once.

References
----------
K. Ozaki, T. Ogita, S. Oishi, S. M. Rump, "Error-free transformations of matrix
multiplication by using fast routines of matrix multiplication and its applications",
Numer. Algorithms 59 (2012). T. Ogita, S. M. Rump, S. Oishi, "Accurate sum and dot
product", SIAM J. Sci. Comput. 26 (2005) (cascaded summation).
"""

from __future__ import annotations

import math
import threading

import numpy as np

from ._double_double import DD, as_dd, two_sum

__all__ = ["Sliced", "matmul"]

#: (slices of X, slices of M) by ceil(log2 k): each side's slices must cover 53 bits and
#: one bit width of each must fit in 52 - ceil(log2 k) (see the module docstring).
_PLANS = ((7, 2, 3), (11, 2, 4), (16, 3, 3), (20, 3, 4))


def _plan(k: int) -> tuple[int, int, int, int]:
    """``(slices_x, bits_x, slices_m, bits_m)`` for contraction length ``k``."""
    c = max(0, math.ceil(math.log2(max(k, 1))))
    for limit, sx, sm in _PLANS:
        if c <= limit:
            return sx, math.ceil(53 / sx), sm, math.ceil(53 / sm)
    raise ValueError(f"contraction length {k} is beyond the double-double product (2**20)")


def _exponents(values: np.ndarray, axis: int) -> np.ndarray:
    """``E`` with ``max |values| < 2**E`` along ``axis`` (kept as a broadcastable axis)."""
    with np.errstate(invalid="ignore"):
        largest = np.max(np.abs(values), axis=axis, keepdims=True)
    return np.frexp(largest)[1]


def _slices(values: np.ndarray, exponent: np.ndarray, count: int, bits: int):
    """``count`` slices of ``values`` and the remainder: slice ``t`` is ``values``' rest
    rounded to the grid ``2**(E - t bits)`` by adding and subtracting ``2**(E_t + 53 -
    bits)`` (exact, Sterbenz)."""
    out = []
    rest = values
    for t in range(count):
        sigma = np.ldexp(1.0, exponent - t * bits + 53 - bits)
        piece = (rest + sigma) - sigma
        out.append(piece)
        rest = rest - piece
    return out, rest


_SCRATCH = threading.local()


def _buffer(shape: tuple[int, ...]) -> np.ndarray:
    """A scratch array of ``shape``, reused from call to call (per thread): the slice
    products are the one large temporary, and a fresh allocation of it can cost a page
    fault per 4 KB."""
    buffers = getattr(_SCRATCH, "buffers", None)
    if buffers is None or len(buffers) > 16:
        buffers = _SCRATCH.buffers = {}
    if shape not in buffers:
        buffers[shape] = np.empty(shape)
    return buffers[shape]


class Sliced:
    """The right operand ``M`` of products ``X @ M``, cut into column slices once.

    Parameters
    ----------
    M : DD or ndarray, shape (k, m)
    """

    def __init__(self, M):
        M = as_dd(M)
        if M.ndim != 2:
            raise ValueError(f"Sliced needs a matrix, got shape {M.shape}")
        self.k, self.m = M.shape
        self.slices_x, self.bits_x, self.slices_m, self.bits_m = _plan(self.k)
        pieces, rest = _slices(M.hi, _exponents(M.hi, axis=0), self.slices_m, self.bits_m)
        self.stack = np.stack(pieces)  # (slices_m, k, m)
        self.hi = M.hi
        self.rest = rest + M.lo
        self.matrix = M

    def columns(self, start: int, stop: int) -> Sliced:
        """The prepared operand of ``M[:, start:stop]`` (slices are per column: a view)."""
        out = object.__new__(Sliced)
        out.k, out.m = self.k, stop - start
        out.slices_x, out.bits_x = self.slices_x, self.bits_x
        out.slices_m, out.bits_m = self.slices_m, self.bits_m
        out.stack = np.ascontiguousarray(self.stack[:, :, start:stop])
        out.hi, out.rest = self.hi[:, start:stop], self.rest[:, start:stop]
        out.matrix = self.matrix[:, start:stop]
        return out


def matmul(x, M) -> DD:
    """:math:`X M` in double-double.

    Parameters
    ----------
    x : DD or ndarray, shape (B, k)
    M : Sliced, DD or ndarray, shape (k, m)

    Returns
    -------
    DD, shape (B, m)
    """
    x = as_dd(x)
    prepared = M if isinstance(M, Sliced) else Sliced(M)
    B, m = x.shape[0], prepared.m
    if x.shape[1] != prepared.k:
        raise ValueError(f"matmul: shapes {x.shape} and ({prepared.k}, {m}) do not align")
    pieces, rest = _slices(x.hi, _exponents(x.hi, axis=1), prepared.slices_x, prepared.bits_x)
    # every slice pair at once, each block contiguous: (slices_x, slices_m, B, m), exact
    products = np.matmul(np.stack(pieces)[:, None], prepared.stack[None],
                         out=_buffer((prepared.slices_x, prepared.slices_m, B, m)))
    small = (rest + x.lo) @ prepared.hi + x.hi @ prepared.rest
    terms = []
    for a in range(prepared.slices_x):
        for b in range(prepared.slices_m):
            level = a * prepared.bits_x + b * prepared.bits_m
            if level >= 53:
                small = small + products[a, b]
            else:
                terms.append((level, products[a, b]))
    terms.sort(key=lambda item: item[0])
    s = terms[0][1]
    e = None
    for _, block in terms[1:]:
        s, t = two_sum(s, block)
        e = t if e is None else e + t
    e = small if e is None else e + small
    return DD(*two_sum(s, e))
