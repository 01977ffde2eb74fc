r"""NumPy kernels of a matrix-form right-hand side: generated once, bound to a theta.

From a :class:`~symbolic._matrix_graph.Graph` this module writes plain Python functions,
one NumPy operation per graph node, batch as rows (``W z`` is ``Z @ W.T``):

- ``forward(Z, t, F)``: :math:`f` for the batch;
- ``save(Z, t, F, S)``: the same, writing into the buffers ``S`` the node values the
  reverse pass needs (inputs of parameter products, activation outputs);
- ``reverse(G, t, F, S, C)``: :math:`(\partial f/\partial z)^T G` by MATH.md's reverse
  accumulation, writing into ``C`` the cotangents that parameter gradients are made of,
  and returning :math:`G^T \partial f/\partial t` summed over the batch;
- ``tangent(Z, t, F, dZ, dF, dt)``: the forward-mode derivative :math:`J\,dZ +
  (\partial f/\partial\theta)\,d\theta + (\partial f/\partial t)\,dt`.

``F`` holds the values of the *fixed* nodes (parameters and anything computed from them
alone, e.g. ``W.T`` or ``c W``), computed once by :meth:`MatrixKernels.fixed`. Parameter
gradients are never formed per sample or per stage: the reverse pass only records
cotangents, and :meth:`MatrixKernels.parameter_gradient` turns a whole tape of them into
``dL/dtheta`` with one matrix product per parameter matrix (:math:`\bar W = \sum_{s,b}
\bar Y_{sb}^T X_{sb}`, MATH.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy as sp
from numpy.typing import NDArray

from ._buffers import POOL
from ._matrix_graph import Activation, Graph, Node

__all__ = ["MatrixKernels", "Tape"]

#: Activations that are NumPy ufuncs (they can write into a buffer with ``out=``).
_UFUNCS = {sp.tanh: np.tanh, sp.sin: np.sin, sp.cos: np.cos, sp.exp: np.exp,
           sp.sinh: np.sinh, sp.cosh: np.cosh, sp.atan: np.arctan}


def _scalar_function(expr: sp.Expr, args: list) -> Callable:
    return sp.lambdify(args, expr, modules="numpy")


def _activation_functions(act: Activation) -> tuple[Callable, bool, Callable, str]:
    """(sigma, is_ufunc, sigma', 'output' or 'input': what sigma' is evaluated at)."""
    body = act.body
    if isinstance(body, sp.Function) and body.args == (act.variable,) and type(body) in _UFUNCS:
        fn, ufunc = _UFUNCS[type(body)], True
    else:
        fn, ufunc = sp.lambdify([act.variable], body, modules="numpy"), False
    if act.derivative_of_output is not None:
        return fn, ufunc, sp.lambdify([act.output], act.derivative_of_output,
                                      modules="numpy"), "output"
    return fn, ufunc, sp.lambdify([act.variable], act.derivative, modules="numpy"), "input"


@dataclass
class _Term:
    """A parameter-gradient term of the reverse pass, summed over rows: ``outer`` gives the
    fixed node ``target`` the cotangent ``C^T X`` (``cot`` and ``saved`` buffer indices),
    ``rowsum`` gives it ``sum_rows C`` (a vector, or a scalar for width-1 buffers)."""

    kind: str
    target: int
    cot: int
    saved: int | None = None


class _Emitter:
    """Writes the generated functions; ``v{i}`` is node i's value, ``g{i}`` its cotangent."""

    def __init__(self, graph: Graph, live: set[int]):
        self.graph = graph
        self.nodes = graph.nodes
        self.live = live  # fixed nodes whose cotangent matters (they depend on parameters)
        self.saved: dict[int, int] = {}  # node -> save-buffer index
        self.cots: dict[int, int] = {}  # buffer index of a recorded cotangent
        self.cot_widths: list[int] = []
        self.terms: list[_Term] = []
        self.t_scalars: list[int] = []  # time-dependent scalar nodes
        self.consumers = graph.consumers()
        self._plan_reverse()

    # -- which values the reverse pass needs ------------------------------------------
    def _need(self, i: int) -> None:
        if i not in self.saved:
            self.saved[i] = len(self.saved)

    def _canonical(self, i: int) -> int:
        """The node whose cotangent is node ``i``'s very array: a node used once, by a sum,
        has the sum's cotangent (recorded once, not copied)."""
        while True:
            users = self.consumers[i]
            if len(users) != 1 or self.nodes[users[0]].op != "add" or not self.nodes[
                    users[0]].row:
                return i
            i = users[0]

    def _record(self, node, width: int) -> int:
        key = (self._canonical(node) if isinstance(node, int) else node, width)
        if key not in self.cots:
            self.cots[key] = len(self.cot_widths)
            self.cot_widths.append(width)
        return self.cots[key]

    def _plan_reverse(self) -> None:
        for node in self.nodes:
            if not node.row or node.scalar:
                if node.row:
                    self.t_scalars.append(node.index)
                continue
            args = [self.nodes[a] for a in node.args]
            if node.op == "matmul":
                A, X = args
                if A.index in self.live:
                    self._need(X.index)
                    self.terms.append(_Term("outer", A.index, self._record(node.index, node.rows),
                                            self.saved[X.index]))
            elif node.op == "add":
                for arg in args:
                    if not arg.row and arg.index in self.live:
                        self.terms.append(_Term("rowsum", arg.index,
                                                self._record(node.index, node.rows)))
            elif node.op == "hadamard":
                for arg, other in ((args[0], args[1]), (args[1], args[0])):
                    if arg.row and other.row:
                        self._need(other.index)
                    elif not arg.row and arg.index in self.live:  # sum_rows G * other
                        self._need(other.index)
                        self.terms.append(_Term("rowsum", arg.index, self._record(
                            ("had", node.index, arg.index), node.rows)))
            elif node.op == "scale":
                c, X = args
                if X.row and (c.row or c.index in self.live):
                    self._need(X.index)
                if not X.row and X.index in self.live:  # c(t) X, X fixed: sum_rows c G
                    self.terms.append(_Term("rowsum", X.index,
                                            self._record(("scaled", node.index), node.rows)))
                if not c.row and c.index in self.live and X.row:  # sum G * X, a scalar
                    self.terms.append(_Term("rowsum", c.index,
                                            self._record(("dot", node.index), 1)))
            elif node.op == "apply":
                act: Activation = node.payload
                self._need(node.index if act.derivative_of_output is not None else args[0].index)

    # -- code ---------------------------------------------------------------------------
    def value(self, i: int) -> str:
        node = self.nodes[i]
        if not node.row:
            return f"F[{i}]"
        return "t" if node.op == "time" else f"v{i}"

    def forward(self, save: bool, record: bool = False) -> str:
        """``forward(Z, t, F, FT)``, or ``save(Z, t, F, FT, S, slot, O)`` writing the saved
        values into slot ``slot`` of the buffers ``S`` and ``f`` into ``O`` (if not None);
        ``record`` (with ``save``): ``record(F, FT, S, Z, t, slot, placed)``, the saved
        values only, for a VJP that does not need ``f`` (no node past the last saved one
        is evaluated)."""
        if save:
            name = "record" if record else "save"
            lines = [f"def {name}(F, FT, S, Z, t, slot, O, placed):"]
            lines += [f"    s{k} = S[{k}][slot]" for k in sorted(self.saved.values())]
        else:
            lines = ["def forward(F, FT, Z, t):"]
        output = self.graph.output
        fused = self._fusions(save)
        needed = self._ancestors(set(self.saved)) if record else None
        for node in self.nodes:
            if not node.row or node.index in fused.values():
                continue
            if needed is not None and not (node.index in needed or any(
                    fused.get(node.index) == j for j in needed)):
                continue
            i = node.index
            out = f"s{self.saved[i]}" if save and i in self.saved else None
            if save and i == output and out is None and node.op not in ("state", "apply"):
                lines.append("    if O is None:")
                lines.extend("    " + line for line in self._emit(node, None, fused))
                lines.append("    else:")
                lines.extend("    " + line for line in self._emit(node, "O", fused))
                continue
            lines.extend(self._emit(node, out, fused))
        if record:
            lines.append("    return None")
            return "\n".join(lines)
        result = self.value(output)
        if save and (output in self.saved or self.nodes[output].op in ("state", "apply")):
            lines.append(f"    if O is not None: O[...] = {result}; return O")
        lines.append(f"    return {result}")
        return "\n".join(lines)

    def _ancestors(self, targets: set[int]) -> set[int]:
        """The row nodes ``targets`` are computed from, themselves included."""
        out: set[int] = set()
        stack = list(targets)
        while stack:
            i = stack.pop()
            if i in out or not self.nodes[i].row:
                continue
            out.add(i)
            stack.extend(self.nodes[i].args)
        return out

    def _reusable(self, i: int) -> bool:
        """An activation may overwrite its input (forward pass without saving)."""
        node = self.nodes[i]
        state = next(n.index for n in self.nodes if n.op == "state")
        return (node.op in ("matmul", "add", "hadamard", "scale") and len(self.consumers[i]) == 1
                and _depends_on(self.graph, i, state))

    def _fresh(self, i: int, save: bool) -> bool:
        """Node ``i``'s value is a new full-batch array that nothing else reads: a sum may
        be formed in it in place."""
        node = self.nodes[i]
        state = next(n.index for n in self.nodes if n.op == "state")
        return (node.op in ("matmul", "add", "hadamard", "scale") and len(self.consumers[i]) == 1
                and not (save and i in self.saved) and _depends_on(self.graph, i, state))

    def _fusions(self, save: bool) -> dict[int, int]:
        """Sums ``X + b`` formed in X's array: {sum node: X}."""
        fused = {}
        for node in self.nodes:
            if node.row and node.op == "add" and self._fresh(node.args[0], save):
                fused[node.index] = node.args[0]
        return fused

    @staticmethod
    def _ufunc(act: Activation) -> bool:
        body = act.body
        return isinstance(body, sp.Function) and body.args == (act.variable,) and \
            type(body) in _UFUNCS

    def _emit(self, node: Node, out: str | None, fused: dict[int, int]) -> list[str]:
        """``node``'s value (into ``out`` if given), forming a fused sum in place."""
        i = node.index
        if i not in fused:
            return self._forward_node(node, out, inplace=True)
        inner = self.nodes[fused[i]]
        other = self.value(node.args[1])
        lines = self._emit(inner, out, fused)
        target = out if out is not None else f"v{inner.index}"
        return [*lines, f"    {target} += {other}", f"    v{i} = {target}"]

    def _forward_node(self, node: Node, out: str | None, inplace: bool = False) -> list[str]:
        i, a = node.index, [self.value(j) for j in node.args]
        if node.op == "state":
            return [f"    v{i} = Z", *([f"    if not placed: {out}[...] = Z",
                                       f"    v{i} = {out}"] if out else [])]
        if node.op == "time":
            return []
        if node.op == "scalar":
            return [f"    v{i} = _scalar{i}(t, F)"]
        if node.op == "apply":
            act = self.graph.activations.index(node.payload)
            if out is not None:
                return [f"    if _ufunc{act}: _act{act}({a[0]}, out={out})",
                        f"    else: {out}[...] = _act{act}({a[0]})", f"    v{i} = {out}"]
            if inplace and self._reusable(node.args[0]) and self._ufunc(node.payload):
                return [f"    v{i} = _act{act}({a[0]}, out={a[0]})"]
            return [f"    v{i} = _act{act}({a[0]})"]
        expr = {
            "matmul": f"{a[1]} @ FT[{node.args[0]}]",
            "add": f"{a[0]} + {a[1]}",
            "hadamard": f"{a[0]} * {a[1]}",
            "scale": f"{a[0]} * {a[1]}",
        }[node.op]
        if out is None:
            return [f"    v{i} = {expr}"]
        ufunc = {"matmul": "np.matmul", "add": "np.add", "hadamard": "np.multiply",
                 "scale": "np.multiply"}[node.op]
        left, right = (a[1], f"FT[{node.args[0]}]") if node.op == "matmul" else (a[0], a[1])
        return [f"    v{i} = {ufunc}({left}, {right}, out={out})"]

    def reverse(self) -> str:
        """Reverse accumulation; values of row nodes come from the save buffers ``S``."""
        header = ["def reverse(F, FT, S, C, E, per, G, t, slot, want_t, O, placed):"]
        if self.t_scalars:
            header.append("    T = [0.0]")
        lines: list[str] = []
        for i in self.t_scalars:
            if self.nodes[i].op == "scalar":
                lines.append(f"    v{i} = _scalar{i}(t, F)")
        pending: dict[int, list[tuple]] = {self.graph.output: [("ref", "G")]}
        for node in reversed(self.nodes):
            i = node.index
            if not node.row or node.scalar or i not in pending or node.op == "state":
                continue
            parts = pending.pop(i)
            g = f"g{i}"
            key = (i, node.rows)
            if key in self.cots and i == self.graph.output:
                buffer = f"c{self.cots[key]}"
                lines += [f"    {g} = G", f"    if not placed: {buffer}[...] = G"]
            elif key in self.cots:  # build the cotangent in its buffer: no copy
                buffer = f"c{self.cots[key]}"
                lines += _into(parts[0], buffer)
                lines += [f"    {buffer} += {_expression(part)}" for part in parts[1:]]
                lines.append(f"    {g} = {buffer}")
            else:
                lines.append(f"    {g} = " + " + ".join(_expression(part) for part in parts))
            lines.extend(self._reverse_node(node, g, pending))
        state = next(n.index for n in self.nodes if n.op == "state")
        self._reverse_tail(lines, pending.pop(state, None))
        used = set(re.findall(r"\b[vc]\d+\b", "\n".join(lines)))
        loads = [f"    v{node} = S[{index}][slot]" for node, index in self.saved.items()
                 if f"v{node}" in used]
        loads += [f"    c{k} = C[{k}][slot]" for k in range(len(self.cot_widths))
                  if f"c{k}" in used]
        result = "T[0]" if self.t_scalars else "0.0"
        return "\n".join([*header, *loads, *lines, f"    return zbar, {result}"])

    def _reverse_tail(self, lines: list[str], parts) -> None:
        """The state's cotangent, into ``O`` when the caller gives a buffer."""
        if parts is None:
            lines.append("    zbar = np.zeros_like(G) if O is None else O * 0")
            return
        lines.append("    if O is None:")
        lines.append("        zbar = " + " + ".join(_expression(part) for part in parts))
        lines.append("    else:")
        lines += ["    " + line for line in _into(parts[0], "O")]
        lines += [f"        O += {_expression(part)}" for part in parts[1:]]
        lines.append("        zbar = O")

    def _reverse_node(self, node: Node, g: str, pending: dict) -> list[str]:
        i = node.index
        args = [self.nodes[a] for a in node.args]
        lines: list[str] = []

        def push(arg: Node, part: tuple) -> None:
            pending.setdefault(arg.index, []).append(part)

        if node.op == "matmul":
            A, X = args
            if X.row:
                push(X, ("mm", g, f"FT[{A.index}].T"))
        elif node.op == "add":
            for arg in args:
                if arg.row:
                    push(arg, ("ref", g))
        elif node.op == "hadamard":
            for arg, other in ((args[0], args[1]), (args[1], args[0])):
                key = (("had", i, arg.index), node.rows)
                if arg.row:
                    push(arg, ("mul", g, self.value(other.index)))
                elif key in self.cots:
                    lines.append(f"    np.multiply({g}, {self.value(other.index)}, "
                                 f"out=c{self.cots[key]})")
        elif node.op == "scale":
            c, X = args
            cval = self.value(c.index)
            if X.row:
                push(X, ("mul", cval, g))
            key = (("scaled", i), node.rows)
            if key in self.cots:
                lines.append(f"    np.multiply({cval}, {g}, out=c{self.cots[key]})")
            key = (("dot", i), 1)
            if key in self.cots:
                lines.append(f"    c{self.cots[key]}[...] = np.sum({g} * "
                             f"{self.value(X.index)}, axis=-1, keepdims=True)")
            if c.row:  # a time-dependent factor: its own gradients, now
                lines.append(f"    _cgrad{c.index}(t, F, E, _dot({g}, {self.value(X.index)}), "
                             "want_t, T, per)")
        elif node.op == "apply":
            act: Activation = node.payload
            k = self.graph.activations.index(act)
            if _is_tanh_derivative(act):
                push(args[0], ("dtanh", f"v{i}", g))
            else:
                at = f"v{i}" if act.derivative_of_output is not None else f"v{args[0].index}"
                push(args[0], ("mul", f"_dact{k}({at})", g))
        return lines

    def tangent(self) -> str:
        """Forward mode; ``dF`` the tangents of the fixed nodes (None: theta held fixed),
        ``dZ`` the state tangent (None: zero), ``dt`` the time tangent (0: none)."""
        lines = ["def tangent(F, FT, Z, t, dZ, dF, dt):"]
        for node in self.nodes:
            if not node.row:
                continue
            lines.extend(self._forward_node(node, None))
            lines.extend(self._tangent_node(node))
        lines.append(f"    return {self.value(self.graph.output)}, d{self.graph.output}")
        return "\n".join(lines)

    def _tangent_node(self, node: Node) -> list[str]:
        i = node.index

        def d(j: int) -> str:
            other = self.nodes[j]
            if other.row:
                return "dt" if other.op == "time" else f"d{j}"
            return f"(None if dF is None else dF[{j}])" if j in self.live else "None"

        args = node.args
        terms: list[str] = []
        if node.op == "state":
            return [f"    d{i} = dZ"]
        if node.op == "time":
            return []
        if node.op == "scalar":
            return [f"    d{i} = _tscalar{i}(t, F, dF, dt)"]
        if node.op == "matmul":
            A, X = args
            terms = [f"_mm({d(X)}, FT[{A}])", f"_mm({self.value(X)}, _T({d(A)}))"]
        elif node.op == "add":
            terms = [d(a) for a in args]
        elif node.op in ("hadamard", "scale"):
            x, y = args
            terms = [f"_mul({d(x)}, {self.value(y)})", f"_mul({self.value(x)}, {d(y)})"]
        elif node.op == "apply":
            act: Activation = node.payload
            k = self.graph.activations.index(act)
            at = f"v{i}" if act.derivative_of_output is not None else f"v{args[0]}"
            terms = [f"_mul(_dact{k}({at}), {d(args[0])})"]
        return [f"    d{i} = _sum({', '.join(terms)})"]


