r"""The adjoint system of matrix-form dynamics, as matrix formulas a person can check.

Reverse accumulation over the graph of :mod:`symbolic._matrix_graph`, in SymPy matrix
expressions (MATH.md, "Matrix form"): with :math:`\bar G = a` at the root,

.. math::
    Y = A X:\ \bar A \mathrel{+}= \bar G X^T,\ \bar X \mathrel{+}= A^T \bar G; \quad
    Y = \sigma.(U):\ \bar U \mathrel{+}= \sigma'.(U) \circ \bar G; \quad
    Y = X \circ Z:\ \bar X \mathrel{+}= \bar G \circ Z; \quad
    Y = c X:\ \bar X \mathrel{+}= c \bar G,\ \bar c \mathrel{+}= \operatorname{sum}(\bar G
    \circ X)

so that :math:`\bar z = (\partial f/\partial z)^T a`, :math:`\bar W = (\partial f/\partial
W)^T a` for every parameter matrix and :math:`\bar t = a^T \partial f/\partial t`. SymPy's
own ``MatrixExpr.diff`` cannot do this for a two-layer network; this walk can, in time
linear in the size of the expression.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction
from sympy.matrices.expressions.hadamard import HadamardProduct
from sympy.printing.str import StrPrinter

from ._calculus import real_jacobian
from ._dynamics import Dynamics, check_loss, check_targets
from ._matrix_graph import Graph

__all__ = ["MatrixAdjointSystem", "derive_matrix_adjoint"]

#: Display names of elementwise functions, by the srepr of their body in a canonical
#: variable (``tanh``, ``tanh'``).
_NAMES: dict[str, str] = {}
_CANONICAL = sp.Dummy("x")


def _key(fn: sp.Lambda) -> str:
    return sp.srepr(fn.expr.xreplace({fn.variables[0]: _CANONICAL}))


def _function(body: sp.Expr, variable: sp.Symbol, name: str) -> sp.Lambda:
    fn = sp.Lambda(variable, body)
    _NAMES.setdefault(_key(fn), name)
    return fn


def _values(graph: Graph) -> list[Any]:
    """Each node's value as a SymPy matrix expression (scalars as scalar expressions)."""
    out: list[Any] = []
    for node in graph.nodes:
        args = [out[a] for a in node.args]
        if node.op == "state":
            value = graph.state
        elif node.op == "param":
            value = graph.params[node.payload]
        elif node.op == "const":
            value = node.payload
        elif node.op in ("scalar", "time"):
            value = node.expr
        elif node.op == "matmul":
            value = sp.MatMul(args[0], args[1])
        elif node.op == "add":
            flat = [part for arg in args for part in (
                arg.args if isinstance(arg, sp.MatAdd) else (arg,))]
            value = sp.MatAdd(*flat)
        elif node.op == "hadamard":
            value = HadamardProduct(*args)
        elif node.op == "scale":
            value = sp.MatMul(args[0], args[1])
        elif node.op == "apply":
            act = node.payload
            value = ElementwiseApplyFunction(_function(act.body, act.variable, act.name),
                                             args[0])
        else:  # transpose
            value = sp.Transpose(args[0])
        out.append(value)
    return out


def _reverse(graph: Graph, seed: sp.MatrixSymbol) -> tuple[dict[int, Any], dict]:
    """Cotangent of every node that the output depends on, from ``seed`` at the output,
    and of the time and the scalar parameters (by symbol), which live inside scalar
    factors."""
    values = _values(graph)
    cot: dict[int, Any] = {graph.output: seed}
    scalars: dict = {}
    for node in reversed(graph.nodes):
        if node.index not in cot:
            continue
        g = cot[node.index]
        args = [graph.nodes[a] for a in node.args]

        def push(arg, value):
            cot[arg.index] = value if arg.index not in cot else cot[arg.index] + value

        if node.op == "matmul":
            A, X = args
            push(A, sp.MatMul(g, sp.Transpose(values[X.index])))
            push(X, sp.MatMul(sp.Transpose(values[A.index]), g))
        elif node.op == "add":
            for arg in args:
                push(arg, g)
        elif node.op == "hadamard":
            x, z = args
            push(x, HadamardProduct(g, values[z.index]))
            push(z, HadamardProduct(g, values[x.index]))
        elif node.op == "scale":
            c, X = args
            push(X, values[c.index] * g)
            push(c, sp.MatMul(sp.Transpose(g), values[X.index]) if X.vector
                 else sp.Trace(sp.MatMul(sp.Transpose(g), values[X.index])))
        elif node.op == "apply":
            act = node.payload
            derivative = _function(act.derivative, act.variable, f"{act.name}'")
            push(args[0], HadamardProduct(ElementwiseApplyFunction(
                derivative, values[args[0].index]), g))
        elif node.op == "transpose":
            push(args[0], sp.Transpose(g))
        elif node.op == "scalar":  # c(t, s): to the time and to the scalar parameters
            for leaf in node.payload.free_symbols:
                term = sp.diff(node.payload, leaf) * g
                scalars[leaf] = term if leaf not in scalars else scalars[leaf] + term
        elif node.op == "time":
            scalars[node.expr] = g if node.expr not in scalars else scalars[node.expr] + g
    return cot, scalars


