"""``numeric.gradient``: every method against exact references and exact properties.

The references: the matrix exponential (``method="exact"``) for linear autonomous dynamics,
closed forms (tests/problems.py), and properties every correct gradient has (batch
additivity, observation-time jumps, time-shift invariance, zero for an unused parameter).
"""

from __future__ import annotations

from types import FunctionType

import numpy as np
import problems
import pytest
import sympy as sp
from helpers import (
    FINITE_DIFFERENCE,
    ROUNDING,
    assert_gradients_close,
    gradient_errors,
    relative_error,
    solver_tolerance,
)

import numeric
from numeric import (
    CONTINUOUS_METHODS,
    DISCRETE_METHODS,
    METHODS,
    InputError,
    IntegrationError,
    MethodUnavailable,
)
from symbolic import DynamicsError

#: Tight dopri5 tolerances: every solver-based method is then within
#: solver_tolerance(RTOL, ATOL) of the exact gradient.
RTOL, ATOL = 1e-10, 1e-12
TIGHT = {"solver": "dopri5", "rtol": RTOL, "atol": ATOL}
SOLVER_METHODS = CONTINUOUS_METHODS + DISCRETE_METHODS
#: Every method that can serve nonlinear dynamics.
NONLINEAR_METHODS = tuple(m for m in METHODS if m != "exact")


def run(problem, method, **options):
    """``numeric.gradient`` on a problem (solver options are dropped for the solver-free
    references)."""
    if method in ("exact", "high_precision"):
        options = {}
    return numeric.gradient(
        problem.dynamics, problem.z0, problem.theta, problem.times,
        loss=problem.loss, method=method, **options,
    )


def max_error(g, ref) -> float:
    return max(gradient_errors(g, ref).values())


# -- agreement with the exact reference ---------------------------------------------------


@pytest.mark.parametrize("make_problem", [problems.seed_linear, problems.affine],
                         ids=["seed_Wz", "affine_Az_plus_c"])
@pytest.mark.parametrize("method", SOLVER_METHODS)
def test_method_matches_exact_on_linear_dynamics(make_problem, method):
    problem = make_problem()
    ref = run(problem, "exact")
    g = run(problem, method, **TIGHT)
    assert_gradients_close(g, ref, solver_tolerance(RTOL, ATOL))


@pytest.mark.parametrize("method", CONTINUOUS_METHODS)
def test_continuous_method_converges_to_exact(method):
    problem = problems.seed_linear()
    ref = run(problem, "exact")
    errors = {}
    for rtol in (1e-6, 1e-10):
        g = run(problem, method, solver="dopri5", rtol=rtol, atol=rtol * 1e-2)
        errors[rtol] = max_error(g, ref)
        assert errors[rtol] <= solver_tolerance(rtol, rtol * 1e-2), (
            f"{method} at rtol={rtol:g}: error {errors[rtol]:.2e}"
        )
    assert errors[1e-10] < errors[1e-6], f"{method} does not converge as rtol -> 0: {errors}"


@pytest.mark.parametrize("method", METHODS)
def test_every_method_returns_all_fields_with_shapes_and_loss(method):
    problem = problems.seed_linear()
    B, n = problem.z0.shape
    ref = run(problem, "exact")
    g = run(problem, method, **TIGHT)
    assert g.method == method
    assert g.z0.shape == (B, n)
    assert g.theta.shape == (len(problem.theta),)
    assert g.times.shape == (len(problem.times),)
    assert isinstance(g.loss, float)
    assert np.isfinite(g.loss)
    assert all(np.all(np.isfinite(block)) for block in g.blocks().values())
    assert relative_error(g.loss, ref.loss) <= solver_tolerance(RTOL, ATOL)


# -- batch: a loop over single samples ------------------------------------------------------

