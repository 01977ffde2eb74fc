"""`numeric.solve`: convergence order, tolerance proportionality, batching, the time
interval it evaluates f on, failures raised as IntegrationError, and input checking."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import sympy as sp
from helpers import ROUNDING, relative_error, solver_tolerance

from numeric import FIXED_STEP_SOLVERS, InputError, IntegrationError, solve
from symbolic import Dynamics, DynamicsError

t = sp.Symbol("t")
z = sp.symbols("z0:2")
w = sp.symbols("w0:4")
x = sp.Symbol("x")

#: The seed's f = W z: a damped rotation, z(t) = expm(W (t - t0)) z0.
SEED = Dynamics(rhs=sp.Matrix(2, 2, w) * sp.Matrix(z), state=z, params=w, time=t)
THETA = np.array([-0.5, 1.0, -1.0, -0.2])
Z0 = np.array([[1.0, 0.5], [0.2, -0.3], [-0.7, 0.9]])
TIMES = np.array([0.0, 0.5, 1.0, 2.0])

#: Nonlinear and time-dependent, for the batching checks.
NONLINEAR = Dynamics(
    rhs=[sp.tanh(w[0] * z[0] + w[1] * z[1]) + sp.sin(t), w[2] * z[0] * z[1] - z[1] ** 3],
    state=z,
    params=w[:3],
    time=t,
)


def _exact_seed(z0: np.ndarray, times: np.ndarray) -> np.ndarray:
    """(N+1, B, n): z(t_i) = expm(W (t_i - t_0)) z0 for every sample."""
    W = THETA.reshape(2, 2)
    return np.stack([z0 @ scipy.linalg.expm(W * (ti - times[0])).T for ti in times])


# -- accuracy ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("solver", "order"),
    [pytest.param("euler", 1, id="euler"), pytest.param("midpoint", 2, id="midpoint"),
     pytest.param("rk4", 4, id="rk4"), pytest.param("rk4_38", 4, id="rk4_38"),
     pytest.param("heun", 2, id="heun"), pytest.param("heun3", 3, id="heun3"),
     pytest.param("ralston", 2, id="ralston"),
     pytest.param("bosh3", 3, id="bosh3"), pytest.param("tsit5", 5, id="tsit5")],
)
def test_observed_convergence_order(solver, order):
    """Least-squares slope of log(error) against log(h) over steps = 8, 16, 32, 64."""
    exact = _exact_seed(Z0, TIMES)
    steps = np.array([8, 16, 32, 64])
    errors = [
        relative_error(solve(SEED, Z0, THETA, TIMES, solver=solver, steps=int(s)), exact)
        for s in steps
    ]
    observed = np.polyfit(np.log(1.0 / steps), np.log(errors), 1)[0]
    assert abs(observed - order) <= 0.3, f"errors {errors}, observed order {observed:.2f}"


def test_dopri5_error_is_proportional_to_rtol():
    exact = _exact_seed(Z0, TIMES)
    rtols = np.array([1e-4, 1e-6, 1e-8, 1e-10])
    errors = np.array([
        relative_error(solve(SEED, Z0, THETA, TIMES, solver="dopri5", rtol=r, atol=r * 1e-2),
                       exact)
        for r in rtols
    ])
    assert np.all(np.diff(errors) < 0), f"errors {errors} do not decrease with rtol"
    assert np.all(errors <= [solver_tolerance(r) for r in rtols]), f"errors {errors}"
    slope = np.polyfit(np.log(rtols), np.log(errors), 1)[0]
    assert 0.7 <= slope <= 1.3, f"error ~ rtol^{slope:.2f}, errors {errors}"


def test_dopri5_at_tight_tolerance_meets_the_solver_tier():
    zs = solve(SEED, Z0, THETA, TIMES, solver="dopri5", rtol=1e-10, atol=1e-12)
    assert relative_error(zs, _exact_seed(Z0, TIMES)) <= solver_tolerance(1e-10)


# -- shapes and batching -------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["euler", "midpoint", "rk4", "dopri5"])
def test_shapes_and_initial_value(solver):
    batched = solve(SEED, Z0, THETA, TIMES, solver=solver)
    single = solve(SEED, Z0[0], THETA, TIMES, solver=solver)
    assert batched.shape == (len(TIMES), *Z0.shape)
    assert single.shape == (len(TIMES), 2)
    assert np.array_equal(batched[0], Z0)
    assert np.array_equal(single[0], Z0[0])


@pytest.mark.parametrize("solver", list(FIXED_STEP_SOLVERS))
def test_fixed_step_batch_equals_a_loop_over_samples(solver):
    theta = np.array([0.8, -0.4, 0.6])
    batched = solve(NONLINEAR, Z0, theta, TIMES, solver=solver, steps=20)
    for b in range(len(Z0)):
        single = solve(NONLINEAR, Z0[b], theta, TIMES, solver=solver, steps=20)
        assert relative_error(batched[:, b], single) <= ROUNDING, f"sample {b}"


def test_dopri5_batch_equals_a_loop_over_samples_to_tolerance():
    """The step controller measures the error over the whole batch, so the steps differ
    from a single sample's: the results agree to the solver's tolerance, not to rounding."""
    theta = np.array([0.8, -0.4, 0.6])
    rtol = 1e-9
    batched = solve(NONLINEAR, Z0, theta, TIMES, solver="dopri5", rtol=rtol, atol=1e-11)
    for b in range(len(Z0)):
        single = solve(NONLINEAR, Z0[b], theta, TIMES, solver="dopri5", rtol=rtol, atol=1e-11)
        assert relative_error(batched[:, b], single) <= solver_tolerance(rtol), f"sample {b}"


@pytest.mark.parametrize("theta", [pytest.param([], id="empty list"),
                                   pytest.param(None, id="None")])
def test_no_parameters(theta):
    rtol = 1e-10
    zs = solve(Dynamics(rhs=[z[1], -z[0]], state=z), [1.0, 0.0], theta, [0.0, 1.0, 2.0],
               solver="dopri5", rtol=rtol, atol=1e-12)
    exact = [[1.0, 0.0], [np.cos(1.0), -np.sin(1.0)], [np.cos(2.0), -np.sin(2.0)]]
    assert relative_error(zs, exact) <= solver_tolerance(rtol)


# -- f is evaluated only inside [t_0, t_N] -------------------------------------------------

SOLVERS = ["euler", "midpoint", "rk4", "dopri5"]


def _edge_cases():
    from_zero = Dynamics(rhs=[sp.sqrt(t) * z[1], -z[0]], state=z, time=t)
    to_one = Dynamics(rhs=[sp.sqrt(1 - t) * z[1], -z[0]], state=z, time=t)
    # 0.3 + (0.9 - 0.3) > 0.9 in floating point: the classic endpoint overshoot.
    to_point_nine = Dynamics(rhs=[1e-3 * sp.sqrt(sp.Float(0.9) - t)], state=[x], time=t)
    for solver in SOLVERS:
        yield pytest.param(from_zero, [1.0, 0.5], [0.0, 0.3, 1.0], solver, {},
                           id=f"sqrt(t) from t0=0-{solver}")
        yield pytest.param(to_one, [1.0, 0.5], [0.0, 0.7, 1.0], solver, {},
                           id=f"sqrt(1-t) to tN=1-{solver}")
        kwargs = {} if solver == "dopri5" else {"steps": 1}
        yield pytest.param(to_point_nine, [1.0], [0.3, 0.9], solver, kwargs,
                           id=f"sqrt(0.9-t) on [0.3, 0.9]-{solver}")


@pytest.mark.filterwarnings("error::RuntimeWarning")  # sqrt of a negative number
@pytest.mark.parametrize(("dyn", "z0", "times", "solver", "kwargs"), list(_edge_cases()))
def test_f_is_never_evaluated_outside_the_time_span(dyn, z0, times, solver, kwargs):
    with np.errstate(invalid="raise"):
        zs = solve(dyn, z0, [], times, solver=solver, **kwargs)
    assert zs.shape == (len(times), len(z0))
    assert np.all(np.isfinite(zs))


# -- failures ------------------------------------------------------------------------------

BLOW_UP = Dynamics(rhs=[x**2], state=[x])  # z(t) = 1 / (1 - t) from z0 = 1


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("solver", ["rk4", "dopri5"])
def test_blow_up_raises_integration_error_naming_the_time(solver):
    with pytest.raises(IntegrationError, match=r"integration stopped at t=1\b") as info:
        solve(BLOW_UP, [1.0], [], [0.0, 2.0], solver=solver)
    # the solution exists on [0, 1) only: the solver stops at, or just past, the blow-up
    assert 0.99 <= info.value.t < 1.5
    assert isinstance(info.value.cause, str)
    assert info.value.cause


@pytest.mark.parametrize("solver", ["rk4", "dopri5"])
def test_max_steps_raises_integration_error(solver):
    with pytest.raises(IntegrationError, match=r"max_steps=5 reached") as info:
        solve(SEED, Z0, THETA, TIMES, solver=solver, max_steps=5)
    assert "max_steps" in info.value.cause
    assert TIMES[0] <= info.value.t <= TIMES[-1]


# -- bad input -----------------------------------------------------------------------------

GOOD = {"dynamics": SEED, "z0": Z0, "theta": THETA, "times": TIMES}

BAD_INPUTS = [
    pytest.param({"z0": np.ones(3)}, InputError, r"`z0` must have shape \(n,\) = \(2,\)",
                 id="z0 wrong length"),
    pytest.param({"z0": np.ones((2, 3))}, InputError, r"`z0` must have shape .* got shape \(2, 3\)",
                 id="z0 wrong width"),
    pytest.param({"z0": np.ones((2, 2, 2))}, InputError, r"`z0` must have shape",
                 id="z0 3-D"),
    pytest.param({"z0": np.ones((0, 2))}, InputError, r"`z0` must have shape",
                 id="z0 empty batch"),
    pytest.param({"z0": [1.0, np.nan]}, InputError, r"`z0` contains inf or nan",
                 id="nan in z0"),
    pytest.param({"z0": [1.0 + 1j, 0.0]}, InputError, r"`z0` must hold real numbers",
                 id="complex z0"),
    pytest.param({"theta": np.ones(3)}, InputError,
                 r"`theta` must have shape \(p,\) = \(4,\).* got shape \(3,\)",
                 id="theta wrong length"),
    pytest.param({"theta": np.ones((2, 2))}, InputError, r"`theta` must have shape \(p,\)",
                 id="theta a matrix"),
    pytest.param({"theta": [1.0, np.inf, 0.0, 0.0]}, InputError, r"`theta` contains inf",
                 id="inf in theta"),
    pytest.param({"times": [0.0, 1.0, 0.5]}, InputError, r"`times` must be strictly increasing",
                 id="times decreasing"),
    pytest.param({"times": [0.0, 1.0, 1.0]}, InputError, r"`times` must be strictly increasing",
                 id="times repeated"),
    pytest.param({"times": 1.0}, InputError, r"`times` must be a 1-D array",
                 id="times 0-D"),
    pytest.param({"times": [0.0]}, InputError, r"`times` must be a 1-D array .* two entries",
                 id="times one entry"),
    pytest.param({"times": [[0.0, 1.0]]}, InputError, r"`times` must be a 1-D array",
                 id="times 2-D"),
    pytest.param({"solver": "rk45"}, InputError, r"`solver` must be one of .* got 'rk45'",
                 id="unknown solver"),
    pytest.param({"solver": "dopri5", "steps": 10}, InputError,
                 r"`steps` applies to the fixed-step solvers", id="steps with dopri5"),
    pytest.param({"solver": "rk4", "rtol": 1e-6}, InputError,
                 r"`rtol`/`atol` apply to the adaptive solver", id="rtol with rk4"),
    pytest.param({"solver": "euler", "atol": 1e-6}, InputError,
                 r"`rtol`/`atol` apply to the adaptive solver", id="atol with euler"),
    pytest.param({"rtol": -1e-6}, InputError, r"`rtol` must be a finite number > 0",
                 id="negative rtol"),
    pytest.param({"rtol": 0.0}, InputError, r"`rtol` must be a finite number > 0",
                 id="zero rtol"),
    pytest.param({"rtol": 1e-16}, InputError, r"`rtol` = 1e-16 is below what float64",
                 id="rtol below rounding"),
    pytest.param({"atol": -1.0}, InputError, r"`atol` must be a finite number > 0",
                 id="negative atol"),
    pytest.param({"atol": 0.0}, InputError, r"`atol` must be > 0: the adjoint's parameter part",
                 id="zero atol"),
    pytest.param({"solver": "rk4", "steps": 0}, InputError,
                 r"`steps` must be a positive integer, got 0", id="steps=0"),
    pytest.param({"solver": "rk4", "steps": 2.5}, InputError,
                 r"`steps` must be a positive integer, got 2.5", id="steps not an integer"),
    pytest.param({"max_steps": 0}, InputError, r"`max_steps` must be a positive integer",
                 id="max_steps=0"),
    pytest.param({"dynamics": "f = W z"}, DynamicsError,
                 r"`dynamics` must be a symbolic.Dynamics, got str", id="dynamics a string"),
    pytest.param({"dynamics": lambda t, z: -z}, DynamicsError,
                 r"`dynamics` must be a symbolic.Dynamics, got function",
                 id="dynamics a function"),
]


@pytest.mark.parametrize(("changes", "error", "message"), BAD_INPUTS)
def test_bad_input(changes, error, message):
    kwargs = {**GOOD, **changes}
    with pytest.raises(error, match=message):
        solve(**kwargs)


def test_input_error_is_a_value_error():
    assert issubclass(InputError, ValueError)


def test_unknown_keyword_is_a_type_error():
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'tol'"):
        solve(SEED, Z0, THETA, TIMES, tol=1e-6)
