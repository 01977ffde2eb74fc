"""Matrix-form dynamics as a graph of matrix operations, batch as rows.

A network-sized right-hand side such as ``W2 tanh.(W1 z + b1) + b2`` is kept as what it
is, a handful of matrix operations, instead of ``n`` scalar expressions with ``n*p`` terms.
:func:`build_graph` turns the SymPy matrix expression into a list of :class:`Node` in
topological order (equal subexpressions shared), checked once, with the shape and the kind
of every node:

- ``row`` nodes depend on the state ``z`` or the time ``t``: their values carry the batch
  as rows, a column vector ``(m, 1)`` being an array ``(B, m)`` (``W z`` is ``Z @ W.T``);
- ``fixed`` nodes depend on the parameters only (``W1``, ``W1.T``, ``c W``): their values
  are computed once per parameter vector, as true matrices.

The reverse and forward accumulation rules of MATH.md ("Matrix form") run on this graph:
:mod:`symbolic._matrix_adjoint` prints them, :mod:`symbolic._matrix_kernels` compiles them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction
from sympy.matrices.expressions.hadamard import HadamardPower, HadamardProduct

__all__ = ["Activation", "Graph", "MatrixFormError", "Node", "build_graph"]


class MatrixFormError(ValueError):
    """A matrix-form right-hand side uses a construct the matrix path does not support."""


@dataclass(frozen=True, eq=False)
class Activation:
    r"""An elementwise function :math:`\sigma` applied with ``applyfunc``, and its derivative.

    Attributes
    ----------
    name : str
        How formulas print it (``tanh``; ``sigma_1`` for an anonymous Lambda).
    variable : Symbol
        The argument of ``body``.
    body : Expr
        :math:`\sigma(x)` in ``variable``.
    derivative : Expr
        :math:`\sigma'(x)` in ``variable``.
    derivative_of_output : Expr or None
        :math:`\sigma'` written in the output :math:`y = \sigma(x)` (``1 - y**2`` for tanh),
        in ``output``, when that identity holds; then the derivative needs no second
        evaluation of anything expensive.
    output : Symbol
    """

    name: str
    variable: sp.Symbol
    body: sp.Expr
    derivative: sp.Expr
    derivative_of_output: sp.Expr | None
    output: sp.Symbol


@dataclass(frozen=True, eq=False)
class Node:
    """One matrix operation.

    ``op`` is one of ``state``, ``param``, ``time``, ``const``, ``scalar`` (a scalar
    expression in the time and scalar parameters), ``matmul`` (``args = (A, X)``, ``A X``),
    ``add``, ``hadamard``, ``scale`` (``args = (c, X)``, ``c`` a scalar node), ``apply``
    (``payload`` the :class:`Activation`) and ``transpose``. ``rows`` x ``cols`` is the
    matrix shape in the column convention of the formulas.
    """

    index: int
    op: str
    args: tuple[int, ...]
    rows: int
    cols: int
    row: bool  # depends on z or t: values carry the batch as rows
    payload: Any = None
    expr: Any = field(default=None, repr=False)

    @property
    def vector(self) -> bool:
        return self.cols == 1

    @property
    def scalar(self) -> bool:
        return self.op in ("scalar", "time")


@dataclass
class Graph:
    """The nodes of a matrix-form right-hand side in topological order; ``output`` is the
    index of ``f``. ``params`` lists the parameter leaves (matrices and scalars) in theta
    order with their offsets."""

    nodes: list[Node]
    output: int
    state: sp.MatrixSymbol
    params: tuple  # MatrixSymbol or Symbol, theta order
    time: sp.Symbol | None
    activations: list[Activation]

    def consumers(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {node.index: [] for node in self.nodes}
        for node in self.nodes:
            for arg in node.args:
                out[arg].append(node.index)
        return out


def _activation(fn: sp.Lambda, names: dict) -> Activation:
    if not isinstance(fn, sp.Lambda) or len(fn.variables) != 1:
        raise MatrixFormError(
            f"applyfunc needs a function of one variable, got {fn}; write e.g. "
            "X.applyfunc(sympy.tanh) or X.applyfunc(lambda u: 1 / (1 + sympy.exp(-u)))."
        )
    (variable,) = fn.variables
    body = fn.expr
    extra = body.free_symbols - {variable}
    if extra:
        raise MatrixFormError(
            f"the elementwise function {fn} uses {', '.join(sorted(map(str, extra)))} besides "
            "its argument; write parameters outside it (e.g. applyfunc(tanh) of c * X)."
        )
    key = sp.srepr(body.xreplace({variable: sp.Symbol("x")}))
    if key in names:
        return names[key]
    x = sp.Dummy("x", real=True)
    body = body.xreplace({variable: x})
    known = {name: form(x) for name, form in _KNOWN_ACTIVATIONS.items()}
    if isinstance(body, sp.Function) and body.args == (x,):
        name = type(body).__name__
    elif body.is_Pow and body.base == x and body.exp.is_Number:
        name = f"pow{body.exp}"
    else:
        name = next((name for name, form in known.items() if sp.simplify(body - form) == 0),
                    f"sigma_{len(names) + 1}")
    from ._calculus import almost_everywhere

    derivative = almost_everywhere(sp.diff(body, x))  # DiracDelta off the switch: 0
    y = sp.Dummy("y", real=True)
    activation = Activation(name, x, body, derivative, _in_output(body, derivative, x, y), y)
    names[key] = activation
    return activation


#: Elementwise functions that have no SymPy class of their own, named when recognised.
_KNOWN_ACTIVATIONS = {
    "sigmoid": lambda x: 1 / (1 + sp.exp(-x)),
    "softplus": lambda x: sp.log(1 + sp.exp(x)),
    "relu": lambda x: sp.Max(0, x),
}

#: Points where a rewrite of sigma' in terms of y = sigma(x) is checked against sigma'(x).
_CHECK_POINTS = (-7.3, -3.1, -1.7, -0.9, -0.31, -0.05, 0.0, 0.04, 0.27, 0.8, 1.3, 2.9, 6.1)


#: sigma' in terms of y = sigma(x) for the usual activations (tanh, the logistic sigmoid,
#: exp, softplus): tried first, each checked numerically before it is used.
_KNOWN_IN_OUTPUT = (lambda y: 1 - y**2, lambda y: y * (1 - y), lambda y: y,
                    lambda y: 1 - sp.exp(-y))
_IN_OUTPUT_CACHE: dict[str, Any] = {}


def _in_output(body: sp.Expr, derivative: sp.Expr, x: sp.Symbol, y: sp.Symbol):
    """``derivative`` as an expression in ``y = body``, when such an identity holds on the
    whole real line (checked at points on both sides of 0), else None."""
    key = sp.srepr(body)
    if key in _IN_OUTPUT_CACHE:
        found = _IN_OUTPUT_CACHE[key]
        return None if found is None else found.xreplace({found_symbol: y for found_symbol
                                                          in found.free_symbols})
    sigma = sp.lambdify(x, body, modules="math")
    dsigma = sp.lambdify(x, derivative, modules="math")

    def holds(candidate: sp.Expr) -> bool:
        if candidate.free_symbols - {y}:
            return False
        fn = sp.lambdify(y, candidate, modules="math")
        try:
            return all(abs(fn(sigma(v)) - dsigma(v)) <= 1e-12 * max(1.0, abs(dsigma(v)))
                       for v in _CHECK_POINTS)
        except (TypeError, ValueError, ZeroDivisionError, OverflowError):
            return False

    candidates = [derivative.subs(body, y), *(known(y) for known in _KNOWN_IN_OUTPUT)]
    found = next((c for c in candidates if holds(c)), None)
    if found is None and sp.count_ops(body) <= 12:
        try:
            inverses = sp.solve(sp.Eq(y, body), x)
        except (NotImplementedError, ValueError, TypeError):
            inverses = []
        found = next((c for c in (sp.simplify(derivative.subs(x, inv)) for inv in inverses[:3])
                      if holds(c)), None)
    _IN_OUTPUT_CACHE[key] = found
    return found


class _Builder:
    def __init__(self, state, params, time):
        self.state = state
        self.params = {p: i for i, p in enumerate(params)}
        self.time = time
        self.nodes: list[Node] = []
        self.memo: dict[Any, int] = {}
        self.activations: dict[str, Activation] = {}

    def add(self, op, args, rows, cols, row, payload=None, expr=None, key=None) -> int:
        key = (op, args, rows, cols, key)
        if key in self.memo:
            return self.memo[key]
        index = len(self.nodes)
        self.nodes.append(Node(index, op, tuple(args), rows, cols, row, payload, expr))
        self.memo[key] = index
        return index

    def scalar(self, expr: sp.Expr) -> int | None:
        """A scalar coefficient node; None for the constant 1."""
        expr = sp.sympify(expr)
        if expr == 1:
            return None
        allowed = {s for s in self.params if isinstance(s, sp.Symbol)}
        if self.time is not None:
            allowed.add(self.time)
        unknown = expr.free_symbols - allowed
        if unknown:
            raise MatrixFormError(
                f"the scalar factor {expr} uses {', '.join(sorted(map(str, unknown)))}, which "
                "is neither the time nor a scalar parameter; list it in `params`."
            )
        row = self.time is not None and expr.has(self.time)
        if expr == self.time:
            return self.add("time", (), 1, 1, True, expr=expr, key=str(expr))
        return self.add("scalar", (), 1, 1, row, payload=expr, expr=expr, key=sp.srepr(expr))

    def convert(self, expr) -> int:
        if isinstance(expr, sp.MatrixSymbol):
            if expr == self.state:
                return self.add("state", (), *expr.shape, True, expr=expr, key=expr.name)
            if expr in self.params:
                return self.add("param", (), *expr.shape, False, payload=self.params[expr],
                                expr=expr, key=expr.name)
            raise MatrixFormError(
                f"the matrix symbol {expr.name} ({expr.shape[0]}x{expr.shape[1]}) is neither "
                "the state nor a parameter; add it to `params`."
            )
        if isinstance(expr, (sp.ImmutableMatrix, sp.MutableDenseMatrix, sp.ZeroMatrix,
                             sp.OneMatrix, sp.Identity)):
            explicit = sp.ImmutableMatrix(expr.as_explicit() if hasattr(expr, "as_explicit")
                                          else expr)
            if explicit.free_symbols:
                raise MatrixFormError(
                    f"an explicit matrix in the right-hand side contains symbols "
                    f"({', '.join(sorted(map(str, explicit.free_symbols)))}); use a "
                    "MatrixSymbol parameter for what is learned, numbers for the rest."
                )
            return self.add("const", (), *explicit.shape, False, payload=explicit,
                            expr=expr, key=sp.srepr(explicit))
        if isinstance(expr, sp.MatAdd):
            args = [self.convert(a) for a in expr.args]
            return self._fold("add", args, expr)
        if isinstance(expr, sp.MatMul):
            return self._matmul(expr)
        if isinstance(expr, HadamardProduct):
            args = [self.convert(a) for a in expr.args]
            return self._fold("hadamard", args, expr)
        if isinstance(expr, HadamardPower):
            base, exponent = expr.args
            if exponent.free_symbols:
                raise MatrixFormError(f"the elementwise power {expr} needs a numeric exponent.")
            u = sp.Dummy("u")
            return self._apply(sp.Lambda(u, u**exponent), base, expr)
        if isinstance(expr, ElementwiseApplyFunction):
            return self._apply(expr.function, expr.expr, expr)
        if isinstance(expr, sp.Transpose):
            arg = self.convert(expr.arg)
            node = self.nodes[arg]
            if node.row:
                raise MatrixFormError(
                    f"the transpose {expr} of a state- or time-dependent vector is not "
                    "supported; write products as W x with x depending on the state."
                )
            return self.add("transpose", (arg,), node.cols, node.rows, False, expr=expr)
        raise MatrixFormError(
            f"the matrix-form right-hand side contains {type(expr).__name__} ({expr}), which "
            "the matrix path does not support; use products with parameter matrices, sums, "
            "scalar multiples, Hadamard products and applyfunc with an elementwise function."
        )

    def _fold(self, op, args, expr) -> int:
        rows, cols = expr.shape
        args = sorted(args, key=lambda i: not self.nodes[i].row)  # row nodes first
        result = args[0]
        for arg in args[1:]:
            row = self.nodes[result].row or self.nodes[arg].row
            result = self.add(op, (result, arg), rows, cols, row, expr=expr)
        return result

    def _matmul(self, expr) -> int:
        coefficient, matrices = expr.as_coeff_mmul()
        scalars = [a for a in matrices.args if not getattr(a, "is_Matrix", False)]
        factors = [a for a in matrices.args if getattr(a, "is_Matrix", False)]
        coefficient = sp.Mul(coefficient, *scalars)
        result = self.convert(factors[-1])
        for factor in reversed(factors[:-1]):
            left = self.convert(factor)
            if self.nodes[left].row:
                raise MatrixFormError(
                    f"in {expr}, a state- or time-dependent matrix multiplies from the left; "
                    "the matrix path supports products A x with A made of parameters."
                )
            node = self.nodes[result]
            rows = self.nodes[left].rows
            result = self.add("matmul", (left, result), rows, node.cols, node.row, expr=expr)
        c = self.scalar(coefficient)
        if c is None:
            return result
        node = self.nodes[result]
        return self.add("scale", (c, result), node.rows, node.cols,
                        node.row or self.nodes[c].row, expr=expr)

    def _apply(self, fn, arg_expr, expr) -> int:
        arg = self.convert(arg_expr)
        activation = _activation(fn, self.activations)
        node = self.nodes[arg]
        return self.add("apply", (arg,), node.rows, node.cols, node.row, payload=activation,
                        expr=expr, key=activation.name)


def build_graph(rhs, state: sp.MatrixSymbol, params: tuple, time: sp.Symbol | None) -> Graph:
    """The graph of a matrix-form ``rhs`` (an ``n x 1`` matrix expression in ``state``).

    Raises
    ------
    MatrixFormError
        For a construct outside the supported set (named, with the fix).
    """
    builder = _Builder(state, params, time)
    output = builder.convert(rhs)
    out = builder.nodes[output]
    if out.rows != state.shape[0] or out.cols != 1:
        raise MatrixFormError(
            f"`rhs` has shape {out.rows}x{out.cols} but the state is {state.shape[0]}x1; "
            "the right-hand side must be a column with one entry per state variable."
        )
    for node in builder.nodes:
        if node.row and node.op not in ("scalar", "time") and node.cols != 1:
            raise MatrixFormError(
                f"the state- or time-dependent part {node.expr} is a {node.rows}x{node.cols} "
                "matrix; the matrix path carries the batch as rows, so every state-dependent "
                "quantity must be a column vector."
            )
    return Graph(builder.nodes, output, state, tuple(params), time,
                 list(builder.activations.values()))