class _FormulaPrinter(StrPrinter):
    """Matrix formulas as in a textbook: ``W1 z``, ``tanh.(U)``, ``A ∘ B``, ``X^T``."""

    def _group(self, expr) -> str:
        text = self._print(expr)
        return f"({text})" if isinstance(expr, (sp.MatAdd, HadamardProduct, sp.Add)) else text

    def _print_MatMul(self, expr):
        coefficient, matrices = expr.as_coeff_mmul()
        factors = [self._group(a) for a in matrices.args]
        text = " ".join(factors)
        if coefficient == -1:
            return "-" + text
        return text if coefficient == 1 else f"{self._print(coefficient)} {text}"

    def _print_HadamardProduct(self, expr):
        return " ∘ ".join(self._group(a) for a in expr.args)

    def _print_Transpose(self, expr):
        return f"{self._group(expr.arg)}^T" if not isinstance(expr.arg, sp.MatMul) else (
            f"({self._print(expr.arg)})^T")

    def _print_ElementwiseApplyFunction(self, expr):
        name = _NAMES.get(_key(expr.function), str(expr.function))
        return f"{name}.({self._print(expr.expr)})"


def formula(expr) -> str:
    """A matrix expression written as in a textbook."""
    return _FormulaPrinter().doprint(expr)