def _is_tanh_derivative(act: Activation) -> bool:
    """sigma' = 1 - sigma^2 (tanh): computed in place, with one temporary."""
    out = act.derivative_of_output
    return out is not None and sp.expand(out - (1 - act.output**2)) == 0


def _expression(part: tuple) -> str:
    """A cotangent contribution as an expression: ``("ref", g)``, ``("mm", x, W)`` for
    ``x @ W``, ``("mul", x, y)``, ``("dtanh", y, g)`` for ``(1 - y^2) * g``."""
    kind, *args = part
    if kind == "ref":
        return args[0]
    if kind == "mm":
        return f"({args[0]} @ {args[1]})"
    if kind == "mul":
        return f"({args[0]} * {args[1]})"
    return f"_dtanh({args[0]}, {args[1]}, None)"


def _into(part: tuple, out: str) -> list[str]:
    """Lines that write a contribution into the buffer ``out``."""
    kind, *args = part
    if kind == "ref":
        return [f"    {out}[...] = {args[0]}"]
    if kind == "mm":
        return [f"    np.matmul({args[0]}, {args[1]}, out={out})"]
    if kind == "mul":
        return [f"    np.multiply({args[0]}, {args[1]}, out={out})"]
    return [f"    _dtanh({args[0]}, {args[1]}, {out})"]


