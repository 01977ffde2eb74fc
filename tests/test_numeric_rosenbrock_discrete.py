"""The discrete adjoint through Rodas4: the exact derivative of its discrete map (transposed
solves and second derivatives of f), equal to complex step on the same frozen grid on
every block, times included; finite differences on that grid; and the convergence of the
discrete gradient to the exact one at order 4."""

from __future__ import annotations

import numpy as np
import problems
import pytest
from helpers import FINITE_DIFFERENCE, ROUNDING, assert_gradients_close, relative_error

import numeric
from verification import builtin_problem, convergence_study
from verification._convergence import ORDER_TOLERANCE

#: A fixed-step grid with few steps (a wrong coefficient is not hidden by a tiny h) and
#: adaptive frozen grids with few, uneven steps.
CASES = [
    pytest.param(problems.time_dependent_nonlinear, {"steps": 3}, id="sin_sqrt_t-3-steps"),
    pytest.param(problems.time_dependent_nonlinear, {"rtol": 1e-5, "atol": 1e-7},
                 id="sin_sqrt_t-adaptive"),
    pytest.param(lambda: builtin_problem("forced_oscillator"), {"rtol": 1e-5, "atol": 1e-7},
                 id="forced_oscillator-adaptive"),
    pytest.param(lambda: builtin_problem("robertson"), {"rtol": 1e-5, "atol": 1e-10},
                 id="robertson-adaptive"),
    pytest.param(lambda: builtin_problem("stiff_van_der_pol"), {"rtol": 1e-5, "atol": 1e-8},
                 id="stiff_van_der_pol-adaptive"),
]


def run(problem, method, **options):
    return numeric.gradient(problem.dynamics, problem.z0, problem.theta, problem.times,
                            loss=problem.loss, method=method, solver="rodas4", **options)


@pytest.mark.parametrize(("make_problem", "options"), CASES)
def test_discrete_adjoint_equals_complex_step(make_problem, options):
    problem = make_problem()
    reference = run(problem, "complex_step", **options)
    g = run(problem, "discrete_adjoint", **options)
    assert g.info["grid_steps"] == reference.info["grid_steps"]
    assert g.info["frozen_grid"] == ("rtol" in options)
    assert_gradients_close(g, reference, ROUNDING)
    assert relative_error(g.loss, reference.loss) <= ROUNDING


def test_finite_difference_equals_complex_step():
    problem = problems.time_dependent_nonlinear()
    reference = run(problem, "complex_step", steps=3)
    assert_gradients_close(run(problem, "finite_difference", steps=3), reference,
                           FINITE_DIFFERENCE)


def test_discrete_adjoint_with_data_targets():
    """Targets valued per observation and sample reach the discrete adjoint's jumps."""
    import sympy as sp

    problem = problems.time_dependent_nonlinear()
    y = sp.Symbol("y")
    x = problem.dynamics.state[0]
    data = np.linspace(0.1, 0.9, 9).reshape(3, 3, 1)
    kwargs = {"loss": (x - y) ** 2, "targets": [y], "data": data, "solver": "rodas4",
              "steps": 2}
    args = (problem.dynamics, problem.z0, problem.theta, problem.times)
    g = numeric.gradient(*args, method="discrete_adjoint", **kwargs)
    reference = numeric.gradient(*args, method="complex_step", **kwargs)
    assert_gradients_close(g, reference, ROUNDING)


@pytest.mark.parametrize("name", ["linear", "stiff_linear"])
def test_discrete_adjoint_converges_at_order_4(name, tmp_path):
    """Fixed-step mode, 4 to 32 steps per interval, toward the matrix-exponential gradient:
    also on the stiff system (eigenvalues -1 and -1e4, h * lambda up to 1.25e4), where
    Rodas4's L-stability leaves the order intact."""
    problem = builtin_problem(name)
    study = convergence_study(problem.dynamics, problem.z0, problem.theta, problem.times,
                              loss=problem.loss, method="discrete_adjoint", solver="rodas4",
                              steps=(4, 8, 16, 32))
    assert study.reference == "exact"
    assert abs(study.observed_order - 4) <= ORDER_TOLERANCE, str(study)
    assert study.passed
    pytest.importorskip("matplotlib")
    study.plot(str(tmp_path / "rodas4.png"))
    assert (tmp_path / "rodas4.png").stat().st_size > 0
