"""Compilation of dynamics and loss into batch-vectorized NumPy callables.

This module is the one interface between SymPy and the numerics: ``numeric/`` uses only the
attributes and methods of :class:`CompiledDynamics` (see :class:`CompiledForm` for the
protocol), so another derivation path (e.g. matrix-valued expressions for network-sized
``f``) plugs in by providing the same methods.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import sympy as sp
from numpy.typing import NDArray

from ._adjoint import derive_adjoint
from ._calculus import real_jacobian
from ._dynamics import Dynamics, check_loss, check_targets
from ._kernel import ElementwiseKernel, LinearKernel
from ._printing import numpy_printer
from ._switching import CompiledSwitching

__all__ = [
    "NON_ANALYTIC_FUNCTIONS",
    "CompiledDynamics",
    "CompiledForm",
    "LinearStructure",
    "MpmathFunctions",
    "MpmathSecondDerivatives",
    "compile_problem",
]

#: SymPy functions that are not complex-analytic: complex-step differentiation through them
#: is silently wrong (MATH.md, "Finite differences").
NON_ANALYTIC_FUNCTIONS: tuple[type, ...] = (
    sp.Abs,
    sp.sign,
    sp.Heaviside,
    sp.Max,
    sp.Min,
    sp.Piecewise,
    sp.floor,
    sp.ceiling,
    sp.re,
    sp.im,
    sp.arg,
    sp.conjugate,
    sp.Mod,
)


@runtime_checkable
class CompiledForm(Protocol):
    """What ``numeric/`` needs from compiled dynamics and loss.

    Arrays: ``z`` and ``a`` are ``(B, n)``, ``theta`` is ``(p,)``, ``t`` a scalar. Every
    method returns a fresh array of the documented shape whose dtype is the result type of
    its inputs (complex input gives complex output, for the complex-step check).
    """

    n: int
    p: int
    k: int  # number of target (data) symbols of the loss
    autonomous: bool
    non_analytic: tuple[str, ...]
    state_names: tuple[str, ...]
    param_names: tuple[str, ...]
    switching: CompiledSwitching  # switching surfaces of f and the loss (empty when smooth)

    def rhs(self, z: NDArray, theta: NDArray, t: Any) -> NDArray: ...  # (B, n)

    def vjp_state(self, z: NDArray, theta: NDArray, t: Any, a: NDArray) -> NDArray: ...

    def vjp_params(self, z: NDArray, theta: NDArray, t: Any, a: NDArray) -> NDArray: ...

    def time_partial(self, z: NDArray, theta: NDArray, t: Any) -> NDArray: ...  # (B, n)

    def jac_state(self, z: NDArray, theta: NDArray, t: Any) -> NDArray: ...  # (B, n, n)

    def jac_params(self, z: NDArray, theta: NDArray, t: Any) -> NDArray: ...  # (B, n, p)

    # second derivatives, for the stiff solver rodas4 and its exact adjoints
    def jac_state_jvp(self, z: NDArray, theta: NDArray, t: Any, dz: NDArray,
                      dt: Any) -> NDArray: ...  # (B, n, n)

    def jac_params_jvp(self, z: NDArray, theta: NDArray, t: Any, dz: NDArray,
                       dt: Any) -> NDArray: ...  # (B, n, p)

    def time_second_partial(self, z: NDArray, theta: NDArray, t: Any) -> NDArray: ...  # (B, n)

    def loss(self, z: NDArray, y: NDArray | None = None) -> NDArray: ...  # (B,)

    def loss_grad(self, z: NDArray, y: NDArray | None = None) -> NDArray: ...  # (B, n)

    @property
    def linear(self) -> LinearStructure | None: ...

    def mpmath_functions(self) -> MpmathFunctions: ...

    def mpmath_second_derivatives(self) -> MpmathSecondDerivatives: ...


class _VectorFunction:
    """A list of SymPy expressions compiled once into a batch function.

    The batched argument groups are ``(B, k)`` arrays whose columns feed the matching
    symbols; the scalar ones are broadcast (``theta`` entries, ``t``). Only the entries that
    are not constants are compiled (a Jacobian in the parameters is mostly zeros). The result
    is always a ``(B, len(exprs))`` array, also where an expression is a constant or does not
    depend on the batched arguments (the classic ``lambdify`` trap of returning a scalar).
    """

    def __init__(self, exprs: Sequence[sp.Expr], arg_groups: Sequence[Sequence[sp.Symbol]]):
        self.width = len(exprs)
        self._constant = [
            complex(e) if e.is_number else None for e in exprs
        ]  # evaluated without a call
        self._live = [j for j, c in enumerate(self._constant) if c is None]
        flat_args = [s for group in arg_groups for s in group]
        self._fn: Callable[..., Any] | None = None
        if self._live:  # compile only the entries that are not constants
            self._fn = sp.lambdify(flat_args, [exprs[j] for j in self._live], modules="numpy",
                                   cse=True, dummify=True, printer=numpy_printer())
        self._all_zero = all(c == 0 for c in self._constant)
        self._nonzero_constants = [(j, c) for j, c in enumerate(self._constant)
                                   if c is not None and c != 0]

    def __call__(self, batched: Sequence[NDArray], scalars: Sequence[Any], dtype) -> NDArray:
        batch = batched[0].shape[0]
        out = np.zeros((batch, self.width), dtype=dtype)
        if self._all_zero or self.width == 0:
            return out
        columns = [col for array in batched for col in np.ascontiguousarray(array.T)]
        for j, constant in self._nonzero_constants:
            out[:, j] = constant.real if not np.iscomplexobj(out) else constant
        if self._fn is not None:
            for j, value in zip(self._live, self._fn(*columns, *scalars), strict=True):
                out[:, j] = value
        return out


class LossScale:
    """Per sample, the largest magnitude among the loss and the values it is computed from
    (every subexpression of the loss): the scale its rounding error is relative to. A loss
    formed with cancellation, ``log(cosh(z))`` near ``z = 0`` say, rounds relative to
    ``cosh(z) ~ 1``, not to its own far smaller value. Compiled on first use."""

    def __init__(self, loss: sp.Expr, arg_groups: Sequence[Sequence[sp.Symbol]]):
        self._loss, self._groups = loss, arg_groups
        self._fn: _VectorFunction | None = None

    def __call__(self, z: NDArray, y: NDArray) -> NDArray:
        if self._fn is None:
            parts = {e for e in sp.preorder_traversal(self._loss)
                     if isinstance(e, sp.Expr) and not e.is_Atom}
            self._fn = _VectorFunction([self._loss, *sorted(parts, key=sp.default_sort_key)],
                                       self._groups)
        with np.errstate(all="ignore"):
            values = self._fn([z, y], [], np.result_type(z, y, np.float64))
        return np.max(np.abs(values), axis=1)


@dataclass(frozen=True)
class LinearStructure:
    r"""Dynamics :math:`f = A(\theta) z + c(\theta)`, autonomous, found symbolically.

    ``matrix(theta)`` is ``(n, n)``, ``offset(theta)`` ``(n,)``; ``matrix_grad(theta)`` is
    ``(n, n, p)`` and ``offset_grad(theta)`` ``(n, p)``: the derivatives :math:`\partial A /
    \partial \theta` and :math:`\partial c / \partial \theta` that SymPy gives.
    """

    matrix: Callable[[NDArray], NDArray]
    offset: Callable[[NDArray], NDArray]
    matrix_grad: Callable[[NDArray], NDArray] | None
    offset_grad: Callable[[NDArray], NDArray] | None
    affine: bool
    #: ``chain(theta, grad_A, grad_c)``: the theta gradient of ``<grad_A, A> + <grad_c, c>``
    #: where ``matrix_grad`` is not formed (matrix form).
    chain: Callable[..., NDArray] | None = None

    def theta_gradient(self, theta: NDArray, grad_A: NDArray, grad_c: NDArray) -> NDArray:
        r""":math:`\sum_{ij} \bar A_{ij} \partial A_{ij}/\partial\theta + \sum_i \bar c_i
        \partial c_i/\partial\theta`, shape ``(p,)``."""
        if self.chain is not None:
            return self.chain(theta, grad_A, grad_c)
        out = np.einsum("ij,ijk->k", grad_A, self.matrix_grad(theta))
        if self.affine:
            out = out + grad_c @ self.offset_grad(theta)
        return out


@dataclass(frozen=True)
class MpmathFunctions:
    """Scalar mpmath callables for the high-precision reference.

    Each takes plain Python lists of mpmath numbers: ``rhs(z, theta, t)`` gives n values,
    ``jac_state`` n*n (row-major), ``jac_params`` n*p (row-major), ``loss(z, y)`` one value,
    ``loss_grad(z, y)`` n values (``y`` the k target values, an empty list without targets).
    """

    rhs: Callable[..., list]
    jac_state: Callable[..., list]
    jac_params: Callable[..., list]
    loss: Callable[..., Any]
    loss_grad: Callable[..., list]


@dataclass(frozen=True)
class MpmathSecondDerivatives:
    """Scalar mpmath callables for the stiff high-precision reference, like
    :class:`MpmathFunctions`: ``time_partial(z, theta, t)`` gives the n values of
    :math:`\\partial f/\\partial t`; ``jac_state_jvp(z, dz, theta, t, dt)`` the n*n and
    ``jac_params_jvp(z, dz, theta, t, dt)`` the n*p values (row-major) of
    ``CompiledForm.jac_state_jvp`` / ``jac_params_jvp`` for one sample."""

    time_partial: Callable[..., list]
    jac_state_jvp: Callable[..., list]
    jac_params_jvp: Callable[..., list]


def _result_dtype(*arrays: Any) -> np.dtype:
    return np.result_type(*[np.asarray(x).dtype for x in arrays], np.float64)


def _without_dirac(expr: sp.Expr) -> sp.Expr:
    """``expr`` with every ``DiracDelta`` (and its derivatives) set to zero."""
    return expr.replace(lambda e: isinstance(e, sp.DiracDelta), lambda e: sp.Integer(0))


def _non_analytic_names(exprs: Sequence[sp.Expr]) -> tuple[str, ...]:
    found: set[str] = set()
    for expr in exprs:
        for node in sp.preorder_traversal(expr):
            if isinstance(node, NON_ANALYTIC_FUNCTIONS):
                found.add(type(node).__name__)
    return tuple(sorted(found))


class CompiledDynamics:
    """Dynamics and loss compiled once into NumPy; see :class:`CompiledForm`.

    Build it with :func:`compile_problem`, which caches one instance per (dynamics, loss,
    targets).
    """

    def __init__(self, dynamics: Dynamics, loss: sp.Expr, targets: tuple = ()):
        loss = check_loss(dynamics, loss, targets)
        targets = check_targets(dynamics, targets)
        self.targets = tuple(str(s) for s in targets)
        self.k = len(targets)
        self.dynamics = dynamics
        self.loss_expr = loss
        self.n = dynamics.n
        self.p = dynamics.p
        self.autonomous = dynamics.autonomous
        self.state_names = tuple(str(s) for s in dynamics.state)
        self.param_names = tuple(str(s) for s in dynamics.params)
        self.non_analytic = _non_analytic_names([*dynamics.rhs, loss])
        self.switching = CompiledSwitching(dynamics, loss, targets)

        adjoint = derive_adjoint(dynamics, loss, targets)
        z = sp.Matrix(dynamics.state)
        theta = list(dynamics.params)
        t = dynamics.time if dynamics.time is not None else sp.Dummy("t")
        a = sp.Matrix(adjoint.adjoint)
        f = sp.Matrix(dynamics.rhs)
        jac_z = adjoint.jacobian_state
        jac_theta = adjoint.jacobian_params
        self._symbols = (list(z), theta, t, list(a))
        self._loss_gradient_expr = adjoint.loss_gradient

        state_args = [list(z), theta, [t]]
        adjoint_args = [list(z), list(a), theta, [t]]
        self._rhs = _VectorFunction(list(f), state_args)
        self._vjp_state = _VectorFunction(list(jac_z.T * a), adjoint_args)
        self._vjp_params = _VectorFunction(list(jac_theta.T * a), adjoint_args)
        self._time_partial = _VectorFunction(list(adjoint.time_derivative), state_args)
        self._jac_state = _VectorFunction(list(jac_z), state_args)
        self._jac_params = _VectorFunction(list(jac_theta), state_args)
        self._target_symbols = list(targets)
        loss_args = [list(z), list(targets)]
        self._loss = _VectorFunction([loss], loss_args)
        self._loss_grad = _VectorFunction(list(adjoint.loss_gradient), loss_args)
        self._loss_scale = LossScale(loss, loss_args)
        self._jac_z_expr = jac_z
        self._jac_theta_expr = jac_theta
        self._time_derivative_expr = adjoint.time_derivative
        self._linear: LinearStructure | bool | None = False  # False: not yet looked at
        self._mpmath: MpmathFunctions | None = None
        self._second: dict[str, _VectorFunction] | None = None  # built on first use
        self._mpmath_second: MpmathSecondDerivatives | None = None

    # -- batch callables -------------------------------------------------------------
    def rhs(self, z: NDArray, theta: NDArray, t: Any) -> NDArray:
        """:math:`f(z, \\theta, t)`, shape ``(B, n)``."""
        return self._rhs([z], [*theta, t], _result_dtype(z, theta, t))

    def vjp_state(self, z: NDArray, theta: NDArray, t: Any, a: NDArray) -> NDArray:
        """:math:`(\\partial f/\\partial z)^T a` per sample, shape ``(B, n)``."""
        return self._vjp_state([z, a], [*theta, t], _result_dtype(z, theta, t, a))

    def vjp_params(self, z: NDArray, theta: NDArray, t: Any, a: NDArray) -> NDArray:
        """:math:`(\\partial f/\\partial \\theta)^T a` per sample, shape ``(B, p)``."""
        return self._vjp_params([z, a], [*theta, t], _result_dtype(z, theta, t, a))

    def time_partial(self, z: NDArray, theta: NDArray, t: Any) -> NDArray:
        """:math:`\\partial f/\\partial t`, shape ``(B, n)`` (zeros when autonomous)."""
        return self._time_partial([z], [*theta, t], _result_dtype(z, theta, t))

    def jac_state(self, z: NDArray, theta: NDArray, t: Any) -> NDArray:
        """:math:`\\partial f/\\partial z`, shape ``(B, n, n)``."""
        flat = self._jac_state([z], [*theta, t], _result_dtype(z, theta, t))
        return flat.reshape(z.shape[0], self.n, self.n)

    def jac_params(self, z: NDArray, theta: NDArray, t: Any) -> NDArray:
        """:math:`\\partial f/\\partial \\theta`, shape ``(B, n, p)``."""
        flat = self._jac_params([z], [*theta, t], _result_dtype(z, theta, t))
        return flat.reshape(z.shape[0], self.n, self.p)

    # -- second derivatives (built on first use: only the stiff solver needs them) ------
    def jac_state_jvp(self, z: NDArray, theta: NDArray, t: Any, dz: NDArray,
                      dt: Any) -> NDArray:
        r"""The derivative of :math:`J = \partial f/\partial z` along ``(dz, dt)``,
        :math:`\sum_m \partial J/\partial z_m\, dz_m + \partial J/\partial t\, dt`,
        shape ``(B, n, n)``; ``dz`` is ``(B, n)``, ``dt`` a scalar.

        Every second derivative of ``f`` the stiff solver needs is a contraction of this
        one (the Hessians are symmetric): :math:`(\partial (J v)/\partial z)^T a =
        J'(v, 0)^T a`, :math:`\partial f_t/\partial z = J'(0, 1)`."""
        flat = self._second_derivatives()["jac_state_jvp"](
            [z, dz], [*theta, t, dt], _result_dtype(z, theta, t, dz, dt))
        return flat.reshape(z.shape[0], self.n, self.n)

    def jac_params_jvp(self, z: NDArray, theta: NDArray, t: Any, dz: NDArray,
                       dt: Any) -> NDArray:
        r"""The derivative of :math:`\partial f/\partial\theta` along ``(dz, dt)``, shape
        ``(B, n, p)``: :math:`(\partial (J v)/\partial\theta)^T a = J_\theta'(v, 0)^T a`,
        :math:`\partial f_t/\partial\theta = J_\theta'(0, 1)`."""
        flat = self._second_derivatives()["jac_params_jvp"](
            [z, dz], [*theta, t, dt], _result_dtype(z, theta, t, dz, dt))
        return flat.reshape(z.shape[0], self.n, self.p)

    def time_second_partial(self, z: NDArray, theta: NDArray, t: Any) -> NDArray:
        r""":math:`\partial^2 f/\partial t^2`, shape ``(B, n)`` (zeros when autonomous)."""
        return self._second_derivatives()["time_second_partial"](
            [z], [*theta, t], _result_dtype(z, theta, t))

    def _second_derivatives(self) -> dict[str, _VectorFunction]:
        if self._second is None:
            self._second = {name: _VectorFunction(exprs, args)
                            for name, (exprs, args) in self._second_derivative_exprs().items()}
        return self._second

    def _second_derivative_exprs(self) -> dict[str, tuple[list, list]]:
        """The expressions of :meth:`jac_state_jvp`, :meth:`jac_params_jvp` and
        :meth:`time_second_partial`. ``DiracDelta`` (the derivative of a kink's ``sign``)
        is zero away from the kink, where the second derivative exists."""
        z, theta, t, _ = self._symbols
        dz = list(sp.symbols(f"_dz0:{self.n}", real=True, cls=sp.Dummy))
        dt = sp.Dummy("_dt", real=True)
        times = [t] if self.dynamics.time is not None else []

        def directional(matrix: sp.Matrix) -> list:
            flat = list(matrix)
            if not flat:
                return []
            along = real_jacobian(flat, z) * sp.Matrix(dz)
            if times:
                along += real_jacobian(flat, times) * dt
            return [_without_dirac(e) for e in along]

        second_t = (real_jacobian(list(self._time_derivative_expr), times) if times
                    else sp.zeros(self.n, 1))
        jvp_args = [z, dz, theta, [t, dt]]
        return {
            "jac_state_jvp": (directional(self._jac_z_expr), jvp_args),
            "jac_params_jvp": (directional(self._jac_theta_expr), jvp_args),
            "time_second_partial": ([_without_dirac(e) for e in second_t], [z, theta, [t]]),
        }

    def _targets(self, z: NDArray, y: NDArray | None) -> NDArray:
        if self.k == 0:
            return np.zeros((z.shape[0], 0))
        if y is None:
            raise ValueError(
                f"the loss uses the targets {', '.join(self.targets)}: give their values "
                "(`data=`) at every observation time"
            )
        return np.broadcast_to(np.asarray(y), (z.shape[0], self.k))

    def loss(self, z: NDArray, y: NDArray | None = None) -> NDArray:
        """:math:`\\ell(z, y)` per sample, shape ``(B,)``; ``y`` the targets ``(B, k)``."""
        y = self._targets(z, y)
        return self._loss([z, y], [], _result_dtype(z, y))[:, 0]

    def loss_scale(self, z: NDArray, y: NDArray | None = None) -> NDArray:
        """Per sample, the scale the loss's rounding is relative to: the largest magnitude
        among the loss and every value it is computed from."""
        return self._loss_scale(z, self._targets(z, y))

    def loss_grad(self, z: NDArray, y: NDArray | None = None) -> NDArray:
        """:math:`\\nabla_z \\ell(z, y)` per sample, shape ``(B, n)``."""
        y = self._targets(z, y)
        return self._loss_grad([z, y], [], _result_dtype(z, y))

    # -- structure for the references ------------------------------------------------
    @property
    def linear(self) -> LinearStructure | None:
        """The structure ``f = A(theta) z + c(theta)``, or None if ``f`` is not of that form."""
        if self._linear is False:
            self._linear = self._find_linear_structure()
        return self._linear  # type: ignore[return-value]

    def _find_linear_structure(self) -> LinearStructure | None:
        z, theta, _t, _ = self._symbols
        if not self.autonomous:
            return None
        jac = self._jac_z_expr
        if jac.free_symbols & set(z):
            return None
        f = sp.Matrix(self.dynamics.rhs)
        offset = f.subs({s: 0 for s in z})
        if any(sp.simplify(e) != 0 for e in (f - jac * sp.Matrix(z) - offset)):
            return None
        n, p = self.n, self.p
        pieces = {
            "matrix": (list(jac), (n, n)),
            "offset": (list(offset), (n,)),
            "matrix_grad": (list(real_jacobian(list(jac), theta)), (n, n, p)),
            "offset_grad": (list(real_jacobian(list(offset), theta)), (n, p)),
        }

        def evaluate(exprs: list, shape: tuple[int, ...]) -> Callable[[NDArray], NDArray]:
            fn = sp.lambdify([theta], exprs, modules="numpy", dummify=True,
                             printer=numpy_printer())

            def call(values: NDArray) -> NDArray:
                out = np.zeros(shape, dtype=_result_dtype(values))
                if exprs:
                    out.reshape(-1)[:] = fn(list(values))
                return out

            return call

        return LinearStructure(
            **{name: evaluate(exprs, shape) for name, (exprs, shape) in pieces.items()},
            affine=any(e != 0 for e in offset),
        )

    def mpmath_functions(self) -> MpmathFunctions:
        """Scalar callables evaluated in mpmath arithmetic (built on first use)."""
        if self._mpmath is None:
            z, theta, t, _ = self._symbols
            args = [z, theta, t]

            def mp(exprs: list) -> Callable[..., list]:
                return sp.lambdify(args, exprs, modules="mpmath", dummify=True, cse=True)

            self._mpmath = MpmathFunctions(
                rhs=mp(list(self.dynamics.rhs)),
                jac_state=mp(list(self._jac_z_expr)),
                jac_params=mp(list(self._jac_theta_expr)),
                loss=sp.lambdify([z, self._target_symbols], self.loss_expr, modules="mpmath",
                                 dummify=True),
                loss_grad=sp.lambdify([z, self._target_symbols], list(self._loss_gradient_expr),
                                      modules="mpmath", dummify=True),
            )
        return self._mpmath

    def kernel(self, theta: NDArray):
        """The dynamics bound to ``theta`` for the solvers' inner loops (see
        :mod:`symbolic._kernel`): ``z @ A.T + c`` for linear autonomous dynamics."""
        structure = self.linear
        if structure is not None:
            return LinearKernel(structure, theta)
        return ElementwiseKernel(self, theta)

    def mpmath_second_derivatives(self) -> MpmathSecondDerivatives:
        """The second derivatives of :meth:`jac_state_jvp` and friends in mpmath arithmetic
        (built on first use)."""
        if self._mpmath_second is None:
            exprs = self._second_derivative_exprs()
            z, theta, t, _ = self._symbols

            def mp(name: str) -> Callable[..., list]:
                values, groups = exprs[name]
                return sp.lambdify(groups, values, modules="mpmath", dummify=True, cse=True)

            self._mpmath_second = MpmathSecondDerivatives(
                time_partial=sp.lambdify([z, theta, t], list(self._time_derivative_expr),
                                         modules="mpmath", dummify=True),
                jac_state_jvp=mp("jac_state_jvp"),
                jac_params_jvp=mp("jac_params_jvp"),
            )
        return self._mpmath_second

    def __repr__(self) -> str:
        return f"CompiledDynamics(n={self.n}, p={self.p}, loss={self.loss_expr})"


@functools.lru_cache(maxsize=128)
def _compile_cached(dynamics: Dynamics, loss: sp.Expr, targets: tuple) -> CompiledDynamics:
    if dynamics.form == "matrix":
        from ._matrix_compile import CompiledMatrixDynamics

        return CompiledMatrixDynamics(dynamics, loss, targets)
    return CompiledDynamics(dynamics, loss, targets)


def compile_problem(dynamics: Dynamics, loss: Any, targets: Any = ()) -> CompiledDynamics:
    """Compile ``dynamics`` and ``loss`` into batch NumPy callables, once per pair.

    Parameters
    ----------
    dynamics : Dynamics
    loss : sympy.Expr
        The per-observation loss in the state symbols (and ``targets``).
    targets : sequence of Symbols, optional
        Data symbols of the loss, valued per observation time and sample.

    Returns
    -------
    CompiledDynamics
        Cached: compiling the same pair again returns the same object.
    """
    key = tuple(targets) if isinstance(targets, (list, tuple)) else targets
    try:
        # the checks of the loss walk its expression: seen pairs skip them (a solver's
        # gradient is called once per training step)
        return _checked_and_compiled(dynamics, loss, key)
    except TypeError as exc:  # unhashable pieces: check and compile without the caches
        if "unhashable" not in str(exc):
            raise
    loss_expr = check_loss(dynamics, loss, targets)
    target_symbols = check_targets(dynamics, targets)
    return _compile_cached.__wrapped__(dynamics, loss_expr, target_symbols)


@functools.lru_cache(maxsize=128)
def _checked_and_compiled(dynamics: Dynamics, loss: Any, targets: Any) -> CompiledDynamics:
    loss_expr = check_loss(dynamics, loss, targets)
    target_symbols = check_targets(dynamics, targets)
    return _compile_cached(dynamics, loss_expr, target_symbols)

