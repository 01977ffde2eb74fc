"""The discrete adjoint of linear autonomous dynamics through the step polynomial
(numeric/_linear_map.py) equals the stage-by-stage reverse pass and the complex step on the
same frozen grid to rounding: every fixed-step tableau, with and without an offset, in
elementwise and matrix form, with targets and several observations."""

import numpy as np
import pytest
import sympy as sp
from helpers import ROUNDING, relative_error

import numeric._linear_map as linear_map
from numeric import TABLEAUS, gradient
from numeric._discrete import FrozenGrid, complex_step_gradient, discrete_adjoint_gradient
from symbolic import Dynamics, compile_problem

N_STATE = 3
Z = sp.symbols(f"z0:{N_STATE}")
W = sp.symbols(f"w0:{N_STATE**2}")
C = sp.symbols(f"c0:{N_STATE}")
Y = sp.symbols(f"y0:{N_STATE}")
FIXED_STEP = [name for name, tableau in TABLEAUS.items() if not tableau.adaptive]


def _elementwise(affine: bool) -> Dynamics:
    rhs = sp.Matrix(N_STATE, N_STATE, W) * sp.Matrix(Z)
    if affine:
        rhs += sp.Matrix(C)
    return Dynamics(rhs=list(rhs), state=list(Z), params=list(W) + (list(C) if affine else []))


MATRIX_STATE = sp.MatrixSymbol("z", N_STATE, 1)


def _matrix(affine: bool) -> Dynamics:
    z = MATRIX_STATE
    A = sp.MatrixSymbol("A", N_STATE, N_STATE)
    c = sp.MatrixSymbol("c", N_STATE, 1)
    return Dynamics(rhs=A * z + c if affine else A * z, state=z,
                    params=[A, c] if affine else [A])


def _loss(z) -> sp.Expr:
    return sum((z[i] - Y[i]) ** 2 for i in range(N_STATE)) / 2 + z[0]


LOSS = _loss(Z)


def _problem(dynamics: Dynamics, rng):
    B, times = 24, np.array([0.0, 0.35, 1.2])
    data = rng.normal(size=(len(times) - 1, B, N_STATE))
    return (rng.normal(size=(B, N_STATE)), 0.6 * rng.normal(size=dynamics.p), times, data)


@pytest.mark.parametrize("form", [_elementwise, _matrix], ids=["elementwise", "matrix"])
@pytest.mark.parametrize("affine", [False, True], ids=["linear", "affine"])
@pytest.mark.parametrize("solver", FIXED_STEP)
def test_step_polynomial_equals_the_stages_and_the_complex_step(monkeypatch, form, affine,
                                                                 solver):
    rng = np.random.default_rng(11)
    dynamics = form(affine)
    loss = LOSS if form is _elementwise else _loss([MATRIX_STATE[i, 0] for i in
                                                    range(N_STATE)])
    compiled = compile_problem(dynamics, loss, targets=list(Y))
    z0, theta, times, data = _problem(dynamics, rng)
    grid, tableau = FrozenGrid.uniform(len(times) - 1, 7), TABLEAUS[solver]
    assert linear_map.applies(compiled, grid, tableau, z0.shape[0])
    fast = linear_map.linear_map_gradient(compiled, z0, theta, times, grid, tableau, data=data)
    monkeypatch.setattr(linear_map, "applies", lambda *args: False)
    staged = discrete_adjoint_gradient(compiled, z0, theta, times, grid, tableau, data=data)
    complex_step = complex_step_gradient(compiled, z0, theta, times, grid, tableau, data=data)
    assert relative_error(fast[0], staged[0]) <= ROUNDING
    for block, ours, stages, reference in zip(("z0", "theta", "times"), fast[1:],
                                              staged[1:], complex_step[1:], strict=True):
        assert relative_error(ours, stages) <= ROUNDING, block
        assert relative_error(ours, reference) <= ROUNDING, block


def test_the_polynomial_route_is_taken_only_where_it_applies():
    compiled = compile_problem(_elementwise(True), LOSS, targets=list(Y))
    uniform, tableau = FrozenGrid.uniform(2, 10), TABLEAUS["rk4"]
    assert linear_map.applies(compiled, uniform, tableau, 16)
    assert not linear_map.applies(compiled, uniform, tableau, 1)  # n large against B·steps
    uneven = FrozenGrid((np.array([0.0, 0.3, 1.0]), np.array([0.0, 1.0])))
    assert not linear_map.applies(compiled, uneven, tableau, 16)
    assert not linear_map.applies(compiled, uniform, TABLEAUS["dopri5"], 16)
    z = sp.Symbol("z")
    nonlinear = compile_problem(Dynamics(rhs=[-z**3], state=[z], params=[]), z**2)
    assert not linear_map.applies(nonlinear, uniform, tableau, 16)


def test_a_blow_up_on_the_polynomial_route_is_an_integration_error():
    dynamics = _elementwise(False)
    theta = np.zeros(dynamics.p)
    theta[0] = 2000.0  # rk4 with h = 0.01: |R(20)| ~ 1e4 per step, inf within 100 steps
    with pytest.raises(Exception, match="non-finite") as err:
        gradient(dynamics, np.ones((16, N_STATE)), theta, [0.0, 1.0], loss=LOSS.subs(
            dict(zip(Y, [0] * N_STATE, strict=True))), method="discrete_adjoint",
            solver="rk4", steps=100)
    assert type(err.value).__name__ == "IntegrationError"