def _dtanh(y, g, out):
    """``(1 - y^2) * g`` with a single pass-sized temporary (or none, given ``out``)."""
    out = np.multiply(y, y, out=out)
    np.subtract(1.0, out, out=out)
    out *= g
    return out


def _mm(x, y):
    return None if x is None or y is None else x @ y


def _mul(x, y):
    return None if x is None or y is None else x * y


def _T(x):
    return None if x is None else x.T


def _dot(g, x):
    """``sum(g * x)`` per row, shape ``(rows, 1)``: a factor ``c(t)`` may differ by row."""
    return np.sum(g * x, axis=-1, keepdims=True)


def _sum(*parts):
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    return total


@dataclass
class Tape:
    """Buffers of a whole reverse pass: per slot (a stage, a quadrature node), the node
    values the reverse pass needs (``saved``) and the cotangents parameter gradients are
    made of (``cots``); ``extra`` accumulates gradient pieces that depend on the time of
    their slot (parameters inside a time-dependent scalar factor)."""

    saved: list[NDArray]  # each (slots, B, width)
    cots: list[NDArray]  # each (slots, B, width), or (ring, B, width) with a ring
    extra: NDArray  # (p,)
    used: int  # slots the parameter gradient sums over
    #: With ``ring = r``, the cotangents of slot ``k`` live in ``cots[...][k % r]`` and the
    #: caller flushes every ``r`` consecutive slots into ``flushed`` (the parameter
    #: gradient so far) before they are overwritten; 0: one slot each, summed at the end.
    ring: int = 0
    flushed: NDArray | None = None

    def release(self) -> None:
        """Give the buffers back to the pool (the tape is unusable afterwards)."""
        POOL.release(*self.saved, *self.cots)
        self.saved, self.cots = [], []


