r"""Kernels: compiled dynamics bound to one parameter vector, for the solvers' inner loops.

A kernel is what a solver calls per stage. It checks nothing (the public entry points did)
and keeps what depends only on ``theta`` (reshaped parameter matrices, their transposes,
``A(theta)`` of linear dynamics), so a call is a few NumPy operations:

``rhs(z, t)``
    :math:`f`, ``(B, n)``.
``tape(slots, batch, dtype)`` and ``tape_functions(tape) -> (save, reverse)``
    The discrete adjoint's pattern. ``save(z, t, slot, out, placed)`` computes :math:`f`
    (into ``out`` if given) and records in the slot what the reverse pass needs;
    ``reverse(a, t, slot, want_t, out, placed)`` returns :math:`((\partial f/\partial
    z)^T a,\ a^T \partial f/\partial t)` (the second summed over the batch, 0 unless
    ``want_t``) and records the cotangents of the parameter gradient. ``placed`` says the
    caller built ``z`` (``a``) in the slot's buffer (``stage_buffer``, ``cot_buffer``), so
    nothing is copied. ``parameter_gradient(tape)`` turns a whole tape into
    :math:`\sum_{\text{slots}} \sum_b (\partial f/\partial\theta)^T a` with a few large
    matrix products, not one per slot and sample.
``vjp(z, t, a)``
    One reverse pass at once: ``(zbar, theta_bar summed over the batch, tbar)``.
``tangent(z, t, dz, dtheta, dt)``
    Forward mode: :math:`J\,dz + (\partial f/\partial\theta)\,d\theta +
    (\partial f/\partial t)\,dt`; ``None`` for a zero direction.

Every kernel keeps the dtype it is given (complex flows through for the complex step).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._buffers import POOL

__all__ = ["ElementwiseKernel", "LinearKernel", "MatrixKernel", "column_sums"]


def column_sums(x: NDArray) -> NDArray:
    """``x.sum(axis=0)`` of a tall ``(rows, m)`` array as a matrix-vector product: NumPy's
    reduction along the long axis of a narrow array is many times slower than BLAS."""
    return np.ones(x.shape[0], dtype=x.dtype) @ x


class _Kernel:
    """What every kernel shares: the one-call reverse pass on a cached one-slot tape."""

    dtype: np.dtype

    def vjp(self, z: NDArray, t, a: NDArray, *, params: bool = True, want_t: bool = False,
            want_f: bool = False):
        """``(zbar, theta_bar summed over the batch or None, tbar)`` in one call, and ``f``
        first when ``want_f`` (the forward pass computes it anyway)."""
        key = (z.shape[0], np.result_type(z, a, self.dtype))
        cached = self._one_slot.get(key)
        if cached is None:
            tape = self.tape(1, *key)
            save, reverse = self.tape_functions(tape)
            cached = self._one_slot[key] = (tape, save, reverse, self._recorder(tape, save))
        tape, save, reverse, record = cached
        if tape.extra is not None:
            tape.extra[...] = 0
        f = (save if want_f else record)(z, t, 0, None, False)
        zbar, tbar = reverse(a, t, 0, want_t, None, False)
        grad = self.parameter_gradient(tape) if params else None
        return (f, zbar, grad, tbar) if want_f else (zbar, grad, tbar)

    def vjp_state(self, z: NDArray, t, a: NDArray) -> NDArray:
        return self.vjp(z, t, a, params=False)[0]

    def _recorder(self, tape, save):
        """What a VJP that does not return ``f`` calls in place of ``save``."""
        return save


class MatrixKernel(_Kernel):
    """A kernel of matrix-form dynamics: the generated functions of
    :mod:`symbolic._matrix_kernels` with the fixed nodes of one theta."""

    def __init__(self, kernels, theta: NDArray):
        self.kernels = kernels
        self.theta = theta
        self.dtype = theta.dtype
        self.F, self.FT = kernels.fixed(theta)
        self._one_slot: dict = {}
        self._forward = functools.partial(kernels.forward, self.F, self.FT)

    def rhs(self, z: NDArray, t) -> NDArray:
        out = self._forward(z, t)
        return out if out.shape == z.shape else np.broadcast_to(out, z.shape).copy()

    def tape(self, slots: int, batch: int, dtype, *, ring: int = 0):
        return self.kernels.tape(slots, batch, np.result_type(dtype, self.dtype), ring=ring)

    def flush(self, tape, first: int, stop: int) -> None:
        """Take the parameter products of slots ``first .. stop - 1`` now (a tape with a
        ring of cotangents); a no-op for a tape that sums them at the end."""
        if tape.ring:
            self.kernels.flush(tape, first, stop)

    def stage_buffer(self, tape, slot: int) -> NDArray | None:
        """Where the caller may build a stage input so that ``save`` need not copy it."""
        index = self.kernels.state_saved
        return None if index is None else tape.saved[index][slot]

    def cot_buffer(self, tape, slot: int) -> NDArray | None:
        """Where the caller may build the cotangent of ``reverse`` (no copy)."""
        index = self.kernels.output_cot
        if index is None:
            return None
        return tape.cots[index][slot % tape.ring if tape.ring else slot]

    def tape_functions(self, tape):
        F, FT = self.F, self.FT
        save = functools.partial(self.kernels.save, F, FT, tape.saved)
        reverse = functools.partial(self.kernels.reverse, F, FT, tape.saved,
                                    self.kernels.cots_of(tape), tape.extra, False)
        if self.kernels.output_depends_on_state:
            return save, reverse

        def save_broadcast(z, t, slot, out, placed):  # f does not depend on z: (1, n)
            f = save(z, t, slot, out, placed)
            return f if out is not None else np.broadcast_to(f, z.shape).copy()

        return save_broadcast, reverse

    def parameter_gradient(self, tape) -> NDArray:
        return self.kernels.parameter_gradient(tape, self.F)

    def _recorder(self, tape, save):
        # the saved values only: f's last layers are not evaluated
        if not self.kernels.output_depends_on_state:
            return save
        return functools.partial(self.kernels.record, self.F, self.FT, tape.saved)

    def tangent(self, z: NDArray, t, dz=None, dtheta=None, dt=None, *, want_f: bool = False):
        """Forward mode (see the module docstring); ``(f, tangent)`` when ``want_f``.
        A direction in theta is pushed through the fixed nodes once per call: for many
        calls along one direction, bind it with :meth:`along`."""
        dF = None if dtheta is None else self.kernels.fixed_tangent(self.F, dtheta)
        return self._tangent(z, t, dz, dF, dt, want_f)

    def along(self, dtheta):
        """``tangent(z, t, dz, dt=None, want_f=False)`` with ``dtheta`` fixed once."""
        dF = None if dtheta is None else self.kernels.fixed_tangent(self.F, dtheta)
        return functools.partial(self._bound_tangent, dF)

    def _bound_tangent(self, dF, z, t, dz=None, dt=None, *, want_f: bool = False):
        return self._tangent(z, t, dz, dF, dt, want_f)

    def _tangent(self, z, t, dz, dF, dt, want_f):
        f, out = self.kernels.tangent(self.F, self.FT, z, t, dz, dF, dt)
        shape = z.shape
        if out is None:
            out = np.zeros(shape, dtype=np.result_type(z, self.dtype))
        elif out.shape != shape:
            out = np.broadcast_to(out, shape).copy()
        if not want_f:
            return out
        return (f if f.shape == shape else np.broadcast_to(f, shape).copy()), out

    def parameter_integrand(self, z: NDArray, t, a: NDArray, groups: int, *,
                            magnitude: bool = False) -> NDArray:
        """``(groups, p)``: :math:`\\sum_{\\text{rows}} (\\partial f/\\partial\\theta)^T a`
        over each of ``groups`` equal consecutive groups of rows; ``t`` a scalar or one time
        per row. ``magnitude``: the sums of the terms' magnitudes instead."""
        dtype = np.result_type(z, a, self.dtype)
        if np.ndim(t):
            t = np.reshape(t, (-1, 1))
        tape = self.kernels.tape(1, z.shape[0], dtype, per_row=True)
        self.kernels.save(self.F, self.FT, tape.saved, z, t, 0, None, False)
        self.kernels.reverse(self.F, self.FT, tape.saved, tape.cots, tape.extra, True, a, t,
                             0, False, None, False)
        out = self.kernels.parameter_gradient(tape, self.F, groups=groups, magnitude=magnitude)
        tape.release()
        return out

    def vjp_params_per_sample(self, z: NDArray, t, a: NDArray) -> NDArray:
        """``(B, p)``: each sample's :math:`(\\partial f/\\partial\\theta)^T a` (small sizes)."""
        return self.parameter_integrand(z, t, a, z.shape[0])


