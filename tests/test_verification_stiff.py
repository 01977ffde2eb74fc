"""Stiff problems end to end: stiffness detected from the symbolic Jacobian, explicit
solvers failing with "stiff: use rodas4", the linearly implicit high-precision reference,
audits of the built-in stiff problems, and the stiff_linear_dynamics strategy."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from helpers import ROUNDING, assert_gradients_close
from hypothesis import given, note, settings
from hypothesis.errors import InvalidArgument

import numeric
from numeric._stiffness import estimate_stiffness
from symbolic import Dynamics, compile_problem
from verification import audit_problem, builtin_problem
from verification import strategies as vst
from verification._cli import main
from verification._problems import STIFF_PROBLEMS


@pytest.mark.parametrize("name", [*STIFF_PROBLEMS, "linear", "van_der_pol", "contracting"])
def test_stiffness_is_detected_from_the_jacobian(name):
    problem = builtin_problem(name)
    compiled = compile_problem(problem.dynamics, problem.loss)
    estimate = estimate_stiffness(compiled, problem.z0, problem.theta, problem.times)
    assert estimate is not None
    assert estimate.stiff == (name in STIFF_PROBLEMS), estimate


def test_explicit_solver_on_stiff_dynamics_says_use_rodas4():
    problem = builtin_problem("stiff_linear")
    with pytest.raises(numeric.IntegrationError, match="stiff: use rodas4") as info:
        numeric.solve(problem.dynamics, problem.z0, problem.theta, problem.times,
                      max_steps=500)
    assert info.value.cause == "stiff"
    assert "max_steps=500 reached" in str(info.value)  # the original failure is kept


def test_non_stiff_failures_keep_their_own_message():
    problem = builtin_problem("linear")
    with pytest.raises(numeric.IntegrationError, match="max_steps=3 reached") as info:
        numeric.gradient(problem.dynamics, problem.z0, problem.theta, problem.times,
                         loss=problem.loss, max_steps=3)
    assert "use rodas4" not in str(info.value) and info.value.cause == "max_steps reached"


_x, _t, _k = sp.symbols("x t k")
#: Prothero–Robinson: x' = -k (x - sin t) + cos t, solution sin t plus a transient e^{-kt}.
PROTHERO_ROBINSON = Dynamics(rhs=[-_k * (_x - sp.sin(_t)) + sp.cos(_t)], state=[_x],
                             params=[_k], time=_t)


def test_stiff_high_precision_agrees_with_the_explicit_one():
    """Both extrapolations on a mildly stiff problem (k = 50, x0 off the slow solution):
    the linearly implicit one checks its own error estimate and agrees with the explicit
    one to far beyond float64."""
    from numeric._high_precision import high_precision_gradient

    compiled = compile_problem(PROTHERO_ROBINSON, _x)
    args = (compiled, np.array([[0.3]]), np.array([50.0]), np.array([0.0, 0.2, 0.4]))
    stiff = high_precision_gradient(*args, digits=16, stiff=True)
    explicit = high_precision_gradient(*args, digits=16, stiff=False)
    assert stiff[4]["integrator"].startswith("linearly implicit")
    assert stiff[4]["error_estimate"] <= 1e-14
    for ours, theirs in zip(stiff[1:4], explicit[1:4], strict=True):
        assert np.max(np.abs(ours - theirs)) <= ROUNDING * np.max(np.abs(theirs))


def test_high_precision_refuses_when_it_cannot_vouch(monkeypatch):
    """The self-check: two solves three digits apart must agree; forced apart, it refuses."""
    import numeric._high_precision as hp

    compiled = compile_problem(PROTHERO_ROBINSON, _x)
    monkeypatch.setattr(hp, "CHECK_DIGITS", -12)  # the 'tighter' check solve is far looser
    with pytest.raises(numeric.IntegrationError, match="did not reach"):
        hp.high_precision_gradient(compiled, np.array([[0.3]]), np.array([50.0]),
                                   np.array([0.0, 0.2]), digits=16, stiff=True)


def test_audit_of_stiff_linear_on_rodas4_names_the_backsolve_failure():
    report = audit_problem(builtin_problem("stiff_linear"), solver="rodas4",
                           methods=["interpolated_adjoint", "backsolve_adjoint",
                                    "discrete_adjoint"])
    verdicts = {(row.method, row.reference, row.block): row for row in report.rows}
    assert all(row.passed for (method, _, _), row in verdicts.items()
               if method != "backsolve_adjoint")
    theta = verdicts[("backsolve_adjoint", "exact", "theta")]
    assert not theta.passed and "reconstruction of z drifted" in theta.diagnosis


def test_cli_audit_with_an_explicit_solver_on_a_stiff_problem(capsys):
    assert main(["audit", "--problem", "stiff_linear", "--json"]) == 1
    out = capsys.readouterr().out
    assert "stiff: use rodas4" in out
    assert "Traceback" not in out


# -- strategy -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"min_spread": 1e4, "max_spread": 1e3}, "must not exceed", id="spread"),
        pytest.param({"max_spread": 1e7}, "must not exceed 1e", id="spread-too-large"),
        pytest.param({"min_spread": 0.5}, "min_spread=0.5 must be >= 1", id="spread-below-1"),
        pytest.param({"min_rate": 0.0}, "min_rate", id="rate-zero"),
        pytest.param({"min_rate": 3.0, "max_rate": 1.0}, "must not exceed", id="rate-range"),
        pytest.param({"min_n": 0}, "min_n=0", id="n"),
        pytest.param({"losses": ("hinge",)}, "losses", id="loss"),
    ],
)
def test_stiff_linear_dynamics_bad_arguments(kwargs, message):
    with pytest.raises(InvalidArgument, match=message):
        vst.stiff_linear_dynamics(**kwargs)


@settings(max_examples=4, deadline=None)
@given(vst.stiff_linear_dynamics(max_spread=1e6, max_batch=1, max_observations=2))
def test_drawn_stiff_problems_are_stiff_and_well_posed(problem):
    note(repr(problem))
    w = problem.theta.reshape(problem.dynamics.n, -1)
    eigenvalues = np.linalg.eigvalsh(w)
    assert np.all(eigenvalues < 0) and -eigenvalues.min() / -eigenvalues.max() <= 1.001e6
    zs = numeric.solve(problem.dynamics, problem.z0, problem.theta, problem.times,
                       solver="rodas4", rtol=1e-6, atol=1e-9)
    assert np.max(np.abs(zs[-1])) <= np.max(np.abs(problem.z0)) * np.sqrt(zs.shape[-1]) + 1e-12
    g = numeric.gradient(problem.dynamics, problem.z0, problem.theta, problem.times,
                         loss=problem.loss, method="discrete_adjoint", solver="rodas4",
                         rtol=1e-5, atol=1e-8)
    reference = numeric.gradient(problem.dynamics, problem.z0, problem.theta, problem.times,
                                 loss=problem.loss, method="complex_step", solver="rodas4",
                                 rtol=1e-5, atol=1e-8)
    assert_gradients_close(g, reference, ROUNDING)


def test_stiff_float64_reference_certifies_where_rodas4_follows_accuracy(monkeypatch):
    """The rodas4 ladder on van der Pol (mu = 1000), rtol 1e-7 to 1e-9: the step count grows
    with every decade of rtol (the steps follow accuracy), so distances that do not fall by
    three (times[2]: 3.4e-11, then 4.3e-10) but stay below the tightest rtol are rounding
    amplified along the stiff flow, and bound the error; verdicts then rest on it (no
    minutes-long mpmath reference). Without the evidence of the step counts, no estimate."""
    import verification._references as references

    problem = builtin_problem("stiff_van_der_pol")
    compiled = compile_problem(problem.dynamics, problem.loss)
    accuracy = 1e-5

    def reference():
        return references.best_reference(compiled, problem.z0, problem.theta, problem.times,
                                         accuracy=accuracy)

    certified = reference()
    assert certified.label.startswith("forward_sensitivity@rodas4"), certified.label
    assert not certified.caveat
    assert references.REFERENCE_MARGIN * certified.error <= accuracy
    monkeypatch.setattr(references, "STEP_GROWTH", 1e9)
    assert reference().caveat.startswith("its error does not fall with the tolerance")


def test_an_uncertified_stiff_reference_is_returned_with_its_reason_not_replaced_by_mpmath(
        monkeypatch):
    import verification._references as references

    def no_mpmath(*args, **kwargs):
        raise AssertionError("the linearly implicit mpmath reference was started")

    problem = builtin_problem("stiff_van_der_pol")
    compiled = compile_problem(problem.dynamics, problem.loss)
    monkeypatch.setattr(references, "STEP_GROWTH", 1e9)  # no evidence the steps follow rtol
    monkeypatch.setattr(references, "compute_gradient", _refusing_high_precision(
        references.compute_gradient, no_mpmath))
    reference = references.best_reference(compiled, problem.z0, problem.theta,
                                           problem.times, accuracy=1e-6)
    assert reference.caveat.startswith("its error does not fall with the tolerance")
    assert "from rtol 1e-08 to 1e-09" in reference.caveat  # the ladder's own tolerances


def _refusing_high_precision(compute, refuse):
    def wrapped(compiled, z0, theta, times, method, *args, **kwargs):
        if method == "high_precision":
            refuse()
        return compute(compiled, z0, theta, times, method, *args, **kwargs)

    return wrapped
