"""The second derivatives compiled for the stiff solver (``jac_state_jvp``,
``jac_params_jvp``, ``time_second_partial``) equal SymPy's own derivatives at random points,
with the documented shapes, and keep complex input complex."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from helpers import ROUNDING, relative_error
from test_symbolic_compile import PROBLEMS, _inputs

from symbolic import compile_problem

NAMES = ["jac_state_jvp", "jac_params_jvp", "time_second_partial"]


def _sympy_value(dyn, name, z_, theta, t_, dz, dt) -> np.ndarray:
    """SymPy's derivative, differentiated here with ``diff`` and evaluated by ``evalf``."""
    f = sp.Matrix(dyn.rhs)
    time = dyn.time
    if name == "time_second_partial":
        exprs = [e.diff(time, 2) if time is not None else sp.Integer(0) for e in f]
        tail = (dyn.n,)
    elif name == "jac_params_jvp" and dyn.p == 0:
        return np.zeros((z_.shape[0], dyn.n, 0))
    else:
        matrix = f.jacobian(dyn.state) if name == "jac_state_jvp" else f.jacobian(dyn.params)
        tail = matrix.shape
        exprs = None
    out = np.empty((z_.shape[0], *tail))
    for b in range(z_.shape[0]):
        point = dict(zip(dyn.state, z_[b], strict=True))
        point.update(zip(dyn.params, theta, strict=True))
        if time is not None:
            point[time] = t_
        if exprs is None:
            along = sum((matrix.diff(s) * float(v) for s, v in zip(dyn.state, dz[b],
                                                                    strict=True)),
                        sp.zeros(*tail))
            if time is not None:
                along += matrix.diff(time) * dt
            values = list(along)
        else:
            values = exprs
        out[b] = np.reshape([float(sp.sympify(e).evalf(30, subs=point)) for e in values], tail)
    return out


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_second_derivatives_equal_sympy(problem, name):
    dyn, loss = PROBLEMS[problem]
    compiled = compile_problem(dyn, loss)
    z_, theta, t_, dz = _inputs(dyn, 3, 7)
    dt = 0.8
    if name == "time_second_partial":
        value = compiled.time_second_partial(z_, theta, t_)
    else:
        value = getattr(compiled, name)(z_, theta, t_, dz, dt)
    reference = _sympy_value(dyn, name, z_, theta, t_, dz, dt)
    assert value.shape == reference.shape and value.dtype == np.float64
    if np.all(reference == 0):
        assert np.all(value == 0)
    else:
        assert relative_error(value, reference) <= ROUNDING


@pytest.mark.parametrize("name", ["jac_state_jvp", "jac_params_jvp"])
def test_complex_direction_gives_complex_output(name):
    dyn, loss = PROBLEMS["nonlinear time-dependent"]
    compiled = compile_problem(dyn, loss)
    z_, theta, t_, dz = _inputs(dyn, 2, 3)
    value = getattr(compiled, name)(z_, theta, t_, dz + 1e-30j, 0.0)
    assert value.dtype == np.complex128
    assert np.array_equal(value.real, getattr(compiled, name)(z_, theta, t_, dz, 0.0))


def test_kinks_have_zero_second_derivative_away_from_the_kink():
    """``|v| v`` has second derivative ``2 sign(v)``: SymPy adds ``DiracDelta(v)`` terms,
    zero away from ``v = 0``, which are dropped so that the expression compiles."""
    x, v = sp.symbols("x v")
    from symbolic import Dynamics

    dyn = Dynamics(rhs=[v, -x - v * sp.Abs(v)], state=(x, v))
    compiled = compile_problem(dyn, x**2)
    z_ = np.array([[0.3, 0.5], [0.1, -0.25]])
    dz = np.array([[0.0, 1.0], [0.0, 1.0]])
    along = compiled.jac_state_jvp(z_, np.zeros(0), 0.0, dz, 0.0)
    assert np.array_equal(along[:, 1, 1], -2 * np.sign(z_[:, 1]))
