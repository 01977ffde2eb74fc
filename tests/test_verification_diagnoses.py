"""Diagnoses a person can act on: each wrong implementation gets the sentence that names its
bug, and not a misleading one."""

import dataclasses
import re

import numpy as np
import pytest
from mutants import linear_gradient
from scipy.integrate import solve_ivp

from numeric import gradient
from verification import audit_gradient, builtin_problem
from verification._diagnose import diagnose


@pytest.fixture(scope="module")
def seed():
    problem = builtin_problem("linear")  # B = 2 samples
    return dataclasses.replace(problem, times=np.array([0.0, 0.4, 0.9, 1.5]))  # N = 3


@pytest.fixture(scope="module")
def tanh():
    return builtin_problem("tanh")  # f = tanh(W z + b), params [*W, *b], B = 2, N = 3


def _tanh_gradient(z0, theta, times, *, adjoint_sign=-1.0):
    """dL/d(z0, theta, times) for f = tanh(W z + b), L = sum |z(t_i) - 0.5|^2 / 2, written
    out by hand and integrated by scipy; ``adjoint_sign=+1`` integrates the adjoint
    equation with the wrong sign, da/dt = +J^T a."""
    n = z0.shape[1]
    W, b = theta[: n * n].reshape(n, n), theta[n * n :]
    f = lambda z: np.tanh(W @ z + b)  # noqa: E731
    out_z0, out_theta, out_times = np.zeros_like(z0), np.zeros_like(theta), np.zeros_like(times)
    for k, start in enumerate(z0):
        forward = solve_ivp(lambda t, z: f(z), (times[0], times[-1]), start, method="DOP853",
                            rtol=1e-13, atol=1e-13, dense_output=True)

        def backward(t, y, forward=forward):
            z, a = forward.sol(t), y[:n]
            slope = 1.0 - np.tanh(W @ z + b) ** 2
            jt_a = W.T @ (slope * a)
            return np.concatenate([adjoint_sign * jt_a, -np.outer(slope * a, z).ravel(),
                                   -slope * a])

        y = np.zeros(n + n * n + n)
        for i in range(len(times) - 1, 0, -1):
            z_i = forward.sol(times[i])
            y[:n] += z_i - 0.5
            out_times[i] += np.dot(z_i - 0.5, f(z_i))
            y = solve_ivp(backward, (times[i], times[i - 1]), y, method="DOP853", rtol=1e-13,
                          atol=1e-13).y[:, -1]
        out_z0[k] = y[:n]
        out_theta += y[n:]
        out_times[0] -= np.dot(y[:n], f(start))
    return out_z0, out_theta, out_times


def _exact(problem):
    def grad(z0, theta, times):
        g = gradient(problem.dynamics, z0, theta, times, loss=problem.loss, method="exact")
        return g.z0, g.theta, g.times

    return grad


def _mapped(fn, change):
    def grad(z0, theta, times):
        return change(*fn(z0, theta, times))

    return grad


def _dtimes(value):
    """The time gradient replaced: what backprop through a fixed-grid solver returns."""
    def change(dz0, dtheta, dtimes):
        out = np.zeros_like(dtimes)
        out[0] = {"right": dtimes[0], "zero": 0.0, "wrong": 0.3 * dtimes[0]}[value]
        return dz0, dtheta, out

    return change


def _single_precision(*blocks):
    """A float32 pipeline's result: errors of about 1e-6 relative (accumulated roundings),
    every entry a float32 number."""
    rng = np.random.default_rng(3)
    return tuple(np.asarray(x * (1 + 1e-6 * rng.standard_normal(np.shape(x))), np.float32)
                 .astype(float) for x in blocks)


def _reordered(*pieces):
    return lambda dz0, dtheta, dtimes: (dz0, np.concatenate([dtheta[a:b] for a, b in pieces]),
                                        dtimes)


