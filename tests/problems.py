"""Shared test problems, each with an exact answer or a property the tests rely on.

Every factory returns a fresh :class:`verification._problems.Problem` (dynamics, loss and
inputs together). Where the gradient has a closed form, a companion function gives it.
"""

from __future__ import annotations

import functools

import numpy as np
import sympy as sp

from symbolic import Dynamics
from verification._problems import Problem, builtin_problem

__all__ = [
    "Problem",
    "affine",
    "blow_up",
    "builtin_problem",
    "constant_drift",
    "constant_drift_gradient",
    "kink_crossing",
    "kink_crossing_gradient",
    "linear_dynamics",
    "matrix_network",
    "non_analytic",
    "seed_linear",
    "time_dependent_nonlinear",
    "unused_parameter",
]


def seed_linear() -> Problem:
    """The seed's ``f = W z`` (API.md example); exact reference: the matrix exponential."""
    return builtin_problem("linear")


def affine() -> Problem:
    """``f = A z + c`` with ``A`` and ``c`` both parameters; exact on ``[z; 1]``."""
    z = sp.symbols("z0:2")
    A = sp.Matrix(2, 2, sp.symbols("a0:4"))
    c = sp.Matrix(sp.symbols("c0:2"))
    return Problem(
        dynamics=Dynamics(rhs=A * sp.Matrix(z) + c, state=z, params=[*A, *c]),
        loss=sp.Rational(1, 2) * ((z[0] - 1) ** 2 + z[1] ** 2) + z[0] * z[1],
        z0=np.array([[1.0, 0.5], [0.2, -0.3], [-0.8, 0.1]]),
        theta=np.array([-0.4, 0.9, -1.1, -0.3, 0.6, -0.25]),
        times=np.array([0.1, 0.6, 1.0, 1.7]),
        name="affine",
    )


def constant_drift() -> Problem:
    """``x' = c0, y' = c1`` with loss ``l(z) = x``: ``z(t) = z0 + c (t - t_0)``.

    Every Runge–Kutta method integrates a constant exactly, so every method's gradient is
    :func:`constant_drift_gradient` up to rounding. A single sample: ``z0`` is ``(n,)``.
    """
    x, y = sp.symbols("x y")
    c = sp.symbols("c0:2")
    return Problem(
        dynamics=Dynamics(rhs=list(c), state=(x, y), params=c),
        loss=x,
        z0=np.array([0.4, -0.2]),
        theta=np.array([1.7, -0.6]),
        times=np.array([0.25, 0.5, 0.9, 1.6]),
        name="constant_drift",
    )


def constant_drift_gradient(problem: Problem) -> dict[str, np.ndarray | float]:
    r"""Closed form for :func:`constant_drift` with ``N`` observations, one sample:

    .. math:: L = \sum_i x_0 + c_0 (t_i - t_0), \quad dL/dx_0 = N, \quad
              dL/dc_0 = \sum_i (t_i - t_0), \quad dL/dt_i = c_0, \quad dL/dt_0 = -N c_0
    """
    times, c0 = problem.times, problem.theta[0]
    N = len(times) - 1
    deltas = times[1:] - times[0]
    return {
        "loss": float(np.sum(problem.z0[0] + c0 * deltas)),
        "z0": np.array([N, 0.0]),
        "theta": np.array([deltas.sum(), 0.0]),
        "times": np.concatenate([[-N * c0], np.full(N, c0)]),
    }


def unused_parameter() -> Problem:
    """``f = W z`` with a fifth parameter ``u`` the dynamics do not use (index 4)."""
    z = sp.symbols("z0:2")
    w = sp.symbols("w0:4")
    u = sp.Symbol("u")
    W = sp.Matrix(2, 2, w)
    return Problem(
        dynamics=Dynamics(rhs=W * sp.Matrix(z), state=z, params=[*w, u]),
        loss=sp.Rational(1, 2) * (z[0] ** 2 + z[1] ** 2),
        z0=np.array([[1.0, 0.5], [0.2, -0.3]]),
        theta=np.array([-0.5, 1.0, -1.0, -0.2, 3.0]),
        times=np.array([0.0, 0.5, 1.0]),
        name="unused_parameter",
    )


def blow_up() -> Problem:
    """``z' = theta z**2``, ``z0 = 1``, ``theta = 1``: ``z = 1 / (1 - t)`` blows up at
    ``t = 1``, inside the span ``[0, 2]``."""
    x = sp.Symbol("x")
    theta = sp.Symbol("theta")
    return Problem(
        dynamics=Dynamics(rhs=[theta * x**2], state=[x], params=[theta]),
        loss=x,
        z0=np.array([[1.0]]),
        theta=np.array([1.0]),
        times=np.array([0.0, 2.0]),
        name="blow_up",
    )


def non_analytic(*, real: bool = True) -> Problem:
    """A damped system with ``Abs``: not complex-analytic, so complex step must refuse.

    ``real=False`` uses plain SymPy symbols (what most users write), for which SymPy's own
    derivative of ``Abs(v)`` involves ``re``/``im`` and unevaluated ``Derivative`` terms.
    """
    x, v = sp.symbols("x v", real=real or None)
    k, c = sp.symbols("k c")
    return Problem(
        dynamics=Dynamics(rhs=[v, -k * x - c * v * sp.Abs(v)], state=(x, v), params=(k, c)),
        loss=sp.Rational(1, 2) * (x**2 + v**2),
        z0=np.array([[1.0, 0.0]]),
        theta=np.array([2.0, 0.3]),
        times=np.array([0.0, 1.0]),
        name="non_analytic",
    )


