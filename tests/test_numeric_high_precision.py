"""The high-precision reference: mpmath forward sensitivities by GBS extrapolation."""

from __future__ import annotations

import mpmath
import numpy as np
import problems
import pytest
import sympy as sp
from helpers import ROUNDING, assert_gradients_close, solver_tolerance

import numeric
import numeric._high_precision as high_precision
from symbolic import Dynamics, compile_problem
from verification import builtin_problem


def _affine_problem(seed: int, n: int = 3, batch: int = 2):
    """``f = A z + c`` with random ``A`` (spectrum in the left half plane) and ``c``, all
    entries parameters; loss quadratic plus linear."""
    rng = np.random.default_rng(seed)
    z = sp.symbols(f"z0:{n}")
    A = sp.Matrix(n, n, sp.symbols(f"a0:{n * n}"))
    c = sp.Matrix(sp.symbols(f"c0:{n}"))
    dynamics = Dynamics(rhs=A * sp.Matrix(z) + c, state=z, params=[*A, *c])
    loss = sp.Rational(1, 2) * sum(zi**2 for zi in z) + sum((i + 1) * zi for i, zi in enumerate(z))
    a_value = rng.standard_normal((n, n)) - 1.5 * np.eye(n)
    theta = np.concatenate([a_value.reshape(-1), rng.standard_normal(n)])
    z0 = rng.uniform(-1, 1, (batch, n))
    times = np.array([0.0, 0.3, 1.1, 1.6])
    return dynamics, loss, z0, theta, times


def _hp(dynamics, z0, theta, times, *, loss, digits=None):
    return numeric.gradient(dynamics, z0, theta, times, loss=loss, method="high_precision",
                            digits=digits)


def _scalar_dynamics(rhs, params=()):
    z = sp.Symbol("z")
    return Dynamics(rhs=[rhs(z)], state=[z], params=list(params)), z


# -- agreement with the other references --------------------------------------------


def _decay_without_parameters():
    dynamics, z = _scalar_dynamics(lambda z: -z / 2)
    return dynamics, (z - 1) ** 2, np.array([[1.5], [-0.5]]), np.zeros(0), np.array([0.0, 1.0])


def _from_problem(factory):
    def make():
        problem = factory()
        return problem.dynamics, problem.loss, problem.z0, problem.theta, problem.times

    return make


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(_from_problem(problems.seed_linear), id="seed-linear"),
        pytest.param(_from_problem(problems.affine), id="affine"),
        pytest.param(_from_problem(problems.unused_parameter), id="unused-parameter"),
        pytest.param(lambda: _affine_problem(1), id="random-affine-seed1"),
        pytest.param(lambda: _affine_problem(2, n=2, batch=3), id="random-affine-seed2-n2-B3"),
        pytest.param(_decay_without_parameters, id="scalar-no-params"),
    ],
)
def test_agrees_with_exact_to_rounding(make):
    dynamics, loss, z0, theta, times = make()
    exact = numeric.gradient(dynamics, z0, theta, times, loss=loss, method="exact")
    result = _hp(dynamics, z0, theta, times, loss=loss)
    assert_gradients_close(result, exact, ROUNDING)
    assert abs(result.loss - exact.loss) <= ROUNDING * abs(exact.loss)


def test_constant_drift_matches_closed_form():
    problem = problems.constant_drift()  # a single sample: z0 has shape (n,)
    expected = problems.constant_drift_gradient(problem)
    result = _hp(problem.dynamics, problem.z0, problem.theta, problem.times, loss=problem.loss)
    assert result.z0.shape == problem.z0.shape
    assert result.loss == pytest.approx(expected["loss"], rel=ROUNDING)
    for block in ("z0", "theta", "times"):
        np.testing.assert_allclose(getattr(result, block), expected[block], rtol=ROUNDING,
                                   atol=ROUNDING, err_msg=block)


@pytest.mark.parametrize(
    "factory",
    [
        pytest.param(lambda: builtin_problem("lotka_volterra"), id="lotka-volterra"),
        pytest.param(problems.time_dependent_nonlinear, id="time-dependent-nonlinear"),
    ],
)
def test_agrees_with_tight_forward_sensitivity(factory):
    problem = factory()
    args = (problem.dynamics, problem.z0, problem.theta, problem.times)
    reference = numeric.gradient(*args, loss=problem.loss, method="forward_sensitivity",
                                 rtol=1e-13, atol=1e-15)
    result = _hp(*args, loss=problem.loss)
    assert_gradients_close(result, reference, solver_tolerance(1e-13, 1e-15))


