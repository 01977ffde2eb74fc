"""Butcher tableau identities: consistency, the order conditions up to each method's order
(in exact rational arithmetic, over every rooted tree), Dormand–Prince's embedded pair,
FSAL and continuous extension."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from helpers import ROUNDING, relative_error

from numeric import DOPRI5, TABLEAUS
from numeric._rk import Segment, rk_step
from verification._tolerances import EPS

# -- rooted trees and the order conditions (Hairer, Nørsett & Wanner, "Solving ODEs I", II.2)
# A tree is the sorted tuple of its subtrees; the single node is ().


def _trees(order: int) -> list[tuple]:
    """Every rooted tree with ``order`` nodes, each once."""
    if order == 1:
        return [()]
    found = set()
    for tree in _trees(order - 1):
        found.update(_add_leaf(tree))
    return sorted(found, key=repr)


def _add_leaf(tree: tuple) -> set[tuple]:
    """The trees made by hanging one new leaf on any node of ``tree``."""
    out = {tuple(sorted((*tree, ()), key=repr))}
    for i, child in enumerate(tree):
        for grown in _add_leaf(child):
            rest = tree[:i] + tree[i + 1 :]
            out.add(tuple(sorted((*rest, grown), key=repr)))
    return out


def _gamma(tree: tuple) -> int:
    """The density: order of the tree times the densities of its subtrees."""
    return _size(tree) * math.prod(_gamma(child) for child in tree)


def _size(tree: tuple) -> int:
    return 1 + sum(_size(child) for child in tree)


def _stage_weights(tree: tuple, a, c) -> list:
    """Phi_i(tree) = prod over subtrees u of sum_j a_ij Phi_j(u); Phi_i(.) = 1."""
    s = len(c)
    phi = [Fraction(1)] * s if isinstance(c[0], Fraction) else [1.0] * s
    for child in tree:
        inner = _stage_weights(child, a, c)
        phi = [phi[i] * sum(a[i][j] * inner[j] for j in range(s)) for i in range(s)]
    return phi


def _condition_residual(tree: tuple, a, b, c):
    """sum_i b_i Phi_i(tree) - 1 / gamma(tree): zero when the condition holds."""
    phi = _stage_weights(tree, a, c)
    return sum(b_i * phi_i for b_i, phi_i in zip(b, phi, strict=True)) - Fraction(
        1, _gamma(tree)
    )


def test_tree_counts():
    """1, 1, 2, 4, 9, 20 rooted trees of order 1..6 (OEIS A000081)."""
    assert [len(_trees(q)) for q in range(1, 7)] == [1, 1, 2, 4, 9, 20]


def _tableau_order_cases():
    for name, tableau in TABLEAUS.items():
        for q in range(1, tableau.order + 1):
            yield pytest.param(name, q, id=f"{name}-order{q}")


# -- consistency ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(TABLEAUS))
def test_exact_and_float_coefficients_agree(name):
    tableau = TABLEAUS[name]
    a, b, c = tableau.exact
    s = tableau.stages
    assert tableau.a.shape == (s, s)
    assert tableau.b.shape == (s,)
    assert tableau.c.shape == (s,)
    assert np.array_equal(tableau.a, np.array([[float(v) for v in row] for row in a]))
    assert np.array_equal(tableau.b, np.array([float(v) for v in b]))
    assert np.array_equal(tableau.c, np.array([float(v) for v in c]))


@pytest.mark.parametrize("name", list(TABLEAUS))
def test_weights_sum_to_one(name):
    tableau = TABLEAUS[name]
    _, b, _ = tableau.exact
    assert abs(sum(b) - 1) <= tableau.exact_residual


@pytest.mark.parametrize("name", list(TABLEAUS))
def test_row_sums_of_a_equal_c(name):
    tableau = TABLEAUS[name]
    a, _, c = tableau.exact
    misses = [abs(sum(row) - c_i) for row, c_i in zip(a, c, strict=True)]
    assert max(misses) <= tableau.exact_residual
    assert [sum(row) for row in tableau.a] == pytest.approx(tableau.c, rel=0, abs=4 * EPS)


def test_only_published_decimals_carry_a_residual():
    """Every tableau is exact in rationals except Tsitouras's, published as 86-digit
    decimals, whose identities hold to 1e-80."""
    inexact = {name for name, t in TABLEAUS.items() if t.exact_residual}
    assert inexact == {"tsit5"}
    assert TABLEAUS["tsit5"].exact_residual <= Fraction(1, 10**80)


@pytest.mark.parametrize("name", list(TABLEAUS))
def test_a_is_strictly_lower_triangular(name):
    a, _, _ = TABLEAUS[name].exact
    assert all(a[i][j] == 0 for i in range(len(a)) for j in range(i, len(a)))
    assert np.array_equal(np.triu(TABLEAUS[name].a), np.zeros_like(TABLEAUS[name].a))


# -- order ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "q"), list(_tableau_order_cases()))
def test_order_conditions(name, q):
    """Every condition sum_i b_i Phi_i(tree) = 1/gamma(tree) of order q holds exactly.

    Order 2: sum b c = 1/2. Order 3: sum b c^2 = 1/3, b^T A c = 1/6. Order 4: the four
    conditions sum b c^3 = 1/4, sum b c A c = 1/8, b^T A c^2 = 1/12, b^T A A c = 1/24.
    """
    tableau = TABLEAUS[name]
    a, b, c = tableau.exact
    failing = {repr(tree): _condition_residual(tree, a, b, c) for tree in _trees(q)}
    failing = {tree: float(r) for tree, r in failing.items()
               if abs(r) > tableau.exact_residual}
    assert not failing, f"{name}: order-{q} conditions fail (tree: residual) {failing}"


def test_classic_order_conditions_written_out_for_rk4():
    """The same conditions, written out by hand, as a check on the tree enumeration."""
    a, b, c = (np.array(x, dtype=object) for x in TABLEAUS["rk4"].exact)
    assert sum(b * c) == Fraction(1, 2)
    assert sum(b * c**2) == Fraction(1, 3)
    assert b @ (a @ c) == Fraction(1, 6)
    assert sum(b * c**3) == Fraction(1, 4)
    assert sum(b * c * (a @ c)) == Fraction(1, 8)
    assert b @ (a @ c**2) == Fraction(1, 12)
    assert b @ (a @ (a @ c)) == Fraction(1, 24)


@pytest.mark.parametrize("name", list(TABLEAUS))
def test_stated_order_is_not_understated(name):
    """Some condition of order ``tableau.order + 1`` fails: the order is exactly as stated."""
    tableau = TABLEAUS[name]
    a, b, c = tableau.exact
    residuals = [_condition_residual(tree, a, b, c) for tree in _trees(tableau.order + 1)]
    assert any(abs(r) > tableau.exact_residual for r in residuals)


def test_kutta_three_eighths_differs_from_classical_rk4():
    """Same order, different method: the 3/8 rule is not classical RK4 in any coefficient
    row, so a discrete reference must know which one a library runs."""
    assert not np.array_equal(TABLEAUS["rk4_38"].a, TABLEAUS["rk4"].a)
    assert not np.array_equal(TABLEAUS["rk4_38"].b, TABLEAUS["rk4"].b)
    assert TABLEAUS["rk4_38"].order == TABLEAUS["rk4"].order == 4


def test_ralston_is_the_two_thirds_method():
    """Ralston's minimal-error second-order method has c_2 = 2/3, b = (1/4, 3/4)."""
    _, b, c = TABLEAUS["ralston"].exact
    assert c[1] == Fraction(2, 3) and list(b) == [Fraction(1, 4), Fraction(3, 4)]