#: (problem, implementation, phrases the diagnosis must hold, phrases it must not hold)
CASES = [
    pytest.param("seed", lambda p: lambda *a: linear_gradient(*a, bugs=["adjoint_sign"]),
                 ["the adjoint equation has the wrong sign", "expm(-W^T"], [],
                 id="adjoint-sign-expm"),
    pytest.param("tanh", lambda p: lambda *a: _tanh_gradient(*a, adjoint_sign=1.0),
                 ["the adjoint equation has the wrong sign"], ["largest deviation"],
                 id="adjoint-sign-nonlinear"),
    pytest.param("seed", lambda p: _mapped(_exact(p), lambda *g: tuple(x / 6 for x in g)),
                 ["= 1/(B·N) with batch size B = 2 and N = 3 observation times",
                  "a mean over batch and time instead of a sum"], [], id="mean-batch-and-time"),
    pytest.param("seed", lambda p: _mapped(_exact(p), lambda *g: tuple(x / 3 for x in g)),
                 ["= 1/N with batch size B = 2 and N = 3", "a mean over the observation times"],
                 [], id="mean-over-time"),
    pytest.param("tanh", lambda p: _mapped(_tanh_gradient, _reordered((9, 12), (0, 9))),
                 ["concatenated in another order", "theta[9:12] (b0..b2), theta[0:9] (w0..w8)"],
                 [], id="params-b-before-W"),
    pytest.param("tanh", lambda p: _mapped(_tanh_gradient, _reordered((9, 12), (3, 9), (0, 3))),
                 ["concatenated in another order",
                  "theta[9:12] (b0..b2), theta[3:9] (w3..w8), theta[0:3] (w0..w2)"],
                 [], id="params-three-segments"),
    pytest.param("seed", lambda p: _mapped(_exact(p), _reordered((2, 4), (0, 2))),
                 ["concatenated in another order", "theta[2:4] (w2..w3), theta[0:2] (w0..w1)"],
                 [], id="params-no-named-structure"),
    pytest.param("seed", lambda p: _mapped(_exact(p), _single_precision),
                 ["every entry is exactly a float32 number", "audit it with rtol="], [],
                 id="float32"),
    pytest.param("seed", lambda p: _mapped(_exact(p), _dtimes("right")),
                 ["dL/dt_1 .. dL/dt_N are all zero", "fixed-grid solver", "dL/dt_0 is right"],
                 ["jumps are missing", "diverges"], id="dtimes-zero-t0-right"),
    pytest.param("seed", lambda p: _mapped(_exact(p), _dtimes("zero")),
                 ["dL/dt_1 .. dL/dt_N are all zero", "dL/dt_0 is zero as well"],
                 ["jumps are missing", "diverges"], id="dtimes-all-zero"),
    pytest.param("seed", lambda p: _mapped(_exact(p), _dtimes("wrong")),
                 ["dL/dt_1 .. dL/dt_N are all zero", "dL/dt_0 is wrong too"],
                 ["jumps are missing", "diverges"], id="dtimes-zero-t0-wrong"),
]


@pytest.mark.parametrize(("name", "build", "present", "absent"), CASES)
def test_wrong_implementation_gets_its_diagnosis(name, build, present, absent, request):
    problem = request.getfixturevalue(name)
    report = audit_gradient(problem.dynamics, build(problem), problem.z0, problem.theta,
                            problem.times, loss=problem.loss)
    assert not report.passed
    text = " | ".join(row.diagnosis for row in report.failures)
    for phrase in present:
        assert phrase in text, text
    for phrase in absent:
        assert phrase not in text, text


def test_float32_diagnosis_names_an_rtol_that_fits(seed):
    fn = _mapped(_exact(seed), _single_precision)
    report = audit_gradient(seed.dynamics, fn, seed.z0, seed.theta, seed.times, loss=seed.loss)
    rtol = float(re.search(r"rtol=([0-9.e+-]+)", report.failures[0].diagnosis).group(1))
    assert audit_gradient(seed.dynamics, fn, seed.z0, seed.theta, seed.times, loss=seed.loss,
                          rtol=rtol).passed


def test_correct_nonlinear_implementation_passes(tanh):
    report = audit_gradient(tanh.dynamics, _tanh_gradient, tanh.z0, tanh.theta, tanh.times,
                            loss=tanh.loss)
    assert report.passed, str(report)


@pytest.mark.parametrize(
    ("block", "value", "reference", "kwargs", "expected"),
    [
        pytest.param("theta", [1 / 6, 1 / 3], [1.0, 2.0], {"batch": 2, "observations": 3},
                     "= 1/(B·N)", id="mean-B-N"),
        pytest.param("theta", [0.5, 1.0], [1.0, 2.0], {"batch": 2, "observations": 2},
                     "= 1/B = 1/N", id="B-equals-N"),
        pytest.param("theta", [3.0, 6.0], [1.0, 2.0], {"batch": 1, "observations": 3},
                     "scaled by a constant 3 = N", id="times-N"),
        pytest.param("z0", [[0.3, 0.4], [1.0, 2.0]], [[1.0, 2.0], [0.3, 0.4]], {},
                     "the samples are permuted", id="samples-permuted"),
        pytest.param("times", [0.5, 0.0, 0.0], [0.5, 1.0, -2.0], {},
                     "dL/dt_0 is right", id="times-zero"),
        pytest.param("theta", [1.0 + 3e-6, 2.0], [1.0, 2.0], {"error": 3e-6},
                     "the size float32 arithmetic leaves", id="float32-size"),
    ],
)
def test_diagnoses_from_the_numbers(block, value, reference, kwargs, expected):
    text = diagnose(block, np.array(value), np.array(reference), method="m", **kwargs)
    assert expected in text, text
