r"""Double-double arithmetic on NumPy arrays: about 32 significant digits, vectorised.

A double-double number is an unevaluated sum :math:`x = x_{hi} + x_{lo}` of two float64
with :math:`|x_{lo}| \le \tfrac12 \mathrm{ulp}(x_{hi})`: 106 bits of significand, a unit
roundoff of :math:`2^{-106} \approx 1.2 \cdot 10^{-32}`. Every operation below is built
from error-free transformations of float64 operations (each NumPy ufunc rounds once, to
nearest, and nothing is fused), so a whole array is processed by a few dozen ufunc calls:

- ``two_sum(a, b)``: :math:`s + e = a + b` exactly, :math:`s = fl(a + b)` (Knuth);
- ``two_prod(a, b)``: :math:`p + e = a b` exactly, :math:`p = fl(a b)`, by Dekker's
  splitting of each factor into two 26-bit halves (NumPy has no fused multiply-add).

Addition, multiplication and division follow the accurate ("IEEE-style") algorithms of the
QD library, with relative errors of a few units of :math:`2^{-106}`. The range is that of
float64 shrunk by the splitting: magnitudes must stay below about ``1e290`` (Dekker's
split overflows near ``2**996``) and above about ``1e-290`` (below, the low word loses
bits to subnormals).

The elementary functions are in :mod:`numeric._dd_functions`, matrix products in
:mod:`numeric._dd_matmul`.

References
----------
T. J. Dekker, "A floating-point technique for extending the available precision",
Numer. Math. 18 (1971). D. E. Knuth, "The Art of Computer Programming", vol. 2, 4.2.2.
Y. Hida, X. S. Li, D. H. Bailey, "Algorithms for quad-double precision floating point
arithmetic", ARITH-15 (2001) (the QD library's double-double algorithms).
"""

from __future__ import annotations

from typing import Any

import mpmath
import numpy as np
from numpy.typing import NDArray

__all__ = [
    "DD",
    "UNIT_ROUNDOFF",
    "as_dd",
    "dd_constant",
    "from_mpmath",
    "quick_two_sum",
    "split",
    "stack",
    "sum_along",
    "to_decimal",
    "to_mpmath",
    "two_prod",
    "two_sum",
    "where",
]

#: Unit roundoff of double-double arithmetic, :math:`2^{-106}`.
UNIT_ROUNDOFF = 2.0**-106
_SPLITTER = 134217729.0  # 2**27 + 1


# -- error-free transformations ---------------------------------------------------------


def two_sum(a, b):
    """``(s, e)`` with ``s = fl(a + b)`` and ``s + e = a + b`` exactly (any magnitudes)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def quick_two_sum(a, b):
    """``(s, e)`` with ``s + e = a + b`` exactly, for ``|a| >= |b|`` (or ``a = 0``)."""
    s = a + b
    return s, b - (s - a)


def split(a):
    """Dekker's split ``a = hi + lo``, each half with at most 26 significant bits."""
    t = _SPLITTER * a
    hi = t - (t - a)
    return hi, a - hi


def two_prod(a, b):
    """``(p, e)`` with ``p = fl(a b)`` and ``p + e = a b`` exactly (Dekker)."""
    p = a * b
    ah, al = split(a)
    bh, bl = split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _square(a):
    """``two_prod(a, a)`` with one split."""
    p = a * a
    ah, al = split(a)
    return p, ((ah * ah - p) + 2.0 * (ah * al)) + al * al


# -- arithmetic on (hi, lo) pairs -------------------------------------------------------


def _add(ah, al, bh, bl):
    s, e = two_sum(ah, bh)
    t, f = two_sum(al, bl)
    s, e = quick_two_sum(s, e + t)
    return quick_two_sum(s, e + f)


def _add_fast(ah, al, bh, bl):
    """Sum without the second TwoSum: relative error a few units of 2**-106 of
    ``|a| + |b|``, so only for operands that do not cancel (QD's "sloppy" addition)."""
    s, e = two_sum(ah, bh)
    return quick_two_sum(s, e + (al + bl))


def _add_float(ah, al, b):
    s, e = two_sum(ah, b)
    return quick_two_sum(s, e + al)


def _mul(ah, al, bh, bl):
    p, e = two_prod(ah, bh)
    return quick_two_sum(p, e + (ah * bl + al * bh))


def _mul_float(ah, al, b):
    p, e = two_prod(ah, b)
    return quick_two_sum(p, e + al * b)


