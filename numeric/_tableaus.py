"""Butcher tableaus of the explicit Runge–Kutta methods, as data."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from fractions import Fraction as F

import numpy as np
from numpy.typing import NDArray

__all__ = ["DOPRI5", "EULER", "MIDPOINT", "RK4", "TABLEAUS", "ButcherTableau"]


def _array(rows) -> NDArray:
    return np.array([[float(x) for x in row] for row in rows], dtype=np.float64)


@dataclass(frozen=True, eq=False)
class ButcherTableau:
    r"""An explicit Runge–Kutta method.

    .. math:: k_i = f(z + h \sum_{j<i} a_{ij} k_j,\ t + c_i h), \qquad
              z_+ = z + h \sum_i b_i k_i

    Attributes
    ----------
    name : str
    a : ndarray, shape (s, s)
        Strictly lower triangular stage coefficients.
    b : ndarray, shape (s,)
        Weights of the propagated solution.
    c : ndarray, shape (s,)
        Nodes; ``c[i] == a[i].sum()``.
    order : int
        Order of the propagated solution.
    b_err : ndarray, shape (s,), optional
        Weights of the embedded error estimate (``b - b_hat``), for adaptive methods.
    error_order : int
        Order of the embedded solution (the error exponent is ``1 / (error_order + 1)``).
    fsal : bool
        The last stage is the first stage of the next step ("first same as last").
    dense : ndarray, shape (s, d), optional
        Continuous extension: ``z(t + x h) = z + h * sum_i k_i * (dense[i] @ [x, x^2, ...])``.
    exact : tuple of tuple of Fraction
        The rational coefficients ``(a, b, c)`` the float arrays were made from.
    """

    name: str
    a: NDArray
    b: NDArray
    c: NDArray
    order: int
    b_err: NDArray | None = None
    error_order: int = 0
    fsal: bool = False
    dense: NDArray | None = None
    exact: tuple = field(default=(), repr=False)

    @property
    def stages(self) -> int:
        return len(self.b)

    @property
    def adaptive(self) -> bool:
        return self.b_err is not None

    @functools.cached_property
    def plan(self) -> StagePlan:
        """The nonzero coefficients, for loops that skip the zeros."""
        s = self.stages
        return StagePlan(
            a=tuple(tuple((j, float(self.a[i, j])) for j in range(i) if self.a[i, j] != 0)
                    for i in range(s)),
            b=tuple((i, float(self.b[i])) for i in range(s) if self.b[i] != 0),
            b_err=() if self.b_err is None else tuple(
                (i, float(self.b_err[i])) for i in range(s) if self.b_err[i] != 0),
        )


@dataclass(frozen=True)
class StagePlan:
    """Nonzero tableau entries as ``(index, value)`` pairs: ``a[i]`` for stage ``i``."""

    a: tuple
    b: tuple
    b_err: tuple


def _tableau(name, a, b, c, order, **kwargs) -> ButcherTableau:
    s = len(b)
    a_full = [[F(0)] * s for _ in range(s)]
    for i, row in enumerate(a):
        for j, value in enumerate(row):
            a_full[i][j] = F(value)
    b = [F(x) for x in b]
    c = [F(x) for x in c]
    return ButcherTableau(
        name=name,
        a=_array(a_full),
        b=np.array([float(x) for x in b]),
        c=np.array([float(x) for x in c]),
        order=order,
        exact=(tuple(tuple(r) for r in a_full), tuple(b), tuple(c)),
        **kwargs,
    )


EULER = _tableau("euler", a=[[0]], b=[1], c=[0], order=1)

MIDPOINT = _tableau(
    "midpoint", a=[[], [F(1, 2)]], b=[0, 1], c=[0, F(1, 2)], order=2
)

RK4 = _tableau(
    "rk4",
    a=[[], [F(1, 2)], [0, F(1, 2)], [0, 0, 1]],
    b=[F(1, 6), F(1, 3), F(1, 3), F(1, 6)],
    c=[0, F(1, 2), F(1, 2), 1],
    order=4,
)

# Dormand & Prince (1980), the 5(4) pair with FSAL; dense output of order 4 from
# Hairer, Nørsett & Wanner, "Solving ODEs I", II.6 (Shampine's continuous extension).
_DP_B = [F(35, 384), 0, F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84), 0]
_DP_B_HAT = [
    F(5179, 57600), 0, F(7571, 16695), F(393, 640), F(-92097, 339200), F(187, 2100), F(1, 40)
]
_DP_DENSE = [
    [1, F(-8048581381, 2820520608), F(8663915743, 2820520608), F(-12715105075, 11282082432)],
    [0, 0, 0, 0],
    [0, F(131558114200, 32700410799), F(-68118460800, 10900136933),
     F(87487479700, 32700410799)],
    [0, F(-1754552775, 470086768), F(14199869525, 1410260304), F(-10690763975, 1880347072)],
    [0, F(127303824393, 49829197408), F(-318862633887, 49829197408),
     F(701980252875, 199316789632)],
    [0, F(-282668133, 205662961), F(2019193451, 616988883), F(-1453857185, 822651844)],
    [0, F(40617522, 29380423), F(-110615467, 29380423), F(69997945, 29380423)],
]

DOPRI5 = _tableau(
    "dopri5",
    a=[
        [],
        [F(1, 5)],
        [F(3, 40), F(9, 40)],
        [F(44, 45), F(-56, 15), F(32, 9)],
        [F(19372, 6561), F(-25360, 2187), F(64448, 6561), F(-212, 729)],
        [F(9017, 3168), F(-355, 33), F(46732, 5247), F(49, 176), F(-5103, 18656)],
        _DP_B[:6],
    ],
    b=_DP_B,
    c=[0, F(1, 5), F(3, 10), F(4, 5), F(8, 9), 1, 1],
    order=5,
    b_err=np.array([float(x - y) for x, y in zip(_DP_B, _DP_B_HAT, strict=False)]),
    error_order=4,
    fsal=True,
    dense=_array(_DP_DENSE),
)

#: The solvers by the name ``solve`` and ``gradient`` take.
TABLEAUS: dict[str, ButcherTableau] = {t.name: t for t in (EULER, MIDPOINT, RK4, DOPRI5)}
