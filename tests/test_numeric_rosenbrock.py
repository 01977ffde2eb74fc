"""Rodas4: its coefficients (order conditions of the method, the embedded method and the
continuous extension, stiff accuracy, L-stability, DAE conditions, agreement with
Hairer's rodas.f), the batched LU it solves with, and the integrator (order 4, dense
output, step control, failures, stiff problems in few steps)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import problems
import pytest
import sympy as sp
from helpers import ROUNDING, relative_error
from test_numeric_tableaus import _gamma, _trees

from numeric import InputError, IntegrationError, solve
from numeric._batched_lu import BatchedLU, SingularMatrix
from numeric._checks import check_solver_options
from numeric._rk import StepBudget
from numeric._rosenbrock import StateSystem, rosenbrock_step
from numeric._rosenbrock_tableau import RODAS4
from numeric._solve import integrate_intervals, solve_trajectory
from symbolic import Dynamics, compile_problem

#: The coefficients are stored to 40 significant digits, so every condition they solve
#: holds to about 1e-38 (a few entries of size 10 times 1e-40 rounding, summed).
DATA = Fraction(1, 10**35)
#: ``rodas.f`` prints its coefficients to 16 digits, computed in double precision from
#: conditions whose Jacobian has singular values down to 1e-4: its values carry errors of
#: eps / 1e-4 ~ 1e-12 relative to the exact solution of those conditions.
PUBLISHED = 1e-11

# -- exact data ------------------------------------------------------------------------------

ALPHA = RODAS4.exact["alpha"]
GAMMAS = RODAS4.exact["gammas"]
S = RODAS4.stages
BETA = [[ALPHA[i][j] + GAMMAS[i][j] for j in range(S)] for i in range(S)]


def _matvec(matrix, v):
    return [sum((matrix[i][j] * v[j] for j in range(S)), Fraction(0)) for i in range(S)]


def _dot(u, v):
    return sum((x * y for x, y in zip(u, v, strict=True)), Fraction(0))


def _phi(tree):
    r"""Elementary weights of a Rosenbrock method (Hairer & Wanner II, IV.7): a vertex with
    one son uses :math:`\beta_{ij} = \alpha_{ij} + \gamma_{ij}` (diagonal included), a
    vertex with several sons the product of :math:`\sum_k \alpha_{jk} \Phi_k`."""
    if len(tree) == 1:
        return _matvec(BETA, _phi(tree[0]))
    out = [Fraction(1)] * S
    for child in tree:
        inner = _matvec(ALPHA, _phi(child))
        out = [x * y for x, y in zip(out, inner, strict=True)]
    return out


def _residual(weights, tree):
    return _dot(weights, _phi(tree)) - Fraction(1, _gamma(tree))


@pytest.mark.parametrize("q", [1, 2, 3, 4])
def test_order_conditions_of_the_solution(q):
    bad = {repr(t): float(r) for t in _trees(q) if abs(r := _residual(RODAS4.exact["b"], t))
           > DATA}
    assert not bad, f"order-{q} conditions fail: {bad}"


@pytest.mark.parametrize("q", [1, 2, 3])
def test_order_conditions_of_the_embedded_solution(q):
    bad = {repr(t): float(r) for t in _trees(q)
           if abs(r := _residual(RODAS4.exact["b_hat"], t)) > DATA}
    assert not bad, f"embedded order-{q} conditions fail: {bad}"


def test_orders_are_not_understated():
    """An order-5 condition fails for the solution and an order-4 one for the embedded
    solution: otherwise the error estimate would vanish to leading order."""
    assert max(abs(_residual(RODAS4.exact["b"], t)) for t in _trees(5)) > 1e-4
    assert max(abs(_residual(RODAS4.exact["b_hat"], t)) for t in _trees(4)) > 1e-4
    assert (RODAS4.order, RODAS4.error_order) == (4, 3)


def test_stiffly_accurate_structure():
    r""":math:`b_j = \beta_{6j}`, :math:`\hat b_j = \beta_{5j} = \alpha_{6j}`,
    :math:`\alpha_5 = \alpha_6 = 1`, :math:`\gamma_5 = \gamma_6 = 0`: the solution and the
    embedded solution are stage values, so both are L-stable and exact for ``y' = 0`` with
    any algebraic constraint."""
    b, b_hat = RODAS4.exact["b"], RODAS4.exact["b_hat"]
    assert all(abs(b[j] - BETA[5][j]) <= DATA for j in range(S))
    assert all(abs(b_hat[j] - BETA[4][j]) <= DATA for j in range(S))
    assert all(ALPHA[5][j] == b_hat[j] for j in range(S)) and ALPHA[5][4] == Fraction(1, 4)
    assert abs(sum(ALPHA[4]) - 1) <= DATA and abs(sum(ALPHA[5]) - 1) <= DATA
    assert abs(sum(GAMMAS[4])) <= DATA and abs(sum(GAMMAS[5])) <= DATA
    assert list(RODAS4.m_err) == pytest.approx([0, 0, 0, 0, 0, 1], abs=1e-30)


def _stability(z: complex, weights) -> complex:
    """R(z) = 1 + z b^T (I - z beta)^{-1} 1 for y' = lambda y, z = h lambda."""
    beta = np.array(BETA, dtype=float)
    return 1 + z * np.asarray(weights, dtype=float) @ np.linalg.solve(
        np.eye(S) - z * beta, np.ones(S))


