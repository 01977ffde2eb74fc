"""Certified errors are upper bounds: the float64 reference estimates its own error (or
says it cannot), and the discrete map on dopri5's frozen grid is held to the error its
grid actually has."""

import numpy as np
import pytest
import sympy as sp

import numeric._gradient
from numeric import gradient
from numeric._checks import check_compiled
from symbolic import Dynamics
from verification import audit, audit_gradient, builtin_problem
from verification._references import TIGHT_LABEL, best_reference
from verification._tolerances import block_error, solver_tolerance

X, Y, Z = sp.symbols("x y z")
SIGMA, RHO, BETA = sp.symbols("sigma rho beta")
LORENZ = Dynamics(rhs=[SIGMA * (Y - X), X * (RHO - Z) - Y, X * Y - BETA * Z],
                  state=[X, Y, Z], params=[SIGMA, RHO, BETA])
LORENZ_LOSS = (X**2 + Y**2 + Z**2) / 2
LORENZ_THETA = np.array([10.0, 28.0, 8.0 / 3.0])
#: What forward sensitivity at rtol = 1e-13 claimed before it estimated its error.
OLD_CLAIM = solver_tolerance(1e-13, 1e-15)


def _lorenz(span):
    compiled = check_compiled(LORENZ, LORENZ_LOSS)
    return compiled, np.array([[1.0, 1.0, 1.0]]), LORENZ_THETA, np.array([0.0, span])


def _true_error(reference, truth):
    terms = reference.gradient.info["term_scale"]
    return max(block_error(getattr(reference.gradient, b), getattr(truth, b), terms[b])
               for b in ("z0", "theta", "times"))


@pytest.fixture(scope="module")
def lorenz():
    """Lorenz to T = 2 (chaotic: errors grow along the flow): the tight reference and the
    truth (high precision), computed once."""
    compiled, z0, theta, times = _lorenz(2.0)
    tight = best_reference(compiled, z0, theta, times, reference="forward_sensitivity")
    truth = best_reference(compiled, z0, theta, times, reference="high_precision", digits=20)
    return tight, truth.gradient


def _case(name):
    """(compiled, z0, theta, times, the reference that is the truth there)."""
    problem = builtin_problem({"seed-t10": "linear", "van-der-pol": "van_der_pol"}[name])
    times = 10 * problem.times if name == "seed-t10" else problem.times
    truth = "exact" if name == "seed-t10" else "high_precision"
    return (check_compiled(problem.dynamics, problem.loss), problem.z0, problem.theta, times,
            truth)


def test_tight_reference_estimate_bounds_its_error_on_lorenz(lorenz):
    tight, truth = lorenz
    assert tight.label == TIGHT_LABEL and not tight.caveat
    assert _true_error(tight, truth) <= tight.error


@pytest.mark.parametrize("name", ["seed-t10", "van-der-pol"])
def test_tight_reference_estimate_bounds_its_error(name):
    compiled, z0, theta, times, truth_name = _case(name)
    tight = best_reference(compiled, z0, theta, times, reference="forward_sensitivity")
    truth = best_reference(compiled, z0, theta, times, reference=truth_name,
                           digits=20).gradient
    assert tight.label == TIGHT_LABEL and not tight.caveat
    assert _true_error(tight, truth) <= tight.error


def test_contracting_to_t20_breaks_the_old_claim_and_the_reference_says_so():
    """Eigenvalues -1 and -40 observed at t = 10 and 20: dopri5's steps are limited by
    stability, so the error of the smallest entries does not fall with the tolerance (2e-8
    at every rtol from 1e-11 to 1e-13), far above the 1e-10 the reference used to claim."""
    problem = builtin_problem("contracting")
    compiled = check_compiled(problem.dynamics, problem.loss)
    times = 10 * problem.times
    tight = best_reference(compiled, problem.z0, problem.theta, times,
                           reference="forward_sensitivity")
    truth = best_reference(compiled, problem.z0, problem.theta, times, reference="exact")
    assert _true_error(tight, truth.gradient) > 10 * OLD_CLAIM
    # the entries that do not converge are time gradients: that block is not certified,
    # and the blocks that are hold their claim against the truth
    assert list(tight.uncertified) == ["times"]
    assert "does not fall with the tolerance at times[" in tight.uncertified["times"]
    terms = tight.gradient.info["term_scale"]
    times_error = block_error(tight.gradient.times, truth.gradient.times, terms["times"])
    assert times_error > 10 * OLD_CLAIM
    for b in ("z0", "theta"):
        assert block_error(getattr(tight.gradient, b), getattr(truth.gradient, b),
                           terms[b]) <= tight.error, b

    def exact(z0, theta, t):
        g = gradient(problem.dynamics, z0, theta, t, loss=problem.loss, method="exact")
        return g.z0, g.theta, g.times

    held = audit_gradient(problem.dynamics, exact, problem.z0, problem.theta, times,
                          loss=problem.loss, reference="forward_sensitivity")
    assert not held.passed and not held.failures  # NOT CERTIFIED: times not compared
    assert [s.method for s in held.uncertified] == ["times"]
    assert {r.block for r in held.rows} == {"z0", "theta"}
    # the default ladder uses the exact reference there, and the verdict stands
    assert audit_gradient(problem.dynamics, exact, problem.z0, problem.theta, times,
                          loss=problem.loss).passed


