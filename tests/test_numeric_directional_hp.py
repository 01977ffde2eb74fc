"""The double-double directional reference: its tangent equals SymPy's Jacobians, its value
equals the mpmath reference gradient dotted with the direction, and it refuses what it
cannot certify."""

import mpmath
import numpy as np
import problems
import pytest
import sympy as sp
from test_symbolic_matrix import CASES, mlp

from numeric import InputError, IntegrationError, MethodUnavailable, gradient
from numeric._dd_dynamics import dynamics_evaluator
from numeric._dd_program import ExpressionProgram
from numeric._directional_hp import MAX_DIGITS, high_precision_directional
from numeric._double_double import DD
from symbolic import Dynamics, derive_adjoint
from verification import builtin_problem

#: Double-double evaluations of one quantity by two routes (dual numbers against SymPy's
#: Jacobian expressions, matrix graph against elementwise expressions): each is within a
#: few units of 2**-106 of the exact value, relative to the scale of its terms; 2**-96
#: leaves room for the sums of tens of terms.
DD_EVALUATION = 2.0**-96
#: Significant digits the solves in this file ask for (fewer than the default 30, for
#: time: every digit costs steps).
DIGITS = 27
#: Both references certify their values to 10**-(digits - 2) relative to the scale of
#: their terms (DIGITS_MARGIN of both); two of them then agree to twice that.
AGREEMENT = 2 * 10.0 ** -(DIGITS - 2)
#: Digits of the batch-against-samples comparison (four solves).
BATCH_DIGITS = 20

mpmath.mp.prec = 200


def _direction(seed, z0, p, n_times):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(np.shape(z0)), rng.standard_normal(p), rng.standard_normal(
        n_times)


def _dot(reference, v_z0, v_theta, v_times) -> mpmath.mpf:
    """``v^T g`` from the decimal digits of an mpmath reference gradient."""
    blocks = reference.info["decimal"]
    total = mpmath.mpf(0)
    for name, v in (("z0", v_z0), ("theta", v_theta), ("times", v_times)):
        entries = np.array(blocks[name], dtype=object).reshape(-1)
        for entry, weight in zip(entries, np.reshape(v, -1), strict=True):
            total += mpmath.mpf(entry) * mpmath.mpf(float(weight))
    return total


# -- the tangent of f ----------------------------------------------------------------------


def _elementwise_zoo():
    """Every function the evaluator knows, with parameters inside and outside them."""
    x, y, t = sp.symbols("x y t")
    a, b, c = sp.symbols("a b c")
    rhs = [
        a * sp.tanh(b * x + y) + sp.exp(-x**2) * sp.sin(c * t) + sp.log(1 + sp.exp(y)),
        sp.sqrt(1 + x**2) / (2 + sp.cos(y)) - b * sp.sinh(x / 3) + sp.cosh(y / 4) * a**3
        + 1 / (1 + sp.exp(-a * x)) + sp.tan(y / 5) + (1 + y**2) ** sp.Rational(3, 2)
        + sp.log(2 + x**2) * c + (1 + x**2) ** (a / 7) + sp.pi * x / 10,
    ]
    return Dynamics(rhs=rhs, state=[x, y], params=[a, b, c], time=t)


def _jacobian_tangent(dynamics, z, dz, theta, v_theta, t):
    """``J dz + (df/dtheta) v_theta`` from SymPy's Jacobian expressions, in double-double."""
    adjoint = derive_adjoint(dynamics, sum(dynamics.state))
    leaves = [*dynamics.state, *dynamics.params] + ([dynamics.time] if dynamics.time else [])
    values = [z[:, i] for i in range(dynamics.n)] + [DD(np.float64(v)) for v in theta]
    values += [t] if dynamics.time else []
    n, p = dynamics.n, dynamics.p
    jac_z = ExpressionProgram(list(adjoint.jacobian_state), leaves, "J")(values)
    jac_p = ExpressionProgram(list(adjoint.jacobian_params), leaves, "J_theta")(values)
    rows = []
    for i in range(n):
        total = DD(np.zeros(z.shape[0]))
        for j in range(n):
            total = total + jac_z[i * n + j][0] * dz[:, j]
        for j in range(p):
            total = total + jac_p[i * p + j][0] * float(v_theta[j])
        rows.append(total)
    return rows


