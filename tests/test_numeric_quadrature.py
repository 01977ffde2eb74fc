"""The quadrature adjoint's adaptive Gauss–Kronrod rule: exactness, error control, and the
adjoint meeting its tolerance where the integrand is not smooth."""

from fractions import Fraction

import numpy as np
import pytest
import sympy as sp
from helpers import relative_error, solver_tolerance

from numeric import gradient
from numeric._quadrature import (
    GAUSS_WEIGHTS,
    KRONROD_NODES,
    KRONROD_WEIGHTS,
    adaptive_parameter_integral,
)
from symbolic import Dynamics


def _monomial_integral(k: int) -> float:
    """int_{-1}^{1} x^k dx."""
    return float(Fraction(2, k + 1)) if k % 2 == 0 else 0.0


@pytest.mark.parametrize(("weights", "degree"), [(KRONROD_WEIGHTS, 22), (GAUSS_WEIGHTS, 13)],
                         ids=["kronrod-15", "gauss-7"])
def test_rules_integrate_polynomials_of_their_degree_exactly(weights, degree):
    for k in range(degree + 1):
        assert abs(weights @ KRONROD_NODES**k - _monomial_integral(k)) <= 1e-15
    # and not the next even degree (odd ones vanish by symmetry): the rules are what they
    # claim to be
    beyond = degree + 1 if degree % 2 else degree + 2
    assert abs(weights @ KRONROD_NODES**beyond - _monomial_integral(beyond)) > 1e-10


def test_adaptive_rule_resolves_a_square_root_singularity():
    """int_0^1 sqrt(t) dt = 2/3, by halving toward t = 0 until the estimate meets the
    tolerance; the reported error bounds the true one."""
    def integrand(tag, ts):
        return np.sqrt(ts)[:, None] * np.array([1.0, 3.0])

    result = adaptive_parameter_integral(integrand, [(0, 0.0, 1.0)], 2, 1, rtol=1e-12,
                                         atol=0.0)
    truth = np.array([2 / 3, 2.0])
    assert np.all(np.abs(result.value - truth) <= 1e-12 * truth)
    assert np.all(np.abs(result.value - truth) <= result.error + 1e-16)
    assert result.levels > 5  # it had to halve


def test_quadrature_adjoint_meets_its_tolerance_where_f_is_not_smooth_at_t0():
    """x' = c sqrt(t): x(T) = x0 + (2/3) c T^(3/2). The parameter integrand sqrt(t) a is not
    smooth at t_0 = 0; a fixed 5-point rule per step stayed 7e-7 off at rtol = 1e-10."""
    x, c, t = sp.Symbol("x"), sp.Symbol("c"), sp.Symbol("t")
    dyn = Dynamics(rhs=[c * sp.sqrt(t)], state=[x], params=[c], time=t)
    x0, c0 = 0.3, 0.7
    times = np.array([0.0, 0.5, 1.0])
    path = x0 + 2 / 3 * c0 * times[1:] ** 1.5
    exact = np.sum(path * 2 / 3 * times[1:] ** 1.5)  # dL/dc for L = sum x(t_i)^2 / 2
    rtol = 1e-10
    g = gradient(dyn, [x0], [c0], times, loss=x**2 / 2, method="quadrature_adjoint",
                 rtol=rtol, atol=rtol / 100)
    assert relative_error(g.theta, [exact]) <= solver_tolerance(rtol)
    assert g.info["quadrature_levels"] > 1