# -- Dormand–Prince: embedded pair, FSAL, dense output -------------------------------------


def _float_residuals(tree, a, b, c) -> float:
    return abs(float(_condition_residual(tree, a, b, c)))


@pytest.mark.parametrize("q", [1, 2, 3, 4])
def test_dopri5_embedded_weights_have_order_4(q):
    b_hat = DOPRI5.b - DOPRI5.b_err
    residuals = [_float_residuals(tree, DOPRI5.a, b_hat, DOPRI5.c) for tree in _trees(q)]
    assert max(residuals) <= ROUNDING


def test_dopri5_embedded_weights_are_not_order_5():
    """Otherwise the error estimate b_err would vanish to leading order."""
    b_hat = DOPRI5.b - DOPRI5.b_err
    residuals = [_float_residuals(tree, DOPRI5.a, b_hat, DOPRI5.c) for tree in _trees(5)]
    assert max(residuals) > ROUNDING
    assert DOPRI5.error_order == 4
    assert DOPRI5.adaptive


def test_dopri5_fsal():
    a, b, _ = DOPRI5.exact
    assert DOPRI5.fsal
    assert list(a[-1][:-1]) == list(b[:-1])
    assert b[-1] == 0
    assert DOPRI5.c[-1] == 1.0


def test_dopri5_dense_output_at_one_reproduces_the_step_weights():
    """dense[i] @ [1, 1, 1, 1] = b_i: the interpolant at x = 1 is the step's result."""
    assert DOPRI5.dense.shape == (7, 4)
    assert relative_error(DOPRI5.dense.sum(axis=1), DOPRI5.b) <= ROUNDING


