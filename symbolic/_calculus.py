"""Derivatives for real-valued dynamics."""

from __future__ import annotations

from collections.abc import Sequence

import sympy as sp

__all__ = ["real_jacobian"]


def real_jacobian(exprs: Sequence[sp.Expr] | sp.MatrixBase, wrt: Sequence[sp.Symbol]) -> sp.Matrix:
    """The Jacobian of ``exprs`` with respect to ``wrt``, every symbol taken as real.

    SymPy treats a plain Symbol as complex, so ``diff(Abs(x), x)`` contains
    ``Derivative(re(x), x)``, which cannot be compiled. Neural-ODE states, parameters and
    time are real: substituting real dummies before differentiating gives ``sign(x)``.
    """
    exprs = sp.Matrix(list(exprs))
    wrt = list(wrt)
    if not wrt:
        return sp.zeros(exprs.rows, 0)
    symbols = set(wrt).union(*(e.free_symbols for e in exprs))
    reals = {s: sp.Dummy(s.name, real=True) for s in symbols if s.is_real is not True}
    jac = exprs.xreplace(reals).jacobian([reals.get(s, s) for s in wrt])
    return jac.xreplace({v: k for k, v in reals.items()})