def test_time_dependent_dynamics_match_closed_form():
    # z' = cos(a t): z(t) = z0 + (sin(a t) - sin(a t0)) / a, loss z at t_1, t_2
    t, a = sp.Symbol("t"), sp.Symbol("a")
    z = sp.Symbol("z")
    dynamics = Dynamics(rhs=[sp.cos(a * t)], state=[z], params=[a], time=t)
    times, a_value = np.array([0.5, 1.0, 2.0]), 2.0
    result = _hp(dynamics, [0.25], [a_value], times, loss=z)
    t0, obs = times[0], times[1:]
    d_a = sum(
        (ti * np.cos(a_value * ti) - t0 * np.cos(a_value * t0)) / a_value
        - (np.sin(a_value * ti) - np.sin(a_value * t0)) / a_value**2
        for ti in obs
    )
    expected_times = np.concatenate([[-len(obs) * np.cos(a_value * t0)], np.cos(a_value * obs)])
    np.testing.assert_allclose(result.z0, [2.0], rtol=ROUNDING)
    np.testing.assert_allclose(result.theta, [d_a], rtol=ROUNDING)
    np.testing.assert_allclose(result.times, expected_times, rtol=ROUNDING)


# -- the error estimate and the digits -----------------------------------------------


@pytest.mark.parametrize("digits", [20, 30], ids=["20-digits", "30-digits"])
def test_error_estimate_reaches_the_digits_asked_for(digits):
    problem = builtin_problem("van_der_pol")
    result = _hp(problem.dynamics, problem.z0, problem.theta, problem.times,
                 loss=problem.loss, digits=digits)
    assert result.info["digits"] == digits
    assert result.info["error_estimate"] <= 10.0 ** -(digits - high_precision.DIGITS_MARGIN)
    assert result.info["macro_steps"] > 0
    assert result.info["nfev"] > result.info["macro_steps"]


def test_more_digits_tighten_the_estimate_and_agree_in_float64():
    problem = builtin_problem("lotka_volterra")
    args = (problem.dynamics, problem.z0, problem.theta, problem.times)
    low = _hp(*args, loss=problem.loss, digits=20)
    high = _hp(*args, loss=problem.loss, digits=40)
    assert high.info["error_estimate"] < 1e-10 * low.info["error_estimate"]
    assert high.info["nfev"] > low.info["nfev"]
    # both are exact to far below float64 rounding: their float64 roundings agree
    assert_gradients_close(low, high, 10 * np.finfo(float).eps)


def test_refuses_to_answer_when_the_estimate_misses_the_digits(monkeypatch):
    # ask the check for 20 digits more than the solves deliver: it must refuse
    monkeypatch.setattr(high_precision, "DIGITS_MARGIN", -20)
    problem = builtin_problem("linear")
    with pytest.raises(numeric.IntegrationError, match="did not reach 30 digits") as info:
        _hp(problem.dynamics, problem.z0, problem.theta, problem.times, loss=problem.loss)
    assert info.value.cause == "error estimate above the requested digits"


def test_step_budget_raises(monkeypatch):
    monkeypatch.setattr(high_precision, "MAX_MACRO_STEPS", 3)
    problem = builtin_problem("contracting")
    with pytest.raises(numeric.IntegrationError, match="budget of 3 macro steps") as info:
        _hp(problem.dynamics, problem.z0, problem.theta, problem.times, loss=problem.loss)
    assert info.value.cause == "step budget exhausted"
    assert problem.times[0] <= info.value.t < problem.times[-1]


# -- where f is evaluated --------------------------------------------------------------


class _RecordingFunctions:
    """Wraps ``MpmathFunctions``, recording every time at which f or a Jacobian is asked."""

    def __init__(self, funcs):
        self.funcs, self.times = funcs, []

    def _wrap(self, name):
        inner = getattr(self.funcs, name)

        def call(z, theta, t):
            self.times.append(t)
            return inner(z, theta, t)

        return call

    def __getattr__(self, name):
        if name in ("rhs", "jac_state", "jac_params"):
            return self._wrap(name)
        return getattr(self.funcs, name)


