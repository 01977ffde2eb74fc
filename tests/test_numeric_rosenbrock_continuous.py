"""Every continuous method on rodas4 (the adjoint, backsolve and sensitivity systems with
their own Jacobians), converging to the exact gradient, on stiff problems too; the
backsolve adjoint's failure on stiff dynamics named by its reconstruction error; and
Robertson's gradient from the interpolated adjoint."""

from __future__ import annotations

import time

import numpy as np
import problems
import pytest
from helpers import gradient_errors, solver_tolerance

import numeric
from verification import builtin_problem

RTOL, ATOL = 1e-8, 1e-10
CONTINUOUS = ["interpolated_adjoint", "quadrature_adjoint", "backsolve_adjoint",
              "forward_sensitivity"]


def run(problem, method, **options):
    return numeric.gradient(problem.dynamics, problem.z0, problem.theta, problem.times,
                            loss=problem.loss, method=method, **options)


@pytest.mark.parametrize("method", CONTINUOUS)
@pytest.mark.parametrize("name", ["linear", "forced_oscillator"])
def test_continuous_methods_on_rodas4_meet_the_solver_tier(name, method):
    """Non-stiff dynamics (the forced oscillator depends on time, so every time-derivative
    term of the systems is at work) against exact or tight dopri5 forward sensitivity."""
    problem = builtin_problem(name)
    if name == "linear":
        reference = run(problem, "exact")
    else:
        reference = run(problem, "forward_sensitivity", rtol=1e-13, atol=1e-15)
    g = run(problem, method, solver="rodas4", rtol=RTOL, atol=ATOL)
    errors = gradient_errors(g, reference)
    assert max(errors.values()) <= solver_tolerance(RTOL, ATOL), errors


@pytest.fixture(scope="module")
def stiff_linear():
    problem = builtin_problem("stiff_linear")
    return problem, run(problem, "exact")


@pytest.mark.parametrize("method", [
    "interpolated_adjoint", "quadrature_adjoint", "forward_sensitivity", "discrete_adjoint"])
def test_stiff_linear_every_applicable_method_meets_the_tier(stiff_linear, method):
    """Eigenvalues -1 and -1e4 over t in [0, 10]: within 1e3 rtol of the matrix-exponential
    gradient at rtol = 1e-8 (the discrete adjoint converges to it like the continuous; it
    equals complex step and finite differences to their tiers, see the discrete tests)."""
    problem, exact = stiff_linear
    g = run(problem, method, solver="rodas4", rtol=RTOL, atol=ATOL)
    errors = gradient_errors(g, exact)
    assert max(errors.values()) <= solver_tolerance(RTOL, ATOL), errors


def test_stiff_linear_backsolve_fails_and_says_why(stiff_linear):
    """Rodas4 integrated backwards damps the fast mode the backward flow amplifies, so the
    reconstructed z loses its fast component near t_0: the parameter gradient (an integral
    of a z^T) is wrong, and the reconstruction error shows it."""
    problem, exact = stiff_linear
    g = run(problem, "backsolve_adjoint", solver="rodas4", rtol=RTOL, atol=ATOL)
    assert gradient_errors(g, exact)["theta"] > solver_tolerance(RTOL, ATOL)
    assert g.info["reconstruction_error"] > 1e-2


def test_nonlinear_time_dependent_against_tight_forward_sensitivity():
    problem = problems.time_dependent_nonlinear()
    reference = run(problem, "forward_sensitivity", rtol=1e-13, atol=1e-15)
    for method in CONTINUOUS:
        g = run(problem, method, solver="rodas4", rtol=RTOL, atol=ATOL)
        errors = gradient_errors(g, reference)
        assert max(errors.values()) <= solver_tolerance(RTOL, ATOL), (method, errors)


def test_robertson_interpolated_adjoint():
    """Twelve decades of time (t = 1e-5 ... 1e5): the interpolated adjoint on rodas4 within
    1e3 rtol (the solver tier) of rodas4 forward sensitivity a hundred times tighter, every
    entry on its own term scale, in few steps. The late observation-time gradients are the
    hardest: dL/dt_9 (4e-5) is 8.7e-4 off on its scale at rtol 1e-6; the reference at
    rtol 1e-8 is within 8e-6 of one at 1e-9."""
    problem = builtin_problem("robertson")
    rtol = 1e-6
    reference = run(problem, "forward_sensitivity", solver="rodas4", rtol=rtol / 100,
                    atol=rtol * 1e-8, max_steps=100_000)
    start = time.perf_counter()
    g = run(problem, "interpolated_adjoint", solver="rodas4", rtol=rtol, atol=rtol * 1e-6)
    elapsed = time.perf_counter() - start
    errors = gradient_errors(g, reference)
    assert max(errors.values()) <= solver_tolerance(rtol), errors
    assert g.info["forward_steps"] + g.info["backward_steps"] < 2000, (g.info, elapsed)
    assert np.all(np.sign(g.theta) == np.sign(reference.theta))