@dataclass
class _RowTape:
    """The tape of a kernel without matrix structure: inputs, times and cotangents per
    slot."""

    z: NDArray
    a: NDArray
    t: NDArray
    used: int
    extra: Any = field(default=None)

    @classmethod
    def allocate(cls, slots: int, batch: int, n: int, dtype) -> _RowTape:
        return cls(POOL.empty((slots, batch, n), dtype), POOL.empty((slots, batch, n), dtype),
                   np.zeros(slots, dtype), slots)

    def release(self) -> None:
        POOL.release(self.z, self.a)


class _RowKernel(_Kernel):
    def along(self, dtheta):
        """``tangent(z, t, dz, dt=None, want_f=False)`` with ``dtheta`` fixed."""
        def bound(z, t, dz=None, dt=None, *, want_f: bool = False):
            return self.tangent(z, t, dz, dtheta, dt, want_f=want_f)

        return bound

    def stage_buffer(self, tape, slot: int) -> NDArray:
        return tape.z[slot]

    def cot_buffer(self, tape, slot: int) -> NDArray:
        return tape.a[slot]


class ElementwiseKernel(_RowKernel):
    """A kernel of elementwise dynamics (one compiled expression per entry). Parameter
    gradients are deferred too: one call of the compiled ``vjp_params`` on all recorded
    rows at once."""

    def __init__(self, compiled, theta: NDArray):
        self.compiled = compiled
        self.theta = theta
        self.dtype = theta.dtype
        self._one_slot: dict = {}

    def rhs(self, z: NDArray, t) -> NDArray:
        return self.compiled.rhs(z, self.theta, t)

    def tape(self, slots: int, batch: int, dtype):
        return _RowTape.allocate(slots, batch, self.compiled.n, np.result_type(dtype, self.dtype))

    def tape_functions(self, tape):
        compiled, theta = self.compiled, self.theta

        def save(z, t, slot, out, placed):
            if not placed:
                tape.z[slot] = z
            tape.t[slot] = t
            f = compiled.rhs(z, theta, t)
            if out is not None:
                out[...] = f
                return out
            return f

        def reverse(a, t, slot, want_t, out, placed):
            if not placed:
                tape.a[slot] = a
            z = tape.z[slot]
            zbar = compiled.vjp_state(z, theta, t, a)
            tbar = 0.0
            if want_t and not compiled.autonomous:
                tbar = np.sum(a * compiled.time_partial(z, theta, t))
            if out is not None:
                out[...] = zbar
                zbar = out
            return zbar, tbar

        return save, reverse

    def parameter_gradient(self, tape) -> NDArray:
        used, batch = tape.used, tape.z.shape[1]
        if self.compiled.p == 0:
            return np.zeros(0, dtype=tape.z.dtype)
        z = tape.z[:used].reshape(-1, tape.z.shape[-1])
        a = tape.a[:used].reshape(-1, tape.a.shape[-1])
        t = np.repeat(tape.t[:used], batch) if used > 1 else tape.t[0]
        return column_sums(self.compiled.vjp_params(z, self.theta, t, a))

    def parameter_integrand(self, z: NDArray, t, a: NDArray, groups: int, *,
                            magnitude: bool = False) -> NDArray:
        """``(groups, p)``: the summed parameter VJP over equal consecutive row groups
        (``magnitude``: of each sample's contribution in absolute value)."""
        per_row = self.compiled.vjp_params(z, self.theta, t, a)
        if magnitude:
            per_row = np.abs(per_row)
        return per_row.reshape(groups, -1, per_row.shape[-1]).sum(axis=1)

    def tangent(self, z: NDArray, t, dz=None, dtheta=None, dt=None, *, want_f: bool = False):
        parts = [x for x in (dz, dtheta) if x is not None]
        out = np.zeros(z.shape, dtype=np.result_type(z, self.dtype, *parts))
        if dz is not None:
            out += np.einsum("bij,bj->bi", self.compiled.jac_state(z, self.theta, t), dz)
        if dtheta is not None and self.compiled.p:
            out += self.compiled.jac_params(z, self.theta, t) @ dtheta
        if dt is not None and not self.compiled.autonomous:
            out += dt * self.compiled.time_partial(z, self.theta, t)
        return (self.rhs(z, t), out) if want_f else out


