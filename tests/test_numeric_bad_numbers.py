"""Bad numbers become the library's own errors, naming the cause: overflow, a loss undefined
on the path, undefined expressions, grids that do not resolve the solution, finite
differences that cannot resolve a block."""

import numpy as np
import pytest
import sympy as sp
from helpers import ROUNDING, relative_error
from problems import blow_up

from numeric import (
    InputError,
    IntegrationError,
    MethodUnavailable,
    UnresolvedGrid,
    gradient,
    solve,
)
from symbolic import Dynamics, DynamicsError
from verification import audit, audit_gradient, builtin_problem, convergence_study

X, K = sp.symbols("x k")
LINEAR = Dynamics(rhs=[K * X], state=[X], params=[K])
DECAY = Dynamics(rhs=[-K], state=[X], params=[K])
CUBIC = Dynamics(rhs=[K * X**3], state=[X], params=[K])
SQUARE = X**2 / 2


def _zero_gradient(z0, theta, times):
    return np.zeros_like(z0), np.zeros_like(theta)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        pytest.param(lambda: gradient(LINEAR, [1.0], [1000.0], [0, 1.0], loss=SQUARE,
                                      method="exact"),
                     IntegrationError, r"e\^\(A \(t_1 - t_0\)\) is not finite", id="expm"),
        pytest.param(lambda: gradient(LINEAR, [1.0], [700.0], [0, 1.0], loss=SQUARE,
                                      method="exact"),
                     IntegrationError, "Frechet derivative .* is not finite", id="expm-frechet"),
        pytest.param(lambda: gradient(LINEAR, [1.0], [1e300], [0, 1.0], loss=SQUARE,
                                      method="exact"),
                     IntegrationError, "not finite", id="huge-theta-exact"),
        pytest.param(lambda: audit(LINEAR, [1e200], [-0.5], [0, 1.0], loss=SQUARE),
                     IntegrationError, r"loss at t_1 = 1 has the value inf .* overflows",
                     id="audit-z0-1e200"),
        pytest.param(lambda: audit_gradient(LINEAR, _zero_gradient, [1e200], [-0.5], [0, 1.0],
                                            loss=SQUARE),
                     IntegrationError, "overflows float64", id="audit-gradient-z0-1e200"),
        pytest.param(lambda: convergence_study(LINEAR, [1e200], [-0.5], [0, 1.0],
                                               loss=SQUARE),
                     IntegrationError, "overflows float64", id="convergence-z0-1e200"),
        pytest.param(lambda: gradient(LINEAR, [1e160], [-0.5], [0, 1.0], loss=SQUARE,
                                      method="complex_step"),
                     IntegrationError, "overflows float64", id="complex-step-overflow"),
        pytest.param(lambda: gradient(LINEAR, [1e200], [-0.5], [0, 1.0], loss=SQUARE,
                                      method="finite_difference"),
                     IntegrationError, "overflows float64", id="finite-difference-overflow"),
        pytest.param(lambda: gradient(LINEAR, [1e200], [-0.5], [0, 1.0], loss=SQUARE,
                                      method="high_precision"),
                     IntegrationError, "overflows float64", id="high-precision-overflow"),
        pytest.param(lambda: gradient(LINEAR, [1.0], [1e300], [0, 1.0], loss=SQUARE),
                     IntegrationError, "initial step size underflows", id="huge-theta"),
        pytest.param(lambda: gradient(CUBIC, [1e100], [-1e-300], [0, 1.0], loss=SQUARE),
                     IntegrationError, "non-finite", id="time-gradient-overflow"),
        pytest.param(lambda: gradient(LINEAR, [1.0], [-0.5], [-1e308, 1e308], loss=SQUARE),
                     InputError, "beyond float64's range", id="huge-span"),
        pytest.param(lambda: solve(LINEAR, [1.0], [-0.5], [-1e308, 1e308]),
                     InputError, "beyond float64's range", id="huge-span-solve"),
    ],
)
def test_overflow_is_an_error_naming_the_cause(call, error, message):
    with pytest.raises(error, match=message):
        call()


# x' = -k from x0 = 1/2: x(1) = -1/2, outside the domain of log
@pytest.mark.parametrize(
    ("method", "error", "message"),
    [
        *(pytest.param(m, IntegrationError, r"loss at t_1 = 1 .*(no real value|not real)", id=m)
          for m in ("interpolated_adjoint", "forward_sensitivity", "discrete_adjoint",
                    "finite_difference", "high_precision")),
        pytest.param("complex_step", MethodUnavailable, "branch point", id="complex_step"),
    ],
)
def test_a_loss_undefined_on_the_path_is_an_error_not_nan(method, error, message):
    with pytest.raises(error, match=message):
        gradient(DECAY, [0.5], [1.0], [0.0, 1.0], loss=sp.log(X), method=method)


@pytest.mark.parametrize("entry", ["audit", "audit_gradient"])
def test_audits_of_a_loss_undefined_on_the_path_are_errors(entry):
    with pytest.raises(IntegrationError, match="not defined there"):
        if entry == "audit":
            audit(DECAY, [0.5], [1.0], [0.0, 1.0], loss=sp.log(X))
        else:
            audit_gradient(DECAY, _zero_gradient, [0.5], [1.0], [0.0, 1.0], loss=sp.log(X))


UNDEFINED = "undefined or infinite"


