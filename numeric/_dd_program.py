r"""SymPy expressions evaluated in double-double arithmetic, with forward-mode tangents.

:class:`ExpressionProgram` reads SymPy expression trees once (it builds none) and keeps
them as a list of double-double operations, equal subexpressions computed once. Called on
values of its leaves it returns the expressions' values; given tangents of the leaves as
well it returns the directional derivatives, by the chain rule node by node (dual numbers):

.. math:: (u + v)' = u' + v', \quad (u v)' = u' v + u v', \quad (u^n)' = n u^{n-1} u',
          \quad \tanh(u)' = (1 - \tanh u)(1 + \tanh u)\, u', \ \dots

Supported: numbers (rationals, floats and constants such as :math:`\pi`, to 32 digits),
``Add``, ``Mul``, ``Pow`` (integer, half-integer and general real exponents), ``exp``,
``log`` (``log(1 + exp(u))`` is evaluated as softplus), ``tanh``, ``sinh``, ``cosh``,
``sin``, ``cos``, ``tan``. Anything else raises :class:`~numeric.MethodUnavailable`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mpmath
import numpy as np
import sympy as sp
from sympy.matrices.expressions.matexpr import MatrixElement

from . import _dd_functions as fn
from ._double_double import DD, as_dd, dd_constant
from ._errors import MethodUnavailable

__all__ = ["METHOD", "Dual", "ExpressionProgram"]

#: The method name the double-double reference refuses under.
METHOD = "high_precision_directional"

Dual = tuple  # (value: DD, tangent: DD or None); None stands for a zero tangent

_FUNCTIONS = {sp.exp: "exp", sp.log: "log", sp.tanh: "tanh", sp.sinh: "sinh",
              sp.cosh: "cosh", sp.sin: "sin", sp.cos: "cos", sp.tan: "tan"}


def _number(expr: sp.Expr) -> DD:
    """A real SymPy number (or constant expression) as the nearest double-double."""
    if expr.is_Integer:
        return dd_constant(int(expr))
    value = sp.N(expr, 45)
    if not value.is_real or not value.is_finite:
        raise MethodUnavailable(METHOD, f"the constant {expr} is not a finite real number")
    with mpmath.workprec(256):
        return dd_constant(mpmath.mpf(value._mpf_))


def _add(*terms):
    terms = [t for t in terms if t is not None]
    if not terms:
        return None
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def _times(a, b):
    return None if a is None or b is None else a * b


class ExpressionProgram:
    """Expressions in the given leaves, compiled to double-double operations.

    Parameters
    ----------
    exprs : sequence of sympy.Expr
    leaves : sequence of Symbol or MatrixElement
        The inputs, in the order values are passed.
    what : str
        What the expressions are (for error messages), e.g. "the right-hand side".
    """

    def __init__(self, exprs: Sequence[sp.Expr], leaves: Sequence[Any], what: str):
        self.what = what
        self._slots = {leaf: i for i, leaf in enumerate(leaves)}
        self._code: list[tuple[str, tuple[int, ...], Any]] = []
        self._memo: dict[Any, int] = {}
        self.outputs = [self._node(sp.sympify(e)) for e in exprs]

    def _emit(self, op: str, args: tuple[int, ...], payload: Any = None) -> int:
        self._code.append((op, args, payload))
        return len(self._code) - 1

    def _node(self, expr: sp.Expr) -> int:
        if expr in self._memo:
            return self._memo[expr]
        index = self._build(expr)
        self._memo[expr] = index
        return index

    def _build(self, expr: sp.Expr) -> int:
        if expr in self._slots:
            return self._emit("leaf", (), self._slots[expr])
        if expr.is_number:
            return self._emit("const", (), _number(expr))
        if expr.is_Add:
            return self._emit("add", tuple(self._node(a) for a in expr.args))
        if expr.is_Mul:
            return self._emit("mul", tuple(self._node(a) for a in expr.args))
        if expr.is_Pow:
            return self._power(expr)
        if isinstance(expr, sp.log) and _is_softplus(expr):
            (inner,) = [a for a in expr.args[0].args if isinstance(a, sp.exp)]
            return self._emit("softplus", (self._node(inner.args[0]),))
        for cls, name in _FUNCTIONS.items():
            if isinstance(expr, cls) and len(expr.args) == 1:
                return self._emit(name, (self._node(expr.args[0]),))
        if isinstance(expr, (sp.Symbol, MatrixElement)):
            raise MethodUnavailable(METHOD, f"{self.what} uses {expr}, which is not one of its "
                                    "inputs")
        raise MethodUnavailable(
            METHOD,
            f"{self.what} contains {type(expr).__name__} ({expr}), which the double-double "
            "evaluator does not support (it knows +, *, powers, exp, log, tanh, sinh, cosh, "
            "sin, cos, tan); use method 'high_precision' (mpmath) for small problems.",
        )

    def _power(self, expr: sp.Pow) -> int:
        base, exponent = expr.args
        b = self._node(base)
        if exponent.is_Integer:
            return self._emit("powi", (b,), int(exponent))
        if exponent.is_Rational and exponent.q == 2:
            root = self._emit("sqrt", (b,))
            return root if exponent.p == 1 else self._emit("powi", (root,), int(exponent.p))
        return self._emit("pow", (b, self._node(exponent)))

    # -- evaluation ---------------------------------------------------------------------
    def __call__(self, values: Sequence[Any], tangents: Sequence[Any] | None = None
                 ) -> list[Dual]:
        """``(value, tangent)`` of every expression; ``tangents`` (one per leaf, None for
        zero) may be None for values only."""
        vals: list[Any] = [None] * len(self._code)
        tans: list[Any] = [None] * len(self._code)
        for i, (op, args, payload) in enumerate(self._code):
            if op == "leaf":
                vals[i] = as_dd(values[payload])
                tans[i] = None if tangents is None else tangents[payload]
                continue
            if op == "const":
                vals[i] = payload
                continue
            x = [vals[a] for a in args]
            dx = [tans[a] for a in args]
            vals[i], tans[i] = _RULES[op](x, dx, payload, tangents is not None)
        return [(vals[o], tans[o]) for o in self.outputs]


def _is_softplus(expr: sp.log) -> bool:
    """``log(1 + exp(u))``."""
    arg = expr.args[0]
    return (arg.is_Add and len(arg.args) == 2 and sp.S.One in arg.args
            and any(isinstance(a, sp.exp) for a in arg.args))


# -- value and tangent of each operation ----------------------------------------------------


def _rule_add(x, dx, _, tangent):
    return _add(*x), _add(*dx) if tangent else None


def _rule_mul(x, dx, _, tangent):
    value, d = x[0], dx[0]
    for y, dy in zip(x[1:], dx[1:], strict=True):
        if tangent:
            d = _add(_times(d, y), _times(value, dy))
        value = value * y
    return value, d if tangent else None


def _rule_powi(x, dx, n, tangent):
    if n == 0:
        return DD(np.ones(np.shape(x[0].hi))), None
    lower = fn.power(x[0], n - 1)
    value = lower * x[0]
    return value, (_times(dx[0], lower * float(n)) if tangent else None)


def _rule_sqrt(x, dx, _, tangent):
    value = fn.sqrt(x[0])
    return value, (None if not tangent or dx[0] is None else dx[0] / (value * 2.0))


def _rule_pow(x, dx, _, tangent):
    base, exponent = x
    log_base = fn.log(base)
    value = fn.exp(exponent * log_base)
    if not tangent:
        return value, None
    return value, _times(value, _add(_times(dx[1], log_base),
                                     _times(dx[0], exponent / base)))


def _unary(function, derivative):
    def rule(x, dx, _, tangent):
        value = function(x[0])
        if not tangent or dx[0] is None:
            return value, None
        return value, dx[0] * derivative(x[0], value)

    return rule


def _dtanh(_x, y):
    return (1.0 - y) * (y + 1.0)


_RULES = {
    "add": _rule_add,
    "mul": _rule_mul,
    "powi": _rule_powi,
    "sqrt": _rule_sqrt,
    "pow": _rule_pow,
    "exp": _unary(fn.exp, lambda _x, y: y),
    "log": _unary(fn.log, lambda x, _y: 1.0 / x),
    "tanh": _unary(fn.tanh, _dtanh),
    "sinh": _unary(fn.sinh, lambda x, _y: fn.cosh(x)),
    "cosh": _unary(fn.cosh, lambda x, _y: fn.sinh(x)),
    "sin": _unary(fn.sin, lambda x, _y: fn.cos(x)),
    "cos": _unary(fn.cos, lambda x, _y: -fn.sin(x)),
    "tan": _unary(fn.tan, lambda _x, y: y * y + 1.0),
    "softplus": _unary(fn.softplus, lambda x, _y: fn.sigmoid(x)),
}