@pytest.mark.parametrize(
    ("margin", "label"),
    [
        pytest.param(100.0, TIGHT_LABEL, id="estimate-leaves-room"),
        pytest.param(5.0, "high_precision", id="estimate-too-large-escalates"),
    ],
)
def test_audit_gradient_escalates_when_the_estimate_is_too_large(lorenz, margin, label):
    """rtol at ``margin`` times the tight reference's estimated error: it is used where it
    leaves REFERENCE_MARGIN (10) of room, and high precision is built where it does not."""
    tight, truth = lorenz
    assert tight.error > 1e-12  # above the rounding floor, so the two rows differ
    _, z0, theta, times = _lorenz(2.0)
    report = audit_gradient(LORENZ, lambda *a: (truth.z0, truth.theta, truth.times), z0,
                            theta, times, loss=LORENZ_LOSS, rtol=margin * tight.error)
    assert report.passed, str(report)
    assert report.problems[0].reference.startswith(label)


T = sp.Symbol("t")
A, B = sp.symbols("a b")
#: sqrt(t) in f, observed from t_0 = 1e-3: dopri5 grades its grid toward the singularity at
#: t = 0, and dL/dt_0 on that frozen grid is further from the continuous dL/dt_0 than the
#: forward solve's tolerance (though it is the exact derivative of the discrete map).
SINGULAR = {
    "sqrt-t-coupling": [A * sp.sqrt(T) * Y, -B * X],
    "sqrt-t-forcing": [-A * X + sp.sqrt(T), -B * Y + X * sp.sqrt(T)],
    "sqrt-t-growth": [sp.sqrt(T) * A * X, -B * Y],
}


def _singular(name):
    dynamics = Dynamics(rhs=SINGULAR[name], state=[X, Y], params=[A, B], time=T)
    return dict(dynamics=dynamics, z0=np.array([[1.0, 0.5]]), theta=np.array([0.7, 1.3]),
                times=np.array([1e-3, 0.5, 1.0]), loss=(X**2 + Y**2) / 2)


@pytest.mark.parametrize("name", list(SINGULAR))
def test_frozen_grid_row_follows_the_grids_convergence(name):
    p = _singular(name)
    report = audit(p["dynamics"], p["z0"], p["theta"], p["times"], loss=p["loss"],
                   methods=["discrete_adjoint", "complex_step"])
    assert report.passed, str(report)
    row = next(r for r in report.rows if r.method == "discrete_adjoint"
               and r.reference == "high_precision" and r.block == "times")
    base = solver_tolerance(1e-10, 1e-12)
    assert row.error > base  # the solver's tolerance alone would fail a correct map
    assert row.tolerance <= 10 * row.error  # ... and the grid's own error is not inflated
    assert any("every step halved" in note for note in report.problems[0].notes)


@pytest.mark.parametrize("name", list(SINGULAR))
def test_a_wrong_discrete_gradient_still_fails(name, monkeypatch):
    p = _singular(name)
    right = numeric._gradient.discrete_adjoint_gradient

    def wrong(*args, **kwargs):  # dL/dt_0 off by 1e-4 relative
        loss, g_z0, g_theta, g_times = right(*args, **kwargs)
        g_times = g_times.copy()
        g_times[0] *= 1 + 1e-4
        return loss, g_z0, g_theta, g_times

    monkeypatch.setattr(numeric._gradient, "discrete_adjoint_gradient", wrong)
    report = audit(p["dynamics"], p["z0"], p["theta"], p["times"], loss=p["loss"],
                   methods=["discrete_adjoint", "complex_step"])
    failed = {(r.reference, r.block) for r in report.failures}
    assert failed == {("high_precision", "times"), ("complex_step", "times")}, str(report)