@pytest.mark.parametrize(
    ("rhs", "loss", "message"),
    [
        pytest.param([X / 0], X, UNDEFINED, id="division-by-zero"),
        pytest.param([X * sp.nan], X, UNDEFINED, id="nan"),
        pytest.param([sp.oo * X], X, UNDEFINED, id="infinity"),
        pytest.param([sp.log(0) * X], X, UNDEFINED, id="log-zero"),
        pytest.param([sp.sin(sp.oo) * X], X, UNDEFINED, id="accumulation-bounds"),
        pytest.param([-X], X / 0, UNDEFINED, id="loss-division-by-zero"),
        pytest.param([-X], sp.oo * X, UNDEFINED, id="loss-infinity"),
        pytest.param([sp.Float("1e400") * X], X, "the number 1.0e[+]400, beyond float64",
                     id="number-beyond-float64"),
        pytest.param([sp.Float("1e-400") * X], X, "the number 1.0e-400, beyond float64",
                     id="number-below-float64"),
        pytest.param([sp.exp(sp.exp(1000000)) * X], X, "no finite float64 value",
                     id="constant-beyond-float64"),
        pytest.param([sp.asin(2) + X], X, "no finite float64 value", id="complex-constant"),
    ],
)
def test_undefined_values_are_refused_when_the_problem_is_built(rhs, loss, message):
    with pytest.raises(DynamicsError, match=message):
        gradient(Dynamics(rhs=rhs, state=[X]), [1.0], [], [0.0, 1.0], loss=loss)


def test_a_dirac_delta_in_f_is_refused():
    with pytest.raises(DynamicsError, match="DiracDelta, a distribution"):
        Dynamics(rhs=[sp.DiracDelta(X - 1)], state=[X])


@pytest.mark.parametrize("method", ["backsolve_adjoint", "interpolated_adjoint",
                                    "quadrature_adjoint", "forward_sensitivity"])
def test_a_fixed_grid_that_steps_over_a_blow_up_does_not_resolve_the_solution(method):
    # x' = theta x^2 from 1 blows up at t = 1; 5 euler steps on [0, 2] stay finite, and the
    # continuous methods used to return numbers from -7.6e66 to 8.2e5
    problem = blow_up()
    with pytest.raises(UnresolvedGrid, match=r"euler \(5 steps per interval\) does not resolve"):
        gradient(problem.dynamics, problem.z0, problem.theta, problem.times,
                 loss=problem.loss, method=method, solver="euler", steps=5)


def test_the_discrete_methods_still_differentiate_that_discrete_map():
    problem = blow_up()
    runs = {
        method: gradient(problem.dynamics, problem.z0, problem.theta, problem.times,
                         loss=problem.loss, method=method, solver="euler", steps=5)
        for method in ("discrete_adjoint", "complex_step")
    }
    for block in ("z0", "theta", "times"):
        assert relative_error(getattr(runs["discrete_adjoint"], block),
                              getattr(runs["complex_step"], block)) <= ROUNDING


def test_an_ordinary_coarse_grid_is_still_served():
    problem = blow_up()  # x(0.5) = 2: a coarse euler grid is inaccurate, not unresolved
    g = gradient(problem.dynamics, problem.z0, problem.theta, [0.0, 0.5], loss=problem.loss,
                 method="interpolated_adjoint", solver="euler", steps=8)
    assert np.all(np.isfinite(g.theta))


def test_finite_differences_that_cannot_resolve_a_block_refuse():
    # times 1e-300 apart: the step in times is 1/20 of the gap, far below rounding
    with pytest.raises(MethodUnavailable, match="cannot resolve the times block"):
        gradient(LINEAR, [1.0], [-0.5], [0.0, 1e-300], loss=SQUARE, method="finite_difference")
    g = gradient(LINEAR, [1.0], [-0.5], [0.0, 1e-300], loss=SQUARE)
    np.testing.assert_allclose(g.times, [0.5, -0.5], rtol=ROUNDING)


def test_convergence_study_marks_the_grids_that_do_not_resolve_the_solution():
    problem = builtin_problem("contracting")  # eigenvalue -40: euler unstable for h > 1/20
    study = convergence_study(problem.dynamics, problem.z0, problem.theta, problem.times,
                              loss=problem.loss, method="interpolated_adjoint",
                              solver="euler", steps=(16, 64))
    assert not study.passed and not study.asymptotic
    assert "(the grid does not resolve the solution)" in str(study).splitlines()[2]


@pytest.mark.parametrize(
    ("z0", "block", "returned"),
    [
        pytest.param(0.0, "times", 1.34e154, id="overflowing-norm"),
        pytest.param(0.0, "times", 4.0, id="zero-reference"),
        pytest.param(1.0, "z0", 1.7e308, id="overflowing-diagnosis"),
    ],
)
def test_an_implementation_beyond_float64_fails_with_an_infinite_error(z0, block, returned):
    # x' = 0 x: dL/dz0 = z0, dL/dtimes = 0; the implementation is off by far too much
    def grad(z0, theta, times):
        out = {"z0": np.array(z0, dtype=float), "theta": np.zeros_like(theta),
               "times": np.zeros_like(times)}
        out[block].flat[0] = returned
        return out["z0"], out["theta"], out["times"]

    with np.errstate(all="raise"):  # no numerical warning escapes the comparison
        report = audit_gradient(LINEAR, grad, [[z0], [z0]], [0.0], [0.0, 1.0], loss=SQUARE)
    row = next(row for row in report.rows if row.block == block)
    assert not row.passed and row.error > 1


def test_the_implementation_under_audit_runs_with_the_callers_floating_point_settings():
    def grad(z0, theta, times):  # divides by zero: the caller asked for that to raise
        return np.zeros_like(z0) / np.zeros_like(z0), np.zeros_like(theta)

    with np.errstate(divide="raise", invalid="raise"), pytest.raises(
        InputError, match="raised FloatingPointError"
    ):
        audit_gradient(LINEAR, grad, [[1.0]], [-0.5], [0.0, 1.0], loss=SQUARE)