@pytest.mark.parametrize("which", ["b", "b_hat"])
def test_l_stability(which):
    """|R(iy)| <= 1 on the imaginary axis (R is analytic in the left half-plane: its only
    pole is 1/gamma = 4), and R(z) -> 0 as z -> -inf."""
    weights = RODAS4.exact[which]
    ys = np.concatenate([[0.0], np.logspace(-3, 6, 400)])
    assert max(abs(_stability(1j * y, weights)) for y in ys) <= 1 + ROUNDING
    assert abs(_stability(-1e12, weights)) <= 1e-10


def test_index_one_dae_conditions():
    r"""With :math:`\omega = \beta^{-1}`: :math:`\sum_i \alpha_{5i} (\omega \alpha^2)_i = 1`,
    :math:`\sum_i b_i \alpha_i (\alpha \omega \alpha^2)_i = 1/4` and
    :math:`\hat b^T \omega \alpha \omega 1 = 1`, the conditions that complete the
    definition of RODAS."""
    beta = sp.Matrix(BETA).applyfunc(sp.Rational)
    omega = beta.inv()
    alpha = sp.Matrix(ALPHA).applyfunc(sp.Rational)
    ones = sp.ones(S, 1)
    c = alpha * ones
    c2 = c.applyfunc(lambda x: x**2)
    b = sp.Matrix(RODAS4.exact["b"]).applyfunc(sp.Rational)
    b_hat = sp.Matrix(RODAS4.exact["b_hat"]).applyfunc(sp.Rational)
    inner = alpha * omega * c2
    residuals = [
        (alpha[4, :] * omega * c2)[0] - 1,
        sum(b[i] * c[i] * inner[i] for i in range(S)) - sp.Rational(1, 4),
        (b_hat.T * omega * alpha * omega * ones)[0] - 1,
    ]
    assert all(abs(r) <= sp.Rational(DATA.numerator, DATA.denominator) for r in residuals), [
        float(r) for r in residuals]


def _dense_weights_k():
    """The continuous extension's weights in the stages ``k``: rows e2, e3 of
    ``dense @ Gamma`` (``u = Gamma k``)."""
    dense = RODAS4.exact["dense"]
    return [[sum((row[i] * GAMMAS[i][j] for i in range(S)), Fraction(0)) for j in range(S)]
            for row in dense]


@pytest.mark.parametrize("q", [1, 2, 3])
def test_continuous_extension_has_order_3(q):
    r""":math:`z(\theta) - z_0 = \theta b^T k + \theta(1-\theta) e_2^T k +
    \theta^2 (1-\theta) e_3^T k` has order 3 for every :math:`\theta`: per tree,
    :math:`e_2^T\Phi = -(1 + [\rho \ge 2] + [\rho = 3]) / \gamma(t) + \ldots`, i.e.
    coefficient by coefficient in the powers of :math:`\theta`."""
    e2, e3 = _dense_weights_k()
    for tree in _trees(q):
        phi, g = _phi(tree), Fraction(1, _gamma(tree))
        # theta g + theta (1-theta) e2.phi + theta^2 (1-theta) e3.phi = theta^q g
        expected = {1: (0, 0), 2: (-g, 0), 3: (-g, -g)}[q]
        assert abs(_dot(e2, phi) - expected[0]) <= DATA, repr(tree)
        assert abs(_dot(e3, phi) - expected[1]) <= DATA, repr(tree)


