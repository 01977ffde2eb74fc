"""Matrix-form dynamics evaluated node by node on their graph, in any array library.

The kernels of :mod:`symbolic._matrix_kernels` are generated NumPy code tuned for the
solvers; this evaluator is the plain reading of the graph, the batch in front (a
state-dependent column ``x`` is an array ``(..., m)``, so ``W x`` is ``x @ W.T``; a
parameter-only node is the matrix itself). It prints ``f`` for PyTorch and JAX
(:mod:`symbolic._backends`) and gives the pre-activation values where matrix-form
switching surfaces are checked (:class:`MatrixSwitching`).
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import sympy as sp
from numpy.typing import NDArray

from ._dynamics import DynamicsError
from ._printing import numpy_printer
from ._switching import CompiledSwitching, Switch, find_switches

__all__ = ["GraphEvaluator", "MatrixSwitching"]


class GraphEvaluator:
    """``values(z, theta, t)``: every node's value of a matrix-form graph.

    ``module`` is SymPy's ``lambdify`` module name (``"numpy"``, ``"torch"``, ``"jax"``) and
    ``xp`` the array namespace; ``theta`` is the sequence of parameter arrays in theta order
    (matrices of their shapes, scalars 0-d).
    """

    def __init__(self, spec: Any, module: str, xp: Any):
        self.spec, self.graph, self.xp = spec, spec.graph, xp
        leaves = list(spec.leaves)
        self.scalar_leaves = [leaf for leaf in leaves if not isinstance(leaf, sp.MatrixSymbol)]
        self.position = {leaf: i for i, leaf in enumerate(leaves)}
        time = spec.time if spec.time is not None else sp.Dummy("t")
        printer = {"printer": numpy_printer()} if module == "numpy" else {}
        self.compiled: dict[int, Callable[..., Any]] = {}
        for node in self.graph.nodes:
            if node.op == "scalar":
                self.compiled[node.index] = sp.lambdify(
                    [time, *self.scalar_leaves], node.payload, modules=module, dummify=True,
                    **printer)
            elif node.op == "apply":
                activation = node.payload
                self.compiled[node.index] = sp.lambdify(
                    [activation.variable], activation.body, modules=module, dummify=True,
                    **printer)
        self.constants = {node.index: np.array(node.payload.tolist(), dtype=float)
                          for node in self.graph.nodes if node.op == "const"}

    def values(self, z, theta, t) -> dict[int, Any]:
        xp, graph = self.xp, self.graph
        theta = list(theta)
        scalars = [theta[self.position[leaf]] for leaf in self.scalar_leaves]
        values: dict[int, Any] = {}
        for node in graph.nodes:
            args = [values[i] for i in node.args]
            nodes = [graph.nodes[i] for i in node.args]
            if node.op == "state":
                value = z
            elif node.op == "param":
                value = theta[node.payload]  # the leaf's position in theta order
            elif node.op == "time":
                value = t
            elif node.op == "scalar":
                value = self.compiled[node.index](t, *scalars)
            elif node.op == "const":
                value = xp.asarray(self.constants[node.index], dtype=z.dtype)
            elif node.op == "matmul":
                a, x = args
                value = x @ xp.swapaxes(a, -1, -2) if nodes[1].row else a @ x
            elif node.op in ("add", "hadamard"):
                a, b = args
                if nodes[0].row != nodes[1].row:
                    # a parameter-only column meeting a state-dependent one: (m, 1) -> (m,)
                    a = a if nodes[0].row else a[..., 0]
                    b = b if nodes[1].row else b[..., 0]
                value = a + b if node.op == "add" else a * b
            elif node.op == "scale":
                c, x = args
                value = c * x
            elif node.op == "apply":
                value = self.compiled[node.index](args[0])
            elif node.op == "transpose":
                value = xp.swapaxes(args[0], -1, -2)
            else:  # pragma: no cover - build_graph admits no other operation
                raise DynamicsError(f"matrix-form operation {node.op!r} cannot be evaluated")
            values[node.index] = value
        return values

    def rhs(self, z, theta, t):
        """``f`` of shape ``z.shape``."""
        graph, xp = self.graph, self.xp
        out = self.values(z, theta, t)[graph.output]
        if not graph.nodes[graph.output].row:
            out = out[..., 0]
        return out + xp.zeros_like(z) if tuple(out.shape) != tuple(z.shape) else out


def _unflatten(spec: Any, theta: NDArray) -> list[NDArray]:
    return [theta[start:stop].reshape(shape) if shape else theta[start]
            for start, stop, shape in spec.offsets]


class MatrixSwitching:
    """The switching surfaces of matrix-form dynamics and their loss, with the interface
    of :class:`symbolic._switching.CompiledSwitching`.

    An activation with a non-smooth body (``Max(0, x)``, ``Heaviside(x)``) switches on
    every unit: one surface per unit of each such node, ``g`` its switching function at
    that unit's pre-activation value, named ``(W1 z + b1)[3]``. A surface is a kink or a
    jump as the activation's body is (a jump in ``sigma`` is taken to be one in ``f``,
    which refuses rather than passes). Scalar factors (time, scalar parameters) and the
    loss are checked as in elementwise form.
    """

    def __init__(self, spec: Any, loss: sp.Expr, targets, state_symbols: list[sp.Symbol]):
        self.spec = spec
        graph = spec.graph
        self._nodes: list[tuple[int, Callable[..., Any], int]] = []  # (node, g's, count)
        switches: list[Switch] = []
        for node in graph.nodes:
            body_switches = ()
            if node.op == "apply":
                activation = node.payload
                body_switches = find_switches([activation.body])
                variable = activation.variable
            elif node.op == "scalar":
                body_switches = find_switches([node.payload], time=spec.time)
            if not body_switches:
                continue
            if node.op == "scalar":  # one value for the whole batch (a function of t)
                args = [spec.time if spec.time is not None else sp.Dummy("t"),
                        *[leaf for leaf in spec.leaves if not isinstance(leaf, sp.MatrixSymbol)]]
                fn = sp.lambdify(args, [s.function for s in body_switches], modules="numpy",
                                 dummify=True, printer=numpy_printer())
                self._nodes.append((node.index, fn, 1))
                switches.extend(body_switches)
                continue
            fn = sp.lambdify([variable], [s.function for s in body_switches],
                             modules="numpy", dummify=True, printer=numpy_printer())
            argument = graph.nodes[node.args[0]]
            self._nodes.append((node.index, fn, argument.rows))
            for s in body_switches:  # switch-major, as rhs_values lays the columns out
                for unit in range(argument.rows):
                    name = sp.Symbol(f"({argument.expr})[{unit}]", real=True)
                    switches.append(Switch(s.function.xreplace({variable: name}),
                                           s.node.xreplace({variable: name}), s.kind,
                                           s.integer))
        self.rhs_switches = tuple(switches)
        self._evaluator = GraphEvaluator(spec, "numpy", np) if self._nodes else None
        shell = SimpleNamespace(rhs=[], state=state_symbols, params=[], time=None)
        self._loss = CompiledSwitching(shell, loss, targets)
        self.loss_switches = self._loss.loss_switches

    def __bool__(self) -> bool:
        return bool(self.rhs_switches or self.loss_switches)

    def rhs_values(self, z: NDArray, theta: NDArray, t: Any) -> NDArray:
        """``g`` of every switch of ``f``, shape ``(B, K)``; ``t`` a scalar or ``(B,)``."""
        z = np.real(np.asarray(z))
        B = z.shape[0]
        out = np.empty((B, len(self.rhs_switches)))
        if self._evaluator is None:
            return out
        t = np.real(t)
        t_rows = np.reshape(t, (-1, 1)) if np.ndim(t) else t
        params = _unflatten(self.spec, np.real(np.asarray(theta, dtype=float)))
        values = self._evaluator.values(z, params, t_rows)
        column = 0
        scalars = [p for p, leaf in zip(params, self.spec.leaves, strict=True)
                   if not isinstance(leaf, sp.MatrixSymbol)]
        for index, fn, count in self._nodes:
            node = self.spec.graph.nodes[index]
            if node.op == "scalar":
                for g in fn(t, *scalars):
                    out[:, column] = np.broadcast_to(np.real(g), (B,))
                    column += 1
                continue
            argument = np.broadcast_to(values[node.args[0]], (B, count))
            for g in fn(argument):  # one (B, units) block per switch of the body
                out[:, column:column + count] = np.broadcast_to(np.real(g), (B, count))
                column += count
        return out

    def loss_values(self, z: NDArray, y: NDArray | None = None) -> NDArray:
        return self._loss.loss_values(z, y)
