"""Double-double arithmetic: error-free transformations exact, operations, elementary
functions and matrix products within a few units of 2**-106 of mpmath's values."""

from fractions import Fraction

import mpmath
import numpy as np
import pytest

from numeric import _dd_functions as fn
from numeric._dd_matmul import Sliced, matmul
from numeric._double_double import (
    DD,
    dd_constant,
    sum_along,
    to_decimal,
    to_mpmath,
    two_prod,
    two_sum,
)

#: A double-double operation or elementary function is exact up to a few units of its unit
#: roundoff 2**-106 = 1.2e-32 (the worst measured: 1.1e-31, x**7 by binary powering);
#: 2**-100 = 7.9e-31 leaves a factor 7 above it.
DD_ROUNDING = 2.0**-100
#: A product of k-term rows is exact up to a few units of 2**-106 of the sum of the
#: magnitudes of its terms (k = 3000 included: the exact slices need no log k growth).
DD_PRODUCT = 2.0**-100

mpmath.mp.prec = 320


def _random_dd(rng, shape, low: float, high: float, *, signed: bool = True) -> DD:
    """Magnitudes log-uniform in [10**low, 10**high], with a random low word."""
    hi = 10.0 ** rng.uniform(low, high, shape)
    if signed:
        hi = hi * rng.choice([-1.0, 1.0], shape)
    return DD(hi) + DD(hi * rng.uniform(-1, 1, shape) * 2.0**-53)


def _worst_relative(values: DD, reference) -> float:
    got = to_mpmath(values)
    worst = mpmath.mpf(0)
    for index in np.ndindex(*values.shape):
        exact = reference[index]
        if exact != 0:
            worst = max(worst, abs((got[index] - exact) / exact))
    return float(worst)


def test_two_sum_and_two_prod_are_error_free():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(500) * 10.0 ** rng.integers(-100, 100, 500)
    b = rng.standard_normal(500) * 10.0 ** rng.integers(-100, 100, 500)
    for (s, e), exact in ((two_sum(a, b), lambda x, y: Fraction(x) + Fraction(y)),
                          (two_prod(a, b), lambda x, y: Fraction(x) * Fraction(y))):
        assert all(Fraction(float(si)) + Fraction(float(ei)) == exact(float(x), float(y))
                   for si, ei, x, y in zip(s, e, a, b, strict=True))


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "square"])
def test_arithmetic_matches_mpmath(op):
    rng = np.random.default_rng(1)
    x = _random_dd(rng, (40, 3), -20, 20)
    y = _random_dd(rng, (1, 3), -20, 20)  # broadcast along the first axis
    got = {"add": lambda: x + y, "sub": lambda: x - y, "mul": lambda: x * y,
           "div": lambda: x / y, "square": lambda: x.square()}[op]()
    X, Y = to_mpmath(x), to_mpmath(y)
    ref = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
           "div": lambda a, b: a / b, "square": lambda a, _b: a * a}[op]
    exact = np.array([[ref(X[i, j], Y[0, j]) for j in range(3)] for i in range(40)])
    assert _worst_relative(got, exact) <= DD_ROUNDING


def test_operations_with_floats_and_comparisons():
    a = dd_constant("0.1")
    assert to_decimal(a, 32) == "1.0000000000000000000000000000000e-1"
    assert abs(float((a * 3.0 - dd_constant("0.3")).hi)) <= DD_ROUNDING * 0.3
    three = 3.0 - a / a * 2.0 + np.float64(2.0)
    assert float(three.hi) == 3.0 and float(three.lo) == 0.0
    assert bool(a < a + 1e-30) and bool(a + 1e-30 > a) and not bool(a < a)
    assert bool(DD(1.0, 1e-20) > DD(1.0, -1e-20))
    with pytest.raises(ValueError, match="not exact in float64"):
        a + (2**60 + 1)


