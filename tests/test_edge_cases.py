"""Edge cases where a careful user would trip: each must be a clear refusal or a right answer,
never a silently wrong number."""

import numpy as np
import pytest
import sympy as sp
from helpers import solver_tolerance

from numeric import InputError, MethodUnavailable, gradient, solve
from symbolic import Dynamics, DynamicsError
from verification import audit, audit_gradient, builtin_problem, convergence_study
from verification._cli import main

X, K, T = sp.symbols("x k t")
SQRT_T = Dynamics(rhs=[-K * X + sp.sqrt(T)], state=[X], params=[K], time=T)


@pytest.mark.parametrize(
    ("rhs", "message"),
    [
        pytest.param([sp.I * X], "contains a complex number", id="complex"),
        pytest.param([sp.Function("g")(X)], "undefined function", id="undefined-function"),
        pytest.param({X: -X}, "got a dict", id="mapping"),
    ],
)
def test_dynamics_refuse_what_cannot_be_real_and_differentiable(rhs, message):
    with pytest.raises(DynamicsError, match=message):
        Dynamics(rhs=rhs, state=[X])


def test_loss_with_a_twin_symbol_is_explained():
    real_x = sp.Symbol("x", real=True)
    dyn = Dynamics(rhs=[-real_x], state=[real_x])
    with pytest.raises(DynamicsError, match="other assumptions"):
        gradient(dyn, [1.0], [], [0.0, 1.0], loss=X**2)


def test_scalar_state_for_one_dimensional_dynamics():
    g = gradient(Dynamics(rhs=[-K * X], state=[X], params=[K]), 1.0, [0.5], [0.0, 1.0],
                 loss=X**2 / 2, method="exact")
    assert g.z0.shape == (1,)


@pytest.mark.parametrize(
    ("method", "message"),
    [
        pytest.param("discrete_adjoint", "not finite at entries", id="discrete_adjoint"),
        pytest.param("complex_step", "not complex-analytic in times", id="complex_step"),
        pytest.param("finite_difference", "edge of the domain", id="finite_difference"),
    ],
)
def test_sqrt_of_time_from_zero_refuses_discrete_derivatives(method, message):
    # d/dt sqrt(t) is infinite at t = 0, where the first stage is evaluated
    with pytest.raises(MethodUnavailable, match=message):
        gradient(SQRT_T, [1.0], [0.7], [0.0, 0.5, 1.0], loss=X**2 / 2, method=method)


def test_sqrt_of_time_from_zero_continuous_methods_agree_with_high_precision():
    times = [0.0, 0.5, 1.0]
    ref = gradient(SQRT_T, [1.0], [0.7], times, loss=X**2 / 2, method="high_precision")
    for method in ("interpolated_adjoint", "forward_sensitivity"):
        g = gradient(SQRT_T, [1.0], [0.7], times, loss=X**2 / 2, method=method,
                     rtol=1e-10, atol=1e-12)
        assert np.max(np.abs(g.times - ref.times)) <= solver_tolerance(1e-10) * np.max(
            np.abs(ref.times))


def test_audit_lists_the_refusals_and_passes_the_rest():
    report = audit(SQRT_T, [1.0], [0.7], [0.0, 0.5, 1.0], loss=X**2 / 2)
    assert report.passed, str(report)
    skipped = {s.method for s in report.skipped}
    assert {"discrete_adjoint", "finite_difference", "exact"} <= skipped


def test_atol_zero_is_refused_with_the_reason():
    with pytest.raises(InputError, match="start at exactly zero"):
        solve(SQRT_T, [1.0], [0.7], [0.1, 1.0], atol=0.0)


@pytest.mark.parametrize(
    ("methods", "rows_of"),
    [
        pytest.param(["complex_step"], {"complex_step"}, id="complex-step-alone"),
        pytest.param(["finite_difference"], {"finite_difference"}, id="fd-alone"),
        pytest.param(["exact", "high_precision"], {"high_precision"}, id="references"),
    ],
)
def test_audit_of_some_methods_builds_the_references_it_needs(methods, rows_of):
    seed = builtin_problem("linear")
    report = audit(seed.dynamics, seed.z0, seed.theta, seed.times, loss=seed.loss,
                   methods=methods)
    assert report.passed
    assert {r.method for r in report.rows} == rows_of
    assert report.problems[0].reference.startswith("exact")


def test_audit_with_nothing_to_compare_says_so():
    seed = builtin_problem("linear")
    with pytest.raises(InputError, match="leaves nothing to compare"):
        audit(seed.dynamics, seed.z0, seed.theta, seed.times, loss=seed.loss,
              methods=["exact"])


