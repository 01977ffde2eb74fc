"""Problems: dynamics, loss and inputs together; and the built-in problems of the CLI."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import sympy as sp
from numpy.typing import NDArray

from symbolic import Dynamics

__all__ = ["BUILTIN_PROBLEMS", "DEMO_PROBLEMS", "STIFF_PROBLEMS", "Problem", "builtin_problem"]


@dataclass(frozen=True, eq=False)
class Problem:
    """A gradient problem: dynamics, per-observation loss and the inputs.

    Attributes
    ----------
    dynamics : symbolic.Dynamics
    loss : sympy.Expr
    z0 : ndarray, shape (B, n)
    theta : ndarray, shape (p,)
    times : ndarray, shape (N+1,)
    name, description : str
    targets : tuple of Symbols, optional
        Data symbols of the loss.
    data : ndarray, shape (N, B, k), optional
        Their values at ``times[1:]``.
    tolerances : (rtol, atol), optional
        What an audit of the problem uses with an adaptive solver unless told otherwise
        (a stiff problem over many decades of time is audited at a looser rtol).
    """

    dynamics: Dynamics
    loss: sp.Expr
    z0: NDArray
    theta: NDArray
    times: NDArray
    name: str = "problem"
    description: str = ""
    notes: tuple[str, ...] = field(default=())
    targets: tuple = ()
    data: NDArray | None = None
    tolerances: tuple[float, float] | None = None

    def __repr__(self) -> str:
        return (
            f"Problem(name={self.name!r}, dynamics={self.dynamics!r}, loss={self.loss}, "
            f"z0={self.z0.tolist()}, theta={self.theta.tolist()}, times={self.times.tolist()})"
        )


def _seed_linear() -> Problem:
    z = sp.symbols("z0:2")
    w = sp.symbols("w0:4")
    W = sp.Matrix(2, 2, w)
    return Problem(
        dynamics=Dynamics(rhs=W * sp.Matrix(z), state=z, params=W),
        loss=sp.Rational(1, 2) * (z[0] ** 2 + z[1] ** 2),
        z0=np.array([[1.0, 0.5], [0.2, -0.3]]),
        theta=np.array([-0.5, 1.0, -1.0, -0.2]),
        times=np.array([0.0, 0.5, 1.0]),
        name="linear",
        description="the seed's f = W z, a damped rotation (exact reference: matrix exponential)",
    )


def _tanh_layer() -> Problem:
    n = 3
    z = sp.symbols(f"z0:{n}")
    W = sp.Matrix(n, n, sp.symbols(f"w0:{n * n}"))
    b = sp.Matrix(sp.symbols(f"b0:{n}"))
    rhs = (W * sp.Matrix(z) + b).applyfunc(sp.tanh)
    rng = np.random.default_rng(7)
    return Problem(
        dynamics=Dynamics(rhs=rhs, state=z, params=[*W, *b]),
        loss=sp.Rational(1, 2) * sum((zi - 0.5) ** 2 for zi in z),
        z0=rng.uniform(-1, 1, (2, n)),
        theta=np.concatenate([0.8 * rng.standard_normal(n * n), 0.3 * rng.standard_normal(n)]),
        times=np.array([0.0, 0.5, 1.0, 1.5]),
        name="tanh",
        description="a tanh layer f = tanh(W z + b), n = 3",
    )


def _network() -> Problem:
    n, h = 2, 16
    z = sp.MatrixSymbol("z", n, 1)
    W1, b1 = sp.MatrixSymbol("W1", h, n), sp.MatrixSymbol("b1", h, 1)
    W2, b2 = sp.MatrixSymbol("W2", n, h), sp.MatrixSymbol("b2", n, 1)
    rng = np.random.default_rng(11)
    theta = np.concatenate([rng.standard_normal(h * n) / np.sqrt(n),
                            0.3 * rng.standard_normal(h),
                            rng.standard_normal(n * h) / np.sqrt(h),
                            0.3 * rng.standard_normal(n)])
    return Problem(
        dynamics=Dynamics(rhs=W2 * (W1 * z + b1).applyfunc(sp.tanh) + b2, state=z,
                          params=[W1, b1, W2, b2]),
        loss=((z.T * z)[0, 0] - 1) ** 2 / 4,
        z0=rng.uniform(-1, 1, (4, n)),
        theta=theta,
        times=np.array([0.0, 0.5, 1.0]),
        name="network",
        description="a Neural-ODE network f = W2 tanh(W1 z + b1) + b2 in matrix form, "
        f"{n} -> {h} -> {n}, 82 parameters",
    )


def _lotka_volterra() -> Problem:
    x, y = sp.symbols("x y")
    alpha, beta, delta, gamma = sp.symbols("alpha beta delta gamma")
    return Problem(
        dynamics=Dynamics(
            rhs=[alpha * x - beta * x * y, delta * x * y - gamma * y],
            state=(x, y),
            params=(alpha, beta, delta, gamma),
        ),
        loss=sp.Rational(1, 2) * ((x - 1) ** 2 + (y - 1) ** 2),
        z0=np.array([[1.0, 0.5], [1.5, 1.2]]),
        theta=np.array([1.1, 0.6, 0.5, 0.9]),
        times=np.array([0.0, 1.0, 2.0, 3.0]),
        name="lotka_volterra",
        description="predator-prey, x' = alpha x - beta x y, y' = delta x y - gamma y",
    )


def _van_der_pol() -> Problem:
    x, v = sp.symbols("x v")
    mu = sp.Symbol("mu")
    return Problem(
        dynamics=Dynamics(rhs=[v, mu * (1 - x**2) * v - x], state=(x, v), params=(mu,)),
        loss=sp.Rational(1, 2) * x**2 + sp.Rational(1, 4) * v**2,
        z0=np.array([[2.0, 0.0], [0.5, 0.5]]),
        theta=np.array([1.0]),
        times=np.array([0.0, 1.0, 2.0, 3.0]),
        name="van_der_pol",
        description="the van der Pol oscillator, x'' = mu (1 - x^2) x' - x",
    )


def _forced_oscillator() -> Problem:
    x, v = sp.symbols("x v")
    t = sp.Symbol("t")
    omega, c, F, Omega = sp.symbols("omega c F Omega")
    return Problem(
        dynamics=Dynamics(
            rhs=[v, -(omega**2) * x - c * v + F * sp.cos(Omega * t)],
            state=(x, v),
            params=(omega, c, F, Omega),
            time=t,
        ),
        loss=sp.Rational(1, 2) * (x**2 + v**2),
        z0=np.array([[1.0, 0.0], [-0.5, 0.8]]),
        theta=np.array([1.3, 0.2, 0.7, 2.1]),
        times=np.array([0.0, 0.7, 1.5, 2.5]),
        name="forced_oscillator",
        description="a damped oscillator driven by F cos(Omega t): time-dependent dynamics",
    )


def _contracting() -> Problem:
    z = sp.symbols("z0:2")
    w = sp.symbols("w0:4")
    W = sp.Matrix(2, 2, w)
    # eigenvalues -1 and -40 along rotated directions: the forward flow contracts, so the
    # backward reconstruction of z amplifies rounding by e^{39} over each unit interval.
    angle = 0.6
    R = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    A = R @ np.diag([-1.0, -40.0]) @ R.T
    return Problem(
        dynamics=Dynamics(rhs=W * sp.Matrix(z), state=z, params=W),
        loss=sp.Rational(1, 2) * (z[0] ** 2 + z[1] ** 2),
        z0=np.array([[1.0, 0.5], [0.2, -0.3]]),
        theta=A.reshape(-1),
        times=np.array([0.0, 1.0, 2.0]),
        name="contracting",
        description="f = W z with eigenvalues -1 and -40: the backsolve adjoint's "
        "reconstruction of z diverges",
        notes=("expected to fail: backsolve_adjoint",),
    )


# -- stiff problems: solve them with solver="rodas4" ---------------------------------------


def _robertson() -> Problem:
    y1, y2, y3 = sp.symbols("y1 y2 y3")
    k1, k2, k3 = sp.symbols("k1 k2 k3")
    return Problem(
        dynamics=Dynamics(
            rhs=[-k1 * y1 + k3 * y2 * y3,
                 k1 * y1 - k3 * y2 * y3 - k2 * y2**2,
                 k2 * y2**2],
            state=(y1, y2, y3),
            params=(k1, k2, k3),
        ),
        # y2 stays below 4e-5: weighted so that every species counts in the loss
        loss=sp.Rational(1, 2) * (y1**2 + (10**4 * y2) ** 2),
        z0=np.array([[1.0, 0.0, 0.0]]),
        theta=np.array([0.04, 3e7, 1e4]),
        times=np.concatenate([[0.0], 10.0 ** np.arange(-5, 6)]),
        name="robertson",
        description="Robertson's chemical kinetics, observed from t = 1e-5 to 1e5: stiff, "
        "use solver='rodas4'",
        notes=("stiff: explicit solvers run out of steps",
               "expected to fail: backsolve_adjoint"),
        tolerances=(1e-6, 1e-12),
    )


def _stiff_van_der_pol() -> Problem:
    x, v = sp.symbols("x v")
    mu = sp.Symbol("mu")
    return Problem(
        dynamics=Dynamics(rhs=[v, mu * (1 - x**2) * v - x], state=(x, v), params=(mu,)),
        loss=sp.Rational(1, 2) * (x**2 + v**2),
        z0=np.array([[2.0, 0.0], [1.9, 0.0]]),
        theta=np.array([1000.0]),
        # on the slow branch: the first relaxation jump comes near t = 800
        times=np.array([0.0, 50.0, 100.0, 200.0, 300.0]),
        name="stiff_van_der_pol",
        description="van der Pol with mu = 1000 on its slow branch: stiff, use "
        "solver='rodas4'",
        notes=("stiff: explicit solvers run out of steps",
               "expected to fail: backsolve_adjoint"),
        # at rtol 1e-9 the backward reconstruction's error (the fast mode, lost by the
        # L-stable backward steps) shows above the tolerance of 1e-6; at 1e-8 it is within
        # the tolerance of 1e-5, and backsolve passes
        tolerances=(1e-9, 1e-11),
    )


def _stiff_linear() -> Problem:
    z = sp.symbols("z0:2")
    w = sp.symbols("w0:4")
    W = sp.Matrix(2, 2, w)
    angle = 0.6
    R = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    A = R @ np.diag([-1.0, -1e4]) @ R.T
    return Problem(
        dynamics=Dynamics(rhs=W * sp.Matrix(z), state=z, params=W),
        loss=sp.Rational(1, 2) * (z[0] ** 2 + z[1] ** 2),
        z0=np.array([[1.0, 0.5], [0.2, -0.3]]),
        theta=A.reshape(-1),
        times=np.array([0.0, 1.0, 2.0, 5.0, 10.0]),
        name="stiff_linear",
        description="f = W z with eigenvalues -1 and -1e4 (exact reference: matrix "
        "exponential): stiff, use solver='rodas4'",
        notes=("stiff: explicit solvers run out of steps",
               "expected to fail: backsolve_adjoint"),
        # at rtol 1e-9 the backward reconstruction's error (the fast mode, lost by the
        # L-stable backward steps) shows above the tolerance of 1e-6; at 1e-8 it is within
        # the tolerance of 1e-5, and backsolve passes
        tolerances=(1e-9, 1e-11),
    )


#: name -> factory of the built-in problems.
BUILTIN_PROBLEMS: dict[str, Callable[[], Problem]] = {
    "linear": _seed_linear,
    "tanh": _tanh_layer,
    "lotka_volterra": _lotka_volterra,
    "van_der_pol": _van_der_pol,
    "forced_oscillator": _forced_oscillator,
    "network": _network,
    "contracting": _contracting,
    "robertson": _robertson,
    "stiff_van_der_pol": _stiff_van_der_pol,
    "stiff_linear": _stiff_linear,
}
#: The stiff built-in problems: audit them with solver="rodas4".
STIFF_PROBLEMS = ("robertson", "stiff_van_der_pol", "stiff_linear")

#: The problems ``adjoint-verify demo`` audits: every method is expected to pass on them.
DEMO_PROBLEMS = ("linear", "tanh", "lotka_volterra", "van_der_pol", "forced_oscillator",
                 "network")


def builtin_problem(name: str) -> Problem:
    """The built-in problem called ``name`` (see ``adjoint-verify list``)."""
    try:
        return BUILTIN_PROBLEMS[name]()
    except KeyError:
        raise KeyError(
            f"unknown problem {name!r}; the built-in problems are "
            f"{', '.join(BUILTIN_PROBLEMS)}"
        ) from None