def test_continuous_extension_dae_condition():
    r""":math:`e_2^T \omega \alpha^2 = -1`, :math:`e_3^T \omega \alpha^2 = 0`: the algebraic
    component is interpolated to second order."""
    e2, e3 = _dense_weights_k()
    beta = sp.Matrix(BETA)
    c = [sum(row) for row in ALPHA]
    w = beta.inv() * sp.Matrix([x**2 for x in c])
    assert abs(_dot(e2, list(w)) + 1) <= DATA
    assert abs(_dot(e3, list(w))) <= DATA


# Hairer's rodas.f (coefficient set 1), the transformed coefficients to 16 digits.
_RODAS_F = {
    "a": [[1.544], [0.9466785280815826, 0.2557011698983284],
          [3.314825187068521, 2.896124015972201, 0.9986419139977817],
          [1.221224509226641, 6.019134481288629, 12.53708332932087, -0.6878860361058950]],
    "c_matrix": [[-5.6688], [-2.430093356833875, -0.2063599157091915],
                 [-0.1073529058151375, -9.594562251023355, -20.47028614809616],
                 [7.496443313967647, -10.24680431464352, -33.99990352819905,
                  11.70890893206160],
                 [8.083246795921522, -7.981132988064893, -31.52159432874371,
                  16.31930543123136, -6.058818238834054]],
    "d": [0.25, -0.1043, 0.1035, -0.03620000000000023],
    "c": [0.386, 0.21, 0.63],
    "dense": [[10.12623508344586, -7.487995877610167, -34.80091861555747,
               -7.992771707568823, 1.025137723295662],
              [-0.6762803392801253, 6.087714651680015, 16.43084320892478,
               24.76722511418386, -6.594389125716872]],
}


def test_coefficients_agree_with_rodas_f():
    a = [RODAS4.a[i + 1, : i + 1] for i in range(4)]
    c_matrix = [RODAS4.c_matrix[i + 1, : i + 1] for i in range(5)]
    pairs = [
        *zip(a, _RODAS_F["a"], strict=True),
        *zip(c_matrix, _RODAS_F["c_matrix"], strict=True),
        (RODAS4.d[:4], _RODAS_F["d"]), (RODAS4.c[1:4], _RODAS_F["c"]),
        (RODAS4.dense[:, :5], _RODAS_F["dense"]),
    ]
    for ours, theirs in pairs:
        ours, theirs = np.asarray(ours), np.asarray(theirs)
        assert np.max(np.abs(ours - theirs) / np.maximum(1.0, np.abs(theirs))) <= PUBLISHED
    assert np.array_equal(RODAS4.a[5, :5], RODAS4.m[:5]) and RODAS4.m[5] == 1.0
    assert RODAS4.a[5, 4] == 1.0 and RODAS4.gamma == 0.25


def test_transformed_step_equals_the_defining_form():
    """One step on a nonlinear, time-dependent problem: the code's transformed form (no
    products with J) against the defining form (I - h gamma J) k_i = h f(...) + h J sum
    gamma_ij k_j + h^2 gamma_i f_t, z+ = z + sum b_i k_i."""
    problem = problems.time_dependent_nonlinear()
    compiled = compile_problem(problem.dynamics, problem.loss)
    system = StateSystem(compiled, problem.theta)
    z, t, h = problem.z0, 0.3, 0.15
    jac, f_t = compiled.jac_state(z, problem.theta, t), compiled.time_partial(z, problem.theta, t)
    ours, _ = rosenbrock_step(system, system.linearize(t, z).factor(h * RODAS4.gamma), t, z, h,
                              RODAS4, system(t, z), f_t)
    k = np.zeros((S, *z.shape))
    matrix = np.eye(2) - h * RODAS4.gamma * jac
    for i in range(S):
        stage = z + np.tensordot(RODAS4.alpha[i, :i], k[:i], axes=1)
        coupled = np.einsum("bij,bj->bi", jac, np.tensordot(RODAS4.gammas[i, :i], k[:i], axes=1))
        rhs = (h * system(t + RODAS4.c[i] * h, stage) + h * coupled
               + h * h * RODAS4.d[i] * f_t)
        k[i] = np.linalg.solve(matrix, rhs[..., None])[..., 0]
    defining = z + np.tensordot(RODAS4.b, k, axes=1)
    assert relative_error(ours, defining) <= ROUNDING


# -- batched LU ------------------------------------------------------------------------------