def test_evaluates_only_inside_the_span_and_lands_on_observation_times(monkeypatch):
    problem = builtin_problem("forced_oscillator")
    compiled = compile_problem(problem.dynamics, problem.loss)
    recorder = _RecordingFunctions(compiled.mpmath_functions())
    monkeypatch.setattr(compiled, "mpmath_functions", lambda: recorder)
    result = _hp(compiled, problem.z0, problem.theta, problem.times, loss=problem.loss)
    seen = {float(t) for t in recorder.times}
    assert np.isfinite(result.theta).all()
    assert min(seen) == problem.times[0]
    assert max(seen) == problem.times[-1]
    assert set(problem.times.tolist()) <= seen


# -- refusals and failures -----------------------------------------------------------


@pytest.mark.parametrize(
    ("rhs", "loss", "name"),
    [
        pytest.param(lambda z: -sp.Abs(z), lambda z: z**2, "Abs", id="abs-in-f"),
        pytest.param(lambda z: -z, lambda z: sp.Abs(z - 1), "Abs", id="abs-in-loss"),
        pytest.param(lambda z: -z, lambda z: sp.Max(z, 0), "Max", id="max-in-loss"),
        pytest.param(lambda z: -sp.sign(z) * z, lambda z: z, "sign", id="sign-in-f"),
    ],
)
def test_refuses_non_smooth_problems(rhs, loss, name):
    dynamics, z = _scalar_dynamics(rhs)
    with pytest.raises(numeric.MethodUnavailable, match=rf"non-smooth function\(s\) {name}"):
        _hp(dynamics, [1.0], [], [0.0, 1.0], loss=loss(z))


def test_refuses_the_shared_non_analytic_problem():
    problem = problems.non_analytic()
    with pytest.raises(numeric.MethodUnavailable, match=r"Abs.*'forward_sensitivity'"):
        _hp(problem.dynamics, problem.z0, problem.theta, problem.times, loss=problem.loss)


def test_refuses_systems_too_large_for_mpmath():
    dynamics, loss, _, theta, times = _affine_problem(3, n=4, batch=1)
    batch = high_precision.MAX_AUGMENTED_SIZE // (4 * (1 + 4 + 20)) + 1
    z0 = np.ones((batch, 4))
    with pytest.raises(numeric.MethodUnavailable, match="'forward_sensitivity' with a tight"):
        _hp(dynamics, z0, theta, times, loss=loss)


def test_blow_up_raises_integration_error_at_the_singularity():
    problem = problems.blow_up()  # z' = z**2, z(t) = 1 / (1 - t)
    with pytest.raises(numeric.IntegrationError, match=r"failed at t = 1\b") as info:
        _hp(problem.dynamics, problem.z0, problem.theta, problem.times, loss=problem.loss,
            digits=16)
    assert info.value.t == pytest.approx(1.0, abs=1e-12)
    assert "step size underflow" in info.value.cause


def test_leaving_the_domain_of_f_raises_integration_error():
    dynamics, z = _scalar_dynamics(lambda z: -1 / z)  # z(t) = sqrt(1 - 2 t)
    with pytest.raises(numeric.IntegrationError, match=r"failed at t = 0\.5\b"):
        _hp(dynamics, [1.0], [], [0.0, 1.0], loss=z, digits=16)


# -- the global mpmath precision ------------------------------------------------------


@pytest.mark.parametrize("fails", [False, True], ids=["answer", "integration-error"])
def test_global_mpmath_precision_is_unchanged(monkeypatch, fails):
    monkeypatch.setattr(mpmath.mp, "dps", 21)
    before = (mpmath.mp.dps, mpmath.mp.prec)
    if fails:
        dynamics, z = _scalar_dynamics(lambda z: z**2)
        with pytest.raises(numeric.IntegrationError, match="step size underflow"):
            _hp(dynamics, [1.0], [], [0.0, 2.0], loss=z, digits=16)
    else:
        problem = builtin_problem("linear")
        result = _hp(problem.dynamics, problem.z0, problem.theta, problem.times,
                     loss=problem.loss, digits=40)
        assert result.info["digits"] == 40
    assert (mpmath.mp.dps, mpmath.mp.prec) == before