def _relative(a: DD, b: DD) -> float:
    return float(np.max(np.abs((a - b).hi)) / np.max(np.abs(b.hi)))


@pytest.mark.parametrize("case", ["zoo", *CASES])
def test_tangent_equals_sympy_jacobians(case):
    dynamics = _elementwise_zoo() if case == "zoo" else CASES[case]()[0].as_elementwise()
    rng = np.random.default_rng(5)
    z = DD(rng.uniform(-1, 1, (4, dynamics.n)))
    dz = DD(rng.standard_normal((4, dynamics.n)))
    theta = rng.uniform(0.2, 1, dynamics.p)
    v_theta = rng.standard_normal(dynamics.p)
    t = DD(np.float64(0.7))
    _, tangent = dynamics_evaluator(dynamics).bind(theta, v_theta)(t, z, dz)
    expected = _jacobian_tangent(dynamics, z, dz, theta, v_theta, t)
    for i, row in enumerate(expected):
        assert _relative(tangent[:, i], row) <= DD_EVALUATION, f"component {i}"


def _fixed_factor_with_time():
    """A factor of the parameters alone (``exp(c)``) next to the time."""
    t, c = sp.Symbol("t"), sp.Symbol("c")
    z, W, b = sp.MatrixSymbol("z", 2, 1), sp.MatrixSymbol("W", 2, 2), sp.MatrixSymbol("b", 2, 1)
    return Dynamics(rhs=sp.exp(c) * (W * z) + t * b, state=z, params=[W, b, c], time=t), z


def _constant():
    """No state in ``f`` at all: the output is a parameter node."""
    z, b = sp.MatrixSymbol("z", 2, 1), sp.MatrixSymbol("b", 2, 1)
    return Dynamics(rhs=2 * b, state=z, params=[b]), z


GRAPHS = {**CASES, "fixed-factor-with-time": _fixed_factor_with_time, "constant": _constant}


@pytest.mark.parametrize("case", list(GRAPHS))
def test_matrix_graph_equals_elementwise_expressions(case):
    dynamics = GRAPHS[case]()[0]
    rng = np.random.default_rng(6)
    z, dz = DD(rng.uniform(-1, 1, (5, dynamics.n))), DD(rng.standard_normal((5, dynamics.n)))
    theta, v_theta = rng.uniform(0.2, 1, dynamics.p), rng.standard_normal(dynamics.p)
    t = DD(np.float64(0.3))
    got = dynamics_evaluator(dynamics).bind(theta, v_theta)(t, z, dz)
    expected = dynamics_evaluator(dynamics.as_elementwise()).bind(theta, v_theta)(t, z, dz)
    for a, b in zip(got, expected, strict=True):
        assert float(np.max(np.abs((a - b).hi))) <= DD_EVALUATION * max(
            1.0, float(np.max(np.abs(b.hi))))


# -- the directional derivative ---------------------------------------------------------------


def _targets_problem():
    z, y = sp.symbols("z0:2"), sp.symbols("y0:2")
    W = sp.Matrix(2, 2, sp.symbols("w0:4"))
    loss = sp.Rational(1, 2) * sum((zi - yi) ** 2 for zi, yi in zip(z, y, strict=True))
    data = np.random.default_rng(3).normal(size=(3, 3, 2))
    return (Dynamics(rhs=W * sp.Matrix(z), state=z, params=W), loss,
            np.array([[1.0, 0.5], [0.2, -0.3], [-0.4, 0.8]]), np.array([-0.5, 1.0, -1.0, -0.2]),
            np.array([0.0, 0.4, 0.9, 1.5]), {"targets": y, "data": data})


def _forced_oscillator():
    p = builtin_problem("forced_oscillator")
    return p.dynamics, p.loss, p.z0, p.theta, p.times, {}


