"""Expression strings as ``str()`` prints them, read back without evaluating anything.

Python's ``ast`` module parses the text (parsing runs no code); a walk over the syntax tree
then builds SymPy objects from a whitelist of node types (arithmetic, comparisons, ``&``,
``|``, ``~``, calls of the scalar functions in :data:`symbolic._tree.FUNCTIONS` and of
``Piecewise``, ``Eq``, ``Ne``, ``Rational``, ``Integer``), the declared symbols and the
constants ``pi`` and ``E``. ``sympy.sympify`` is never called: it evaluates the text as
Python, so a string from a file could run code.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

import sympy as sp

from ._tree import FUNCTIONS, MAX_DIGITS, TreeError, safe_power

__all__ = ["MAX_LENGTH", "parse_expression"]

#: Longest expression string read, in characters.
MAX_LENGTH = 100_000

_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Mod: sp.Mod,
    ast.Pow: safe_power,
    ast.BitAnd: sp.And,
    ast.BitOr: sp.Or,
}
_UNARY = {ast.USub: lambda a: -a, ast.UAdd: lambda a: a, ast.Not: sp.Not, ast.Invert: sp.Not}
_COMPARE = {ast.Lt: sp.Lt, ast.LtE: sp.Le, ast.Gt: sp.Gt, ast.GtE: sp.Ge, ast.Eq: sp.Eq,
            ast.NotEq: sp.Ne}
_CALLS = {**FUNCTIONS, "Eq": sp.Eq, "Ne": sp.Ne, "And": sp.And, "Or": sp.Or, "Not": sp.Not,
          "sqrt": sp.sqrt, "Rational": sp.Rational, "Integer": sp.Integer}
_NAMES = {"pi": sp.pi, "E": sp.E}


def _constant(value: Any) -> sp.Basic:
    if isinstance(value, bool):
        return sp.true if value else sp.false
    if isinstance(value, int):
        if len(str(abs(value))) > MAX_DIGITS:
            raise TreeError(f"an integer of more than {MAX_DIGITS} digits")
        return sp.Integer(value)
    if isinstance(value, float):
        return sp.Float(value)
    raise TreeError(f"a literal of type {type(value).__name__}")


class _Builder:
    def __init__(self, symbols: Mapping[str, sp.Basic]):
        self.symbols = symbols

    def build(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return self.build(node.body)
        if isinstance(node, ast.Constant):
            return _constant(node.value)
        if isinstance(node, ast.Name):
            if node.id in self.symbols:
                return self.symbols[node.id]
            if node.id in _NAMES:
                return _NAMES[node.id]
            raise TreeError(f"unknown name {node.id[:40]!r}")
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return _BINARY[type(node.op)](self.build(node.left), self.build(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](self.build(node.operand))
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARE:
            return _COMPARE[type(node.ops[0])](self.build(node.left),
                                               self.build(node.comparators[0]))
        if isinstance(node, ast.Call):
            return self._call(node)
        raise TreeError(f"the Python syntax {type(node).__name__} is not an expression form "
                        "adjoint-verify reads")

    def _call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name) or node.keywords:
            raise TreeError("only plain calls of known functions, without keywords")
        name = node.func.id
        if name == "Piecewise":
            pieces = []
            for arg in node.args:
                if not isinstance(arg, ast.Tuple) or len(arg.elts) != 2:
                    raise TreeError("a Piecewise piece must be (expression, condition)")
                pieces.append((self.build(arg.elts[0]), self.build(arg.elts[1])))
            return sp.Piecewise(*pieces)
        if name not in _CALLS:
            raise TreeError(f"unknown function {name[:40]!r}")
        return _CALLS[name](*(self.build(arg) for arg in node.args))


def parse_expression(text: Any, symbols: Mapping[str, sp.Basic]) -> Any:
    """The SymPy expression a string like ``"w0*z0 + tanh(z1)/2"`` prints, over the
    declared ``symbols`` (name to Symbol), without evaluating the string.

    Raises
    ------
    TreeError
        The text is not a string, is too long, does not parse, or uses a syntax, name or
        function outside the whitelist.
    """
    if not isinstance(text, str):
        raise TreeError(f"an expression must be a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise TreeError(f"an expression string longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise TreeError(f"{text[:60]!r} does not parse ({type(exc).__name__})") from None
    try:
        return _Builder(symbols).build(tree)
    except TreeError:
        raise
    except RecursionError:
        raise TreeError("nested too deeply") from None
    except Exception as exc:  # SymPy rejecting the arguments of a whitelisted form
        raise TreeError(f"{type(exc).__name__}: {' '.join(str(exc).split())[:120]}") from None
