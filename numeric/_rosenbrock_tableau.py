"""The coefficients of Rodas4, the stiffly accurate L-stable Rosenbrock method, as data.

A Rosenbrock method (Hairer & Wanner, "Solving ODEs II", IV.7) with ``s`` stages solves,
for :math:`J = \\partial f/\\partial z(t_k, z_k)`,

.. math:: (I - h\\gamma J) k_i = h f\\Big(t_k + \\alpha_i h,\\ z_k + \\sum_{j<i}
          \\alpha_{ij} k_j\\Big) + h J \\sum_{j<i} \\gamma_{ij} k_j
          + h^2 \\gamma_i \\frac{\\partial f}{\\partial t}, \\qquad
          z_{k+1} = z_k + \\sum_i b_i k_i

with :math:`\\alpha_i = \\sum_j \\alpha_{ij}` and :math:`\\gamma_i = \\sum_{j \\le i}
\\gamma_{ij}` (:math:`\\gamma_{ii} = \\gamma`). The code steps in the equivalent form that
needs no product with :math:`J`: with :math:`\\Gamma = (\\gamma_{ij})` and
:math:`u = \\Gamma k`,

.. math:: \\Big(\\frac{I}{h\\gamma} - J\\Big) u_i = f\\Big(t_k + \\alpha_i h,\\ z_k +
          \\sum_{j<i} a_{ij} u_j\\Big) + \\sum_{j<i} \\frac{c_{ij}}{h} u_j
          + h \\gamma_i \\frac{\\partial f}{\\partial t}, \\qquad
          z_{k+1} = z_k + \\sum_i m_i u_i

where :math:`(a_{ij}) = (\\alpha_{ij}) \\Gamma^{-1}`, :math:`(c_{ij}) =
\\mathrm{diag}(\\gamma^{-1}) - \\Gamma^{-1}` and :math:`m = b^T \\Gamma^{-1}`.

Where the numbers come from
---------------------------
Hairer & Wanner's RODAS (``rodas.f``, coefficient set 1) fixes :math:`\\gamma = 1/4`,
:math:`\\alpha_2, \\alpha_3, \\alpha_4 = 0.386, 0.21, 0.63` and
:math:`\\beta'_2, \\beta'_3, \\beta'_4 = 0.0317, 0.0635, 0.3438`
(:math:`\\beta'_i = \\sum_{j<i} (\\alpha_{ij} + \\gamma_{ij})`); the other coefficients
follow from the conditions the tests check: order 4, an embedded method of order 3,
both stiffly accurate (:math:`b_j = \\beta_{6j}`, :math:`\\hat b_j = \\alpha_{6j} =
\\beta_{5j}`), :math:`\\alpha_5 = \\alpha_6 = 1`, :math:`\\gamma_5 = \\gamma_6 = 0`, the two
order-5 conditions of the bushy trees, and the index-1 DAE conditions. ``rodas.f``
prints them to 16 digits, so its order conditions hold to about 1e-15; the values here
solve the same conditions to 40 digits (Newton's method in mpmath, started from
``rodas.f``'s values), so the conditions hold to 1e-38 and the float64 coefficients are
correctly rounded. They agree with ``rodas.f`` to its 16 digits (tested).

The continuous extension (order 3, also ``rodas.f``'s form) is

.. math:: z(t_k + \\theta h) = (1 - \\theta) z_k + \\theta \\big(z_{k+1} + (1 - \\theta)
          (D_2 + \\theta D_3)\\big), \\qquad D_r = \\sum_{j \\le 5} h_{rj} u_j,

whose ten weights solve the ten linear conditions for order 3 and for the algebraic
component of an index-1 DAE.

References
----------
E. Hairer, G. Wanner, "Solving Ordinary Differential Equations II: Stiff and
Differential-Algebraic Problems", 2nd ed., Springer 1996, Sections IV.7 (Rosenbrock
methods, the transformed form, RODAS) and VI.3 (order conditions for index-1 DAEs).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction

import numpy as np
from numpy.typing import NDArray

__all__ = ["RODAS4", "RODAS4_FIXED_STEP", "RosenbrockTableau", "is_rosenbrock"]


@dataclass(frozen=True, eq=False)
class RosenbrockTableau:
    r"""A Rosenbrock method with an embedded error estimate and a continuous extension.

    Attributes
    ----------
    name : str
    gamma : float
        The diagonal :math:`\gamma`.
    alpha : ndarray, shape (s, s)
        Strictly lower triangular :math:`\alpha_{ij}`.
    gammas : ndarray, shape (s, s)
        Lower triangular :math:`\gamma_{ij}` with :math:`\gamma` on the diagonal.
    b, b_hat : ndarray, shape (s,)
        Weights of the solution and of the embedded solution (in the stages ``k``).
    c : ndarray, shape (s,)
        Stage times :math:`\alpha_i`.
    d : ndarray, shape (s,)
        Time-derivative weights :math:`\gamma_i`.
    a, c_matrix : ndarray, shape (s, s)
        The transformed stage coefficients :math:`a_{ij}`, :math:`c_{ij}`.
    m, m_err : ndarray, shape (s,)
        Weights of the solution and of the error estimate in the transformed stages ``u``.
    dense : ndarray, shape (2, s)
        Rows :math:`h_{2j}`, :math:`h_{3j}` of the continuous extension.
    order, error_order : int
        Order of the solution and of the embedded solution.
    adaptive : bool
        Step-size control (True) or equal steps per interval (the fixed-step mode).
    exact : dict
        The 40-digit decimal data as ``Fraction``: ``alpha``, ``gammas``, ``b``, ``b_hat``
        (lists of rows or lists), ``dense`` (two rows).
    """

    name: str
    gamma: float
    alpha: NDArray
    gammas: NDArray
    b: NDArray
    b_hat: NDArray
    c: NDArray
    d: NDArray
    a: NDArray
    c_matrix: NDArray
    m: NDArray
    m_err: NDArray
    dense: NDArray
    order: int
    error_order: int
    adaptive: bool = True
    exact: dict = field(default_factory=dict, repr=False)

    #: A Rosenbrock method needs the Jacobian of the system it integrates.
    implicit = True

    @property
    def stages(self) -> int:
        return len(self.b)


def is_rosenbrock(tableau) -> bool:
    """Whether a solver's tableau is a Rosenbrock method (the stiff integrators)."""
    return isinstance(tableau, RosenbrockTableau)


