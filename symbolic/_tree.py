"""SymPy expressions as JSON trees over a whitelist of node types, and back.

A tree is a JSON list ``[head, *children]``: ``["Add", ["Symbol", "z0"], ["Integer", "1"]]``
is ``z0 + 1``. Reading one builds SymPy objects from the whitelisted heads below and the
declared symbols only: no string is evaluated, no attribute is looked up by a name from the
file, and numbers are bounded in size, so a tree from a file cannot run code or exhaust the
machine. Matrix expressions (``MatrixSymbol`` with its shape, ``MatMul``, ``MatAdd``,
``HadamardProduct``, ``Transpose``, ``MatrixElement``, ``ElementwiseApplyFunction`` with a
``Lambda``, explicit matrices) are trees like any other.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import mpmath
import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction
from sympy.matrices.expressions.matexpr import MatrixElement

__all__ = [
    "FUNCTIONS",
    "MAX_DIGITS",
    "TreeError",
    "declarations_from_tree",
    "declarations_to_tree",
    "from_tree",
    "safe_power",
    "to_tree",
]

#: Largest integer literal, in decimal digits: far above any coefficient a model holds.
MAX_DIGITS = 100
#: Largest exact power ``base**exponent`` of numbers built while reading, in bits of the
#: result: ``2**(10**9)`` would take minutes and gigabytes to evaluate.
MAX_POWER_BITS = 10_000
#: Largest precision of a ``Float``, in bits (about 1000 decimal digits).
MAX_FLOAT_BITS = 3400
#: Largest number of nodes in one tree.
MAX_NODES = 200_000

_INTEGER = re.compile(rf"-?\d{{1,{MAX_DIGITS}}}")
_FLOAT = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d{1,6})?")


class TreeError(ValueError):
    """A tree (or an expression string) that is not one of the whitelisted forms."""


#: Scalar functions a tree may apply, by the name ``str()`` prints for them.
FUNCTIONS: dict[str, Callable[..., sp.Expr]] = {
    f.__name__: f
    for f in (
        sp.exp, sp.log, sp.sin, sp.cos, sp.tan, sp.cot, sp.sec, sp.csc, sp.asin, sp.acos,
        sp.atan, sp.acot, sp.atan2, sp.sinh, sp.cosh, sp.tanh, sp.coth, sp.sech, sp.csch,
        sp.asinh, sp.acosh, sp.atanh, sp.erf, sp.erfc, sp.Abs, sp.sign, sp.Heaviside,
        sp.floor, sp.ceiling, sp.frac, sp.Mod, sp.re, sp.im, sp.Max, sp.Min, sp.sinc,
    )
}
_RELATIONALS = {c.__name__: c for c in (sp.Eq, sp.Ne, sp.StrictLessThan, sp.LessThan,
                                        sp.StrictGreaterThan, sp.GreaterThan)}
_LOGIC = {"And": sp.And, "Or": sp.Or, "Not": sp.Not}
_CONSTANTS = {"pi": sp.pi, "E": sp.E, "true": sp.true, "false": sp.false}
_MATRIX = {
    "MatMul": sp.MatMul,
    "MatAdd": sp.MatAdd,
    "HadamardProduct": sp.HadamardProduct,
    "Transpose": sp.Transpose,
    "MatPow": sp.MatPow,
}


def safe_power(base: sp.Expr, exponent: sp.Expr) -> sp.Expr:
    """``base**exponent``, refused where an exact numeric result would be enormous."""
    if isinstance(base, sp.Rational) and isinstance(exponent, sp.Rational):
        size = max(int(base.p).bit_length(), int(base.q).bit_length(), 1)
        if abs(int(exponent.p)) * size > MAX_POWER_BITS:
            raise TreeError(f"the power {base}**{exponent} is too large to evaluate")
    return sp.Pow(base, exponent)


def _integer(text: Any) -> sp.Integer:
    if not isinstance(text, str) or not _INTEGER.fullmatch(text):
        raise TreeError(f"not an integer of at most {MAX_DIGITS} digits: {str(text)[:40]!r}")
    return sp.Integer(int(text))


def _size(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 10**6:
        raise TreeError(f"not a matrix dimension or index: {str(value)[:40]!r}")
    return value


def _float(text: Any, precision: Any) -> sp.Float:
    if not isinstance(text, str) or not _FLOAT.fullmatch(text):
        raise TreeError(f"not a decimal number: {str(text)[:40]!r}")
    if not isinstance(precision, int) or isinstance(precision, bool) or not (
        1 <= precision <= MAX_FLOAT_BITS
    ):
        raise TreeError(f"not a Float precision in bits: {str(precision)[:40]!r}")
    return sp.Float(text, precision=precision)


class _Reader:
    """Builds SymPy objects from a tree, counting nodes; ``bound`` holds the variables of
    the innermost ``Lambda``."""

    def __init__(self, symbols: Mapping[str, sp.Basic]):
        self.symbols = symbols
        self.bound: tuple[sp.Dummy, ...] | None = None
        self.nodes = 0

    def read(self, tree: Any) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise TreeError(f"more than {MAX_NODES} nodes")
        if not isinstance(tree, list) or not tree or not isinstance(tree[0], str):
            raise TreeError(f"not a node [head, ...]: {str(tree)[:40]!r}")
        head, args = tree[0], tree[1:]
        leaf = self._leaf(head, args)
        if leaf is not None:
            return leaf
        if head == "Piecewise":
            pairs = []
            for pair in args:
                if not isinstance(pair, list) or len(pair) != 2:
                    raise TreeError("a Piecewise piece must be [expression, condition]")
                pairs.append((self.read(pair[0]), self.read(pair[1])))
            return sp.Piecewise(*pairs)
        if head == "Lambda":
            return self._lambda(args)
        if head in ("MatrixElement", "Matrix", "Identity", "ZeroMatrix", "OneMatrix"):
            return self._matrix_leaf(head, args)
        children = [self.read(a) for a in args]
        if head == "Add":
            return sp.Add(*children)
        if head == "Mul":
            return sp.Mul(*children)
        if head == "Pow" and len(children) == 2:
            return safe_power(*children)
        if head == "ElementwiseApplyFunction" and len(children) == 2:
            return ElementwiseApplyFunction(*children)
        for table in (FUNCTIONS, _RELATIONALS, _LOGIC, _MATRIX):
            if head in table:
                return table[head](*children)
        raise TreeError(f"unknown node type {head[:40]!r}")

    def _leaf(self, head: str, args: list) -> Any:
        if head == "Symbol" and len(args) == 1:
            if args[0] not in self.symbols or not isinstance(self.symbols[args[0]], sp.Symbol):
                raise TreeError(f"undeclared symbol {str(args[0])[:40]!r}")
            return self.symbols[args[0]]
        if head == "MatrixSymbol" and len(args) == 3:
            symbol = self.symbols.get(args[0]) if isinstance(args[0], str) else None
            if not isinstance(symbol, sp.MatrixSymbol):
                raise TreeError(f"undeclared matrix symbol {str(args[0])[:40]!r}")
            if symbol.shape != (_size(args[1]), _size(args[2])):
                raise TreeError(f"{args[0]} is declared {symbol.shape}, used as "
                                f"({args[1]}, {args[2]})")
            return symbol
        if head == "Bound" and len(args) == 1:
            if self.bound is None or not isinstance(args[0], int) or not (
                0 <= args[0] < len(self.bound)
            ):
                raise TreeError("a Bound variable outside its Lambda")
            return self.bound[args[0]]
        if head == "Integer" and len(args) == 1:
            return _integer(args[0])
        if head == "Rational" and len(args) == 2:
            q = _integer(args[1])
            if q == 0:
                raise TreeError("a Rational with denominator 0")
            return sp.Rational(_integer(args[0]), q)
        if head == "Float" and len(args) == 2:
            return _float(*args)
        if head in _CONSTANTS and not args:
            return _CONSTANTS[head]
        return None

    def _lambda(self, args: list) -> sp.Lambda:
        if len(args) != 2 or not isinstance(args[0], int) or not 1 <= args[0] <= 8:
            raise TreeError("a Lambda must be [\"Lambda\", number of variables, body]")
        outer, self.bound = self.bound, tuple(sp.Dummy(f"x{k}") for k in range(args[0]))
        try:
            return sp.Lambda(self.bound, self.read(args[1]))
        finally:
            self.bound = outer

    def _matrix_leaf(self, head: str, args: list) -> Any:
        if head == "MatrixElement" and len(args) == 3:
            return MatrixElement(self.read(args[0]), _size(args[1]), _size(args[2]))
        if head == "Identity" and len(args) == 1:
            return sp.Identity(_size(args[0]))
        if head in ("ZeroMatrix", "OneMatrix") and len(args) == 2:
            cls = sp.ZeroMatrix if head == "ZeroMatrix" else sp.OneMatrix
            return cls(_size(args[0]), _size(args[1]))
        if head == "Matrix" and len(args) == 3 and isinstance(args[2], list):
            rows, cols = _size(args[0]), _size(args[1])
            if rows * cols != len(args[2]):
                raise TreeError(f"a {rows} x {cols} Matrix with {len(args[2])} entries")
            return sp.ImmutableMatrix(rows, cols, [self.read(e) for e in args[2]])
        raise TreeError(f"malformed {head} node")


def from_tree(tree: Any, symbols: Mapping[str, sp.Basic]) -> Any:
    """The SymPy object a tree describes, over the declared ``symbols`` (name to Symbol or
    MatrixSymbol).

    Raises
    ------
    TreeError
        A head outside the whitelist, an undeclared symbol, a malformed node, a number
        beyond the bounds, or arguments SymPy rejects.
    """
    try:
        return _Reader(symbols).read(tree)
    except TreeError:
        raise
    except RecursionError:
        raise TreeError("nested too deeply") from None
    except Exception as exc:  # SymPy rejecting the arguments of a whitelisted node
        raise TreeError(f"{type(exc).__name__}: {' '.join(str(exc).split())[:120]}") from None


#: Every head :func:`to_tree` writes for a node with children, and :func:`from_tree` reads.
_WRITABLE = frozenset(("Add", "Mul", "Pow", "ElementwiseApplyFunction", *FUNCTIONS,
                       *_RELATIONALS, *_LOGIC, *_MATRIX))


class _Writer:
    def __init__(self):
        self.bound: dict[sp.Basic, int] = {}

    def write(self, expr: Any) -> list:
        if isinstance(expr, sp.Symbol):
            return ["Bound", self.bound[expr]] if expr in self.bound else ["Symbol", expr.name]
        if isinstance(expr, sp.MatrixSymbol):
            return ["MatrixSymbol", expr.name, int(expr.rows), int(expr.cols)]
        if isinstance(expr, sp.Integer):
            return ["Integer", str(int(expr))]
        if isinstance(expr, sp.Rational):
            return ["Rational", str(int(expr.p)), str(int(expr.q))]
        if isinstance(expr, sp.Float):
            digits = mpmath.libmp.prec_to_dps(expr._prec) + 2  # enough to round-trip
            return ["Float", mpmath.libmp.to_str(expr._mpf_, digits), int(expr._prec)]
        for name, value in _CONSTANTS.items():
            if expr == value and type(expr) is type(value):
                return [name]
        if isinstance(expr, sp.Piecewise):
            return ["Piecewise", *([self.write(e), self.write(c)] for e, c in expr.args)]
        if isinstance(expr, sp.Lambda):
            outer = self.bound
            self.bound = {v: k for k, v in enumerate(expr.variables)}
            try:
                return ["Lambda", len(expr.variables), self.write(expr.expr)]
            finally:
                self.bound = outer
        if isinstance(expr, MatrixElement):
            return ["MatrixElement", self.write(expr.parent), int(expr.i), int(expr.j)]
        if isinstance(expr, sp.Identity):
            return ["Identity", int(expr.rows)]
        if isinstance(expr, (sp.ZeroMatrix, sp.OneMatrix)):
            return [type(expr).__name__, int(expr.rows), int(expr.cols)]
        if isinstance(expr, sp.MatrixBase):
            return ["Matrix", expr.rows, expr.cols, [self.write(e) for e in expr]]
        head = type(expr).__name__
        if head not in _WRITABLE:
            raise TreeError(f"{head} cannot be stored in a reference file ({str(expr)[:60]})")
        return [head, *(self.write(a) for a in expr.args)]


def to_tree(expr: Any) -> list:
    """The JSON tree of a SymPy expression (see the module docstring)."""
    return _Writer().write(expr)


def declarations_to_tree(symbols) -> list:
    """Declarations of ``Symbol`` and ``MatrixSymbol`` objects, e.g.
    ``[["Symbol", "z0"], ["MatrixSymbol", "W1", 64, 16]]``."""
    return [to_tree(s) for s in symbols]


def declarations_from_tree(trees: Any) -> dict[str, sp.Basic]:
    """The symbol table declared by :func:`declarations_to_tree`, by name.

    Raises
    ------
    TreeError
        A declaration that is not a Symbol or MatrixSymbol, or a name declared twice.
    """
    if not isinstance(trees, list):
        raise TreeError("the symbol declarations must be a list")
    table: dict[str, sp.Basic] = {}
    for tree in trees:
        ok = isinstance(tree, list) and len(tree) in (2, 4) and isinstance(tree[1], str)
        if ok and tree[0] == "Symbol" and len(tree) == 2:
            symbol = sp.Symbol(tree[1])
        elif ok and tree[0] == "MatrixSymbol" and len(tree) == 4:
            symbol = sp.MatrixSymbol(tree[1], _size(tree[2]), _size(tree[3]))
        else:
            raise TreeError(f"not a symbol declaration: {str(tree)[:60]}")
        if tree[1] in table:
            raise TreeError(f"the symbol {tree[1]!r} is declared twice")
        table[tree[1]] = symbol
    return table
