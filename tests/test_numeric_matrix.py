"""Every gradient method on matrix-form dynamics: equal to the elementwise path of the same
dynamics to rounding; the discrete adjoint equal to complex step; budgets that refuse."""

import numpy as np
import pytest
import sympy as sp
from helpers import ROUNDING, relative_error
from test_symbolic_matrix import mlp

from numeric import METHODS, MethodUnavailable, gradient
from symbolic import Dynamics

BLOCKS = ("z0", "theta", "times")


def problem(time: bool):
    dyn, z = mlp(2, 3, time=time)
    loss = sum((z[i, 0] - sp.Rational(1, 4)) ** 2 for i in range(dyn.n)) / 2
    rng = np.random.default_rng(4)
    z0 = rng.uniform(-1, 1, (3, dyn.n))
    theta = 0.6 * rng.standard_normal(dyn.p)
    times = np.array([0.1, 0.4, 0.9])
    return dyn, loss, z0, theta, times


#: The methods that run on both forms (high precision is a 30-digit reference of the
#: elementwise form; exact needs linear dynamics).
SHARED = [m for m in METHODS if m not in ("exact", "high_precision")]


@pytest.mark.parametrize("time", [False, True], ids=["autonomous", "time-dependent"])
@pytest.mark.parametrize("method", SHARED)
def test_matrix_form_equals_elementwise_form_for_every_method(method, time):
    dyn, loss, z0, theta, times = problem(time)
    options = {"solver": "rk4", "steps": 8}
    got = gradient(dyn, z0, theta, times, loss=loss, method=method, **options)
    expected = gradient(dyn.as_elementwise(), z0, theta, times, loss=dyn.explicit(loss),
                        method=method, **options)
    # finite differences amplify rounding by 1/h; everything else agrees to rounding
    tolerance = 1e-8 if method == "finite_difference" else ROUNDING
    assert abs(got.loss - expected.loss) <= ROUNDING * abs(expected.loss)
    for block in BLOCKS:
        assert relative_error(getattr(got, block), getattr(expected, block)) <= tolerance, block


@pytest.mark.parametrize("solver", ["euler", "midpoint", "rk4", "dopri5", "rodas4"])
@pytest.mark.parametrize("time", [False, True], ids=["autonomous", "time-dependent"])
def test_matrix_discrete_adjoint_equals_complex_step(solver, time):
    """On every solver, the stiff one included (whose reverse pass takes the second
    derivatives of matrix-form f by the complex step)."""
    dyn, loss, z0, theta, times = problem(time)
    options = {"rtol": 1e-6, "atol": 1e-8} if solver in ("dopri5", "rodas4") else {"steps": 5}
    da = gradient(dyn, z0, theta, times, loss=loss, method="discrete_adjoint", solver=solver,
                  **options)
    cs = gradient(dyn, z0, theta, times, loss=loss, method="complex_step", solver=solver,
                  **options)
    for block in BLOCKS:
        assert relative_error(getattr(da, block), getattr(cs, block)) <= ROUNDING, block


def test_matrix_linear_dynamics_have_the_exact_reference():
    """f = W z + b in matrix form: the matrix exponential reference, equal to the
    elementwise one."""
    z, W, b = sp.MatrixSymbol("z", 3, 1), sp.MatrixSymbol("W", 3, 3), sp.MatrixSymbol("b", 3, 1)
    dyn = Dynamics(rhs=W * z + b, state=z, params=[W, b])
    loss = (z.T * z)[0, 0] / 2
    rng = np.random.default_rng(9)
    z0, theta = rng.standard_normal((2, 3)), 0.5 * rng.standard_normal(12)
    times = np.array([0.0, 0.5, 1.2])
    got = gradient(dyn, z0, theta, times, loss=loss, method="exact")
    expected = gradient(dyn.as_elementwise(), z0, theta, times, loss=dyn.explicit(loss),
                        method="exact")
    for block in BLOCKS:
        assert relative_error(getattr(got, block), getattr(expected, block)) <= ROUNDING


def test_large_network_refuses_per_entry_and_sensitivity_methods():
    """At network size forward sensitivity and the per-entry methods would take gigabytes
    or hours: they refuse and name what to use instead."""
    dyn, z = mlp(16, 64)
    loss = (z.T * z)[0, 0] / 2
    rng = np.random.default_rng(0)
    z0 = rng.standard_normal((256, 16))
    theta = 0.1 * rng.standard_normal(dyn.p)
    times = np.array([0.0, 1.0])
    with pytest.raises(MethodUnavailable, match=r"memory budget.*interpolated_adjoint"):
        gradient(dyn, z0, theta, times, loss=loss, method="forward_sensitivity")
    for method in ("complex_step", "finite_difference"):
        with pytest.raises(MethodUnavailable, match="discrete_adjoint"):
            gradient(dyn, z0, theta, times, loss=loss, method=method, solver="rk4", steps=20)
    g = gradient(dyn, z0, theta, times, loss=loss, method="discrete_adjoint", solver="rk4",
                 steps=20)
    assert g.theta.shape == (dyn.p,) and np.all(np.isfinite(g.theta))


# -- non-smooth activations in matrix form ---------------------------------------------------


def _switching_network(activation):
    n, h = 2, 4
    z = sp.MatrixSymbol("z", n, 1)
    W1, b1 = sp.MatrixSymbol("W1", h, n), sp.MatrixSymbol("b1", h, 1)
    W2 = sp.MatrixSymbol("W2", n, h)
    dyn = Dynamics(rhs=W2 * (W1 * z + b1).applyfunc(activation), state=z,
                   params=[W1, b1, W2])
    rng = np.random.default_rng(0)
    theta = rng.standard_normal(dyn.p)
    return dyn, (z.T * z)[0, 0] / 2, rng.standard_normal((3, n)), theta


def test_matrix_form_finds_the_kinks_of_a_relu_network_as_elementwise_form_does():
    u = sp.Symbol("u")
    dyn, loss, z0, theta = _switching_network(sp.Lambda(u, sp.Max(0, u)))
    options = {"method": "interpolated_adjoint", "rtol": 1e-10, "atol": 1e-12}
    matrix = gradient(dyn, z0, theta, [0.0, 1.0], loss=loss, **options)
    entries = gradient(dyn.as_elementwise(), z0, theta, [0.0, 1.0], loss=dyn.explicit(loss),
                       **options)
    (met,) = matrix.info["nonsmooth"]
    assert "the kink of Max(0, (W1*z + b1)[2])" in met
    assert met.split(" at t = ")[1] == entries.info["nonsmooth"][0].split(" at t = ")[1]
    assert np.abs(matrix.theta - entries.theta).max() <= 1e-9 * np.abs(entries.theta).max()


def test_matrix_form_refuses_a_crossed_jump_of_an_activation():
    u = sp.Symbol("u")
    dyn, loss, z0, theta = _switching_network(sp.Lambda(u, sp.Heaviside(u)))
    with pytest.raises(MethodUnavailable, match=r"crosses the switch of Heaviside\(\(W1\*z"):
        gradient(dyn, z0, theta, [0.0, 1.0], loss=loss, method="interpolated_adjoint")