#: (method, solver options, tolerance, why)
BATCH_CASES = [
    *[
        pytest.param(m, {"solver": "rk4", "steps": 20}, ROUNDING, id=f"rk4-{m}")
        for m in (*CONTINUOUS_METHODS, "discrete_adjoint", "complex_step")
    ],
    # central differences of a batch sum round differently from a sum of differences
    pytest.param("finite_difference", {"solver": "rk4", "steps": 20}, FINITE_DIFFERENCE,
                 id="rk4-finite_difference"),
    # the batch shares one step controller, so the accepted steps (and the frozen grid)
    # differ from the single-sample solves: agreement to solver tolerance only
    *[
        pytest.param(m, {"solver": "dopri5", "rtol": 1e-8, "atol": 1e-10},
                     solver_tolerance(1e-8, 1e-10), id=f"dopri5-{m}")
        for m in SOLVER_METHODS
    ],
]


def _batch_and_loop(problem, method, options):
    batch = run(problem, method, **options)
    singles = []
    for row in problem.z0:
        single = problems.Problem(problem.dynamics, problem.loss, row, problem.theta,
                                  problem.times)
        singles.append(run(single, method, **options))
    return batch, singles


@pytest.mark.parametrize(("method", "options", "tol"), BATCH_CASES)
def test_batch_equals_loop_over_samples(method, options, tol):
    problem = problems.builtin_problem("tanh")
    batch, singles = _batch_and_loop(problem, method, options)
    n = problem.z0.shape[1]
    assert all(s.z0.shape == (n,) for s in singles), "a single (n,) z0 must give g.z0 (n,)"
    for b, single in enumerate(singles):
        assert relative_error(batch.z0[b], single.z0) <= tol, f"z0 row {b}"
    assert relative_error(batch.theta, sum(s.theta for s in singles)) <= tol
    assert relative_error(batch.times, sum(s.times for s in singles)) <= tol
    assert relative_error(batch.loss, sum(s.loss for s in singles)) <= tol


def test_exact_batch_equals_loop_over_samples():
    problem = problems.affine()
    batch, singles = _batch_and_loop(problem, "exact", {})
    for b, single in enumerate(singles):
        assert relative_error(batch.z0[b], single.z0) <= ROUNDING, f"z0 row {b}"
    assert relative_error(batch.theta, sum(s.theta for s in singles)) <= ROUNDING
    assert relative_error(batch.times, sum(s.times for s in singles)) <= ROUNDING


# -- observation times: the adjoint's jumps -------------------------------------------------

JUMP_CASES = [
    pytest.param("exact", ROUNDING, id="exact"),
    pytest.param("interpolated_adjoint", solver_tolerance(RTOL, ATOL), id="interpolated_adjoint"),
]


def _with_times(problem, times):
    return problems.Problem(problem.dynamics, problem.loss, problem.z0, problem.theta,
                            np.asarray(times, dtype=float))


def _several_observations():
    return _with_times(problems.seed_linear(), [0.0, 0.4, 0.9, 1.5])


@pytest.mark.parametrize(("method", "tol"), JUMP_CASES)
def test_several_observations_sum_single_observation_gradients(method, tol):
    """L = sum_i l(z(t_i)) is the sum of the single-observation losses on [t_0, t_i]; so is
    its gradient, which holds only if the adjoint jumps by grad l at every t_i."""
    problem = _several_observations()
    full = run(problem, method, **TIGHT)
    t = problem.times
    singles = [run(_with_times(problem, [t[0], t[i]]), method, **TIGHT) for i in range(1, len(t))]
    assert relative_error(full.z0, sum(s.z0 for s in singles)) <= tol
    assert relative_error(full.theta, sum(s.theta for s in singles)) <= tol
    assert relative_error(full.loss, sum(s.loss for s in singles)) <= tol
    times_expected = np.array([sum(s.times[0] for s in singles), *(s.times[1] for s in singles)])
    assert relative_error(full.times, times_expected) <= tol


