r"""Elementary functions in double-double arithmetic (:mod:`numeric._double_double`),
vectorised over arrays, each to a few units of :math:`2^{-106}` relative.

- ``exp``, ``expm1``: :math:`y = k \ln 2 + j \ln 2 / 1024 + r` with :math:`|r| \le \ln 2 /
  2048` (Cody–Waite reduction with a four-part :math:`\ln 2 / 1024`), a table of
  :math:`2^{j/1024}` and :math:`2^{j/1024} - 1` in double-double, and the Taylor series of
  :math:`e^r - 1` to degree 9 (the terms below :math:`2^{-53}` relative in float64). Then
  :math:`e^y = 2^k (1 + S)` and :math:`e^y - 1 = 2^k S + (2^k - 1)` with :math:`S = (2^{j/1024}
  - 1) + 2^{j/1024} (e^r - 1)`, so ``expm1`` keeps its relative accuracy near 0.
- ``log``, ``log1p``: one Newton step :math:`y_1 = y_0 + (1 + u) e^{-y_0} - 1` from the
  float64 logarithm, on an argument scaled by a power of two into :math:`[0.7, 1.42)`
  (so the quadratic error term :math:`(y_0 - y)^2/2` stays below :math:`2^{-108}`).
- ``tanh``: :math:`-\mathrm{expm1}(-2|x|) / (2 + \mathrm{expm1}(-2|x|))`, odd;
  ``sigmoid``, ``softplus`` from :math:`e^{-|x|}` (no cancellation for any sign);
  ``sinh``, ``cosh`` from ``expm1`` and ``exp`` of :math:`|x|`.
- ``sin``, ``cos``, ``tan``: :math:`x = N \pi/128 + s`, :math:`|s| \le \pi/256`, with a
  triple-double :math:`\pi/128` (exact products by ``two_prod``), tables of
  :math:`\sin, \cos(q\pi/128)` and Taylor series of :math:`\sin s, \cos s`.
- ``sqrt``: one Newton step from the float64 root with the exact residual; ``power`` by
  binary powering for integer exponents.

Arguments outside a function's domain give nan, beyond float64's range inf or 0, as in
NumPy; callers check finiteness.

References
----------
W. J. Cody, W. Waite, "Software Manual for the Elementary Functions", Prentice-Hall 1980
(argument reduction). Y. Hida, X. S. Li, D. H. Bailey, "Algorithms for quad-double
precision floating point arithmetic", ARITH-15 (2001). P. T. P. Tang, "Table-driven
implementation of the exponential function in IEEE floating-point arithmetic", ACM TOMS
15 (1989).
"""

from __future__ import annotations

import functools

import mpmath
import numpy as np

from ._double_double import (
    DD,
    _add,
    _add_fast,
    _add_float,
    _mul,
    as_dd,
    from_mpmath,
    quick_two_sum,
    split,
    two_prod,
    two_sum,
    where,
)

__all__ = [
    "cos",
    "cosh",
    "exp",
    "expm1",
    "log",
    "log1p",
    "power",
    "sigmoid",
    "sin",
    "sinh",
    "softplus",
    "sqrt",
    "tan",
    "tanh",
]

_TABLE_BITS = 10
_T = 2**_TABLE_BITS
#: |y| beyond which exp(y) is inf or 0 in float64 anyway (the reduction stays exact below).
_EXP_LIMIT = 760.0


def _parts(value: mpmath.mpf, count: int, bits: int) -> list[float]:
    """``value`` as ``count`` floats, all but the last with ``bits`` significant bits."""
    out = []
    rest = value
    for i in range(count):
        if i == count - 1:
            out.append(float(rest))
            break
        exponent = int(mpmath.floor(mpmath.log(abs(rest), 2)))
        unit = mpmath.ldexp(1, exponent - bits + 1)
        head = float(mpmath.nint(rest / unit) * unit)
        out.append(head)
        rest = rest - head
    return out


