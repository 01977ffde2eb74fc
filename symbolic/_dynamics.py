"""Neural-ODE dynamics written in SymPy, checked once when they are built."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import sympy as sp
from mpmath.libmp import to_str
from sympy.core.function import AppliedUndef
from sympy.matrices.expressions.matexpr import MatrixElement

from ._matrix_dynamics import (
    MatrixSpec,
    check_matrix_dynamics,
    explicit_symbols,
    state_entries,
)

__all__ = ["Dynamics", "DynamicsError", "check_loss", "check_targets"]


class DynamicsError(ValueError):
    """Malformed dynamics or loss: the message names the argument and the fix."""


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _as_symbol_tuple(value: Any, name: str, *, allow_empty: bool) -> tuple[sp.Symbol, ...]:
    """Flatten `value` (Symbol, sequence or Matrix of Symbols) into a tuple of Symbols."""
    if isinstance(value, sp.Symbol):
        symbols = (value,)
    elif isinstance(value, sp.MatrixBase):
        symbols = tuple(value)  # row-major
    elif isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        symbols = tuple(value)
    else:
        raise DynamicsError(
            f"`{name}` must be a sequence of SymPy Symbols or a Matrix of Symbols, "
            f"got {type(value).__name__} {_describe(value)}; "
            f"build it with sympy.symbols(...)."
        )
    for position, entry in enumerate(symbols):
        if not isinstance(entry, sp.Symbol):
            raise DynamicsError(
                f"`{name}[{position}]` must be a SymPy Symbol, got {type(entry).__name__} "
                f"{_describe(entry)}; pass the symbols themselves, e.g. sympy.symbols('x0:3')."
            )
    if not symbols and not allow_empty:
        raise DynamicsError(
            f"`{name}` is empty; give at least one Symbol, e.g. sympy.symbols('z0:2')."
        )
    seen: set[sp.Symbol] = set()
    for entry in symbols:
        if entry in seen:
            raise DynamicsError(
                f"`{name}` lists the symbol {entry} twice; every entry must be a distinct Symbol."
            )
        seen.add(entry)
    return symbols


#: Values SymPy gives a division by zero, log(0) and the like: no number can stand for them.
UNDEFINED_VALUES = (sp.S.ComplexInfinity, sp.S.NaN, sp.S.Infinity, sp.S.NegativeInfinity)


def check_defined(expr: sp.Basic, where: str) -> None:
    """Raise ``DynamicsError`` when ``expr`` contains ``zoo``, ``nan``, ``oo`` or an
    ``AccumBounds`` interval."""
    found = [str(v) for v in UNDEFINED_VALUES if expr.has(v)]
    if expr.has(sp.AccumBounds):
        found.append("AccumBounds")
    if found:
        raise DynamicsError(
            f"{where} is undefined or infinite: {_describe(expr)} contains {found[0]} (SymPy's "
            "value for a division by zero, log(0), an infinite limit or sin(oo)); write an "
            "expression that is finite wherever the trajectory goes."
        )


#: The largest float64 and the smallest positive one: a number beyond them becomes inf or 0
#: when the expression is compiled.
_FLOAT64_MAX, _FLOAT64_TINY = sp.Float(1.7976931348623157e308), sp.Float(5e-324)


def _constants(expr: sp.Basic) -> list[sp.Expr]:
    """The largest sub-expressions without symbols that are not plain numbers (``sqrt(2)``,
    ``exp(exp(10**6))``): their value is first computed when the expression is compiled."""
    if not isinstance(expr, sp.Expr) or isinstance(expr, sp.Number):
        return [c for arg in getattr(expr, "args", ()) for c in _constants(arg)]
    if not expr.free_symbols and expr.is_number:
        return [expr]
    return [c for arg in expr.args for c in _constants(arg)]


def _check_real_expression(expr: sp.Expr, where: str) -> None:
    """Neural-ODE dynamics and losses are real: no complex numbers, no undefined functions,
    no undefined values, no distributions."""
    check_defined(expr, where)
    if expr.has(sp.DiracDelta):
        raise DynamicsError(
            f"{where} contains DiracDelta, a distribution rather than a function: it has no "
            "value to integrate; write the impulse as a jump in the state instead."
        )
    if expr.has(sp.I) or any(n.is_real is False for n in expr.atoms(sp.Number)):
        raise DynamicsError(
            f"{where} contains a complex number ({_describe(expr)}); the state, parameters and "
            "loss are real, so write the real and imaginary parts as separate states."
        )
    beyond = [n for n in expr.atoms(sp.Number)
              if abs(n) > _FLOAT64_MAX or 0 < abs(n) < _FLOAT64_TINY]
    if beyond:
        raise DynamicsError(
            f"{where} contains the number {to_str(sp.Float(beyond[0], 6)._mpf_, 3)}, beyond "
            "float64's range (5e-324 to 1.8e308) in which it is computed; rescale the "
            "expression."
        )
    for constant in _constants(expr):
        with np.errstate(all="ignore"):
            value = complex(sp.lambdify([], constant, modules="numpy")())
        if not np.isfinite(value):
            raise DynamicsError(
                f"{where} contains the constant {_describe(constant)}, which has no finite "
                "float64 value (it overflows 1.8e308, or is not real, like asin(2)); rescale "
                "or correct the expression."
            )
    undefined = sorted({type(f).__name__ for f in expr.atoms(AppliedUndef)})
    if undefined:
        raise DynamicsError(
            f"{where} uses the undefined function(s) {', '.join(undefined)}; give the "
            "function explicitly (e.g. sympy.tanh, or an expression), adjoint-verify has to "
            "differentiate it."
        )


def _as_expression_column(rhs: Any) -> sp.Matrix:
    if isinstance(rhs, Mapping):
        raise DynamicsError(
            f"`rhs` must be a list, tuple or Matrix of expressions, got a {type(rhs).__name__}; "
            "list the right-hand sides in the order of `state`."
        )
    if isinstance(rhs, sp.MatrixBase):
        entries = list(rhs)
        if rhs.rows != 1 and rhs.cols != 1:
            raise DynamicsError(
                f"`rhs` must be a vector (n x 1 or 1 x n Matrix), got a {rhs.rows} x {rhs.cols} "
                "Matrix; write the right-hand side as one expression per state variable."
            )
    elif isinstance(rhs, Iterable) and not isinstance(rhs, (str, bytes)):
        entries = list(rhs)
    else:
        raise DynamicsError(
            f"`rhs` must be a list, tuple or Matrix of SymPy expressions, got "
            f"{type(rhs).__name__} {_describe(rhs)}; wrap a single equation in a list."
        )
    column = []
    for position, entry in enumerate(entries):
        try:
            expr = sp.sympify(entry, strict=True)
        except (sp.SympifyError, TypeError) as exc:
            raise DynamicsError(
                f"`rhs[{position}]` must be a SymPy expression, got {type(entry).__name__} "
                f"{_describe(entry)}; build it from SymPy symbols."
            ) from exc
        if not isinstance(expr, sp.Expr) or getattr(expr, "is_Matrix", False):
            raise DynamicsError(
                f"`rhs[{position}]` must be a scalar SymPy expression, got "
                f"{type(expr).__name__} {_describe(expr)}."
            )
        _check_real_expression(expr, f"`rhs[{position}]`")
        column.append(expr)
    return sp.Matrix(column)


class Dynamics:
    r"""Dynamics :math:`dz/dt = f(z, \theta, t)` of a Neural ODE, as SymPy expressions.

    Parameters
    ----------
    rhs : list, tuple or Matrix of n SymPy expressions
        The right-hand side :math:`f`, one expression per state variable.
    state : sequence of n Symbols
        The state variables :math:`z`, in the order of the columns of ``z`` arrays.
    params : sequence of p Symbols, or a Matrix of Symbols, optional
        The parameters :math:`\theta`; a Matrix is flattened row-major, which fixes the
        order of ``theta`` arrays.
    time : Symbol, optional
        The time variable, if ``rhs`` depends on time.

    Matrix form, for network-sized dynamics: ``state`` an ``n x 1`` ``MatrixSymbol``,
    ``params`` a list of ``MatrixSymbol`` (and scalar ``Symbol``) parameters, and ``rhs`` a
    matrix expression as a network is written on paper, e.g.
    ``W2 * (W1 * z + b1).applyfunc(sympy.tanh) + b2``: products with parameter matrices,
    sums, scalar multiples (the time included), Hadamard products and elementwise
    functions. ``theta`` is every parameter matrix flattened row-major, concatenated in the
    order of ``params``; ``param_shapes`` maps each name to its shape. The derivatives are
    derived in matrix form, never entry by entry.

    Raises
    ------
    DynamicsError
        For wrong lengths, non-Symbols, repeated symbols, a state that is also a parameter
        or the time, and free symbols of ``rhs`` that are neither state, parameter nor time.
    """

    def __init__(self, rhs: Any, state: Any, params: Any = (), time: sp.Symbol | None = None):
        self._matrix: MatrixSpec | None = None
        if isinstance(state, sp.MatrixSymbol):
            self._matrix = check_matrix_dynamics(rhs, state, params, time, DynamicsError)
            self._rhs = rhs
            self._state = state_entries(state)
            self._params = None  # built on first use: one entry per parameter entry
            self._time = time
            return
        column = _as_expression_column(rhs)
        state_symbols = _as_symbol_tuple(state, "state", allow_empty=False)
        param_symbols = _as_symbol_tuple(params, "params", allow_empty=True)
        if time is not None and not isinstance(time, sp.Symbol):
            raise DynamicsError(
                f"`time` must be a SymPy Symbol or None, got {type(time).__name__} "
                f"{_describe(time)}; e.g. time=sympy.Symbol('t')."
            )
        if len(column) != len(state_symbols):
            raise DynamicsError(
                f"`state` has {len(state_symbols)} symbols but `rhs` has {len(column)} entries; "
                "give one right-hand side per state variable."
            )
        shared = [s for s in param_symbols if s in set(state_symbols)]
        if shared:
            raise DynamicsError(
                f"the symbol {shared[0]} is in both `state` and `params`; "
                "a symbol is either a state variable or a parameter, rename one of them."
            )
        if time is not None and (time in set(state_symbols) or time in set(param_symbols)):
            role = "state" if time in set(state_symbols) else "params"
            raise DynamicsError(
                f"`time` {time} is also listed in `{role}`; time is its own variable, "
                f"remove it from `{role}`."
            )
        known = set(state_symbols) | set(param_symbols) | ({time} if time is not None else set())
        for position, expr in enumerate(column):
            unknown = sorted(expr.free_symbols - known, key=str)
            if unknown:
                names = ", ".join(str(s) for s in unknown)
                hint = (
                    "add it to `params` (or pass it as `time`)"
                    if time is None
                    else "add it to `params`"
                )
                raise DynamicsError(
                    f"`rhs[{position}]` uses the symbol(s) {names}, which are neither state, "
                    f"parameter nor time; {hint} or substitute a number."
                )
        self._rhs = sp.ImmutableMatrix(column)
        self._state = state_symbols
        self._params = param_symbols
        self._time = time

    @property
    def rhs(self) -> Any:
        """The right-hand side: an n x 1 Matrix, or the matrix expression in matrix form."""
        return self._rhs

    @property
    def state(self) -> tuple:
        """The state variables (in matrix form its entries ``z[i, 0]``, for losses)."""
        return self._state

    @property
    def params(self) -> tuple:
        """The parameters, flattened in theta order (row-major for a Matrix; in matrix form
        the entries ``W1[i, j]`` of every parameter matrix)."""
        if self._params is None:
            self._params = self._matrix.entries()
        return self._params

    @property
    def time(self) -> sp.Symbol | None:
        return self._time

    @property
    def n(self) -> int:
        return len(self._state)

    @property
    def p(self) -> int:
        return self._matrix.p if self._matrix is not None else len(self._params)

    @property
    def form(self) -> str:
        """``"matrix"`` for matrix-form dynamics, else ``"elementwise"``."""
        return "elementwise" if self._matrix is None else "matrix"

    @property
    def matrix(self) -> MatrixSpec | None:
        """The checked matrix-form structure (None in elementwise form)."""
        return self._matrix

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each parameter's name and shape, in theta order (``()`` for a scalar)."""
        if self._matrix is None:
            return {str(s): () for s in self._params}
        return {str(leaf): shape for leaf, (_, _, shape)
                in zip(self._matrix.leaves, self._matrix.offsets, strict=True)}

    @property
    def param_names(self) -> tuple[str, ...]:
        """How a person names each entry of theta (``w3``; ``W1[2, 5]`` in matrix form)."""
        if self._matrix is None:
            return tuple(str(s) for s in self._params)
        return self._matrix.entry_names()

    @property
    def autonomous(self) -> bool:
        """True when ``rhs`` does not depend on time."""
        if self._time is None:
            return True
        if self._matrix is not None:
            return not self._rhs.has(self._time)
        return not any(e.has(self._time) for e in self._rhs)

    def as_elementwise(self) -> Dynamics:
        """The same dynamics written entry by entry (for small sizes: tests and the
        high-precision reference). State and parameter entries become Symbols ``z_3``,
        ``W1_2_0``; theta keeps its order."""
        if self._matrix is None:
            return self
        mapping = explicit_symbols(self._matrix)
        column = sp.Matrix(self._rhs.as_explicit()).xreplace(mapping)
        return Dynamics(rhs=list(column), state=[mapping[e] for e in self._state],
                        params=[mapping.get(e, e) for e in self.params], time=self._time)

    def explicit(self, expr: Any) -> Any:
        """``expr`` (a loss in the entries ``z[i, 0]``) written in the symbols of
        :meth:`as_elementwise`."""
        if self._matrix is None:
            return expr
        return sp.sympify(expr).xreplace(explicit_symbols(self._matrix))

    def _key(self) -> tuple:
        if self._matrix is not None:
            return (self._rhs, self._matrix.state, self._matrix.leaves, self._time)
        return (self._rhs, self._state, self._params, self._time)

    def __repr__(self) -> str:
        if self._matrix is not None:
            from ._matrix_adjoint import formula

            params = ", ".join(f"{name} ({shape[0]}x{shape[1]})" if shape else name
                               for name, shape in self.param_shapes.items())
            return (f"Dynamics(rhs={formula(self._rhs)}, state={self._matrix.state.name} "
                    f"({self.n}x1), params=[{params}], time={self._time})")
        rhs = ", ".join(str(e) for e in self._rhs)
        return (
            f"Dynamics(rhs=[{rhs}], state={list(self._state)}, params={list(self._params)}, "
            f"time={self._time})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Dynamics):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


def check_targets(dynamics: Dynamics, targets: Any) -> tuple[sp.Symbol, ...]:
    """``targets`` as a tuple of distinct Symbols used by no state, parameter or time."""
    if isinstance(targets, sp.MatrixSymbol):
        targets = tuple(targets[i, j] for i in range(targets.shape[0])
                        for j in range(targets.shape[1]))
        return targets
    if isinstance(targets, tuple) and targets and all(
            isinstance(entry, MatrixElement) for entry in targets):
        return targets  # the entries of a target MatrixSymbol, already checked
    symbols = _as_symbol_tuple(() if targets is None else targets, "targets", allow_empty=True)
    if dynamics.matrix is not None:
        taken = {dynamics.matrix.state.name, *(str(leaf) for leaf in dynamics.matrix.leaves)}
        clash = [s for s in symbols if s.name in taken or s == dynamics.time]
        if clash:
            raise DynamicsError(
                f"`targets` lists {clash[0]}, which is already a state, parameter or time "
                "symbol; name the data apart (y0, y1, ...)."
            )
        return symbols
    taken = set(dynamics.state) | set(dynamics.params)
    if dynamics.time is not None:
        taken.add(dynamics.time)
    clash = [s for s in symbols if s in taken]
    if clash:
        raise DynamicsError(
            f"`targets` lists {clash[0]}, which is already a state, parameter or time symbol; "
            "targets are the data the loss compares z(t_i) with, name them apart (y0, y1, ...)."
        )
    return symbols


def check_loss(dynamics: Dynamics, loss: Any, targets: Any = ()) -> sp.Expr:
    """Return ``loss`` as a SymPy expression in the state variables (and ``targets``), or
    raise.

    The per-observation loss may use the state symbols and the target symbols, the data the
    trajectory is compared with at each observation time, and nothing else.
    """
    if not isinstance(dynamics, Dynamics):
        raise DynamicsError(
            f"`dynamics` must be a symbolic.Dynamics, got {type(dynamics).__name__}; "
            "build one with Dynamics(rhs=..., state=..., params=..., time=...)."
        )
    if loss is None:
        raise DynamicsError(
            "`loss` is required: a SymPy expression in the state symbols, e.g. "
            "sympy.Rational(1, 2) * sum(z_i**2)."
        )
    try:
        expr = sp.sympify(loss, strict=True)
    except (sp.SympifyError, TypeError) as exc:
        raise DynamicsError(
            f"`loss` must be a SymPy expression in the state symbols, got "
            f"{type(loss).__name__} {_describe(loss)}."
        ) from exc
    if not isinstance(expr, sp.Expr) or getattr(expr, "is_Matrix", False):
        raise DynamicsError(
            f"`loss` must be a scalar SymPy expression, got {type(expr).__name__}; the loss "
            "is applied to each sample's z(t_i) and summed, so write it as one expression."
        )
    _check_real_expression(expr, "`loss`")
    target_symbols = check_targets(dynamics, targets)
    if dynamics.matrix is not None:
        return _check_matrix_loss(dynamics, expr.doit(), target_symbols)
    unknown = sorted(expr.free_symbols - set(dynamics.state) - set(target_symbols), key=str)
    if unknown:
        names = ", ".join(str(s) for s in unknown)
        allowed = ", ".join(str(s) for s in (*dynamics.state, *target_symbols))
        twins = [s for s in unknown if str(s) in {str(v) for v in (*dynamics.state,
                                                                   *target_symbols)}]
        if twins:
            raise DynamicsError(
                f"`loss` uses a symbol {twins[0]} with the name of a state or target but other "
                "assumptions (e.g. real=True on one and not the other), so SymPy treats them as "
                "different symbols; build the loss from the very symbols in `state`."
            )
        raise DynamicsError(
            f"`loss` uses the symbol(s) {names}, which are not state variables; the loss is "
            f"applied to z(t_i) and may use only {allowed} (declare data symbols with "
            "`targets=`)."
        )
    return expr


def _check_matrix_loss(dynamics: Dynamics, expr: sp.Expr, targets: tuple) -> sp.Expr:
    """A matrix-form loss: a scalar in the entries ``z[i, 0]`` of the state (and targets)."""
    allowed = set(dynamics.state) | set(targets)
    elements = expr.atoms(MatrixElement)
    stray = sorted(str(e) for e in elements if e not in allowed)
    plain = {s for s in targets if isinstance(s, sp.Symbol)}
    unknown = sorted(str(s) for s in expr.free_symbols - plain
                     - {e.parent for e in elements if e in allowed})
    if stray or unknown:
        names = ", ".join(stray + unknown)
        raise DynamicsError(
            f"`loss` uses {names}, which are not entries of the state "
            f"{dynamics.matrix.state.name}; the loss is applied to z(t_i) and may use only "
            f"its entries z[i, 0] (e.g. (z.T * z)[0, 0] / 2) and declared `targets`."
        )
    return expr