@dataclass(frozen=True)
class MatrixAdjointSystem:
    r"""The continuous adjoint system of matrix-form dynamics.

    Attributes
    ----------
    dynamics : Dynamics
    loss : sympy.Expr
    adjoint : MatrixSymbol, n x 1
        :math:`a`.
    adjoint_rhs : MatrixExpr, n x 1
        :math:`-(\partial f/\partial z)^T a`.
    param_integrand : dict
        Parameter name -> :math:`(\partial f/\partial W)^T a`, of the parameter's shape;
        :math:`dL/dW` is its integral over :math:`[t_0, t_N]`.
    time_partial : sympy.Expr
        :math:`a^T \partial f/\partial t` (zero for autonomous dynamics).
    loss_gradient : Matrix, n x 1
        :math:`\nabla \ell(z)`, in the entries of the state.
    """

    dynamics: Dynamics
    loss: sp.Expr
    adjoint: sp.MatrixSymbol
    adjoint_rhs: Any
    param_integrand: dict
    time_partial: Any
    loss_gradient: sp.ImmutableMatrix
    targets: tuple = ()

    def equations(self) -> list[tuple[str, str]]:
        """(left-hand side, right-hand side) pairs as printed formulas."""
        z = self.dynamics.matrix.state.name
        a = self.adjoint.name
        eqs = [(f"d{z}/dt", formula(self.dynamics.rhs)),
               (f"d{a}/dt", formula(self.adjoint_rhs))]
        eqs += [(f"dL/d{name}", f"integral of {formula(expr)} dt")
                for name, expr in self.param_integrand.items()]
        return eqs

    def __str__(self) -> str:
        dyn = self.dynamics
        spec = dyn.matrix
        z, a = spec.state.name, self.adjoint.name
        shapes = ", ".join(f"{name} ({shape[0]}x{shape[1]})" if shape else f"{name} (scalar)"
                           for name, shape in dyn.param_shapes.items())
        loss = str(self.loss)
        if len(loss) > 90:
            loss = loss[:87] + "..."
        width = max([len(f"dL/d{name}") for name in self.param_integrand] + [6])
        lines = [
            f"Adjoint system (matrix form) for n = {dyn.n} states {z}, p = {dyn.p} "
            f"parameters: {shapes}",
            f"  loss at each observation: l({z}) = {loss}",
            f"  state (forward):     d{z}/dt = {formula(dyn.rhs)}",
            f"  adjoint (backward):  d{a}/dt = {formula(self.adjoint_rhs)},  "
            f"{a}(t_N) = grad l({z}(t_N))",
            "  parameter gradients, each the integral over [t_0, t_N] of:",
        ]
        lines += [f"    {('dL/d' + name).ljust(width)} = {formula(expr)}"
                  for name, expr in self.param_integrand.items()]
        lines += [f"  jumps: {a}(t_i-) = {a}(t_i+) + grad l({z}(t_i))",
                  f"  time gradients: dL/dt_i = grad l({z}(t_i))^T f(t_i),  "
                  f"dL/dt_0 = -{a}(t_0)^T f(t_0)"]
        if self.time_partial != 0:
            lines.append(f"  explicit time dependence: {a}^T df/dt = "
                         f"{formula(self.time_partial)}")
        return "\n".join(lines)

    def latex(self) -> str:
        """The system as a LaTeX ``aligned`` block."""
        dyn = self.dynamics
        z, a = sp.latex(dyn.matrix.state), sp.latex(self.adjoint)
        rows = [rf"\frac{{d{z}}}{{dt}} &= {sp.latex(dyn.rhs)}",
                rf"\frac{{d{a}}}{{dt}} &= {sp.latex(self.adjoint_rhs)}"]
        rows += [rf"\frac{{\partial L}}{{\partial {name}}} &= \int_{{t_0}}^{{t_N}} "
                 rf"{sp.latex(expr)}\, dt" for name, expr in self.param_integrand.items()]
        rows.append(rf"{a}(t_i^-) &= {a}(t_i^+) + \nabla \ell({z}(t_i))")
        return "\\begin{aligned}\n" + " \\\\\n".join(rows) + "\n\\end{aligned}"


def derive_matrix_adjoint(dynamics: Dynamics, loss: sp.Expr, targets=()) -> MatrixAdjointSystem:
    """The adjoint system of matrix-form ``dynamics`` by reverse accumulation."""
    loss_expr = check_loss(dynamics, loss, targets)
    target_symbols = check_targets(dynamics, targets)
    spec = dynamics.matrix
    taken = {spec.state.name, *(str(leaf) for leaf in spec.leaves)}
    name = "a"
    while name in taken:
        name = "_" + name
    a = sp.MatrixSymbol(name, dynamics.n, 1)
    graph = spec.graph
    cot, scalars = _reverse(graph, a)
    state = next(node.index for node in graph.nodes if node.op == "state")
    zero = sp.ZeroMatrix(dynamics.n, 1)
    adjoint_rhs = -cot[state] if state in cot else zero
    integrand = {}
    for leaf in spec.leaves:
        if not isinstance(leaf, sp.MatrixSymbol):
            integrand[str(leaf)] = scalars.get(leaf, sp.Integer(0))
            continue
        node = next((nd for nd in graph.nodes if nd.op == "param"
                     and graph.params[nd.payload] == leaf), None)
        value = cot.get(node.index) if node is not None else None
        integrand[str(leaf)] = sp.ZeroMatrix(*leaf.shape) if value is None else value
    time_partial = scalars.get(dynamics.time, sp.Integer(0)) if dynamics.time is not None else 0
    scalars = [sp.Symbol(f"_z{i}", real=True) for i in range(dynamics.n)]
    forward = dict(zip(dynamics.state, scalars, strict=True))
    back = dict(zip(scalars, dynamics.state, strict=True))
    loss_gradient = real_jacobian([loss_expr.xreplace(forward)], scalars).T.xreplace(back)
    return MatrixAdjointSystem(dynamics, loss_expr, a, adjoint_rhs, integrand, time_partial,
                               sp.ImmutableMatrix(loss_gradient), target_symbols)