@pytest.mark.parametrize("m", [1, 2, 5])
@pytest.mark.parametrize("dtype", [float, complex])
def test_batched_lu_solves_and_transposed_solves(m, dtype):
    rng = np.random.default_rng(m)
    matrices = (rng.standard_normal((3, m, m)) + 3 * np.eye(m)).astype(dtype)
    if dtype is complex:
        matrices = matrices + 1j * rng.standard_normal((3, m, m))
    r = rng.standard_normal((3, m)).astype(dtype)
    many = rng.standard_normal((3, m, 4)).astype(dtype)
    lu = BatchedLU(matrices)

    def residual(value, expected):  # complex-safe relative 2-norm
        return np.linalg.norm(value - expected) / np.linalg.norm(expected)

    assert residual(np.einsum("bij,bj->bi", matrices, lu.solve(r)), r) <= ROUNDING
    assert residual(matrices @ lu.solve(many), many) <= ROUNDING
    transposed = np.einsum("bji,bj->bi", matrices, lu.solve_transposed(r))
    assert residual(transposed, r) <= ROUNDING
    assert lu.solve(r).dtype == np.result_type(dtype)


def test_batched_lu_pivots_and_refuses_singular_matrices():
    permuted = np.array([[[0.0, 1.0], [1.0, 0.0]]])  # needs a row exchange
    assert np.array_equal(BatchedLU(permuted).solve(np.array([[2.0, 3.0]])), [[3.0, 2.0]])
    with pytest.raises(SingularMatrix, match="pivot"):
        BatchedLU(np.array([[[1.0, 2.0], [2.0, 4.0]]]))
    with pytest.raises(SingularMatrix, match="non-finite"):
        BatchedLU(np.array([[[np.nan, 0.0], [0.0, 1.0]]]))


# -- the integrator ----------------------------------------------------------------------------


def _reference(problem, times=None):
    times = problem.times if times is None else times
    return solve(problem.dynamics, problem.z0, problem.theta, times, rtol=1e-13, atol=1e-15)


def test_fixed_step_mode_converges_at_order_4():
    """Slope of log(error) against log(h) over 4, 8, 16, 32 equal steps per interval, on
    nonlinear time-dependent dynamics (the time-derivative terms at work)."""
    problem = problems.time_dependent_nonlinear()
    exact = _reference(problem)
    steps = np.array([4, 8, 16, 32])
    errors = [relative_error(solve(problem.dynamics, problem.z0, problem.theta, problem.times,
                                   solver="rodas4", steps=int(n)), exact) for n in steps]
    observed = np.polyfit(np.log(1.0 / steps), np.log(errors), 1)[0]
    assert abs(observed - 4) <= 0.3, f"errors {errors}, observed order {observed:.2f}"


def test_adaptive_error_is_proportional_to_rtol():
    problem = problems.time_dependent_nonlinear()
    exact = _reference(problem)
    errors = [relative_error(solve(problem.dynamics, problem.z0, problem.theta, problem.times,
                                   solver="rodas4", rtol=rtol, atol=rtol / 100), exact)
              for rtol in (1e-5, 1e-7, 1e-9)]
    assert all(e <= 1e3 * rtol for e, rtol in zip(errors, (1e-5, 1e-7, 1e-9), strict=True))
    assert errors[0] > errors[1] > errors[2]


@pytest.mark.parametrize("n", [4, 8, 16])
def test_dense_output_has_local_order_4(n):
    """Halving h cuts the interpolation error inside the first step by about 2^4; the end
    points reproduce the steps exactly."""
    problem = problems.time_dependent_nonlinear()
    compiled = compile_problem(problem.dynamics, problem.loss)

    def error(steps):
        options = check_solver_options("rodas4", steps=steps, rtol=None, atol=None,
                                       max_steps=1000)
        traj = solve_trajectory(compiled, problem.z0, problem.theta, problem.times, options)
        segment = traj.segments[0]
        assert np.array_equal(segment.evaluate(segment.ts[0]), segment.ys[0])
        assert relative_error(segment.evaluate(segment.ts[1]), segment.ys[1]) <= ROUNDING
        t = segment.ts[0] + 0.37 * (segment.ts[1] - segment.ts[0])
        return relative_error(segment.evaluate(t), _reference(problem, problem.times[0] + np.array(
            [0.0, t - problem.times[0]]))[1])

    assert 2**3 <= error(n) / error(2 * n) <= 2**5


def test_batch_equals_a_loop_over_samples_in_fixed_step_mode():
    problem = problems.time_dependent_nonlinear()
    batch = solve(problem.dynamics, problem.z0, problem.theta, problem.times, solver="rodas4",
                  steps=5)
    for b in range(problem.z0.shape[0]):
        single = solve(problem.dynamics, problem.z0[b], problem.theta, problem.times,
                       solver="rodas4", steps=5)
        assert relative_error(batch[:, b], single) <= ROUNDING