@pytest.mark.parametrize(
    ("solver", "steps", "message"),
    [
        pytest.param("euler", 1, "too coarse to audit", id="euler-1"),
        pytest.param("rk4", 1, "too coarse to audit", id="rk4-1"),
    ],
)
def test_coarse_fixed_step_grid_is_not_audited_as_if_it_could_be(solver, steps, message):
    seed = builtin_problem("linear")
    report = audit(seed.dynamics, seed.z0, seed.theta, seed.times, loss=seed.loss,
                   solver=solver, steps=steps)
    # the continuous methods are listed as not applicable, with the reason, not passed
    skipped = {s.method: s.reason for s in report.skipped}
    assert "interpolated_adjoint" in skipped and message in skipped["interpolated_adjoint"]
    assert not any(r.method == "interpolated_adjoint" for r in report.rows)
    # the discrete map is still checked exactly on that grid
    assert any(r.method == "discrete_adjoint" and r.reference == "complex_step"
               for r in report.rows)


def test_data_fitting_audit_passes_at_and_near_the_optimum():
    """Near a fit the gradient is a small difference of large terms; errors are measured
    on the scale of those terms (term_scale), so correct methods pass down to the optimum,
    where the gradient itself is zero."""
    import sys

    sys.path.insert(0, "examples")
    from learn_linear_dynamics import LOSS, MODEL, Y, make_setup

    setup = make_setup()
    for distance in (1e-2, 1e-6, 0.0):
        report = audit(MODEL, setup.z0, setup.w_true.reshape(-1) + distance, setup.times,
                       loss=LOSS, targets=Y, data=setup.data)
        assert report.passed, f"distance {distance}:\n{report}"


@pytest.mark.parametrize("reference", [None, "exact", "high_precision"])
def test_audit_gradient_passes_a_correct_gradient_at_the_optimum(reference):
    """At the optimum the gradient is a difference of terms that cancel to rounding: a
    correct float64 implementation is accurate on the terms' scale, and so is every
    reference, so the verdict needs neither high precision nor an atol."""
    import sys

    sys.path.insert(0, "examples")
    from learn_linear_dynamics import LOSS, MODEL, Y, make_setup

    setup = make_setup()
    theta = setup.w_true.reshape(-1)

    def exact(z0, th, times):
        g = gradient(MODEL, z0, th, times, loss=LOSS, targets=Y, data=setup.data,
                     method="exact")
        return g.z0, g.theta, g.times

    def offset(z0, th, times):  # wrong by 1e-4 of the terms' scale in one entry
        dz0, dtheta, dtimes = exact(z0, th, times)
        dtheta[1] += 1e-4 * np.abs(dtheta).max() + 1e-4
        return dz0, dtheta, dtimes

    kwargs = dict(loss=LOSS, targets=Y, data=setup.data, reference=reference)
    report = audit_gradient(MODEL, exact, setup.z0, theta, setup.times, **kwargs)
    assert report.passed, str(report)
    wrong = audit_gradient(MODEL, offset, setup.z0, theta, setup.times, **kwargs)
    assert [r.entry for r in wrong.failures] == ["theta[1] (w1)"], str(wrong)


def test_convergence_study_out_of_the_asymptotic_regime_fails():
    problem = builtin_problem("contracting")
    study = convergence_study(problem.dynamics, problem.z0, problem.theta, problem.times,
                              loss=problem.loss, method="backsolve_adjoint", solver="euler",
                              steps=(4, 8))
    assert not study.asymptotic and not study.passed
    assert "not in the asymptotic regime" in str(study)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["convergence", "--problem", "linear", "--method", "exact"],
                     "no step size", id="convergence-exact"),
        pytest.param(["reference", "--problem", "linear", "--out", "/nonexistent/x.json"],
                     "cannot write or read /nonexistent/x.json", id="reference-bad-path"),
    ],
)
def test_cli_one_line_errors(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_check_with_a_broken_module_is_one_line(tmp_path, capsys):
    broken = tmp_path / "broken.py"
    broken.write_text("def grad(z0, theta, times)\n    return z0\n")
    assert main(["check", "references/linear.json", "--impl", f"{broken}:grad"]) == 2
    err = capsys.readouterr().err
    assert "SyntaxError" in err and len(err.strip().splitlines()) == 1


def test_pytest_option_with_a_bad_tolerance_is_a_usage_error(pytester):
    pytester.makepyfile(test_x="def test_x():\n    assert True\n")
    result = pytester.runpytest("--adjoint-verify-rtol", "-1")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*--adjoint-verify-rtol must be a finite number > 0*"])
