"""Where dynamics and loss are not smooth: the switching surfaces of their non-smooth
functions, and whether ``f`` jumps or only kinks there.

Every non-smooth function marks a surface ``g(z, theta, t) = 0`` (for ``floor`` and its
kin: ``g`` an integer) with ``g`` its argument, the difference of two arguments of
``Max``/``Min``, or ``lhs - rhs`` of a ``Piecewise`` condition. On a *kink* ``f`` stays
continuous (``Abs``, ``Max``, ``Min``, ``z * Heaviside(z)``, a ``Piecewise`` whose pieces
agree on the surface): the gradient exists, but solvers converge only at first order across
it. On a *jump* ``f`` is discontinuous and a trajectory crossing the surface makes the
gradient contain a jump term (the saltation matrix); a jump on a surface that depends on
time alone needs no such term (MATH.md, "Non-smooth and discontinuous dynamics").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import sympy as sp
from numpy.typing import NDArray
from sympy.core.relational import Relational

from ._dynamics import DynamicsError
from ._printing import numpy_printer

__all__ = [
    "JUMP",
    "KINK",
    "NON_SMOOTH_FUNCTIONS",
    "TIME_JUMP",
    "CompiledSwitching",
    "Switch",
    "find_switches",
]

#: The kinds of switch: ``f`` discontinuous, ``f`` continuous with a discontinuous
#: derivative, ``f`` discontinuous on a surface of time alone.
JUMP, KINK, TIME_JUMP = "jump", "kink", "time"

_KINKS = (sp.Abs, sp.Max, sp.Min)
_SIGN_LIKE = {sp.Heaviside: (sp.S.One, sp.S.Zero), sp.sign: (sp.S.One, sp.S.NegativeOne)}
_INTEGER_STEPS = (sp.floor, sp.ceiling, sp.frac)
#: Every SymPy function whose value or derivative is discontinuous somewhere on the reals.
NON_SMOOTH_FUNCTIONS: tuple[type, ...] = (
    *_KINKS, sp.Heaviside, sp.sign, sp.arg, *_INTEGER_STEPS, sp.Mod, sp.Piecewise,
)
#: The symbolic continuity test gives up (and calls the switch a jump, which refuses rather
#: than passes) on expressions larger than this many operations.
_MAX_OPS = 400


@dataclass(frozen=True)
class Switch:
    """A surface where ``f`` (or the loss) is not smooth.

    Attributes
    ----------
    function : sympy.Expr
        ``g``: the surface is ``g = 0``, or ``g`` an integer when ``integer``.
    node : sympy.Expr
        The non-smooth sub-expression, e.g. ``Heaviside(z - 1)``.
    kind : {"jump", "kink", "time"}
        See the module docstring.
    integer : bool
        ``floor``, ``ceiling``, ``frac``, ``Mod``: non-smooth wherever ``g`` is an integer.
    """

    function: sp.Expr
    node: sp.Expr
    kind: str
    integer: bool = False

    def describe(self) -> str:
        """E.g. ``the switch of Heaviside(z - 1) (where z - 1 = 0)``."""
        noun = {JUMP: "switch", KINK: "kink", TIME_JUMP: "switch in time"}[self.kind]
        where = (f"where {self.function} is an integer" if self.integer
                 else f"where {self.function} = 0")
        return f"the {noun} of {self.node} ({where})"


def _relationals(condition: Any) -> list[Relational]:
    if isinstance(condition, Relational):
        return [condition]
    if condition in (sp.true, sp.false):
        return []
    if isinstance(condition, sp.logic.boolalg.BooleanFunction):
        return [r for arg in condition.args for r in _relationals(arg)]
    raise DynamicsError(
        f"the Piecewise condition {condition} is not made of comparisons; write it with <, "
        "<=, >, >=, Eq, Ne combined by &, |, ~ so that adjoint-verify can find where it "
        "switches."
    )


def _surfaces(node: sp.Expr) -> list[tuple[sp.Expr, bool]]:
    """``(g, integer)`` of every surface where ``node`` is not smooth."""
    if isinstance(node, (sp.Heaviside, sp.sign, sp.Abs, sp.arg)):
        return [(node.args[0], False)]
    if isinstance(node, (sp.Max, sp.Min)):
        return [(a - b, False) for a, b in combinations(node.args, 2)]
    if isinstance(node, _INTEGER_STEPS):
        return [(node.args[0], True)]
    if isinstance(node, sp.Mod):
        return [(node.args[0] / node.args[1], True)]
    if isinstance(node, sp.Piecewise):
        found: list[tuple[sp.Expr, bool]] = []
        for _, condition in node.args:
            for rel in _relationals(condition):
                g = rel.lhs - rel.rhs
                if (g, False) not in found:
                    found.append((g, False))
        return found
    return []


def _as_reals(exprs: Sequence[sp.Expr]) -> list[sp.Expr]:
    symbols = set().union(*(e.free_symbols for e in exprs))
    reals = {s: sp.Dummy(s.name, real=True) for s in symbols if s.is_real is not True}
    return [e.xreplace(reals) for e in exprs]


def _is_zero(expr: sp.Expr) -> bool:
    if expr == 0:
        return True
    if sp.count_ops(expr) > _MAX_OPS:
        return False
    return sp.simplify(expr) == 0


def _vanishes_on(jumps: Sequence[sp.Expr], g: sp.Expr) -> bool:
    """True when every expression of ``jumps`` is provably zero on ``g = 0`` (all symbols
    real); False when that cannot be shown (the caller then assumes a jump)."""
    if all(_is_zero(j) for j in jumps):
        return True
    values = _as_reals([g, *jumps])
    g_real, jumps_real = values[0], values[1:]
    for symbol in sorted(g_real.free_symbols, key=str):
        try:
            if sp.Poly(g_real, symbol).degree() > 2:
                continue
            roots = sp.solve(g_real, symbol)
        except (sp.PolynomialError, NotImplementedError, ValueError, TypeError):
            continue
        if roots:
            return all(_is_zero(j.xreplace({symbol: root})) for root in roots for j in jumps_real)
    return False


def _kind(node: sp.Expr, exprs: Sequence[sp.Expr], g: sp.Expr, time: sp.Symbol | None) -> str:
    if isinstance(node, _KINKS):
        return KINK
    kind = JUMP
    affected = [e for e in exprs if e.has(node)]
    if type(node) in _SIGN_LIKE:
        above, below = _SIGN_LIKE[type(node)]
        jumps = [e.xreplace({node: above}) - e.xreplace({node: below}) for e in affected]
        kind = KINK if _vanishes_on(jumps, g) else JUMP
    elif isinstance(node, sp.Piecewise):
        pieces = [piece for piece, _ in node.args]
        jumps = [e.xreplace({node: p}) - e.xreplace({node: q})
                 for p, q in combinations(pieces, 2) for e in affected]
        kind = KINK if _vanishes_on(jumps, g) else JUMP
    if kind == JUMP and time is not None and g.free_symbols <= {time}:
        return TIME_JUMP
    return kind


def find_switches(exprs: Sequence[sp.Expr], time: sp.Symbol | None = None
                  ) -> tuple[Switch, ...]:
    """Every switching surface of the non-smooth functions in ``exprs``, in a stable order.

    A ``Piecewise`` is a kink on one of its surfaces only when its pieces agree there
    pairwise (a test that is stricter than needed, so it can call a kink a jump, never the
    reverse); ``floor``, ``ceiling``, ``frac``, ``Mod`` and ``arg`` are always jumps.
    """
    nodes: set[sp.Expr] = set()
    for expr in exprs:
        nodes |= expr.atoms(*NON_SMOOTH_FUNCTIONS)
    switches: list[Switch] = []
    for node in sorted(nodes, key=sp.default_sort_key):
        for g, integer in _surfaces(node):
            switch = Switch(g, node, _kind(node, exprs, g, time), integer)
            if switch not in switches:
                switches.append(switch)
    return tuple(switches)


class CompiledSwitching:
    """The switching functions of ``f`` and of the loss, compiled into batch functions.

    Attributes
    ----------
    rhs_switches : tuple of Switch
        The surfaces of ``f``, in the column order of :meth:`rhs_values`.
    loss_switches : tuple of Switch
        The surfaces of the loss, in the column order of :meth:`loss_values`.
    """

    def __init__(self, dynamics: Any, loss: sp.Expr, targets: Sequence[sp.Symbol] = ()):
        self.rhs_switches = find_switches(list(dynamics.rhs), time=dynamics.time)
        self.loss_switches = find_switches([loss])
        t = dynamics.time if dynamics.time is not None else sp.Dummy("t")
        self._rhs_args = [*dynamics.state, *dynamics.params, t]
        self._loss_args = [*dynamics.state, *targets]
        self._rhs = self._compile(self._rhs_args, self.rhs_switches)
        self._loss = self._compile(self._loss_args, self.loss_switches)

    def __bool__(self) -> bool:
        return bool(self.rhs_switches or self.loss_switches)

    @staticmethod
    def _compile(args: list, switches: tuple[Switch, ...]):
        if not switches:
            return None
        return sp.lambdify(args, [s.function for s in switches], modules="numpy",
                           dummify=True, printer=numpy_printer())

    @staticmethod
    def _columns(fn, width: int, batch: int, values: list) -> NDArray:
        out = np.empty((batch, width))
        if fn is None:
            return out
        for j, column in enumerate(fn(*values)):
            out[:, j] = np.real(column)
        return out

    def rhs_values(self, z: NDArray, theta: NDArray, t: Any) -> NDArray:
        """``g`` of every switch of ``f``, shape ``(B, K)``; ``t`` a scalar or ``(B,)``.

        Complex input (complex step) is evaluated at its real part.
        """
        z = np.real(z)
        columns = [*np.ascontiguousarray(z.T), *np.real(theta), np.real(t)]
        return self._columns(self._rhs, len(self.rhs_switches), z.shape[0], columns)

    def loss_values(self, z: NDArray, y: NDArray | None = None) -> NDArray:
        """``g`` of every switch of the loss at ``z`` (``(B, n)``) with targets ``y``
        (``(B, k)`` or None), shape ``(B, K_loss)``."""
        z = np.real(z)
        k = len(self._loss_args) - z.shape[1]
        y = np.zeros((z.shape[0], k)) if y is None else np.broadcast_to(y, (z.shape[0], k))
        columns = [*np.ascontiguousarray(z.T), *np.ascontiguousarray(np.real(y).T)]
        return self._columns(self._loss, len(self.loss_switches), z.shape[0], columns)