def _matrix_mlp_with_targets(matrix_targets: bool = False):
    dynamics, z = mlp(2, 3, time=True)
    if matrix_targets:
        d = sp.MatrixSymbol("d", 2, 1)
        loss, targets = ((z - d).T * (z - d))[0, 0] / 2, d
    else:
        targets = sp.symbols("d0:2")
        loss = sum((z[i, 0] - targets[i]) ** 2 for i in range(2)) / 2
    rng = np.random.default_rng(4)
    return (dynamics, loss, rng.uniform(-1, 1, (1, 2)), 0.6 * rng.standard_normal(dynamics.p),
            np.array([0.1, 0.4, 0.9]), {"targets": targets, "data": rng.normal(size=(2, 1, 2))})


@pytest.mark.parametrize("make", [_targets_problem, _forced_oscillator,
                                  _matrix_mlp_with_targets],
                         ids=["elementwise-data", "time-dependent", "matrix-time-data"])
def test_directional_value_equals_high_precision_gradient(make):
    dynamics, loss, z0, theta, times, extra = make()
    v = _direction(9, z0, len(theta), len(times))
    reference = gradient(dynamics, z0, theta, times, loss=loss, method="high_precision",
                         digits=DIGITS + 3, **extra)
    (hi, lo), estimate, info = high_precision_directional(
        dynamics, loss, z0, theta, times, *v, digits=DIGITS, **extra)
    exact = _dot(reference, *v)
    value = mpmath.fadd(hi, lo, exact=True)
    scale = max(abs(exact), info["term_scale"])
    assert estimate <= 10.0 ** -(DIGITS - 2)
    assert info["error_estimate"] == estimate and len(info["decimal"].split("e")[0]) >= DIGITS
    assert float(abs(value - exact) / scale) <= AGREEMENT


def test_batch_equals_the_sum_over_single_samples():
    """The loss is summed over the batch, so its directional derivative is the sum of the
    samples' (with the same parameter and time directions): common macro steps for the
    batch give the same digits as one sample at a time (each passed as ``(n,)``)."""
    dynamics, loss, z0, theta, times, extra = _targets_problem()
    v_z0, v_theta, v_times = _direction(2, z0, len(theta), len(times))
    batch, _, info = high_precision_directional(
        dynamics, loss, z0, theta, times, v_z0, v_theta, v_times, digits=BATCH_DIGITS,
        **extra)
    parts = [high_precision_directional(dynamics, loss, z0[b], theta, times, v_z0[b],
                                        v_theta, v_times, digits=BATCH_DIGITS,
                                        targets=extra["targets"], data=extra["data"][:, b])[0]
             for b in range(len(z0))]
    total = mpmath.fsum(mpmath.fadd(*part, exact=True) for part in parts)
    error = abs(mpmath.fadd(*batch, exact=True) - total) / info["term_scale"]
    assert float(error) <= 2 * 10.0 ** -(BATCH_DIGITS - 2)


def test_matrix_targets_equal_symbol_targets():
    """A target MatrixSymbol (``d[i, 0]`` in the loss) is read like a list of Symbols."""
    values = []
    for matrix_targets in (True, False):
        dynamics, loss, z0, theta, times, extra = _matrix_mlp_with_targets(matrix_targets)
        v = _direction(3, z0, len(theta), len(times))
        value, _, info = high_precision_directional(dynamics, loss, z0, theta, times, *v,
                                                    digits=16, **extra)
        values.append(mpmath.fadd(*value, exact=True))
    assert float(abs(values[0] - values[1]) / info["term_scale"]) <= 2e-14


# -- what it refuses ---------------------------------------------------------------------------


def _saddle(span: float):
    """``x' = y, y' = a x`` (a = 3) started on the stable direction ``(1, -sqrt 3)``, in
    the same direction: the answer decays like ``exp(-sqrt(3) t)`` while every rounding
    error grows like ``exp(sqrt(3) t)``: ill-conditioned for double-double beyond a few
    time units."""
    x, y = sp.symbols("x y")
    a = sp.Symbol("a")
    dynamics = Dynamics(rhs=[y, a * x], state=[x, y], params=[a])
    z0 = np.array([[1.0, -np.sqrt(3.0)]])
    return dynamics, x**2 / 2, z0, np.array([3.0]), np.array([0.0, span]), (
        z0, np.zeros(1), np.zeros(2))


