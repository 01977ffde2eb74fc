"""Matrix-form dynamics compiled into the :class:`~symbolic._compile.CompiledForm` interface.

The right-hand side and its derivatives run through generated matrix kernels
(:mod:`symbolic._matrix_kernels`); the loss, a scalar in the state's entries, is compiled
entry by entry like the elementwise form's. Everything the numerics ask of a compiled form
works, batch as rows; per-sample Jacobians (``jac_state``, ``jac_params``) are built from
forward- and reverse-mode passes and are meant for small sizes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import sympy as sp
from numpy.typing import NDArray

from ._calculus import real_jacobian
from ._compile import (
    NON_ANALYTIC_FUNCTIONS,
    LinearStructure,
    LossScale,
    MpmathFunctions,
    _result_dtype,
    _VectorFunction,
)
from ._dynamics import Dynamics, DynamicsError, check_loss, check_targets
from ._kernel import MatrixKernel
from ._matrix_eval import MatrixSwitching
from ._matrix_kernels import MatrixKernels

__all__ = ["CompiledMatrixDynamics"]


def _non_analytic(graph, loss: sp.Expr) -> tuple[str, ...]:
    found = set()
    for expr in [act.body for act in graph.activations] + [loss] + [
        node.payload for node in graph.nodes if node.op == "scalar"
    ]:
        for node in sp.preorder_traversal(expr):
            if isinstance(node, NON_ANALYTIC_FUNCTIONS):
                found.add(type(node).__name__)
    return tuple(sorted(found))


class CompiledMatrixDynamics:
    """Matrix-form dynamics and loss, compiled; see :class:`symbolic.CompiledForm`.

    Besides the protocol: ``kernel(theta)`` (the dynamics bound to one theta for the
    solvers), ``param_blocks`` (``(name, start, stop, shape)`` per parameter matrix) and
    ``param_names`` (``W1[2, 5]`` per entry).
    """

    form = "matrix"

    def __init__(self, dynamics: Dynamics, loss: sp.Expr, targets: tuple = ()):
        loss = check_loss(dynamics, loss, targets)
        targets = check_targets(dynamics, targets)
        spec = dynamics.matrix
        self.dynamics = dynamics
        self.loss_expr = loss
        self.targets = tuple(str(s) for s in targets)
        self.k = len(targets)
        self.n = dynamics.n
        self.p = dynamics.p
        self.autonomous = dynamics.autonomous
        self.state_names = tuple(f"{spec.state.name}[{i}]" for i in range(self.n))
        self.param_names = spec.entry_names()
        self.param_blocks = tuple(
            (str(leaf), start, stop, shape)
            for leaf, (start, stop, shape) in zip(spec.leaves, spec.offsets, strict=True)
        )
        self.non_analytic = _non_analytic(spec.graph, loss)
        self.kernels = MatrixKernels(spec.graph, list(spec.offsets))
        z = [sp.Symbol(f"_z{i}", real=True) for i in range(self.n)]
        y = [sp.Symbol(f"_y{i}", real=True) for i in range(self.k)]
        mapping = dict(zip(dynamics.state, z, strict=True))
        mapping.update(dict(zip(targets, y, strict=True)))
        scalar_loss = loss.xreplace(mapping)
        #: Switching surfaces of the activations, scalar factors and the loss (symbolic
        #: ._matrix_eval.MatrixSwitching); empty (false) for smooth dynamics.
        self.switching = MatrixSwitching(spec, scalar_loss, y, z)
        self._loss_gradient_expr = real_jacobian([scalar_loss], z).T
        self._loss = _VectorFunction([scalar_loss], [z, y])
        self._loss_scale = LossScale(scalar_loss, [z, y])
        self._loss_grad = _VectorFunction(list(self._loss_gradient_expr), [z, y])
        self._targets = targets
        self._last: tuple[Any, MatrixKernel] | None = None
        self._linear: LinearStructure | bool | None = False
        self._mpmath: MpmathFunctions | None = None

    # -- kernels -------------------------------------------------------------------------
    def kernel(self, theta: NDArray) -> MatrixKernel:
        """The dynamics bound to ``theta`` (kept for the last theta seen)."""
        theta = np.asarray(theta)
        key = (theta.dtype.str, theta.tobytes())
        if self._last is None or self._last[0] != key:
            self._last = (key, MatrixKernel(self.kernels, theta.copy()))
        return self._last[1]

    def _bound(self, z, theta, t, *more) -> MatrixKernel:
        dtype = _result_dtype(z, theta, t, *more)
        return self.kernel(np.asarray(theta, dtype=dtype))

    @staticmethod
    def _as(z, dtype) -> NDArray:
        return np.asarray(z, dtype=dtype)

    # -- the CompiledForm protocol -------------------------------------------------------
    def rhs(self, z: NDArray, theta: NDArray, t: Any) -> NDArray:
        kernel = self._bound(z, theta, t)
        return kernel.rhs(self._as(z, kernel.dtype), t)

    def vjp_state(self, z: NDArray, theta: NDArray, t: Any, a: NDArray) -> NDArray:
        kernel = self._bound(z, theta, t, a)
        return kernel.vjp_state(self._as(z, kernel.dtype), t, self._as(a, kernel.dtype))

    def vjp_params(self, z: NDArray, theta: NDArray, t: Any, a: NDArray) -> NDArray:
        kernel = self._bound(z, theta, t, a)
        return kernel.vjp_params_per_sample(self._as(z, kernel.dtype), t,
                                            self._as(a, kernel.dtype))

    def time_partial(self, z: NDArray, theta: NDArray, t: Any) -> NDArray:
        kernel = self._bound(z, theta, t)
        if self.autonomous:
            return np.zeros(np.shape(z), dtype=kernel.dtype)
        return kernel.tangent(self._as(z, kernel.dtype), t, dt=1.0)

    def jac_state(self, z: NDArray, theta: NDArray, t: Any) -> NDArray:
        """``(B, n, n)`` from ``n`` forward-mode passes on a tiled batch."""
        kernel = self._bound(z, theta, t)
        z = self._as(z, kernel.dtype)
        B, n = z.shape
        tiled = np.repeat(z, n, axis=0)  # (B n, n): sample b, direction k at row b n + k
        directions = np.tile(np.eye(n, dtype=kernel.dtype), (B, 1))
        columns = kernel.tangent(tiled, t, dz=directions).reshape(B, n, n)
        return np.swapaxes(columns, 1, 2)

    def jac_params(self, z: NDArray, theta: NDArray, t: Any) -> NDArray:
        """``(B, n, p)`` from ``n`` reverse-mode passes kept per sample (small sizes)."""
        kernel = self._bound(z, theta, t)
        z = self._as(z, kernel.dtype)
        B, n = z.shape
        out = np.empty((B, n, self.p), dtype=kernel.dtype)
        for i in range(n):
            a = np.zeros_like(z)
            a[:, i] = 1.0
            out[:, i, :] = kernel.vjp_params_per_sample(z, t, a)
        return out

    #: Imaginary step of the second derivatives: no subtraction, exact to rounding for the
    #: complex-analytic functions networks are made of.
    _SECOND_STEP = 1e-30

    def _along(self, fn, z, theta, t, dz, dt) -> NDArray:
        """``d/de fn(z + e dz, theta, t + e dt)`` at ``e = 0``, by the complex step."""
        if self.non_analytic:
            raise DynamicsError(
                f"second derivatives of matrix-form dynamics (for solver='rodas4') are taken "
                f"by the complex step, and {', '.join(self.non_analytic)} is not "
                "complex-analytic; use an explicit solver, or a smooth activation.")
        h = self._SECOND_STEP
        zc = np.asarray(z, dtype=complex) + 1j * h * np.asarray(dz)
        tc = t + 1j * h * (dt if dt is not None else 0.0)
        return fn(zc, np.asarray(theta, dtype=complex), tc).imag / h

    def jac_state_jvp(self, z: NDArray, theta: NDArray, t: Any, dz: NDArray,
                      dt: Any) -> NDArray:
        """The derivative of ``jac_state`` along ``(dz, dt)``, ``(B, n, n)``."""
        return self._along(self.jac_state, z, theta, t, dz, dt)

    def jac_params_jvp(self, z: NDArray, theta: NDArray, t: Any, dz: NDArray,
                       dt: Any) -> NDArray:
        """The derivative of ``jac_params`` along ``(dz, dt)``, ``(B, n, p)``."""
        return self._along(self.jac_params, z, theta, t, dz, dt)

    def time_second_partial(self, z: NDArray, theta: NDArray, t: Any) -> NDArray:
        """:math:`\\partial^2 f/\\partial t^2`, ``(B, n)``."""
        if self.autonomous:
            return np.zeros(np.shape(z))
        return self._along(self.time_partial, z, theta, t, np.zeros(np.shape(z)), 1.0)

    def mpmath_second_derivatives(self):
        """Through the elementwise form (small sizes only)."""
        return self._explicit().mpmath_second_derivatives()

    def _explicit(self):
        from ._compile import compile_problem

        dyn = self.dynamics
        return compile_problem(dyn.as_elementwise(), dyn.explicit(self.loss_expr),
                               tuple(dyn.explicit(s) for s in self._targets))

    def _targets_array(self, z: NDArray, y: NDArray | None) -> NDArray:
        if self.k == 0:
            return np.zeros((z.shape[0], 0))
        if y is None:
            raise ValueError(
                f"the loss uses the targets {', '.join(self.targets)}: give their values "
                "(`data=`) at every observation time"
            )
        return np.broadcast_to(np.asarray(y), (z.shape[0], self.k))

    def loss(self, z: NDArray, y: NDArray | None = None) -> NDArray:
        y = self._targets_array(z, y)
        return self._loss([z, y], [], _result_dtype(z, y))[:, 0]

    def loss_grad(self, z: NDArray, y: NDArray | None = None) -> NDArray:
        y = self._targets_array(z, y)
        return self._loss_grad([z, y], [], _result_dtype(z, y))

    def loss_scale(self, z: NDArray, y: NDArray | None = None) -> NDArray:
        """Per sample, the scale the loss's rounding is relative to (``LossScale``)."""
        return self._loss_scale(z, self._targets_array(z, y))

    # -- structure for the references -------------------------------------------------------
    @property
    def linear(self) -> LinearStructure | None:
        """``f = A(theta) z + c(theta)`` where the graph is linear in ``z`` and
        autonomous; ``A`` and ``c`` are evaluated through the kernels."""
        if self._linear is False:
            self._linear = self._find_linear()
        return self._linear  # type: ignore[return-value]

    def _find_linear(self) -> LinearStructure | None:
        graph = self.dynamics.matrix.graph
        if not self.autonomous:
            return None
        nodes = graph.nodes
        affine = False
        for node in nodes:
            if not node.row:
                continue
            args = [nodes[a] for a in node.args]
            if node.op in ("apply", "time", "scalar"):
                return None
            if node.op == "hadamard" and all(a.row for a in args):
                return None
            if node.op == "scale" and args[0].row:
                return None
            if node.op == "add" and any(not a.row for a in args):
                affine = True
        n = self.n

        def matrix(theta):
            z = np.zeros((1, n), dtype=np.result_type(theta))
            return self.jac_state(z, theta, 0.0)[0]

        def offset(theta):
            return self.rhs(np.zeros((1, n), dtype=np.result_type(theta)), theta, 0.0)[0]

        def chain(theta, grad_A, grad_c):
            # sum_b (df/dtheta)^T a_b over samples z_b = e_k, a_b = grad_A[:, k], and
            # z = 0, a = grad_c - sum_k grad_A[:, k]: <grad_A, A> + <grad_c, c> (f linear)
            z = np.vstack([np.eye(n), np.zeros((1, n))])
            a = np.vstack([grad_A.T, (grad_c - grad_A.sum(axis=1))[None, :]])
            kernel = self._bound(z, theta, 0.0, a)
            return kernel.vjp(z.astype(kernel.dtype), 0.0, a.astype(kernel.dtype))[1]

        return LinearStructure(matrix=matrix, offset=offset, matrix_grad=None,
                               offset_grad=None, affine=affine, chain=chain)

    def mpmath_functions(self) -> MpmathFunctions:
        """Through the elementwise form of the same dynamics (small sizes only: the
        high-precision reference refuses large problems before asking)."""
        if self._mpmath is None:
            self._mpmath = self._explicit().mpmath_functions()
        return self._mpmath

    def __repr__(self) -> str:
        return f"CompiledMatrixDynamics(n={self.n}, p={self.p}, loss={self.loss_expr})"