class LinearKernel(_RowKernel):
    r"""The kernel of autonomous dynamics :math:`f = A(\theta) z + c(\theta)`, found
    symbolically in elementwise form: ``z @ A.T + c``, whatever ``n``."""

    def __init__(self, structure, theta: NDArray):
        self.structure = structure
        self.theta = theta
        self.dtype = theta.dtype
        self.A = structure.matrix(theta)
        self.AT = self.A.T
        self.c = structure.offset(theta)
        self.affine = structure.affine
        self._one_slot: dict = {}

    def rhs(self, z: NDArray, t) -> NDArray:
        out = z @ self.AT
        if self.affine:
            out += self.c
        return out

    def tape(self, slots: int, batch: int, dtype):
        return _RowTape.allocate(slots, batch, self.A.shape[0],
                                 np.result_type(dtype, self.dtype))

    def tape_functions(self, tape):
        A, AT, c, affine = self.A, self.AT, self.c, self.affine
        matmul = np.matmul
        zs, cots = tape.z, tape.a

        def save(z, t, slot, out, placed):
            if not placed:
                zs[slot] = z
            f = matmul(z, AT, out=out)
            if affine:
                f += c
            return f

        def reverse(a, t, slot, want_t, out, placed):
            if not placed:
                cots[slot] = a
            return matmul(a, A, out=out), 0.0

        return save, reverse

    def parameter_gradient(self, tape) -> NDArray:
        used = tape.used
        z = tape.z[:used].reshape(-1, tape.z.shape[-1])
        a = tape.a[:used].reshape(-1, tape.a.shape[-1])
        return self.structure.theta_gradient(self.theta, a.T @ z, column_sums(a))

    def parameter_integrand(self, z: NDArray, t, a: NDArray, groups: int, *,
                            magnitude: bool = False) -> NDArray:
        """``(groups, p)``: the summed parameter VJP over equal consecutive row groups
        (``magnitude``: of every term in absolute value)."""
        size = np.abs if magnitude else (lambda x: x)
        n = z.shape[-1]
        zg, ag = size(z).reshape(groups, -1, n), size(a).reshape(groups, -1, n)
        grad_A = np.swapaxes(ag, 1, 2) @ zg
        out = np.einsum("gij,ijk->gk", grad_A, size(self.structure.matrix_grad(self.theta)))
        if self.affine:
            out += ag.sum(axis=1) @ size(self.structure.offset_grad(self.theta))
        return out

    def tangent(self, z: NDArray, t, dz=None, dtheta=None, dt=None, *, want_f: bool = False):
        out = np.zeros(z.shape, dtype=np.result_type(z, self.dtype))
        if dz is not None:
            out = out + dz @ self.AT
        if dtheta is not None:
            dA = self.structure.matrix_grad(self.theta) @ dtheta
            dc = self.structure.offset_grad(self.theta) @ dtheta
            out = out + z @ dA.T + dc
        return (self.rhs(z, t), out) if want_f else out