def _saddle_exact(span: float) -> mpmath.mpf:
    """``x(T) delta_x(T)`` from the matrix exponential (delta = z here)."""
    with mpmath.workdps(60):
        A = mpmath.matrix([[0, 1], [3, 0]])
        z = mpmath.expm(A * span) * mpmath.matrix([1.0, -np.sqrt(3.0)])
        return z[0] * z[0]


def test_self_check_refuses_digits_the_problem_does_not_allow():
    dynamics, loss, z0, theta, times, v = _saddle(6.0)
    with pytest.raises(IntegrationError, match=r"did not reach 30 digits: two solves 1 digit"):
        high_precision_directional(dynamics, loss, z0, theta, times, *v, digits=30)
    (hi, lo), estimate, info = high_precision_directional(dynamics, loss, z0, theta, times,
                                                          *v, digits=16)
    error = abs(mpmath.fadd(hi, lo, exact=True) - _saddle_exact(6.0)) / info["term_scale"]
    assert estimate <= 1e-14 and float(error) <= 1e-14


def test_blow_up_is_reported_where_it_happens():
    problem = problems.blow_up()  # z = 1 / (1 - t) on [0, 2]
    with pytest.raises(IntegrationError, match=r"failed at t = 0.99999.*step size underflowed"):
        high_precision_directional(problem.dynamics, problem.loss, problem.z0, problem.theta,
                                   problem.times, [[1.0]], [1.0], [0.0, 0.0], digits=16)


def test_refuses_more_digits_than_double_double_carries():
    dynamics, loss, z0, theta, times, v = _saddle(1.0)
    with pytest.raises(MethodUnavailable, match=r"40 digits were asked for.*at most 30"):
        high_precision_directional(dynamics, loss, z0, theta, times, *v, digits=40)
    assert MAX_DIGITS == 30


@pytest.mark.parametrize(
    ("rhs", "message"),
    [
        pytest.param(lambda x: sp.Abs(x), r"non-smooth function\(s\) Abs", id="non-smooth"),
        pytest.param(lambda x: sp.atan(x), r"contains atan \(atan\(x\)\)", id="unsupported"),
    ],
)
def test_refuses_what_it_cannot_evaluate(rhs, message):
    x = sp.Symbol("x")
    dynamics = Dynamics(rhs=[rhs(x)], state=[x])
    with pytest.raises(MethodUnavailable, match=message):
        high_precision_directional(dynamics, x**2, [[0.5]], [], [0.0, 1.0], [[1.0]], [],
                                   [0.0, 0.0])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"v_z0": np.ones((1, 3))}, r"`v_z0` must have shape \(1, 2\)",
                     id="v_z0-shape"),
        pytest.param({"v_theta": np.ones(2)}, r"`v_theta` must have shape \(1,\)",
                     id="v_theta-shape"),
        pytest.param({"v_times": np.ones(3)}, r"`v_times` must have shape \(2,\)",
                     id="v_times-shape"),
        pytest.param({"v_z0": np.array([[np.nan, 0.0]])}, r"`v_z0` contains inf or nan",
                     id="v_z0-nan"),
        pytest.param({"digits": 12}, r"`digits` must be an integer >= 16", id="digits"),
        pytest.param({"z0": np.ones(3)}, r"`z0` must have shape", id="z0"),
    ],
)
def test_bad_inputs(change, message):
    dynamics, loss, z0, theta, times, (v_z0, v_theta, v_times) = _saddle(1.0)
    args = {"z0": z0, "v_z0": v_z0, "v_theta": v_theta, "v_times": v_times, "digits": 20,
            **change}
    with pytest.raises(InputError, match=message):
        high_precision_directional(dynamics, loss, args["z0"], theta, times, args["v_z0"],
                                   args["v_theta"], args["v_times"], digits=args["digits"])