@pytest.mark.parametrize(("method", "tol"), JUMP_CASES)
def test_missing_jump_would_be_detected(method, tol):
    """The gradient with every observation differs from the last-observation-only gradient
    (what an adjoint that forgets the jumps returns) by far more than the tolerance."""
    problem = _several_observations()
    full = run(problem, method, **TIGHT)
    last_only = run(_with_times(problem, problem.times[[0, -1]]), method, **TIGHT)
    assert relative_error(last_only.z0, full.z0) > 1e3 * tol
    assert relative_error(last_only.theta, full.theta) > 1e3 * tol


# -- time gradients -------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_time_gradient_of_constant_drift(method):
    """``x' = c0``, ``l = x``: dL/dt_i = c0 (i >= 1) and dL/dt_0 = -N c0 = -a(t_0)^T f."""
    problem = problems.constant_drift()
    expected = problems.constant_drift_gradient(problem)
    g = run(problem, method, **TIGHT)
    tol = FINITE_DIFFERENCE if method == "finite_difference" else ROUNDING
    c0, N = problem.theta[0], len(problem.times) - 1
    assert g.times[0] < 0 < g.times[1], "sign: dL/dt_0 = -a(t_0)^T f must be negative here"
    assert relative_error(g.times[1:], np.full(N, c0)) <= tol
    assert relative_error(g.times[0], -N * c0) <= tol
    assert relative_error(g.z0, expected["z0"]) <= tol
    assert relative_error(g.theta, expected["theta"]) <= tol
    assert relative_error(g.loss, expected["loss"]) <= tol


@pytest.mark.parametrize("method", NONLINEAR_METHODS)
def test_time_gradients_sum_to_zero_for_autonomous_dynamics(method):
    """Shifting every time by the same amount leaves L unchanged when f does not depend on
    t, so sum_i dL/dt_i = 0 (exactly for the discrete map, to O(rtol) for the rest)."""
    problem = problems.builtin_problem("lotka_volterra")
    g = run(problem, method, **TIGHT)
    scale = float(np.linalg.norm(g.times))
    assert scale > 1.0, "the test needs nonzero time gradients"
    assert abs(g.times.sum()) <= solver_tolerance(RTOL, ATOL) * scale


@pytest.fixture(scope="module")
def forced_oscillator_time_gradient():
    """dL/dtimes of the forced oscillator by a 4th-order central difference (h = 1e-3,
    truncation ~h^4) of L computed from RK4 solves with 200 steps per interval (a smooth
    function of the times, accurate to ~1e-10)."""
    problem = problems.builtin_problem("forced_oscillator")
    ell = sp.lambdify([problem.dynamics.state], problem.loss)

    def loss(times):
        zs = numeric.solve(problem.dynamics, problem.z0, problem.theta, times,
                           solver="rk4", steps=200)
        return sum(float(np.sum(ell(zs[i].T))) for i in range(1, len(times)))

    h = 1e-3
    grad = np.zeros(len(problem.times))
    for j in range(len(problem.times)):
        e = np.zeros(len(problem.times))
        e[j] = h
        t = problem.times
        grad[j] = (-loss(t + 2 * e) + 8 * loss(t + e) - 8 * loss(t - e) + loss(t - 2 * e)) / (
            12 * h
        )
    return grad


@pytest.mark.parametrize("method", NONLINEAR_METHODS)
def test_time_gradients_of_time_dependent_dynamics(method, forced_oscillator_time_gradient):
    problem = problems.builtin_problem("forced_oscillator")
    g = run(problem, method, **TIGHT)
    error = relative_error(g.times, forced_oscillator_time_gradient)
    assert error <= solver_tolerance(RTOL, ATOL), f"times block error {error:.2e}"


# -- exact zeros, unavailable methods, failed solves ----------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_unused_parameter_gets_exactly_zero(method):
    problem = problems.unused_parameter()
    g = run(problem, method, **TIGHT)
    assert g.theta[4] == 0.0
    assert np.all(g.theta[:4] != 0.0), "the used parameters should have nonzero gradients"


