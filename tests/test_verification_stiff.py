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
    assert not certified.caveat and not certified.uncertified
    assert references.REFERENCE_MARGIN * certified.error <= accuracy
    monkeypatch.setattr(references, "STEP_GROWTH", 1e9)
    uncertain = reference()
    assert list(uncertain.uncertified) == ["times"], uncertain.uncertified
    assert uncertain.uncertified["times"].startswith(
        "its error does not fall with the tolerance at times[2]")


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
    why = reference.uncertified["times"]
    assert why.startswith("its error does not fall with the tolerance")
    assert "from rtol 1e-08 to 1e-09" in why  # the ladder's own tolerances


def _refusing_high_precision(compute, refuse):
    def wrapped(compiled, z0, theta, times, method, *args, **kwargs):
        if method == "high_precision":
            refuse()
        return compute(compiled, z0, theta, times, method, *args, **kwargs)

    return wrapped


# -- blocks a stiff reference cannot certify ---------------------------------------------------


def test_robertson_audit_compares_what_its_reference_certifies_and_names_the_rest():
    """Robertson on rodas4: the float64 reference's state and parameter entries converge with
    the tolerance, its time gradients (the stiff Jacobian times the state's error) do not.
    The continuous methods are held to it on z0 and theta; times is named as not compared,
    and the verdict is not a pass."""
    report = audit_problem(builtin_problem("robertson"), solver="rodas4")
    continuous = {r.method: r for r in report.rows if r.reference.startswith(
        "forward_sensitivity@rodas4") and r.block == "theta" and r.method != "backsolve_adjoint"}
    assert {"interpolated_adjoint", "quadrature_adjoint", "forward_sensitivity",
            "discrete_adjoint"} <= set(continuous)
    assert all(r.passed for r in continuous.values()), report
    assert not any(r.block == "times" and r.reference.startswith("forward_sensitivity")
                   for r in report.rows)
    assert [s.method for s in report.uncertified] == ["times"]
    assert "its error does not fall with the tolerance at times[" in report.uncertified[0].reason
    backsolve = [r for r in report.failures if r.method == "backsolve_adjoint"]
    assert backsolve and "unstable" in backsolve[0].diagnosis
    assert not report.passed
    assert "not compared (the reference cannot certify them): times" in report.format()


def _robertson_interpolated(scale_k3=1.0):
    problem = builtin_problem("robertson")

    def grad(z0, theta, times):
        g = numeric.gradient(problem.dynamics, z0, theta, times, loss=problem.loss,
                             method="interpolated_adjoint", solver="rodas4", rtol=1e-8,
                             atol=1e-14)
        return g.z0, g.theta * np.array([1.0, 1.0, scale_k3]), g.times

    return problem, grad


@pytest.mark.parametrize("scale_k3", [1.0, 1.01], ids=["correct", "k3-one-percent-off"])
def test_audit_gradient_on_robertson_is_not_a_pass_with_a_block_unchecked(scale_k3):
    """A correct gradient is NOT CERTIFIED (never PASS) while the time gradients cannot be
    compared; a wrong dL/dk3 still fails, named, on the blocks that can."""
    from verification import audit_gradient

    problem, grad = _robertson_interpolated(scale_k3)
    times = problem.times[:8]  # to t = 100: the diagnosis of a failure solves every span
    assert problem.data is None
    report = audit_gradient(problem.dynamics, grad, problem.z0, problem.theta, times,
                            loss=problem.loss, rtol=1e-5)
    assert not report.passed
    assert [s.method for s in report.uncertified] == ["times"]
    assert {r.block for r in report.rows} == {"z0", "theta"}
    text = report.format()
    assert report.to_dict()["verdict"] == ("NOT CERTIFIED" if scale_k3 == 1.0 else "FAIL")
    if scale_k3 == 1.0:
        assert not report.failures, text
        assert text.splitlines()[-1].startswith("NOT CERTIFIED: 2 of 2 checks passed"), text
    else:
        assert [(r.block, r.entry) for r in report.failures] == [("theta", "theta[2] (k3)")]
        assert text.splitlines()[-1].startswith("FAIL: 1 of 2 checks passed"), text


def test_a_reference_file_is_never_written_from_an_uncertified_block(monkeypatch):
    import verification._reference_file as reference_file
    from verification._references import ReferenceGradient

    problem = builtin_problem("linear")
    compiled = compile_problem(problem.dynamics, problem.loss)
    g = numeric.gradient(problem.dynamics, problem.z0, problem.theta, problem.times,
                         loss=problem.loss, method="forward_sensitivity")
    partial = ReferenceGradient(g, "forward_sensitivity@1e-13", 1e-12,
                                uncertified={"times": "does not fall"})
    monkeypatch.setattr(reference_file, "best_reference", lambda *a, **k: partial)
    with pytest.raises(numeric.MethodUnavailable, match="cannot certify its error: times: "
                                                        "does not fall"):
        reference_file.reference_document(problem)
    assert compiled.n == problem.dynamics.n


def test_assert_gradient_correct_does_not_pass_a_block_it_could_not_check():
    from verification import GradientMismatch, Problem, assert_gradient_correct

    robertson, grad = _robertson_interpolated()
    problem = Problem(name="robertson-to-100", dynamics=robertson.dynamics,
                      loss=robertson.loss, z0=robertson.z0, theta=robertson.theta,
                      times=robertson.times[:8])
    with pytest.raises(GradientMismatch, match="the gradient could not be certified: no "
                       "check failed, but the reference cannot certify times") as failure:
        assert_gradient_correct(grad, problem, rtol=1e-5)
    assert failure.value.summary.endswith("2 of 2 checks passed, 0 failed (the audit table "
                                          "is in the failure above)")