class _Ring:
    """A ring of cotangent slots indexed like the full tape (``ring[slot]``)."""

    __slots__ = ("array", "size")

    def __init__(self, array: NDArray, size: int):
        self.array, self.size = array, size

    def __getitem__(self, slot: int) -> NDArray:
        return self.array[slot % self.size]


def _depends_on(graph: Graph, node: int, target: int) -> bool:
    if node == target:
        return True
    return any(_depends_on(graph, a, target) for a in graph.nodes[node].args)


class MatrixKernels:
    """The generated functions of one graph, and the fixed-node evaluation per theta."""

    def __init__(self, graph: Graph, offsets: list[tuple[int, int, tuple]]):
        self.graph = graph
        self.offsets = offsets  # per parameter leaf: (start, stop, shape)
        self.p = offsets[-1][1] if offsets else 0
        self.leaf_node = {node.payload: node.index for node in graph.nodes
                          if node.op == "param"}
        self.live = self._live_fixed()
        emitter = _Emitter(graph, self.live)
        self.terms = emitter.terms
        self.saved_nodes = sorted(emitter.saved, key=emitter.saved.get)
        self.cot_widths = list(emitter.cot_widths)
        state = next(node.index for node in graph.nodes if node.op == "state")
        self.state_saved = emitter.saved.get(state)
        self.output_depends_on_state = _depends_on(graph, graph.output, state)
        self.output_cot = emitter.cots.get((graph.output, graph.nodes[graph.output].rows))
        namespace: dict[str, Any] = {"np": np, "_mm": _mm, "_mul": _mul, "_T": _T,
                                     "_sum": _sum, "_dot": _dot,
                                     "_dtanh": _dtanh}
        self._activations = []
        for k, act in enumerate(graph.activations):
            fn, ufunc, dfn, at = _activation_functions(act)
            namespace.update({f"_act{k}": fn, f"_ufunc{k}": ufunc, f"_dact{k}": dfn})
            self._activations.append((fn, dfn, at))
        self._scalar_leaves = [i for i, leaf in enumerate(graph.params)
                               if isinstance(leaf, sp.Symbol)]
        self._scalar_fns: dict[int, tuple] = {}
        for node in graph.nodes:
            if node.op in ("scalar", "time"):
                namespace.update(self._scalar_namespace(node))
        source = "\n\n".join([emitter.forward(False), emitter.forward(True),
                              emitter.forward(True, record=True), emitter.reverse(),
                              emitter.tangent()])
        self.source = source
        self.direct = self._direct_plan()
        exec(compile(source, "<adjoint-verify matrix kernels>", "exec"), namespace)
        self.forward = namespace["forward"]
        self.save = namespace["save"]
        self.record = namespace["record"]
        self.reverse = namespace["reverse"]
        self.tangent = namespace["tangent"]

    # -- fixed nodes ----------------------------------------------------------------------
    def _live_fixed(self) -> set[int]:
        """Fixed nodes that depend on a parameter (their gradient is needed)."""
        live: set[int] = set()
        for node in self.graph.nodes:
            if node.row:
                continue
            if node.op == "param" or (node.op == "scalar" and node.payload.free_symbols):
                live.add(node.index)
            elif any(a in live for a in node.args):
                live.add(node.index)
        return live

    @staticmethod
    def _scalar_values(F: list) -> list:
        """The scalar parameters' values, kept as the last entry of ``F``."""
        return F[-1]

    def _scalar_namespace(self, node: Node) -> dict[str, Any]:
        """Value, time derivative, tangent and gradient of a scalar factor c(t, s), s the
        scalar parameters."""
        graph = self.graph
        t = graph.time if graph.time is not None else sp.Dummy("t")
        leaves = [graph.params[i] for i in self._scalar_leaves]
        expr = t if node.op == "time" else node.payload
        value = sp.lambdify([t, *leaves], expr, modules="numpy")
        dtime = sp.lambdify([t, *leaves], sp.diff(expr, t), modules="numpy")
        dparams = [(self.offsets[i][0], k,
                     sp.lambdify([t, *leaves], sp.diff(expr, leaf), modules="numpy"))
                   for k, (i, leaf) in enumerate(zip(self._scalar_leaves, leaves, strict=True))
                   if expr.has(leaf)]  # (theta offset, position among the scalars, d/ds)
        self._scalar_fns[node.index] = (value, dtime, dparams)
        values = self._scalar_values

        def scalar(t_, F):
            return value(t_, *values(F))

        def d_time(t_, F):
            return dtime(t_, *values(F))

        def tangent(t_, F, dF, dt):
            args = values(F)
            total = None if dt is None else dtime(t_, *args) * dt
            if dF is not None:
                for _, k, fn in dparams:
                    total = _sum(total, fn(t_, *args) * dF[-1][k])
            return total

        def gradient(t_, F, E, rowdot, want_t, T, per_row):
            """Add dc/dt and dc/ds times sum(G * X), row by row (``t_`` may be a column);
            ``E`` holds the scalar parameters' gradients (per row when ``per_row``)."""
            args = values(F)
            if want_t:
                T[0] = T[0] + np.sum(dtime(t_, *args) * rowdot)
            for _, k, fn in dparams:
                weighted = fn(t_, *args) * rowdot
                E[..., k] += weighted[..., 0] if per_row else np.sum(weighted)

        return {f"_scalar{node.index}": scalar, f"_dtime{node.index}": d_time,
                f"_tscalar{node.index}": tangent, f"_cgrad{node.index}": gradient}

    def fixed(self, theta: NDArray) -> tuple[list, list]:
        """Values ``F`` of the fixed nodes (vectors as rows ``(1, m)``, matrices true) and
        the transposes ``FT`` of the matrices (for ``X @ A.T``), for one theta."""
        F: list[Any] = [None] * (len(self.graph.nodes) + 1)
        FT: list[Any] = [None] * len(self.graph.nodes)
        F[-1] = [theta[self.offsets[i][0]] for i in self._scalar_leaves]
        for node in self.graph.nodes:
            if node.row:
                continue
            value = self._fixed_value(node, F, theta)
            F[node.index] = value
            if node.op != "scalar" and np.ndim(value) == 2:
                FT[node.index] = self._true(node, value).T
        return F, FT

    def fixed_tangent(self, F: list, dtheta: NDArray) -> list:
        """Tangents of the fixed nodes along ``dtheta`` (forward mode), shaped as ``F``."""
        dF: list[Any] = [None] * (len(self.graph.nodes) + 1)
        dF[-1] = [dtheta[self.offsets[i][0]] for i in self._scalar_leaves]
        nodes = self.graph.nodes
        for node in nodes:
            if node.row or node.index not in self.live:
                continue
            args = [nodes[a] for a in node.args]

            def d(a):
                return dF[a.index] if a.index in self.live else None

            if node.op == "param":
                start, stop, shape = self.offsets[node.payload]
                value = dtheta[start:stop].reshape(shape) if shape else dtheta[start]
                dF[node.index] = self._rep(node, value) if shape else value
                continue
            if node.op == "scalar":
                _, _, dparams = self._scalar_fns[node.index]
                args_ = self._scalar_values(F)
                dF[node.index] = sum(fn(0.0, *args_) * dtheta[start]
                                     for start, _, fn in dparams)
                continue
            tv = [self._true_any(a, F[a.index]) for a in args]
            td = [None if d(a) is None else self._true_any(a, d(a)) for a in args]
            if node.op == "matmul":
                value = _sum(_mm(td[0], tv[1]), _mm(tv[0], td[1]))
            elif node.op == "add":
                value = _sum(*td)
            elif node.op == "transpose":
                value = td[0].T
            elif node.op in ("hadamard", "scale"):
                value = _sum(_mul(td[0], tv[1]), _mul(tv[0], td[1]))
            else:  # apply
                fn, dfn, at = self._activations[self.graph.activations.index(node.payload)]
                value = dfn(fn(tv[0]) if at == "output" else tv[0]) * td[0]
            dF[node.index] = self._rep(node, np.asarray(value)) if node.op != "scalar" else value
        return dF

    @staticmethod
    def _true(node: Node, value):
        """A fixed node's value in its true ``(rows, cols)`` shape."""
        return value.reshape(node.rows, node.cols) if node.vector else value

    def _true_any(self, node: Node, value):
        return value if node.op in ("scalar", "time") else self._true(node, value)

    @staticmethod
    def _rep(node: Node, value):
        return value.reshape(1, node.rows) if node.vector and np.ndim(value) == 2 else value

    def _fixed_value(self, node: Node, F: list, theta: NDArray):
        nodes = self.graph.nodes
        args = [self._true_any(nodes[a], F[a]) for a in node.args]
        if node.op == "param":
            start, stop, shape = self.offsets[node.payload]
            if not shape:
                return theta[start]
            return self._rep(node, theta[start:stop].reshape(shape))
        if node.op == "const":
            return self._rep(node, np.array(node.payload.tolist(), dtype=float))
        if node.op == "scalar":
            fn = self._scalar_fns[node.index][0]
            return fn(0.0, *self._scalar_values(F))
        if node.op == "apply":
            fn = self._activations[self.graph.activations.index(node.payload)][0]
            return self._rep(node, np.asarray(fn(args[0])))
        value = {
            "matmul": lambda: args[0] @ args[1],
            "add": lambda: args[0] + args[1],
            "hadamard": lambda: args[0] * args[1],
            "scale": lambda: args[0] * args[1],
            "transpose": lambda: args[0].T,
        }[node.op]()
        return self._rep(node, np.asarray(value))

    # -- parameter gradients ------------------------------------------------------------
    def tape(self, slots: int, batch: int, dtype, *, per_row: bool = False,
             ring: int = 0) -> Tape:
        """Buffers for ``slots`` calls of ``save``/``reverse`` on a batch of ``batch`` rows;
        ``per_row`` keeps the scalar parameters' time-dependent terms per row (for
        gradients by group, one slot). ``ring = r`` keeps the cotangents of ``r`` slots
        only, for a caller that calls :meth:`flush` on every ``r`` consecutive slots (where
        :attr:`flushable`; else ignored)."""
        nodes = self.graph.nodes
        ring = ring if ring and self.flushable and ring < slots else 0
        saved = [POOL.empty((slots, batch, nodes[i].rows), dtype) for i in self.saved_nodes]
        cots = [POOL.empty((ring or slots, batch, w), dtype) for w in self.cot_widths]
        count = len(self._scalar_leaves)
        extra = np.zeros((batch, count) if per_row else count, dtype=dtype)
        flushed = np.zeros(self.p, dtype=dtype) if ring else None
        return Tape(saved, cots, extra, slots, ring, flushed)

    @property
    def flushable(self) -> bool:
        """Whether parameter products can be taken slot range by slot range (every term
        lands on a parameter matrix of its own, no time-dependent scalar factor)."""
        return self.direct is not None

    def cots_of(self, tape: Tape) -> list:
        """The cotangent buffers as the generated ``reverse`` indexes them."""
        if not tape.ring:
            return tape.cots
        return [_Ring(c, tape.ring) for c in tape.cots]

    def flush(self, tape: Tape, first: int, stop: int) -> None:
        """Add the parameter products of slots ``first .. stop - 1`` (one whole turn of
        the ring, ``first`` a multiple of it) to ``tape.flushed``."""
        count = stop - first
        for outer, cot_index, saved_index, start, end, _ in self.direct:
            cot = tape.cots[cot_index][:count]
            cot = cot.reshape(-1, cot.shape[-1])
            target = tape.flushed[start:end]
            if outer:
                x = tape.saved[saved_index][first:stop]
                target += (cot.T @ x.reshape(-1, x.shape[-1])).reshape(-1)
            else:
                target += np.ones(cot.shape[0], dtype=cot.dtype) @ cot

    def _direct_plan(self) -> list[tuple] | None:
        """Terms that land on a parameter matrix or vector itself, each on its own one:
        their products are written straight into theta's slice (the common case, and the
        one on a solver's hot path). None when some term needs the general route."""
        nodes = self.graph.nodes
        targets = [term.target for term in self.terms]
        if len(set(targets)) != len(targets) or self._scalar_leaves:
            return None
        plan = []
        for term in self.terms:
            node = nodes[term.target]
            if node.op != "param":
                return None
            start, stop, shape = self.offsets[node.payload]
            plan.append((term.kind == "outer", term.cot, term.saved, start, stop, shape))
        return plan

    def parameter_gradient(self, tape: Tape, F: list, *, groups: int | None = None,
                           magnitude: bool = False) -> NDArray:
        """``dL/dtheta`` from the cotangents recorded on the first ``tape.used`` slots: one
        product per term over all slots and rows, then back through the fixed nodes.

        ``groups=g`` splits the rows (of a one-slot, ``per_row`` tape) into ``g`` equal
        consecutive groups and returns one gradient per group, shape ``(g, p)``.
        ``magnitude`` sums the magnitudes of the terms instead (every factor taken in
        absolute value): the size of what the gradient is summed from, per entry.
        """
        used = tape.used
        if tape.ring:
            return tape.flushed.copy()
        size = np.abs if magnitude else (lambda x: x)
        if groups is None and self.direct is not None and not magnitude:
            grad = np.zeros(self.p, dtype=np.result_type(*(c.dtype for c in tape.cots))
                            if tape.cots else np.float64)
            for outer, cot_index, saved_index, start, stop, shape in self.direct:
                cot = tape.cots[cot_index][:used]
                cot = cot.reshape(-1, cot.shape[-1])
                if outer:
                    x = tape.saved[saved_index][:used]
                    np.matmul(cot.T, x.reshape(-1, x.shape[-1]),
                              out=grad[start:stop].reshape(shape))
                elif cot.shape[0] > 4096:  # NumPy's column sums of a tall array are slow
                    np.matmul(np.ones(cot.shape[0], dtype=cot.dtype), cot,
                              out=grad[start:stop])
                else:
                    np.sum(cot, axis=0, out=grad[start:stop])
            return grad
        nodes = self.graph.nodes
        lead = () if groups is None else (groups,)
        fixed_cot: dict[int, Any] = {}
        for term in self.terms:
            node = nodes[term.target]
            cot = size(tape.cots[term.cot][:used])
            cot = cot.reshape(*lead, -1, cot.shape[-1])
            if term.kind == "outer":
                x = size(tape.saved[term.saved][:used])
                x = x.reshape(*lead, -1, x.shape[-1])
                value = np.swapaxes(cot, -1, -2) @ x
            elif node.op == "scalar":
                value = cot.sum(axis=(-2, -1))
            else:
                ones = np.ones(cot.shape[-2], dtype=cot.dtype)
                value = (ones @ cot).reshape(*lead, node.rows, node.cols)
            fixed_cot[term.target] = fixed_cot.get(term.target, 0) + value
        grad = np.zeros((*lead, self.p), dtype=np.result_type(
            tape.extra, *(c.dtype for c in tape.cots)))
        if self._scalar_leaves:
            extra = tape.extra if groups is None or tape.extra.ndim == 1 else (
                tape.extra.reshape(groups, -1, tape.extra.shape[-1]).sum(axis=1))
            for k, i in enumerate(self._scalar_leaves):
                grad[..., self.offsets[i][0]] += size(extra[..., k])
        self._fixed_reverse(fixed_cot, F, grad, magnitude=magnitude)
        return grad

    def _fixed_reverse(self, cot: dict, F: list, grad: NDArray, *,
                       magnitude: bool = False) -> None:
        """Back through the fixed nodes to the parameter leaves, adding into ``grad`` (a
        leading batch axis of the cotangents, if any, is kept)."""
        nodes = self.graph.nodes
        for node in reversed(nodes):
            if node.row or node.index not in cot:
                continue
            g = cot.pop(node.index)
            args = [nodes[a] for a in node.args]

            def true(a, factor=True):
                value = self._true_any(a, F[a.index])
                return np.abs(value) if magnitude and factor else value

            def push(arg, value):
                if arg.index in self.live:
                    cot[arg.index] = cot.get(arg.index, 0) + value

            if node.op == "param":
                start, stop, _ = self.offsets[node.payload]
                grad[..., start:stop] += np.reshape(g, (*np.shape(grad)[:-1], stop - start))
            elif node.op == "scalar":
                for start, _, fn in self._scalar_fns[node.index][2]:
                    slope = fn(0.0, *self._scalar_values(F))
                    grad[..., start] += g * (abs(slope) if magnitude else slope)
            elif node.op == "matmul":
                A, X = args
                push(A, g @ np.swapaxes(true(X), -1, -2))
                push(X, np.swapaxes(true(A), -1, -2) @ g)
            elif node.op == "add":
                for a in args:
                    push(a, g)
            elif node.op == "transpose":
                push(args[0], np.swapaxes(g, -1, -2))
            elif node.op in ("hadamard", "scale"):
                x, y = args
                for a, other in ((x, y), (y, x)):
                    if a.op == "scalar":
                        push(a, np.sum(g * true(other), axis=(-2, -1)))
                    else:
                        push(a, g * true(other))
            elif node.op == "apply":
                fn, dfn, at = self._activations[self.graph.activations.index(node.payload)]
                u = true(args[0], factor=False)
                slope = dfn(fn(u) if at == "output" else u)
                push(args[0], g * (np.abs(slope) if magnitude else slope))