def kink_crossing() -> Problem:
    """``z' = p - |z|`` from ``z0 = -1/2`` with ``p = 1``: the trajectory crosses the kink
    ``z = 0`` at ``tau = ln(p / (z0 + p)) = ln 2``.

    Below the kink ``z = (z0 + p) e^t - p``, above it ``z = p - p e^{-(t - tau)}``; ``f`` is
    continuous, so the gradient has no jump term and :func:`kink_crossing_gradient` gives
    it in closed form from ``z(T) = p - p^2 e^{-T} / (z0 + p)``.
    """
    z, p = sp.symbols("z p")
    return Problem(
        dynamics=Dynamics(rhs=[p - sp.Abs(z)], state=[z], params=[p]),
        loss=z**2 / 2,
        z0=np.array([[-0.5]]),
        theta=np.array([1.0]),
        times=np.array([0.0, 2.0]),
        name="kink_crossing",
    )


def kink_crossing_gradient(problem: Problem) -> dict[str, np.ndarray]:
    """The exact gradient of :func:`kink_crossing` (closed form, see there)."""
    z0, p, T = sp.symbols("z0 p T")
    z_T = p - p**2 * sp.exp(-T) / (z0 + p)
    loss = z_T**2 / 2
    at = {z0: problem.z0[0, 0], p: problem.theta[0], T: problem.times[-1] - problem.times[0]}
    f_T, f_0 = p - sp.Abs(z_T), p - sp.Abs(z0)
    d_z0 = sp.diff(loss, z0)
    return {
        "z0": np.array([[float(d_z0.subs(at))]]),
        "theta": np.array([float(sp.diff(loss, p).subs(at))]),
        "times": np.array([float((-d_z0 * f_0).subs(at)), float((z_T * f_T).subs(at))]),
    }


def time_dependent_nonlinear() -> Problem:
    """Nonlinear, time-dependent dynamics with ``sin``, ``sqrt(t + 1)`` and ``exp(-t)``:
    every term of the discrete adjoint (state, parameters and stage times) is exercised.
    A batch of 3 samples, 3 observations, ``t_0 != 0``."""
    x, v, t = sp.symbols("x v t")
    w = sp.symbols("w0:5")
    rhs = [
        w[0] * v + w[1] * sp.sin(x) * sp.sqrt(t + 1),
        -w[2] * x - w[3] * v * x**2 + w[4] * sp.exp(-t),
    ]
    return Problem(
        dynamics=Dynamics(rhs=rhs, state=(x, v), params=w, time=t),
        loss=sp.Rational(1, 2) * (x - sp.Rational(1, 2)) ** 2 + sp.Rational(1, 2) * v**2,
        z0=np.array([[1.0, -0.5], [0.3, 0.8], [-0.7, 0.2]]),
        theta=np.array([1.2, 0.5, 1.5, 0.3, 0.8]),
        times=np.array([0.2, 0.6, 1.1, 1.7]),
        name="time_dependent_nonlinear",
    )


def matrix_network() -> Problem:
    """A network in matrix form with every construct the adapters print: products with
    parameter matrices, a transpose, a Hadamard product with a constant column, tanh, a
    time-dependent scalar factor and a scalar parameter, ``t_0 != 0``, uneven intervals."""
    n, h = 3, 6
    z = sp.MatrixSymbol("z", n, 1)
    W1, b1 = sp.MatrixSymbol("W1", h, n), sp.MatrixSymbol("b1", h, 1)
    W2, b2 = sp.MatrixSymbol("W2", n, h), sp.MatrixSymbol("b2", n, 1)
    c, t = sp.symbols("c t")
    mask = sp.ImmutableMatrix([1.0, 0.5, -1.0])
    hidden = (W1 * z + b1).applyfunc(sp.tanh)
    rhs = (1 + sp.sin(t) / 2) * W2 * hidden + c * sp.HadamardProduct(mask, b2) \
        - sp.Rational(1, 10) * W1.T * hidden
    rng = np.random.default_rng(5)
    dynamics = Dynamics(rhs=rhs, state=z, params=[W1, b1, W2, b2, c], time=t)
    return Problem(
        dynamics=dynamics,
        loss=((z.T * z)[0, 0] - z[0, 0]) / 2,
        z0=rng.standard_normal((3, n)),
        theta=0.5 * rng.standard_normal(dynamics.p),
        times=np.array([0.2, 0.6, 1.1, 1.7]),
        name="matrix_network",
    )


@functools.cache
def linear_dynamics(n: int) -> tuple[Dynamics, sp.Expr]:
    """``f = W z`` in ``n`` dimensions with loss ``1/2 |z - 1|^2``, built once per ``n``
    (compilation is cached per dynamics, so property tests reuse it)."""
    z = sp.symbols(f"z0:{n}")
    W = sp.Matrix(n, n, sp.symbols(f"w0:{n * n}"))
    loss = sp.Rational(1, 2) * sum((zi - 1) ** 2 for zi in z)
    return Dynamics(rhs=W * sp.Matrix(z), state=z, params=W), loss