def _lower(rows, s: int, diagonal: Fraction | None = None) -> list[list[Fraction]]:
    full = [[Fraction(0)] * s for _ in range(s)]
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            full[i][j] = Fraction(value)
        if diagonal is not None:
            full[i][i] = diagonal
    return full


def _inverse_lower(matrix: list[list[Fraction]]) -> list[list[Fraction]]:
    """Exact inverse of a lower triangular matrix by forward substitution."""
    s = len(matrix)
    inverse = [[Fraction(0)] * s for _ in range(s)]
    for col in range(s):
        for i in range(col, s):
            rest = sum((matrix[i][k] * inverse[k][col] for k in range(col, i)), Fraction(0))
            inverse[i][col] = ((1 if i == col else 0) - rest) / matrix[i][i]
    return inverse


def _floats(rows) -> NDArray:
    return np.array([[float(v) for v in row] for row in rows], dtype=np.float64)


def _rosenbrock(name, gamma, alpha, gammas, b, b_hat, dense, order, error_order):
    s = len(b)
    gamma = Fraction(gamma)
    alpha_f = _lower(alpha, s)
    gammas_f = _lower(gammas, s, diagonal=gamma)
    b_f, b_hat_f = [Fraction(v) for v in b], [Fraction(v) for v in b_hat]
    inverse = _inverse_lower(gammas_f)
    a = [[sum((alpha_f[i][k] * inverse[k][j] for k in range(s)), Fraction(0))
          for j in range(s)] for i in range(s)]
    c_matrix = [[(1 / gamma if i == j else 0) - inverse[i][j] for j in range(s)]
                for i in range(s)]
    m = [sum((b_f[k] * inverse[k][j] for k in range(s)), Fraction(0)) for j in range(s)]
    m_hat = [sum((b_hat_f[k] * inverse[k][j] for k in range(s)), Fraction(0))
             for j in range(s)]
    dense_f = [[Fraction(v) for v in row] + [Fraction(0)] * (s - len(row)) for row in dense]
    return RosenbrockTableau(
        name=name,
        gamma=float(gamma),
        alpha=_floats(alpha_f),
        gammas=_floats(gammas_f),
        b=np.array([float(v) for v in b_f]),
        b_hat=np.array([float(v) for v in b_hat_f]),
        c=np.array([float(sum(row)) for row in alpha_f]),
        d=np.array([float(sum(row)) for row in gammas_f]),
        a=_floats(a),
        c_matrix=_floats([[v if j < i else 0 for j, v in enumerate(row)]
                          for i, row in enumerate(c_matrix)]),
        m=np.array([float(v) for v in m]),
        m_err=np.array([float(x - y) for x, y in zip(m, m_hat, strict=True)]),
        dense=_floats(dense_f),
        order=order,
        error_order=error_order,
        exact={"alpha": alpha_f, "gammas": gammas_f, "b": b_f, "b_hat": b_hat_f,
               "dense": dense_f},
    )


