"""Butcher tableaus of the explicit Runge–Kutta methods, as data."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from fractions import Fraction as F

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "BOSH3",
    "DOPRI5",
    "EULER",
    "FIXED_STEP_SOLVERS",
    "HEUN",
    "HEUN3",
    "MIDPOINT",
    "RALSTON",
    "RK4",
    "RK4_38",
    "TABLEAUS",
    "TSIT5",
    "ButcherTableau",
]


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
    exact_residual : Fraction
        How far the identities of the method (row sums of ``a`` equal ``c``, the order
        conditions) may miss in the ``exact`` coefficients: 0 where they are the method's
        rational coefficients; for a method published as decimals (``tsit5``), the
        decimals' precision times the size of the sums involved.
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
    exact_residual: F = F(0)

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

# Kutta (1901), the "3/8 rule": torchdiffeq's fixed-grid "rk4" (and the starter of its
# "explicit_adams"). On linear autonomous f every 4-stage method of order 4 gives the same
# step (the Taylor polynomial of e^{hA}), so only nonlinear f tells it from classical RK4.
RK4_38 = _tableau(
    "rk4_38",
    a=[[], [F(1, 3)], [F(-1, 3), 1], [1, -1, 1]],
    b=[F(1, 8), F(3, 8), F(3, 8), F(1, 8)],
    c=[0, F(1, 3), F(2, 3), 1],
    order=4,
)

# Heun's second-order method (the explicit trapezoidal rule): diffrax's `Heun`.
HEUN = _tableau("heun", a=[[], [1]], b=[F(1, 2), F(1, 2)], c=[0, 1], order=2)

# Heun's third-order method (c = 0, 1/3, 2/3; b = 1/4, 0, 3/4): torchdiffeq's "heun3".
HEUN3 = _tableau(
    "heun3",
    a=[[], [F(1, 3)], [0, F(2, 3)]],
    b=[F(1, 4), 0, F(3, 4)],
    c=[0, F(1, 3), F(2, 3)],
    order=3,
)

# Ralston (1962): the two-stage method of order 2 with minimal truncation-error bound,
# c_2 = 2/3 (not the c_2 = 3/4 variant often printed under the same name): diffrax's `Ralston`.
RALSTON = _tableau("ralston", a=[[], [F(2, 3)]], b=[F(1, 4), F(3, 4)], c=[0, F(2, 3)], order=2)

# Bogacki & Shampine (1989), the third-order solution of their 3(2) pair, used with a
# constant step: diffrax's `Bosh3`. Its fourth (FSAL) stage only serves the error estimate.
BOSH3 = _tableau(
    "bosh3",
    a=[[], [F(1, 2)], [0, F(3, 4)]],
    b=[F(2, 9), F(1, 3), F(4, 9)],
    c=[0, F(1, 2), F(3, 4)],
    order=3,
)

# Tsitouras (2011), "Runge–Kutta pairs of order 5(4) satisfying only the first column
# simplifying assumption", Comput. Math. Appl. 62: the fifth-order solution, used with a
# constant step (diffrax's `Tsit5` under a constant-step controller). The paper's free
# parameters are c_2 = 0.161, c_3 = 0.327, c_4 = 0.9 and c_5 below; the other coefficients
# solve the order conditions and are published as 86-digit decimals, which we keep as exact
# fractions of those decimals: the order conditions hold to ~1e-84, not exactly. The
# seventh (FSAL) stage of the pair only serves the error estimate.
_TS_C5 = F("0.98002554090450968572981028628702459549421379795630"
           "24768854764293221195950761080302604")
_TS_A = [
    [],
    [F(161, 1000)],
    [F("-0.008480655492356988544426874250230774675121177393430391537369234245294192976164141156943"),
     F("0.3354806554923569885444268742502307746751211773934303915373692342452941929761641411569")],
    [F("2.897153057105493432130432594192938764924887287701866490314866693455023795137503079289"),
     F("-6.359448489975074843148159912383825625952700647415626703305928850207288721235210244366"),
     F("4.362295432869581411017727318190886861027813359713760212991062156752264926097707165077")],
    [F("5.325864828439256604428877920840511317836476253097040101202360397727981648835607691791"),
     F("-11.74888356406282787774717033978577296188744178259862899288666928009020615663593781589"),
     F("7.495539342889836208304604784564358155658679161518186721010132816213648793440552049753"),
     F("-0.09249506636175524925650207933207191611349983406029535244034750452930469056411389539635")],
    [F("5.861455442946420028659251486982647890394337666164814434818157239052507339770711679748"),
     F("-12.92096931784710929170611868178335939541780751955743459166312250439928519268343184452"),
     F("8.159367898576158643180400794539253485181918321135053305748355423955009222648673734986"),
     F("-0.07158497328140099722453054252582973869127213147363544882721139659546372402303777878835"),
     F("-0.02826905039406838290900305721271224146717633626879770007617876201276764571291579142206")],
]
_TS_B = [
    F("0.09646076681806522951816731316512876333711995238157997181903319145764851595234062815396"),
    F(1, 100),
    F("0.4798896504144995747752495322905965199130404621990332488332634944254542060153074523509"),
    F("1.379008574103741893192274821856872770756462643091360525934940067397245698027561293331"),
    F("-3.290069515436080679901047585711363850115683290894936158531296799594813811049925401677"),
    F("2.324710524099773982415355918398765796109060233222962411944060046314465391054716027841"),
]
TSIT5 = _tableau(
    "tsit5",
    a=_TS_A,
    b=_TS_B,
    # c_i as published; sum_j a_ij equals them to the decimals' precision
    c=[0, F(161, 1000), F(327, 1000), F(9, 10), _TS_C5, 1],
    order=5,
    # 86 significant digits (~1e-86 relative) times sums of up to ~1e4 in size: the
    # residuals to order 5 are ~7e-83, those of order 6 ~2e-4
    exact_residual=F(1, 10**80),
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
TABLEAUS: dict[str, ButcherTableau] = {
    t.name: t
    for t in (EULER, MIDPOINT, RK4, DOPRI5, RK4_38, HEUN, HEUN3, RALSTON, BOSH3, TSIT5)
}
#: The fixed-step solvers: ``steps`` equal steps per observation interval.
FIXED_STEP_SOLVERS = tuple(name for name, t in TABLEAUS.items() if not t.adaptive)
