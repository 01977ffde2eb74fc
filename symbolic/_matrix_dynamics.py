"""Checks and structure of matrix-form dynamics (``state`` a ``MatrixSymbol``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sympy as sp
from sympy.matrices.expressions.matexpr import MatrixElement

from ._matrix_graph import Graph, MatrixFormError, build_graph

__all__ = ["MatrixSpec", "check_matrix_dynamics", "entry_name", "explicit_symbols"]


def entry_name(leaf: Any, i: int, j: int) -> str:
    """How a person names one entry of a parameter matrix: ``W1[3, 5]`` (``b1[3]`` for a
    column)."""
    if leaf.shape[1] == 1:
        return f"{leaf.name}[{i}]"
    return f"{leaf.name}[{i}, {j}]"


@dataclass(frozen=True, eq=False)
class MatrixSpec:
    """A checked matrix-form right-hand side.

    Attributes
    ----------
    rhs : MatrixExpr, n x 1
    state : MatrixSymbol, n x 1
    leaves : tuple of MatrixSymbol or Symbol
        The parameters in theta order; each matrix flattened row-major.
    time : Symbol or None
    graph : Graph
    offsets : list of (start, stop, shape)
        Where each leaf lives in theta; ``shape`` is ``()`` for a scalar.
    """

    rhs: Any
    state: sp.MatrixSymbol
    leaves: tuple
    time: sp.Symbol | None
    graph: Graph
    offsets: tuple

    @property
    def p(self) -> int:
        return self.offsets[-1][1] if self.offsets else 0

    def entries(self) -> tuple:
        """Every parameter entry, flat in theta order (MatrixElement or Symbol)."""
        out = []
        for leaf in self.leaves:
            if isinstance(leaf, sp.MatrixSymbol):
                out.extend(leaf[i, j] for i in range(leaf.shape[0]) for j in range(leaf.shape[1]))
            else:
                out.append(leaf)
        return tuple(out)

    def entry_names(self) -> tuple[str, ...]:
        out = []
        for leaf in self.leaves:
            if isinstance(leaf, sp.MatrixSymbol):
                out.extend(entry_name(leaf, i, j) for i in range(leaf.shape[0])
                           for j in range(leaf.shape[1]))
            else:
                out.append(str(leaf))
        return tuple(out)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_matrix_dynamics(rhs: Any, state: sp.MatrixSymbol, params: Any, time: Any,
                          error: type[Exception]) -> MatrixSpec:
    """Check matrix-form dynamics; raise ``error`` (DynamicsError) naming the argument."""
    if state.shape[1] != 1 or not isinstance(state.shape[0], (int, sp.Integer)):
        raise error(
            f"`state` must be an n x 1 MatrixSymbol (a column), got {state.name} of shape "
            f"{state.shape[0]} x {state.shape[1]}; e.g. sympy.MatrixSymbol('z', 16, 1)."
        )
    if isinstance(params, (sp.MatrixSymbol, sp.Symbol)):
        params = [params]
    if not isinstance(params, (list, tuple)):
        raise error(
            f"`params` of matrix-form dynamics must be a list of MatrixSymbols (and scalar "
            f"Symbols), got {type(params).__name__} {_describe(params)}; e.g. "
            "params=[W1, b1, W2, b2]."
        )
    leaves = []
    for position, leaf in enumerate(params):
        if not isinstance(leaf, (sp.MatrixSymbol, sp.Symbol)):
            raise error(
                f"`params[{position}]` must be a MatrixSymbol or a Symbol, got "
                f"{type(leaf).__name__} {_describe(leaf)}; matrix-form parameters are whole "
                "matrices, e.g. sympy.MatrixSymbol('W1', 64, 16)."
            )
        if leaf in leaves or (getattr(leaf, "name", None) in {getattr(x, "name", None)
                                                              for x in leaves}):
            raise error(f"`params` lists {leaf} twice; every parameter must be distinct.")
        if leaf == state or getattr(leaf, "name", None) == state.name:
            raise error(f"the symbol {state.name} is both the state and a parameter; rename "
                        "one of them.")
        leaves.append(leaf)
    if time is not None and not isinstance(time, sp.Symbol):
        raise error(
            f"`time` must be a SymPy Symbol or None, got {type(time).__name__} "
            f"{_describe(time)}; e.g. time=sympy.Symbol('t')."
        )
    if time is not None and time in leaves:
        raise error(f"`time` {time} is also listed in `params`; remove it from `params`.")
    if not isinstance(rhs, sp.MatrixExpr) and not isinstance(rhs, sp.MatrixBase):
        raise error(
            f"`rhs` of matrix-form dynamics must be a matrix expression in {state.name}, got "
            f"{type(rhs).__name__} {_describe(rhs)}; e.g. W2 * (W1 * z + b1)"
            ".applyfunc(sympy.tanh) + b2."
        )
    if tuple(rhs.shape) != tuple(state.shape):
        raise error(
            f"`rhs` has shape {rhs.shape[0]} x {rhs.shape[1]} but the state {state.name} is "
            f"{state.shape[0]} x 1; give one right-hand side per state variable."
        )
    known = {state, *leaves} | ({time} if time is not None else set())
    unknown = sorted((rhs.free_symbols - known), key=str)
    if unknown:
        names = ", ".join(str(s) for s in unknown)
        raise error(
            f"`rhs` uses the symbol(s) {names}, which are neither state, parameter nor time; "
            "add them to `params`" + (" (or pass the time as `time`)" if time is None else "")
            + "."
        )
    try:
        graph = build_graph(rhs, state, tuple(leaves), time)
    except MatrixFormError as exc:
        raise error(f"`rhs`: {exc}") from None
    offsets, start = [], 0
    for leaf in leaves:
        size = leaf.shape[0] * leaf.shape[1] if isinstance(leaf, sp.MatrixSymbol) else 1
        shape = tuple(int(d) for d in leaf.shape) if isinstance(leaf, sp.MatrixSymbol) else ()
        offsets.append((start, start + int(size), shape))
        start += int(size)
    return MatrixSpec(rhs, state, tuple(leaves), time, graph, tuple(offsets))


def explicit_symbols(spec: MatrixSpec) -> dict:
    """Scalar Symbols standing for every entry of the state and the parameter matrices
    (``z_3``, ``W1_2_0``): the substitution that turns matrix form into elementwise form."""
    mapping: dict = {}
    for i in range(spec.state.shape[0]):
        mapping[spec.state[i, 0]] = sp.Symbol(f"{spec.state.name}_{i}", real=True)
    for leaf in spec.leaves:
        if isinstance(leaf, sp.MatrixSymbol):
            for i in range(leaf.shape[0]):
                for j in range(leaf.shape[1]):
                    mapping[leaf[i, j]] = sp.Symbol(f"{leaf.name}_{i}_{j}", real=True)
    return mapping


def state_entries(state: sp.MatrixSymbol) -> tuple[MatrixElement, ...]:
    return tuple(state[i, 0] for i in range(state.shape[0]))
