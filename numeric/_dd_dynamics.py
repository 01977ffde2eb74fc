r"""The right-hand side of a Neural ODE and its tangent, in double-double arithmetic.

For a direction :math:`(\delta, v_\theta)` the tangent of :math:`f` is

.. math:: \dot f = \frac{\partial f}{\partial z} \delta + \frac{\partial f}{\partial
          \theta} v_\theta ,

computed in forward mode together with :math:`f`, never as a Jacobian:

- elementwise dynamics: the expressions ``dynamics.rhs`` through an
  :class:`~numeric._dd_program.ExpressionProgram` on dual numbers;
- matrix-form dynamics: the graph ``dynamics.matrix.graph`` node by node, batch as rows
  (``W z`` is ``Z @ W.T``), with the forward rules of MATH.md ("Matrix form")

  .. math:: (A X)^\cdot = \dot A X + A \dot X, \quad (X \circ Y)^\cdot = \dot X \circ Y +
            X \circ \dot Y, \quad \sigma.(U)^\cdot = \sigma'.(U) \circ \dot U, \quad
            (c X)^\cdot = \dot c X + c \dot X ;

  parameter products are exact-split double-double products (:mod:`numeric._dd_matmul`)
  whose right operand :math:`[W^T\ \dot W^T]` is prepared once per direction, so ``Z``
  meets ``W`` and its direction in one product.

:meth:`bind` fixes ``theta`` and ``v_theta`` (None: no parameter direction); the bound
object is called as ``bound(t, z, dz)`` with ``z``, ``dz`` DD arrays ``(B, n)``
(``dz = None``: no state direction) and returns ``(f, df)`` (``df`` None when both
directions are absent); ``bound.augmented(t, y)`` is the right-hand side ``[f, df]`` of the
augmented state ``y = [z, dz]``. The batch is evaluated in chunks of rows
(``CHUNK_ELEMENTS``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._dd_matmul import Sliced, matmul
from ._dd_program import ExpressionProgram, _add, _number, _times
from ._double_double import DD

__all__ = ["CHUNK_ELEMENTS", "dynamics_evaluator"]

#: Rows of the batch are evaluated in chunks whose widest intermediate array holds about
#: this many numbers (64 KB): arrays stay in cache and below the allocator's threshold for
#: returning memory to the system, which otherwise costs a page fault per ufunc call.
CHUNK_ELEMENTS = 8192


def _chunks(batch: int, width: int):
    rows = max(1, CHUNK_ELEMENTS // max(width, 1))
    return [slice(i, min(i + rows, batch)) for i in range(0, batch, rows)]


class _Bound:
    """Shared chunking: subclasses evaluate ``_evaluate(t, z, dz)`` on a chunk of rows."""

    n: int
    width: int
    tangent_params: bool

    def __call__(self, t: DD, z: DD, dz: DD | None) -> tuple[DD, DD | None]:
        """``(f, df)`` at the states ``z`` with state direction ``dz`` (DD ``(B, n)``,
        None for none); ``df`` is None when there is no direction at all."""
        want_tangent = dz is not None or self.tangent_params
        out = DD(np.empty((z.shape[0], 2 * self.n if want_tangent else self.n)))
        self._fill(t, z, dz, out, want_tangent)
        if not want_tangent:
            return out, None
        return out[:, :self.n], out[:, self.n:]

    def augmented(self, t: DD, y: DD) -> DD:
        """The right-hand side ``[f, df]`` of the augmented state ``y = [z, dz]``
        ``(B, 2n)``."""
        out = DD(np.empty(y.shape))
        self._fill(t, y[:, :self.n], y[:, self.n:], out, True)
        return out

    def _fill(self, t, z, dz, out: DD, want_tangent: bool) -> None:
        n = self.n
        for rows in _chunks(z.shape[0], self.width):
            f, df = self._evaluate(t, z[rows], None if dz is None else dz[rows])
            out.hi[rows, :n], out.lo[rows, :n] = f.hi, f.lo
            if want_tangent:
                if df is None:
                    out.hi[rows, n:], out.lo[rows, n:] = 0.0, 0.0
                else:
                    out.hi[rows, n:], out.lo[rows, n:] = df.hi, df.lo


# -- elementwise dynamics --------------------------------------------------------------------


class _ElementwiseEvaluator:
    def __init__(self, dynamics):
        self.dynamics = dynamics
        leaves = [*dynamics.state, *dynamics.params]
        if dynamics.time is not None:
            leaves.append(dynamics.time)
        self.program = ExpressionProgram(list(dynamics.rhs), leaves, "the right-hand side")

    def bind(self, theta, v_theta=None) -> _BoundElementwise:
        return _BoundElementwise(self, theta, v_theta)


class _BoundElementwise(_Bound):
    def __init__(self, evaluator: _ElementwiseEvaluator, theta, v_theta):
        dyn = evaluator.dynamics
        self.program = evaluator.program
        self.n, self.width = dyn.n, dyn.n
        self.theta = [DD(np.float64(v)) for v in theta]
        self.tangent_params = v_theta is not None
        self.v_theta = None if v_theta is None else [
            DD(np.float64(v)) if v != 0 else None for v in v_theta]
        self.time = dyn.time is not None

    def _evaluate(self, t, z, dz):
        n = self.n
        values = [z[:, i] for i in range(n)] + self.theta + ([t] if self.time else [])
        tangents = None
        if dz is not None or self.v_theta is not None:
            tangents = ([None] * n if dz is None else [dz[:, i] for i in range(n)])
            tangents += self.v_theta if self.v_theta is not None else [None] * len(self.theta)
            tangents += [None] if self.time else []
        out = self.program(values, tangents)
        B = z.shape[0]
        f = _stack_columns([v for v, _ in out], B)
        if tangents is None:
            return f, None
        d = [dv for _, dv in out]
        return f, (None if all(x is None for x in d) else _stack_columns(d, B))


def _stack_columns(columns: list[DD | None], batch: int) -> DD:
    hi = np.zeros((batch, len(columns)))
    lo = np.zeros((batch, len(columns)))
    for i, column in enumerate(columns):
        if column is not None:
            hi[:, i] = column.hi
            lo[:, i] = column.lo
    return DD(hi, lo)


# -- matrix-form dynamics ------------------------------------------------------------------


class _MatrixEvaluator:
    def __init__(self, dynamics):
        spec = dynamics.matrix
        self.dynamics, self.spec, self.graph = dynamics, spec, spec.graph
        self.scalar_leaves = [i for i, leaf in enumerate(spec.leaves)
                              if not hasattr(leaf, "shape")]
        scalar_symbols = [spec.leaves[i] for i in self.scalar_leaves]
        time = [spec.time] if spec.time is not None else []
        self.programs: dict[int, ExpressionProgram] = {}
        for node in self.graph.nodes:
            if node.op == "scalar":
                self.programs[node.index] = ExpressionProgram(
                    [node.payload], [*time, *scalar_symbols], f"the scalar factor {node.expr}")
            elif node.op == "apply":
                act = node.payload
                self.programs[node.index] = ExpressionProgram(
                    [act.body], [act.variable], f"the elementwise function {act.name}")
        self.has_time = spec.time is not None

    def bind(self, theta, v_theta=None) -> _BoundGraph:
        return _BoundGraph(self, np.asarray(theta, dtype=float),
                           None if v_theta is None else np.asarray(v_theta, dtype=float))


class _BoundGraph(_Bound):
    """The graph with its fixed nodes (parameters and what depends on them alone)
    evaluated once, and the parameter products prepared."""

    def __init__(self, evaluator: _MatrixEvaluator, theta, v_theta):
        self.ev = evaluator
        graph = evaluator.graph
        self.nodes = graph.nodes
        self.n = evaluator.dynamics.n
        self.width = 2 * max(int(node.rows) for node in self.nodes)
        self.tangent_params = v_theta is not None
        offsets = evaluator.spec.offsets
        self.scalars = [DD(np.float64(theta[offsets[i][0]])) for i in evaluator.scalar_leaves]
        self.d_scalars = [None if v_theta is None or v_theta[offsets[i][0]] == 0
                          else DD(np.float64(v_theta[offsets[i][0]]))
                          for i in evaluator.scalar_leaves]
        self.fixed: dict[int, tuple[Any, Any]] = {}
        self.products: dict[int, tuple[Sliced, Sliced, int]] = {}
        for node in self.nodes:
            if not node.row:
                self.fixed[node.index] = self._fixed_node(node, theta, v_theta)
        for node in self.nodes:
            if node.row and node.op == "matmul":
                value, tangent = self.fixed[node.args[0]]
                m = int(node.rows)
                both = value.T if tangent is None else DD(
                    np.hstack([value.hi.T, tangent.hi.T]), np.hstack([value.lo.T, tangent.lo.T]))
                prepared = Sliced(both)
                first = prepared if tangent is None else prepared.columns(0, m)
                self.products[node.index] = (prepared, first, m if tangent is not None else 0)

    # -- fixed nodes -------------------------------------------------------------------
    def _fixed_node(self, node, theta, v_theta):
        if node.op == "param":
            start, stop, shape = self.ev.spec.offsets[node.payload]
            value = DD(theta[start:stop].reshape(shape))
            direction = None if v_theta is None else v_theta[start:stop]
            if direction is None or not np.any(direction):
                return value, None
            return value, DD(direction.reshape(shape))
        if node.op == "const":
            rows = [[_number(entry) for entry in row] for row in node.payload.tolist()]
            return DD(np.array([[e.hi for e in r] for r in rows], dtype=float),
                      np.array([[e.lo for e in r] for r in rows], dtype=float)), None
        if node.op == "scalar":  # no time in a fixed factor: any value stands for it
            time = [DD(np.float64(0.0))] if self.ev.has_time else []
            (out,) = self.ev.programs[node.index]([*time, *self.scalars],
                                                  [None] * len(time) + self.d_scalars)
            return out
        args = [self.fixed[a] for a in node.args]
        return self._combine(node, args, row=False)

    # -- row nodes ---------------------------------------------------------------------
    def _evaluate(self, t, z, dz):
        values: dict[int, tuple[Any, Any]] = {}
        for node in self.nodes:
            if not node.row:
                continue
            i = node.index
            if node.op == "state":
                values[i] = (z, dz)
            elif node.op == "time":
                values[i] = (t, None)
            elif node.op == "scalar":
                (values[i],) = self.ev.programs[i]([t, *self.scalars],
                                                   [None, *self.d_scalars])
            elif node.op == "matmul":
                values[i] = self._product(node, values[node.args[1]])
            else:
                args = [values[a] if self.nodes[a].row else self._row_form(a)
                        for a in node.args]
                values[i] = self._combine(node, args, row=True)
        output = self.ev.graph.output
        return values[output] if output in values else self._row_form(output)

    def _row_form(self, index: int):
        """A fixed node as an operand of a row node: a column vector becomes a row
        ``(1, m)`` that broadcasts over the batch."""
        value, tangent = self.fixed[index]
        node = self.nodes[index]
        if node.op in ("scalar", "time") or node.cols != 1:
            return value, tangent
        return value.T, (None if tangent is None else tangent.T)

    def _product(self, node, arg):
        """``Y = X A^T`` and ``dY = X dA^T + dX A^T`` from one prepared product."""
        x, dx = arg
        prepared, first, m = self.products[node.index]
        out = matmul(x, prepared)
        value, tangent = (out, None) if not m else (out[:, :m], out[:, m:])
        if dx is not None:
            tangent = _add(tangent, matmul(dx, first))
        return value, tangent

    def _combine(self, node, args, *, row: bool):
        """Every operation but products of row nodes, on (value, tangent) pairs."""
        op = node.op
        if op == "add":
            return _add(*(a[0] for a in args)), _add(*(a[1] for a in args))
        if op in ("hadamard", "scale"):
            (x, dx), (y, dy) = args
            return x * y, _add(_times(dx, y), _times(x, dy))
        if op == "apply":
            (x, dx), = args
            (out,) = self.ev.programs[node.index]([x], [dx])
            return out
        if op == "transpose":
            (x, dx), = args
            return x.T, (None if dx is None else dx.T)
        if op == "matmul":  # fixed times fixed
            (a, da), (x, dx) = args
            return matmul(a, x), _add(None if da is None else matmul(da, x),
                                      None if dx is None else matmul(a, dx))
        raise AssertionError(f"unexpected node {op}")


def dynamics_evaluator(dynamics) -> Any:
    """The double-double evaluator of ``dynamics`` (elementwise or matrix form); call
    ``.bind(theta, v_theta)`` on it.

    Raises
    ------
    MethodUnavailable
        For a construct the double-double evaluator does not support (named).
    """
    if getattr(dynamics, "form", "elementwise") == "matrix":
        return _MatrixEvaluator(dynamics)
    return _ElementwiseEvaluator(dynamics)