def _div(ah, al, bh, bl):
    """Two quotient digits, the second from the exact remainder :math:`a - q_1 b`."""
    q1 = ah / bh
    ph, pl = _mul_float(bh, bl, q1)
    rh, rl = _add(ah, al, -ph, -pl)
    return quick_two_sum(q1, (rh + rl) / bh)


class DD:
    """An array of double-double numbers: the pair ``hi``, ``lo`` of float64 arrays.

    Arithmetic (``+ - * /``, unary ``-``, ``abs``) broadcasts like NumPy, with a DD, a
    float64 array or a Python number as the other operand (a number must be exact in
    float64; convert others with :func:`dd_constant`). Comparisons compare values and
    return boolean arrays. Indexing, ``T``, ``reshape`` and ``shape`` act on both words.
    """

    __slots__ = ("hi", "lo")
    __array_ufunc__ = None  # ndarray (op) DD defers to DD's reflected operators

    def __init__(self, hi, lo=None):
        self.hi = np.asarray(hi, dtype=np.float64)
        self.lo = np.zeros_like(self.hi) if lo is None else np.asarray(lo, dtype=np.float64)

    # -- structure ----------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.hi.shape

    @property
    def ndim(self) -> int:
        return self.hi.ndim

    @property
    def T(self) -> DD:
        return DD(self.hi.T, self.lo.T)

    def reshape(self, *shape) -> DD:
        return DD(self.hi.reshape(*shape), self.lo.reshape(*shape))

    def __getitem__(self, index) -> DD:
        return DD(self.hi[index], self.lo[index])

    def __setitem__(self, index, value) -> None:
        value = as_dd(value)
        self.hi[index] = value.hi
        self.lo[index] = value.lo

    def copy(self) -> DD:
        return DD(self.hi.copy(), self.lo.copy())

    def broadcast_to(self, shape) -> DD:
        return DD(np.broadcast_to(self.hi, shape), np.broadcast_to(self.lo, shape))

    def __repr__(self) -> str:
        if self.hi.size <= 6:
            return f"DD({to_decimal(self, 32)})"
        return f"DD(shape={self.shape}, hi={self.hi!r})"

    def __float__(self) -> float:
        return float(self.hi + self.lo)

    def to_float(self) -> NDArray:
        """The nearest float64 values (``hi``, as the pair is normalised)."""
        return self.hi + self.lo

    # -- arithmetic ---------------------------------------------------------------------
    def __neg__(self) -> DD:
        return DD(-self.hi, -self.lo)

    def __pos__(self) -> DD:
        return self

    def __abs__(self) -> DD:
        negative = self.hi < 0
        return DD(np.where(negative, -self.hi, self.hi), np.where(negative, -self.lo, self.lo))

    def __add__(self, other) -> DD:
        if isinstance(other, DD):
            return DD(*_add(self.hi, self.lo, other.hi, other.lo))
        return DD(*_add_float(self.hi, self.lo, _exact_float(other)))

    __radd__ = __add__

    def __sub__(self, other) -> DD:
        if isinstance(other, DD):
            return DD(*_add(self.hi, self.lo, -other.hi, -other.lo))
        return DD(*_add_float(self.hi, self.lo, -_exact_float(other)))

    def __rsub__(self, other) -> DD:
        return DD(*_add_float(-self.hi, -self.lo, _exact_float(other)))

    def __mul__(self, other) -> DD:
        if isinstance(other, DD):
            return DD(*_mul(self.hi, self.lo, other.hi, other.lo))
        return DD(*_mul_float(self.hi, self.lo, _exact_float(other)))

    __rmul__ = __mul__

    def __truediv__(self, other) -> DD:
        other = as_dd(other)
        return DD(*_div(self.hi, self.lo, other.hi, other.lo))

    def __rtruediv__(self, other) -> DD:
        other = as_dd(other)
        return DD(*_div(other.hi, other.lo, self.hi, self.lo))

    def square(self) -> DD:
        """``x * x`` with one split of ``hi``."""
        p, e = _square(self.hi)
        return DD(*quick_two_sum(p, e + 2.0 * (self.hi * self.lo)))

    def scale(self, k) -> DD:
        """``x * 2**k`` exactly (``k`` an int array or int)."""
        return DD(np.ldexp(self.hi, k), np.ldexp(self.lo, k))

    # -- comparisons of values ----------------------------------------------------------
    def __lt__(self, other):
        o = as_dd(other)
        return (self.hi < o.hi) | ((self.hi == o.hi) & (self.lo < o.lo))

    def __le__(self, other):
        o = as_dd(other)
        return (self.hi < o.hi) | ((self.hi == o.hi) & (self.lo <= o.lo))

    def __gt__(self, other):
        return as_dd(other) < self

    def __ge__(self, other):
        return as_dd(other) <= self

    def sign(self) -> NDArray:
        """-1, 0 or 1 per entry (the sign of ``hi``, which is the sign of the value)."""
        return np.sign(self.hi)