@pytest.mark.parametrize(
    ("make_problem", "method", "match"),
    [
        pytest.param(lambda: problems.builtin_problem("lotka_volterra"), "exact", "nonlinear",
                     id="exact-nonlinear"),
        pytest.param(lambda: problems.builtin_problem("forced_oscillator"), "exact",
                     "depend on time", id="exact-time_dependent"),
        pytest.param(problems.non_analytic, "complex_step", "Abs", id="complex_step-Abs"),
        # plain Symbols: SymPy's d|v|/dv then has re/im terms the compiler must handle
        pytest.param(lambda: problems.non_analytic(real=False), "complex_step", "Abs",
                     id="complex_step-Abs-plain_symbols"),
    ],
)
def test_method_unavailable_says_why(make_problem, method, match):
    problem = make_problem()
    with pytest.raises(MethodUnavailable, match=match) as excinfo:
        run(problem, method, **TIGHT)
    assert excinfo.value.method == method


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize(
    ("method", "options"),
    [
        *[
            pytest.param(m, options, id=f"{m}-{options['solver']}")
            for m in SOLVER_METHODS
            for options in (TIGHT, {"solver": "rk4"}, {"solver": "euler"})
        ],
        pytest.param("high_precision", {}, id="high_precision"),
    ],
)
def test_blow_up_raises_integration_error(method, options):
    """z' = z**2 from z0 = 1 blows up at t = 1 < 2: no method may return a number; the
    error names the time reached (API.md)."""
    problem = problems.blow_up()
    try:
        with pytest.raises(IntegrationError, match=r"\bt ?= ?[0-9]") as excinfo:
            run(problem, method, **options)
    except MethodUnavailable as exc:  # a reference may decline a problem it cannot serve
        if method != "high_precision":
            raise
        pytest.skip(f"high_precision declines the blow-up problem: {exc.reason}")
    assert 0.9 <= excinfo.value.t <= 2.0
    assert excinfo.value.cause


# -- bad inputs -----------------------------------------------------------------------------


def _call(problem, *args, **changes):
    """``numeric.gradient`` on the seed problem with some arguments changed (a function
    value is applied to the problem; ``_DROP`` removes the argument)."""
    kwargs = {
        "dynamics": problem.dynamics, "z0": problem.z0, "theta": problem.theta,
        "times": problem.times, "loss": problem.loss,
    }
    for name, value in changes.items():
        kwargs[name] = value(problem) if isinstance(value, FunctionType) else value
    for name in [k for k, v in kwargs.items() if v is _DROP]:
        del kwargs[name]
    return numeric.gradient(*args, **kwargs)


_DROP = object()
_FOREIGN = sp.Symbol("q")