@pytest.mark.parametrize("q", [1, 2, 3, 4])
def test_dopri5_dense_output_has_order_4(q):
    """For every x: sum_i b_i(x) Phi_i(tree) = x^q / gamma(tree), b_i(x) = dense[i] @ x^(1..4).

    Compared coefficient by coefficient in the powers of x.
    """
    for tree in _trees(q):
        phi = np.array([float(v) for v in _stage_weights(tree, *DOPRI5.exact[::2])])
        coefficients = phi @ DOPRI5.dense  # of x, x^2, x^3, x^4
        expected = np.zeros(4)
        expected[q - 1] = 1.0 / _gamma(tree)
        assert np.max(np.abs(coefficients - expected)) <= ROUNDING, repr(tree)


def _one_step_segment(name: str) -> tuple[Segment, np.ndarray, np.ndarray, float, float]:
    """One step of a nonlinear, time-dependent problem, as a dense-output Segment."""

    def rhs(t, y):
        return np.stack([np.sin(t) * y[:, 1] - y[:, 0] ** 2, np.cos(y[:, 0]) + t], axis=1)

    y0 = np.array([[0.4, -0.3], [1.1, 0.7]])
    t0, h = 0.25, 0.2
    tableau = TABLEAUS[name]
    y1, k = rk_step(rhs, t0, y0, h, tableau)
    segment = Segment(
        ts=np.array([t0, t0 + h]),
        ys=np.stack([y0, y1]),
        ks=k[None],
        tableau=tableau,
        f_end=rhs(t0 + h, y1),
    )
    return segment, y0, y1, t0, h


@pytest.mark.parametrize("name", list(TABLEAUS))
def test_dense_output_at_the_step_ends(name):
    segment, y0, y1, t0, h = _one_step_segment(name)
    assert np.array_equal(segment.evaluate(t0), y0)
    assert relative_error(segment.evaluate(t0 + h), y1) <= ROUNDING


def test_dopri5_step_uses_the_weights_b():
    """The FSAL form of the step (row a[-1]) equals z + h sum b_i k_i."""
    segment, y0, y1, _, h = _one_step_segment("dopri5")
    by_b = y0 + h * np.tensordot(DOPRI5.b, segment.ks[0], axes=1)
    assert relative_error(y1, by_b) <= ROUNDING