# Rows 2..6 of alpha_ij and gamma_ij (j < i), 40 significant digits.
_ALPHA = [
    [],
    ["0.386"],
    ["0.1460747075254354709077824357970004534102",
     "0.06392529247456452909221756420299954658981"],
    ["-0.3308115036677279187053187865621187820143",
     "0.7111510251682827372784925877374970926831",
     "0.2496604784994451814268261988246216893312"],
    ["-4.552557186318030058420265423154914558650",
     "1.710181363241330411278946328015955762637",
     "4.014347332103173431055041396742346884569",
     "-0.1719715090264737839137223016033880885565"],
    ["2.428633765466986035911342637049208412433",
     "-0.3827487337647842713662445620416820013968",
     "-1.855720330929577695515214665730677486830",
     "0.5598352992273759309701165907231510757941",
     "0.25"],
]
_GAMMAS = [
    [],
    ["-0.3543"],
    ["-0.1336025052681929852097782914985354065191",
     "-0.01289749473180701479022170850146459348095"],
    ["1.526849173006465004135982219370420268558",
     "-0.5336562887504553284627359011208478322534",
     "-1.279392884256009675673246318249572436305"],
    ["6.981190951785016094331608060204122971082",
     "-2.092930097006114682645190890057637764033",
     "-5.870067663032751126570256062473024371400",
     "0.7318068082538497148838388923265391643506"],
    ["-2.080189494180932821094421053573303083456",
     "0.5957623556766823090869800091610918480132",
     "1.701617798267258706069163587143762592227",
     "-0.08851451983587983385731844651557848695037",
     "-0.3786761399271283602044040962159728698332"],
]
_B = ["0.3484442712860532148169215834759053289766",
      "0.2130136219118980377207354471194098466164",
      "-0.1541025326623189894460510785869148946036",
      "0.4713207793914960971127981442075725888437",
      "-0.1286761399271283602044040962159728698332",
      "0.25"]
_B_HAT = _ALPHA[5] + ["0"]
_DENSE = [
    ["10.12623508344691205709134621774984940971",
     "-7.487995877607633133323634619894111057621",
     "-34.80091861555741139791663438824603908150",
     "-7.992771707568727337179005908592456055164",
     "1.025137723295620644395805647149506134746"],
    ["-0.6762803392806897770286597359671161843341",
     "6.087714651678606446194334691957369595296",
     "16.43084320892463064688438342967802054358",
     "24.76722511418365125296407852510338208253",
     "-6.594389125716781611244460448890686707491"],
]

RODAS4 = _rosenbrock("rodas4", Fraction(1, 4), _ALPHA, _GAMMAS, _B, _B_HAT, _DENSE,
                     order=4, error_order=3)
#: Rodas4 with equal steps per observation interval and no error control: the discrete map
#: whose convergence at order 4 a study can observe (``solver="rodas4", steps=N``).
RODAS4_FIXED_STEP = replace(RODAS4, adaptive=False)