def test_backward_integration():
    """Integrating from t_N back to t_0 (through every observation time) returns the
    forward solution's start."""
    problem = problems.time_dependent_nonlinear()
    forward = _reference(problem)
    compiled = compile_problem(problem.dynamics, problem.loss)
    options = check_solver_options("rodas4", steps=None, rtol=1e-10, atol=1e-12,
                                   max_steps=10_000)
    segments = integrate_intervals(StateSystem(compiled, problem.theta), forward[-1],
                                   problem.times[::-1], options, StepBudget(10_000))
    assert [s.ts[0] for s in segments] == list(problem.times[::-1][:-1])
    assert relative_error(segments[-1].ys[-1], forward[0]) <= 1e3 * 1e-10


# -- stiff problems ------------------------------------------------------------------------------

_y = sp.symbols("y1:4")
_k = sp.symbols("k1:4")
ROBERTSON = Dynamics(
    rhs=[-_k[0] * _y[0] + _k[2] * _y[1] * _y[2],
         _k[0] * _y[0] - _k[2] * _y[1] * _y[2] - _k[1] * _y[1] ** 2,
         _k[1] * _y[1] ** 2],
    state=_y, params=_k)
ROBERTSON_THETA = np.array([0.04, 3e7, 1e4])
ROBERTSON_TIMES = np.concatenate([[0.0], 10.0 ** np.arange(-5, 6)])


def test_robertson_to_1e5_in_few_steps():
    """Twelve decades of time in a few hundred steps, the linear invariant y1 + y2 + y3 = 1
    kept to rounding (Rosenbrock methods preserve linear invariants), and the state at
    t = 1e5 within the tolerance of a tight solve."""
    compiled = compile_problem(ROBERTSON, 0)
    options = check_solver_options("rodas4", steps=None, rtol=1e-6, atol=1e-12,
                                   max_steps=10_000)
    traj = solve_trajectory(compiled, np.array([[1.0, 0.0, 0.0]]), ROBERTSON_THETA,
                            ROBERTSON_TIMES, options)
    assert traj.budget.used < 400
    assert np.max(np.abs(traj.zs.sum(axis=2) - 1.0)) <= 1e-13
    tight = solve(ROBERTSON, [1.0, 0.0, 0.0], ROBERTSON_THETA, ROBERTSON_TIMES,
                  solver="rodas4", rtol=1e-9, atol=1e-14, max_steps=100_000)
    assert relative_error(traj.zs[-1, 0], tight[-1]) <= 1e3 * 1e-6


# -- failures and input checks ------------------------------------------------------------------

_x = sp.Symbol("x")
_t = sp.Symbol("t")


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_blow_up_raises_integration_error_naming_the_time():
    with pytest.raises(IntegrationError, match=r"integration stopped at t=(1|0\.99)") as info:
        solve(Dynamics(rhs=[_x**2], state=[_x]), [1.0], [], [0.0, 2.0], solver="rodas4")
    assert 0.99 <= info.value.t < 1.5 and info.value.cause


def test_max_steps_raises_integration_error():
    with pytest.raises(IntegrationError, match=r"max_steps=3 reached"):
        solve(ROBERTSON, [1.0, 0.0, 0.0], ROBERTSON_THETA, ROBERTSON_TIMES, solver="rodas4",
              max_steps=3)


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")
def test_infinite_time_derivative_is_reported():
    """sqrt(t) at t_0 = 0: df/dt is infinite there, and a Rosenbrock step uses it."""
    dynamics = Dynamics(rhs=[sp.sqrt(_t) * _x], state=[_x], time=_t)
    with pytest.raises(IntegrationError, match=r"time derivative .* not finite"):
        solve(dynamics, [1.0], [], [0.0, 1.0], solver="rodas4")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"steps": 4, "rtol": 1e-6}, "exclude each other", id="steps-and-rtol"),
        pytest.param({"rtol": 0.0}, r"`rtol` must be a finite number > 0", id="rtol-zero"),
        pytest.param({"steps": 0}, r"`steps` must be a positive integer", id="steps-zero"),
    ],
)
def test_bad_options(kwargs, message):
    with pytest.raises(InputError, match=message):
        solve(ROBERTSON, [1.0, 0.0, 0.0], ROBERTSON_THETA, [0.0, 1.0], solver="rodas4", **kwargs)