@functools.cache
def _constants() -> dict:
    with mpmath.workprec(400):
        step = mpmath.ln2 / _T
        j = [mpmath.mpf(i) for i in range(-_T // 2, _T // 2 + 1)]
        powers = [mpmath.power(2, i / _T) for i in j]
        angle = mpmath.pi / 128
        return {
            "ln2_parts": _parts(step, 4, 32),
            "inv_step": float(_T / mpmath.ln2),
            "pow": from_mpmath(powers),
            "pow_m1": from_mpmath([p - 1 for p in powers]),
            "ln2": from_mpmath(mpmath.ln2),
            "pi_parts": _parts(angle, 3, 53),
            "inv_angle": float(1 / angle),
            "sin_table": from_mpmath([mpmath.sin(q * angle) for q in range(256)]),
            "cos_table": from_mpmath([mpmath.cos(q * angle) for q in range(256)]),
            "inv": {k: from_mpmath(1 / mpmath.factorial(k)) for k in range(2, 14)},
        }


def _inv_factorial(k: int) -> DD:
    return _constants()["inv"][k]


# -- exp and expm1 -----------------------------------------------------------------------


def _times_r(r, bh, bl):
    """``r * b`` for the reduced argument ``r = (rh, rl, rhh, rhl)``, whose high word is
    split once for the whole Horner scheme."""
    rh, rl, rhh, rhl = r
    p = rh * bh
    bhh, bhl = split(bh)
    e = ((rhh * bhh - p) + rhh * bhl + rhl * bhh) + rhl * bhl
    return quick_two_sum(p, e + (rh * bl + rl * bh))


def _expm1_small(rh, rl):
    """:math:`e^r - 1` for :math:`|r| \\le \\ln 2 / 2048` as (hi, lo): Horner, with the
    degrees 5..9 in float64 (they are below :math:`2^{-53}` of the result); the sums do not
    cancel (each constant dominates its bracket), so they are the fast ones."""
    r = (rh, rl, *split(rh))
    q = 1 / 120 + rh * (1 / 720 + rh * (1 / 5040 + rh * (1 / 40320 + rh / 362880)))
    c = _inv_factorial(4)
    b4h, b4l = _add_float(c.hi, c.lo, rh * q)
    c = _inv_factorial(3)
    b3h, b3l = _add_fast(c.hi, c.lo, *_times_r(r, b4h, b4l))
    b2h, b2l = _add_float(*_times_r(r, b3h, b3l), 0.5)
    b1h, b1l = _add_float(*_times_r(r, b2h, b2l), 1.0)
    return _times_r(r, b1h, b1l)


def _exp_parts(y: DD):
    """``(S, k)`` with :math:`e^y = 2^k (1 + S)`; ``S`` a DD, ``k`` an int array."""
    c = _constants()
    yh = np.clip(y.hi, -_EXP_LIMIT, _EXP_LIMIT)
    yl = np.where(yh == y.hi, y.lo, 0.0)
    N = np.rint(yh * c["inv_step"])
    k = np.rint(N / _T)
    with np.errstate(invalid="ignore"):  # a nan argument: any index, nan stays in r
        j = (N - k * _T).astype(np.intp) + _T // 2
    l1, l2, l3, l4 = c["ln2_parts"]
    s = yh - N * l1  # exact: Sterbenz, and N * l1 is exact (l1 has 32 bits, |N| < 2**21)
    rh, rl = two_sum(s, yl)
    rh, rl = _add_float(rh, rl, -(N * l2))
    rh, rl = _add_float(rh, rl, -(N * l3))
    rl = rl - N * l4
    ph, pl = _expm1_small(rh, rl)
    table, table_m1 = c["pow"], c["pow_m1"]
    th, tl = np.take(table.hi, j, mode="clip"), np.take(table.lo, j, mode="clip")
    mh, ml = np.take(table_m1.hi, j, mode="clip"), np.take(table_m1.lo, j, mode="clip")
    # |2^(j/T) p| <= |2^(j/T) - 1| / 2 for j != 0: at most a factor 3 of cancellation
    S = DD(*_add_fast(mh, ml, *_mul(th, tl, ph, pl)))
    with np.errstate(invalid="ignore"):
        return S, k.astype(np.intp)


def exp(x) -> DD:
    """:math:`e^x`."""
    S, k = _exp_parts(as_dd(x))
    return DD(*_add_float(S.hi, S.lo, 1.0)).scale(k)


def expm1(x) -> DD:
    """:math:`e^x - 1`, accurate relative to itself near 0."""
    S, k = _exp_parts(as_dd(x))
    power = np.ldexp(1.0, k)
    return DD(*_add(np.ldexp(S.hi, k), np.ldexp(S.lo, k), *two_sum(power, -1.0)))


def _exp_both(x: DD) -> tuple[DD, DD]:
    """``(exp(x), expm1(x))`` from one reduction."""
    S, k = _exp_parts(x)
    e = DD(*_add_float(S.hi, S.lo, 1.0)).scale(k)
    power = np.ldexp(1.0, k)
    m = DD(*_add(np.ldexp(S.hi, k), np.ldexp(S.lo, k), *two_sum(power, -1.0)))
    return e, m


# -- log and log1p -----------------------------------------------------------------------


def _log1p_near_zero(u: DD) -> DD:
    """:math:`\\log(1 + u)` for :math:`u \\in [-0.3, 0.42]`: one Newton step on
    :math:`e^y = 1 + u` from the float64 value, :math:`y_1 = y_0 + \\mathrm{expm1}(-y_0) +
    u e^{-y_0}` (a sum of terms of the size of :math:`u`: no cancellation)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        y0 = np.log1p(u.hi)
    y0 = np.where(np.isfinite(y0), y0, 0.0)
    e, em = _exp_both(DD(-y0))
    correction = em + u * e
    return DD(*_add_float(correction.hi, correction.lo, y0))


def log(x) -> DD:
    """:math:`\\log x` (nan for :math:`x < 0`, -inf at 0)."""
    x = as_dd(x)
    positive = x.hi > 0
    safe = where(positive, x, 1.0)
    mantissa, exponent = np.frexp(safe.hi)
    exponent = np.where(mantissa < np.sqrt(0.5), exponent - 1, exponent)
    scaled = safe.scale(-exponent)  # in [0.707, 1.414)
    out = _log1p_near_zero(scaled - 1.0) + _constants()["ln2"] * exponent.astype(float)
    with np.errstate(invalid="ignore"):
        bad = np.where(x.hi == 0, -np.inf, np.nan)
    return DD(np.where(positive, out.hi, bad), np.where(positive, out.lo, 0.0))


def log1p(u) -> DD:
    """:math:`\\log(1 + u)`, accurate relative to itself near 0."""
    u = as_dd(u)
    near = (u.hi > -0.3) & (u.hi < 0.42)
    return where(near, _log1p_near_zero(where(near, u, 0.0)), log(u + 1.0))


# -- hyperbolic and logistic ---------------------------------------------------------------


def _odd(sign, value: DD) -> DD:
    return DD(sign * value.hi, sign * value.lo)


def tanh(x) -> DD:
    """:math:`\\tanh x = -\\mathrm{expm1}(-2|x|) / (2 + \\mathrm{expm1}(-2|x|))`, odd."""
    x = as_dd(x)
    sign = np.where(x.hi < 0, -1.0, 1.0)
    m = expm1(_odd(-2.0 * sign, x))
    return _odd(-sign, m / (m + 2.0))


def sigmoid(x) -> DD:
    """:math:`1 / (1 + e^{-x})`, from :math:`e^{-|x|}` on both sides of 0."""
    x = as_dd(x)
    sign = np.where(x.hi < 0, -1.0, 1.0)
    e = exp(_odd(-sign, x))
    return where(x.hi >= 0, 1.0, e) / (e + 1.0)


def softplus(x) -> DD:
    """:math:`\\log(1 + e^x) = \\max(x, 0) + \\log(1 + e^{-|x|})`."""
    x = as_dd(x)
    sign = np.where(x.hi < 0, -1.0, 1.0)
    return where(x.hi > 0, x, 0.0) + log1p(exp(_odd(-sign, x)))


def sinh(x) -> DD:
    """:math:`\\sinh x = m (m + 2) / (2 (m + 1))`, :math:`m = \\mathrm{expm1}(|x|)`, odd."""
    x = as_dd(x)
    sign = np.where(x.hi < 0, -1.0, 1.0)
    m = expm1(_odd(sign, x))
    return _odd(sign, (m * (m + 2.0)) / ((m + 1.0) * 2.0))


def cosh(x) -> DD:
    """:math:`(e^{|x|} + e^{-|x|}) / 2`."""
    e = exp(abs(as_dd(x)))
    return (e + 1.0 / e) * 0.5


# -- trigonometric -----------------------------------------------------------------------


def _sin_cos(x) -> tuple[DD, DD]:
    """``(sin x, cos x)``: :math:`x = N \\pi/128 + s` and the addition theorems."""
    c = _constants()
    x = as_dd(x)
    N = np.rint(x.hi * c["inv_angle"])
    sh, sl = x.hi, x.lo
    for part in c["pi_parts"]:
        ph, pl = two_prod(N, part)
        sh, sl = _add(sh, sl, -ph, -pl)
    s = DD(sh, sl)
    s2 = s.square()
    f = _constants()["inv"]
    qs = f[9].hi - s2.hi * (f[11].hi - s2.hi * f[13].hi)
    sin_s = f[7] * -1.0 + DD(s2.hi * qs)
    for k in (5, 3):
        sin_s = s2 * sin_s + (f[k] if k == 5 else -f[k])
    sin_s = s + s * s2 * sin_s
    qc = f[8].hi - s2.hi * (f[10].hi - s2.hi * f[12].hi)
    cos_s = -f[6] + DD(s2.hi * qc)
    cos_s = s2 * cos_s + f[4]
    cos_s = s2 * cos_s - 0.5
    cos_s = s2 * cos_s + 1.0
    with np.errstate(invalid="ignore"):  # a nan argument: any index, nan stays in s
        q = np.mod(N, 256).astype(np.intp)
    sin_a = DD(np.take(c["sin_table"].hi, q, mode="clip"),
               np.take(c["sin_table"].lo, q, mode="clip"))
    cos_a = DD(np.take(c["cos_table"].hi, q, mode="clip"),
               np.take(c["cos_table"].lo, q, mode="clip"))
    return sin_a * cos_s + cos_a * sin_s, cos_a * cos_s - sin_a * sin_s


def sin(x) -> DD:
    """:math:`\\sin x` (accurate for :math:`|x| \\lesssim 10^{15}`)."""
    return _sin_cos(x)[0]


def cos(x) -> DD:
    """:math:`\\cos x` (accurate for :math:`|x| \\lesssim 10^{15}`)."""
    return _sin_cos(x)[1]


def tan(x) -> DD:
    """:math:`\\sin x / \\cos x`."""
    s, c = _sin_cos(x)
    return s / c


# -- roots and powers --------------------------------------------------------------------


def sqrt(x) -> DD:
    """:math:`\\sqrt{x}`: :math:`y_0 + (x - y_0^2) / (2 y_0)` with the exact residual."""
    x = as_dd(x)
    with np.errstate(invalid="ignore"):
        y0 = np.sqrt(x.hi)
    ph, pl = two_prod(y0, y0)
    rh, _ = _add(x.hi, x.lo, -ph, -pl)
    with np.errstate(invalid="ignore", divide="ignore"):
        correction = np.where(y0 > 0, rh / (2.0 * y0), 0.0)
    return DD(*two_sum(y0, correction))


def power(x, exponent: int) -> DD:
    """:math:`x^n` for an integer ``n`` by binary powering (``x**0 = 1``)."""
    x = as_dd(x)
    n = abs(int(exponent))
    result = None
    base = x
    while n:
        if n & 1:
            result = base if result is None else result * base
        n >>= 1
        if n:
            base = base.square()
    if result is None:
        return DD(np.ones(x.shape))
    return 1.0 / result if exponent < 0 else result