BAD_INPUTS = [
    pytest.param({"method": "newton"}, InputError, r"`method` must be one of",
                 id="unknown-method"),
    pytest.param({"method": None}, InputError, r"`method` must be one of", id="method-None"),
    pytest.param({"loss": _DROP}, TypeError, r"loss", id="loss-missing"),
    pytest.param({"loss": None}, DynamicsError, r"`loss` is required", id="loss-None"),
    pytest.param({"loss": lambda problem: problem.loss + _FOREIGN}, DynamicsError,
                 r"q.*not state variables", id="loss-foreign-symbol"),
    pytest.param({"dynamics": "f = W z"}, DynamicsError, r"`dynamics` must be a symbolic",
                 id="dynamics-not-Dynamics"),
    pytest.param({"digits": 40}, InputError, r"`digits` applies to method='high_precision'",
                 id="digits-on-interpolated_adjoint"),
    pytest.param({"digits": 40, "method": "exact"}, InputError, r"`digits` applies",
                 id="digits-on-exact"),
    pytest.param({"digits": 10, "method": "high_precision"}, InputError,
                 r"`digits` must be an integer >= 16", id="digits-too-few"),
    pytest.param({"theta": np.zeros(3)}, InputError, r"`theta` must have shape \(p,\) = \(4,\)",
                 id="theta-wrong-length"),
    pytest.param({"theta": np.zeros((2, 2))}, InputError, r"`theta` must have shape",
                 id="theta-matrix"),
    pytest.param({"z0": np.zeros(3)}, InputError, r"`z0` must have shape", id="z0-wrong-n"),
    pytest.param({"z0": np.zeros((1, 2, 2))}, InputError, r"`z0` must have shape",
                 id="z0-3d"),
    pytest.param({"z0": np.array([1.0 + 1j, 0.0])}, InputError, r"`z0` must hold real",
                 id="z0-complex"),
    pytest.param({"z0": [np.nan, 0.0]}, InputError, r"`z0` contains inf or nan",
                 id="z0-nan"),
    pytest.param({"times": [0.0, 1.0, 1.0]}, InputError, r"strictly increasing",
                 id="times-repeated"),
    pytest.param({"times": [1.0, 0.0]}, InputError, r"strictly increasing",
                 id="times-decreasing"),
    pytest.param({"times": [0.0]}, InputError, r"at least two entries", id="times-one-entry"),
    pytest.param({"times": [0.0, np.inf]}, InputError, r"`times` contains inf or nan",
                 id="times-inf"),
    pytest.param({"solver": "rk45"}, InputError, r"`solver` must be one of",
                 id="unknown-solver"),
    pytest.param({"steps": 10}, InputError, r"`steps` applies to the fixed-step solvers",
                 id="steps-on-dopri5"),
    pytest.param({"solver": "rk4", "rtol": 1e-6}, InputError,
                 r"`rtol`/`atol` apply to the adaptive solver", id="rtol-on-rk4"),
    pytest.param({"solver": "rk4", "steps": 0}, InputError,
                 r"`steps` must be a positive integer", id="steps-zero"),
    pytest.param({"solver": "rk4", "steps": 2.5}, InputError,
                 r"`steps` must be a positive integer", id="steps-float"),
    pytest.param({"rtol": 1e-17}, InputError, r"below what float64 can deliver",
                 id="rtol-below-eps"),
    pytest.param({"rtol": 0.0}, InputError, r"`rtol` must be a finite number > 0",
                 id="rtol-zero"),
    pytest.param({"atol": -1.0}, InputError, r"`atol` must be a finite number > 0",
                 id="atol-negative"),
    pytest.param({"max_steps": 0}, InputError, r"`max_steps` must be a positive integer",
                 id="max_steps-zero"),
    pytest.param({"tol": 1e-6}, TypeError, r"unexpected keyword argument 'tol'",
                 id="unknown-keyword"),
]


@pytest.mark.parametrize(("changes", "error", "match"), BAD_INPUTS)
def test_bad_input_is_rejected(changes, error, match):
    problem = problems.seed_linear()
    with pytest.raises(error, match=match):
        _call(problem, **changes)


def test_loss_is_keyword_only():
    problem = problems.seed_linear()
    with pytest.raises(TypeError, match=r"positional argument"):
        numeric.gradient(problem.dynamics, problem.z0, problem.theta, problem.times,
                         problem.loss)


# -- the backsolve adjoint's known failure mode ---------------------------------------------


def test_backsolve_fails_on_contracting_dynamics_where_interpolated_passes():
    """Eigenvalues -1 and -40: the backward reconstruction of z expands by e^{39} per unit
    time, so backsolve's dL/dtheta is wrong (and says so in ``reconstruction_error``);
    the interpolated adjoint takes z from the forward solve and is fine (MATH.md)."""
    problem = problems.builtin_problem("contracting")
    ref = run(problem, "exact")
    tol = solver_tolerance(RTOL, ATOL)
    backsolve = run(problem, "backsolve_adjoint", **TIGHT)
    assert backsolve.info["reconstruction_error"] > 1e-3
    assert gradient_errors(backsolve, ref)["theta"] > tol
    interpolated = run(problem, "interpolated_adjoint", **TIGHT)
    assert_gradients_close(interpolated, ref, tol)
