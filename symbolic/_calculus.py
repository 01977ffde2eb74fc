"""Derivatives for real-valued dynamics."""

from __future__ import annotations

from collections.abc import Sequence

import sympy as sp

from ._dynamics import DynamicsError, check_defined

__all__ = ["almost_everywhere", "real_jacobian"]

#: Functions whose derivative is zero wherever it exists (they are piecewise constant).
_STEPS = (sp.floor, sp.ceiling)


def _without_integer_parts(expr: sp.Expr) -> sp.Expr:
    """``frac`` and ``Mod`` written with ``floor``, whose derivative is known to be zero
    almost everywhere (SymPy leaves theirs unevaluated)."""
    return expr.replace(sp.frac, lambda g: g - sp.floor(g)).replace(
        sp.Mod, lambda u, m: u - m * sp.floor(u / m)
    )


def almost_everywhere(derivative: sp.Expr) -> sp.Expr:
    """A derivative as the function it equals away from the switching surfaces.

    ``d Heaviside(g) = DiracDelta(g) g'`` and ``d sign(g) = 2 DiracDelta(g) g'`` are zero
    wherever ``g != 0``; ``floor`` and ``ceiling`` have derivative zero wherever ``g`` is
    not an integer. At the surfaces themselves the derivative does not exist: the numerics
    find where a trajectory meets them and refuse or say so (MATH.md, "Non-smooth and
    discontinuous dynamics").

    Raises
    ------
    DynamicsError
        A derivative SymPy cannot evaluate remains.
    """
    derivative = derivative.replace(sp.DiracDelta, lambda *args: sp.S.Zero)
    derivative = derivative.replace(
        lambda e: isinstance(e, sp.Derivative) and isinstance(e.expr, _STEPS),
        lambda e: sp.S.Zero,
    )
    left = derivative.atoms(sp.Derivative)
    if left:
        raise DynamicsError(
            f"SymPy cannot differentiate {sorted(str(d.expr) for d in left)[0]} (its derivative "
            "stays unevaluated); write the function with elementary functions, Abs, Max, Min, "
            "Heaviside, sign, floor or Piecewise."
        )
    return derivative


def real_jacobian(exprs: Sequence[sp.Expr] | sp.MatrixBase, wrt: Sequence[sp.Symbol]) -> sp.Matrix:
    """The Jacobian of ``exprs`` with respect to ``wrt``, every symbol taken as real.

    SymPy treats a plain Symbol as complex, so ``diff(Abs(x), x)`` contains
    ``Derivative(re(x), x)``, which cannot be compiled. Neural-ODE states, parameters and
    time are real: substituting real dummies before differentiating gives ``sign(x)``.
    Derivatives of switches are taken away from their surfaces (:func:`almost_everywhere`).
    """
    exprs = sp.Matrix([_without_integer_parts(e) for e in exprs])
    wrt = list(wrt)
    if not wrt:
        return sp.zeros(exprs.rows, 0)
    symbols = set(wrt).union(*(e.free_symbols for e in exprs))
    reals = {s: sp.Dummy(s.name, real=True) for s in symbols if s.is_real is not True}
    jac = exprs.xreplace(reals).jacobian([reals.get(s, s) for s in wrt])
    jac = jac.xreplace({v: k for k, v in reals.items()}).applyfunc(almost_everywhere)
    check_defined(jac, f"the derivative of {list(exprs)} with respect to {wrt}")
    return jac