#: function, mpmath reference, argument range (log10 of |x|), signed
FUNCTIONS = {
    "exp": (fn.exp, mpmath.exp, (-25, 2.8), True),
    "expm1": (fn.expm1, mpmath.expm1, (-25, 2.5), True),
    "log": (fn.log, mpmath.log, (-250, 250), False),
    "log1p": (fn.log1p, mpmath.log1p, (-25, 0.5), False),
    "tanh": (fn.tanh, mpmath.tanh, (-25, 1.8), True),
    "sigmoid": (fn.sigmoid, lambda v: 1 / (1 + mpmath.exp(-v)), (-25, 2.7), True),
    "softplus": (fn.softplus, lambda v: mpmath.log1p(mpmath.exp(v)), (-25, 2.7), True),
    "sinh": (fn.sinh, mpmath.sinh, (-25, 2.5), True),
    "cosh": (fn.cosh, mpmath.cosh, (-25, 2.5), True),
    "sin": (fn.sin, mpmath.sin, (-25, 5), True),
    "cos": (fn.cos, mpmath.cos, (-25, 5), True),
    "tan": (fn.tan, mpmath.tan, (-25, 3), True),
    "sqrt": (fn.sqrt, mpmath.sqrt, (-250, 250), False),
    "power 7": (lambda x: fn.power(x, 7), lambda v: v**7, (-30, 30), True),
    "power -3": (lambda x: fn.power(x, -3), lambda v: v**-3, (-30, 30), True),
}


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_functions_match_mpmath_from_tiny_to_large_arguments(name):
    function, reference, (low, high), signed = FUNCTIONS[name]
    rng = np.random.default_rng(list(FUNCTIONS).index(name))
    x = _random_dd(rng, (300,), low, high, signed=signed)
    if name == "log":  # near 1 as well, where log(x) is small
        x = DD(np.concatenate([x.hi, 1.0 + 10.0 ** rng.uniform(-25, -1, 50)]))
    exact = np.array([reference(v) for v in to_mpmath(x)], dtype=object)
    assert _worst_relative(function(x), exact) <= DD_ROUNDING


def test_special_values():
    assert float(fn.exp(DD(np.float64(-800.0)))) == 0.0
    with np.errstate(over="ignore"):
        assert np.isinf(fn.exp(DD(np.float64(800.0))).hi)
    assert np.isneginf(fn.log(DD(np.float64(0.0))).hi)
    assert np.isnan(fn.log(DD(np.float64(-1.0))).hi)
    assert float(fn.sqrt(DD(np.float64(0.0)))) == 0.0
    assert float(fn.tanh(DD(np.float64(60.0)))) == 1.0
    assert np.isnan(fn.tanh(DD(np.float64(np.nan))).hi)


def test_pairwise_sum():
    rng = np.random.default_rng(2)
    x = _random_dd(rng, (7, 301), -5, 5)
    X = to_mpmath(x)
    exact = np.array([mpmath.fsum(X[i]) for i in range(7)], dtype=object)
    scale = [mpmath.fsum(abs(v) for v in X[i]) for i in range(7)]
    got = to_mpmath(sum_along(x, axis=1))
    assert max(float(abs(g - e) / s) for g, e, s in zip(got, exact, scale, strict=True)) \
        <= DD_ROUNDING


def _product_errors(x: DD, M: DD):
    """Per entry: |error| / sum_k |x_k m_k| and |error| / (max_k |x_k| sum_k |m_k|)."""
    X, W, Y = to_mpmath(x), to_mpmath(M), to_mpmath(matmul(x, Sliced(M)))
    (B, k), m = X.shape, W.shape[1]
    componentwise, normwise = 0.0, 0.0
    for b in range(B):
        for j in range(m):
            exact = mpmath.fsum(X[b, i] * W[i, j] for i in range(k))
            error = abs(Y[b, j] - exact)
            componentwise = max(componentwise, float(
                error / mpmath.fsum(abs(X[b, i] * W[i, j]) for i in range(k))))
            normwise = max(normwise, float(error / (max(abs(v) for v in X[b])
                                                    * mpmath.fsum(abs(W[i, j])
                                                                  for i in range(k)))))
    return componentwise, normwise


@pytest.mark.parametrize(("B", "k", "m"), [(4, 1, 3), (5, 16, 7), (3, 200, 4), (2, 3000, 2)])
def test_matrix_product_of_well_scaled_operands(B, k, m):
    rng = np.random.default_rng(k)
    componentwise, _ = _product_errors(_random_dd(rng, (B, k), -1, 1),
                                       _random_dd(rng, (k, m), -1, 1))
    assert componentwise <= DD_PRODUCT


def test_matrix_product_of_wide_ranging_operands_is_accurate_rowwise():
    """Entries over 12 decades: the slices are cut per row of x and column of m, so the
    error is bounded by the row's largest entry times the column's sum of magnitudes."""
    rng = np.random.default_rng(7)
    _, normwise = _product_errors(_random_dd(rng, (3, 64), -6, 6),
                                  _random_dd(rng, (64, 9), -6, 6))
    assert normwise <= DD_PRODUCT


def test_prepared_columns_equal_a_fresh_preparation():
    rng = np.random.default_rng(3)
    M = _random_dd(rng, (16, 10), -1, 1)
    x = _random_dd(rng, (4, 16), -1, 1)
    a = matmul(x, Sliced(M).columns(2, 7))
    b = matmul(x, M[:, 2:7])
    assert np.array_equal(a.hi, b.hi) and np.array_equal(a.lo, b.lo)
