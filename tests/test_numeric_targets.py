"""Losses that compare the trajectory with data: targets symbols valued per observation."""

import numpy as np
import pytest
import sympy as sp
from helpers import ROUNDING, assert_gradients_close, solver_tolerance

from numeric import METHODS, InputError, gradient
from symbolic import Dynamics, DynamicsError
from verification import Problem, audit_problem
from verification._reference_file import check_against_reference, load_reference, write_reference

Z = sp.symbols("z0:2")
Y = sp.symbols("y0:2")
W = sp.Matrix(2, 2, sp.symbols("w0:4"))
DYN = Dynamics(rhs=W * sp.Matrix(Z), state=Z, params=W)
LOSS = sp.Rational(1, 2) * sum((z - y) ** 2 for z, y in zip(Z, Y, strict=True))
Z0 = np.array([[1.0, 0.5], [0.2, -0.3], [-0.4, 0.8]])
THETA = np.array([-0.5, 1.0, -1.0, -0.2])
TIMES = np.array([0.0, 0.4, 0.9, 1.5])
DATA = np.random.default_rng(3).normal(size=(3, 3, 2))
TIGHT = {"rtol": 1e-10, "atol": 1e-12}


def _grad(method, **kwargs):
    options = {} if method in ("exact", "high_precision") else TIGHT
    return gradient(DYN, Z0, THETA, TIMES, loss=LOSS, targets=Y, data=DATA, method=method,
                    **{**options, **kwargs})


@pytest.fixture(scope="module")
def exact():
    return _grad("exact")


@pytest.mark.parametrize("method", [m for m in METHODS if m != "exact"])
def test_every_method_fits_data(method, exact):
    tolerance = ROUNDING if method == "high_precision" else solver_tolerance(**TIGHT)
    assert_gradients_close(_grad(method), exact, tolerance)


def test_data_gradient_is_the_residual_propagated(exact):
    # with W = 0 the state is constant, so dL/dz0 = sum_i (z0 - y_i)
    g = gradient(DYN, Z0, np.zeros(4), TIMES, loss=LOSS, targets=Y, data=DATA,
                 method="interpolated_adjoint")
    expected = sum(Z0 - DATA[i] for i in range(3))
    assert np.max(np.abs(g.z0 - expected)) <= solver_tolerance(1e-8) * np.max(np.abs(expected))


def test_shared_targets_broadcast_over_the_batch(exact):
    shared = DATA[:, 0, :]
    a = gradient(DYN, Z0, THETA, TIMES, loss=LOSS, targets=Y, data=shared, method="exact")
    b = gradient(DYN, Z0, THETA, TIMES, loss=LOSS, targets=Y,
                 data=np.repeat(shared[:, None, :], 3, axis=1), method="exact")
    assert_gradients_close(a, b, ROUNDING)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        pytest.param({"data": None}, InputError, r"give `data` of shape \(N, B, 2\)",
                     id="data-missing"),
        pytest.param({"data": np.zeros((2, 3, 2))}, InputError, r"\(N, B, k\) = \(3, 3, 2\)",
                     id="data-wrong-N"),
        pytest.param({"targets": (), "data": DATA}, DynamicsError, r"declare data symbols",
                     id="targets-missing"),
        pytest.param({"targets": (Z[0],)}, DynamicsError, r"already a state",
                     id="target-is-state"),
        pytest.param({"data": np.full((3, 3, 2), np.nan)}, InputError, r"inf or nan",
                     id="data-nan"),
    ],
)
def test_bad_targets_and_data(kwargs, error, message):
    options = {"targets": Y, "data": DATA, **kwargs}
    with pytest.raises(error, match=message):
        gradient(DYN, Z0, THETA, TIMES, loss=LOSS, method="exact", **options)


def test_data_without_targets_is_an_error():
    with pytest.raises(InputError, match="declares no targets"):
        gradient(DYN, Z0, THETA, TIMES, loss=Z[0] ** 2, data=DATA, method="exact")


def test_audit_and_reference_file_carry_the_data(tmp_path):
    problem = Problem(dynamics=DYN, loss=LOSS, z0=Z0, theta=THETA, times=TIMES, targets=Y,
                      data=DATA, name="fit")
    assert audit_problem(problem).passed
    path = tmp_path / "fit.json"
    write_reference(problem, path)
    loaded = load_reference(path)
    np.testing.assert_array_equal(loaded.problem.data, DATA)

    def grad(z0, theta, times):
        g = gradient(DYN, z0, theta, times, loss=LOSS, targets=Y, data=DATA, method="exact")
        return g.z0, g.theta, g.times

    assert check_against_reference(loaded, grad).passed