def _exact_float(value: Any):
    """A float64 operand; a Python int is accepted when float64 holds it exactly."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
        raise ValueError(f"{value} is not exact in float64; convert it with dd_constant().")
    return value


def as_dd(value: Any) -> DD:
    """``value`` as a DD (a float64 array or number becomes ``hi`` with ``lo = 0``)."""
    if isinstance(value, DD):
        return value
    return DD(_exact_float(value))


def where(condition, a: DD, b: DD) -> DD:
    """Entrywise ``a`` where ``condition`` holds, else ``b`` (broadcasting)."""
    a, b = as_dd(a), as_dd(b)
    return DD(np.where(condition, a.hi, b.hi), np.where(condition, a.lo, b.lo))


def stack(values: list[DD], axis: int = -1) -> DD:
    """``numpy.stack`` for DD arrays, after broadcasting them to a common shape."""
    values = [as_dd(v) for v in values]
    shape = np.broadcast_shapes(*(v.shape for v in values))
    return DD(np.stack([np.broadcast_to(v.hi, shape) for v in values], axis=axis),
              np.stack([np.broadcast_to(v.lo, shape) for v in values], axis=axis))


def sum_along(x: DD, axis: int = -1) -> DD:
    """The sum over ``axis`` by pairwise (tree) addition: error ``O(log m)`` roundings of
    :math:`2^{-106}` relative to the sum of magnitudes."""
    hi, lo = np.moveaxis(x.hi, axis, 0), np.moveaxis(x.lo, axis, 0)
    if hi.shape[0] == 0:
        return DD(np.zeros(hi.shape[1:]))
    while hi.shape[0] > 1:
        half = hi.shape[0] // 2
        top_h, top_l = _add(hi[:half], lo[:half], hi[half:2 * half], lo[half:2 * half])
        if hi.shape[0] % 2:
            top_h = np.concatenate([top_h, hi[-1:]])
            top_l = np.concatenate([top_l, lo[-1:]])
        hi, lo = top_h, top_l
    return DD(hi[0], lo[0])


# -- conversions ----------------------------------------------------------------------


def from_mpmath(values: Any) -> DD:
    """The DD nearest to an mpmath number (or a nested list/array of them)."""
    array = np.asarray(values, dtype=object)
    hi = np.empty(array.shape)
    lo = np.empty(array.shape)
    with mpmath.workprec(256):
        for index, value in np.ndenumerate(array):
            value = mpmath.mpf(value)
            h = float(value)
            hi[index] = h
            lo[index] = float(mpmath.fsub(value, h, exact=True))
    return DD(hi, lo)


def dd_constant(value: Any) -> DD:
    """A DD constant from anything mpmath reads exactly (an int, a decimal string, an mpf;
    e.g. ``dd_constant("0.1")`` is 0.1 to 32 digits, unlike the float ``0.1``)."""
    with mpmath.workprec(256):
        return from_mpmath(mpmath.mpf(value))


def to_mpmath(x: DD) -> Any:
    """The exact value ``hi + lo`` as mpf (an object array for arrays)."""
    if x.ndim == 0:
        return mpmath.fadd(float(x.hi), float(x.lo), exact=True)
    out = np.empty(x.shape, dtype=object)
    for index in np.ndindex(*x.shape):
        out[index] = mpmath.fadd(float(x.hi[index]), float(x.lo[index]), exact=True)
    return out


def to_decimal(x: DD, digits: int = 32) -> str | list:
    """``x`` in scientific notation with ``digits`` significant digits (a nested list of
    strings for arrays)."""
    with mpmath.workprec(256):
        def text(v):
            return mpmath.nstr(v, digits, strip_zeros=False, min_fixed=1, max_fixed=0)

        if x.ndim == 0:
            return text(to_mpmath(x))
        return np.vectorize(text, otypes=[object])(to_mpmath(x)).tolist()
