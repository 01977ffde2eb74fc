"""Continuous adjoints and forward sensitivity solved with Rodas4.

The adjoint of a stiff problem is stiff too, backwards in time: :math:`\\dot a =
-J^T a` has the eigenvalues of :math:`J` with their sign flipped, and integrated from
``t_N`` down to ``t_0`` it contracts as fast as the forward flow does. So every
continuous method (shared/MATH.md, "Continuous adjoint", "Forward sensitivity") is solved
here with the Rosenbrock integrator, each system giving its own ``F``, ``dF/dt`` and
factorisation of :math:`I - h\\gamma\\, \\partial F/\\partial y` from the symbolic
Jacobian and its second derivatives, blockwise, so that no factorisation is larger than
``n x n``:

- adjoint (interpolated, quadrature): :math:`F = [-J^T a;\\ -J_\\theta^T a]` at
  :math:`z(t)` from the forward dense output; :math:`\\partial F/\\partial y` has blocks
  :math:`-J^T` and :math:`-J_\\theta^T`;
- backsolve: :math:`F = [f;\\ -J^T a;\\ -J_\\theta^T a]`; the blocks below the diagonal
  are the second derivatives :math:`-\\partial (J^T a)/\\partial z = -J'(\\cdot, 0)^T a`;
- forward sensitivity: :math:`F = [f;\\ J S_z;\\ J S_\\theta + J_\\theta]`: :math:`J` on
  the diagonal, :math:`J'(x, 0) S + J_\\theta'(x, 0)` below it.

Shared with the explicit methods: ``integrate_intervals``, its step budget, the segments'
dense output and forward sensitivity's gradient from the sensitivities
(``solve_sensitivities``); ``numeric/_gradient.py`` dispatches here when the solver is ``rodas4``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from symbolic import CompiledForm

from ._batched_lu import BatchedLU
from ._checks import SolverOptions, observed
from ._continuous import solve_sensitivities
from ._errors import IntegrationError
from ._rk import StepBudget
from ._solve import Trajectory, integrate_intervals, solve_trajectory

__all__ = [
    "RosenbrockResult",
    "rosenbrock_backsolve_adjoint",
    "rosenbrock_forward_sensitivity",
    "rosenbrock_interpolated_adjoint",
    "rosenbrock_quadrature_adjoint",
]

#: Gauss–Legendre nodes and weights on [0, 1] for the quadrature adjoint.
_GL_X, _GL_W = np.polynomial.legendre.leggauss(5)
_GL_X = (_GL_X + 1.0) / 2.0
_GL_W = _GL_W / 2.0


@dataclass
class RosenbrockResult:
    """A continuous method's loss and gradient (the fields ``_gradient`` reads)."""

    loss: float
    grad_z0: NDArray
    grad_theta: NDArray
    grad_times: NDArray
    info: dict


# -- the systems ------------------------------------------------------------------------------


class _AdjointSolve:
    r""":math:`(I - h\gamma A)^{-1}` for :math:`A = [[-J^T, 0], [-J_\theta^T, 0]]`."""

    def __init__(self, jac: NDArray, jac_theta: NDArray | None, h_gamma):
        self.lu = BatchedLU(np.eye(jac.shape[-1]) + h_gamma * jac)  # (I + h g J)^T later
        self.jac_theta, self.h_gamma, self.n = jac_theta, h_gamma, jac.shape[-1]

    def solve(self, r: NDArray) -> NDArray:
        n = self.n
        x_a = self.lu.solve_transposed(r[:, :n])
        if self.jac_theta is None:
            return x_a
        x_theta = r[:, n:] - self.h_gamma * np.einsum("bij,bi->bj", self.jac_theta, x_a)
        return np.concatenate([x_a, x_theta], axis=1)


class _AdjointLinearization:
    def __init__(self, jac, jac_theta):
        self.jac, self.jac_theta = jac, jac_theta

    def factor(self, h_gamma):
        return _AdjointSolve(self.jac, self.jac_theta, h_gamma)


class InterpolatedAdjointSystem:
    r"""The adjoint :math:`\dot a = -J^T a` (and :math:`\dot a_\theta = -J_\theta^T a` when
    ``with_theta``) along the forward dense output :math:`z(t)`:
    :math:`\partial F/\partial t = -J'(\dot z, 1)^T a` with :math:`\dot z` the derivative
    of the dense output, the exact time derivative of the system integrated."""

    def __init__(self, compiled: CompiledForm, theta: NDArray, traj: Trajectory,
                 times: NDArray, with_theta: bool):
        self.compiled, self.theta, self.traj = compiled, theta, traj
        self.times, self.with_theta = times, with_theta
        self.n = compiled.n

    def _segment(self, t):
        return self.traj.segments[_locate(self.times, t)]

    def __call__(self, t, y):
        z = self._segment(t).evaluate(t)
        a = y[:, : self.n]
        parts = [-self.compiled.vjp_state(z, self.theta, t, a)]
        if self.with_theta:
            parts.append(-self.compiled.vjp_params(z, self.theta, t, a))
        return np.concatenate(parts, axis=1)

    def time_partial(self, t, y):
        segment = self._segment(t)
        z, z_dot = segment.evaluate(t), segment.derivative(t)
        a = y[:, : self.n]
        along = self.compiled.jac_state_jvp(z, self.theta, t, z_dot, 1.0)
        parts = [-np.einsum("bij,bi->bj", along, a)]
        if self.with_theta:
            along_theta = self.compiled.jac_params_jvp(z, self.theta, t, z_dot, 1.0)
            parts.append(-np.einsum("bij,bi->bj", along_theta, a))
        return np.concatenate(parts, axis=1)

    def linearize(self, t, y):
        z = self._segment(t).evaluate(t)
        jac = self.compiled.jac_state(z, self.theta, t)
        jac_theta = self.compiled.jac_params(z, self.theta, t) if self.with_theta else None
        return _AdjointLinearization(jac, jac_theta)


class _BacksolveSolve:
    def __init__(self, system, z, a, jac, jac_theta, t, h_gamma):
        n = jac.shape[-1]
        self.system, self.z, self.a, self.t, self.h_gamma, self.n = system, z, a, t, h_gamma, n
        self.forward = BatchedLU(np.eye(n) - h_gamma * jac)
        self.backward = BatchedLU(np.eye(n) + h_gamma * jac)
        self.jac_theta = jac_theta

    def solve(self, r: NDArray) -> NDArray:
        n, hg = self.n, self.h_gamma
        compiled, theta = self.system.compiled, self.system.theta
        x_z = self.forward.solve(r[:, :n])
        along = compiled.jac_state_jvp(self.z, theta, self.t, x_z, 0.0)
        x_a = self.backward.solve_transposed(
            r[:, n : 2 * n] - hg * np.einsum("bij,bi->bj", along, self.a))
        parts = [x_z, x_a]
        if self.jac_theta is not None:
            along_theta = compiled.jac_params_jvp(self.z, theta, self.t, x_z, 0.0)
            parts.append(r[:, 2 * n :] - hg * (np.einsum("bij,bi->bj", along_theta, self.a)
                                               + np.einsum("bij,bi->bj", self.jac_theta, x_a)))
        return np.concatenate(parts, axis=1)


class BacksolveSystem:
    r"""The augmented system :math:`[z, a, a_\theta]` integrated backwards:
    :math:`F = [f;\ -J^T a;\ -J_\theta^T a]`, with the second derivatives of ``f`` in its
    Jacobian and time derivative."""

    def __init__(self, compiled: CompiledForm, theta: NDArray):
        self.compiled, self.theta, self.n = compiled, theta, compiled.n

    def _split(self, y):
        n = self.n
        return y[:, :n], y[:, n : 2 * n]

    def __call__(self, t, y):
        z, a = self._split(y)
        c, th = self.compiled, self.theta
        return np.concatenate([c.rhs(z, th, t), -c.vjp_state(z, th, t, a),
                               -c.vjp_params(z, th, t, a)], axis=1)

    def time_partial(self, t, y):
        c, th = self.compiled, self.theta
        if c.autonomous:
            return None
        z, a = self._split(y)
        zeros = np.zeros_like(z)
        along = c.jac_state_jvp(z, th, t, zeros, 1.0)
        along_theta = c.jac_params_jvp(z, th, t, zeros, 1.0)
        return np.concatenate([c.time_partial(z, th, t),
                               -np.einsum("bij,bi->bj", along, a),
                               -np.einsum("bij,bi->bj", along_theta, a)], axis=1)

    def linearize(self, t, y):
        z, a = self._split(y)
        c, th = self.compiled, self.theta
        jac = c.jac_state(z, th, t)
        jac_theta = c.jac_params(z, th, t) if c.p else None
        system = self

        class _Linear:
            def factor(self, h_gamma):
                return _BacksolveSolve(system, z, a, jac, jac_theta, t, h_gamma)

        return _Linear()


class _SensitivitySolve:
    def __init__(self, system, z, s, jac, t, h_gamma):
        n = jac.shape[-1]
        self.system, self.z, self.s, self.t, self.h_gamma, self.n = system, z, s, t, h_gamma, n
        self.lu = BatchedLU(np.eye(n) - h_gamma * jac)

    def solve(self, r: NDArray) -> NDArray:
        n, B = self.n, r.shape[0]
        compiled, theta = self.system.compiled, self.system.theta
        x_z = self.lu.solve(r[:, :n])
        coupling = np.matmul(compiled.jac_state_jvp(self.z, theta, self.t, x_z, 0.0), self.s)
        if compiled.p:
            coupling[:, :, n:] += compiled.jac_params_jvp(self.z, theta, self.t, x_z, 0.0)
        x_s = self.lu.solve(self.system.columns(r) + self.h_gamma * coupling)
        return np.concatenate([x_z, self.system.flat(x_s, B)], axis=1)


class SensitivitySystem:
    r""":math:`y = [z;\ S]` with :math:`S = [S_z\ S_\theta]` of shape ``(n, n + p)`` per
    sample (flattened as ``[S_z row-major, S_theta row-major]``, the layout of the explicit
    forward sensitivity): :math:`\dot z = f`, :math:`\dot S = J S + [0\ J_\theta]`."""

    def __init__(self, compiled: CompiledForm, theta: NDArray):
        self.compiled, self.theta = compiled, theta
        self.n, self.p = compiled.n, compiled.p

    def columns(self, y: NDArray) -> NDArray:
        """``[S_z S_theta]``, shape ``(B, n, n + p)``."""
        n, p, B = self.n, self.p, y.shape[0]
        s_z = y[:, n : n + n * n].reshape(B, n, n)
        s_theta = y[:, n + n * n :].reshape(B, n, p)
        return np.concatenate([s_z, s_theta], axis=2)

    def flat(self, s: NDArray, B: int) -> NDArray:
        n = self.n
        return np.concatenate([s[:, :, :n].reshape(B, n * n), s[:, :, n:].reshape(B, -1)],
                              axis=1)

    def __call__(self, t, y):
        n, B = self.n, y.shape[0]
        c, th = self.compiled, self.theta
        z = y[:, :n]
        ds = np.matmul(c.jac_state(z, th, t), self.columns(y))
        if c.p:
            ds[:, :, n:] += c.jac_params(z, th, t)
        return np.concatenate([c.rhs(z, th, t), self.flat(ds, B)], axis=1)

    def time_partial(self, t, y):
        c, th = self.compiled, self.theta
        if c.autonomous:
            return None
        n, B = self.n, y.shape[0]
        z = y[:, :n]
        zeros = np.zeros_like(z)
        ds = np.matmul(c.jac_state_jvp(z, th, t, zeros, 1.0), self.columns(y))
        if c.p:
            ds[:, :, n:] += c.jac_params_jvp(z, th, t, zeros, 1.0)
        return np.concatenate([c.time_partial(z, th, t), self.flat(ds, B)], axis=1)

    def linearize(self, t, y):
        z, s = y[:, : self.n], self.columns(y)
        jac = self.compiled.jac_state(z, self.theta, t)
        system = self

        class _Linear:
            def factor(self, h_gamma):
                return _SensitivitySolve(system, z, s, jac, t, h_gamma)

        return _Linear()


# -- the methods ------------------------------------------------------------------------------


def _locate(times: NDArray, t: float) -> int:
    j = int(np.searchsorted(times, t, side="right")) - 1
    return min(max(j, 0), len(times) - 2)


def _observation_terms(compiled, zs: NDArray, theta, times, data):
    """Loss, loss gradients ``g`` (N+1, B, n) with ``g[0] = 0``, and ``dL/dt_i =
    sum_b g_i^T f(z(t_i))`` for ``i >= 1``."""
    N = len(times) - 1
    g = np.zeros_like(zs)
    grad_times = np.zeros(N + 1)
    loss = 0.0
    for i in range(1, N + 1):
        loss += float(compiled.loss(zs[i], observed(data, i)).sum())
        g[i] = compiled.loss_grad(zs[i], observed(data, i))
        grad_times[i] = float(np.sum(g[i] * compiled.rhs(zs[i], theta, times[i])))
    return loss, g, grad_times


def _adjoint(compiled: CompiledForm, z0, theta, times, options: SolverOptions, *, mode: str,
             data=None) -> RosenbrockResult:
    """The backward pass of the three continuous adjoints on Rodas4 (see the module
    docstring); ``mode`` is ``backsolve``, ``interpolated`` or ``quadrature``."""
    traj = solve_trajectory(compiled, z0, theta, times, options)
    loss, g, grad_times = _observation_terms(compiled, traj.zs, theta, times, data)
    n, p, N, B = compiled.n, compiled.p, len(times) - 1, z0.shape[0]
    budget = StepBudget(options.max_steps)
    drift = [0.0]
    if mode == "backsolve":
        system = BacksolveSystem(compiled, theta)
        y_start = np.concatenate([traj.zs[N], g[N], np.zeros((B, p))], axis=1)
        a_slice, theta_slice = slice(n, 2 * n), slice(2 * n, 2 * n + p)

        def at_node(i, y):
            j = N - i
            forward = traj.zs[j]
            distance = np.linalg.norm(y[:, :n] - forward) / max(np.linalg.norm(forward), 1e-300)
            drift[0] = max(drift[0], float(distance))
            y = y.copy()
            y[:, :n] = forward
            y[:, n : 2 * n] += g[j]
            return y
    else:
        with_theta = mode == "interpolated" and p > 0
        system = InterpolatedAdjointSystem(compiled, theta, traj, times, with_theta)
        y_start = np.concatenate([g[N], np.zeros((B, p if with_theta else 0))], axis=1)
        a_slice, theta_slice = slice(0, n), slice(n, n + p)

        def at_node(i, y):
            y = y.copy()
            y[:, :n] += g[N - i]
            return y

    try:
        segments = integrate_intervals(system, y_start, times[::-1], options, budget,
                                       at_node=at_node, what="adjoint")
    except IntegrationError as exc:
        if mode != "backsolve":
            raise
        raise IntegrationError(
            f"backsolve: the backward reconstruction of z is unstable and failed at "
            f"t={exc.t:.6g}: the forward flow contracts (stiff), so integrating z backwards "
            "amplifies every error; use interpolated_adjoint or quadrature_adjoint. "
            f"({exc})", t=exc.t, cause="unstable reconstruction") from exc
    y_end = segments[-1].ys[-1]
    a0 = y_end[:, a_slice]
    if mode == "quadrature":
        grad_theta = _quadrature(compiled, theta, traj, segments, N, n, p)
    elif p:
        grad_theta = y_end[:, theta_slice].sum(axis=0)
    else:
        grad_theta = np.zeros(0)
    grad_times[0] = -float(np.sum(a0 * compiled.rhs(z0, theta, times[0])))
    info = {
        "forward_steps": sum(s.steps for s in traj.segments),
        "backward_steps": sum(s.steps for s in segments),
        "rejected_steps": traj.budget.rejected + budget.rejected,
        "nfev": traj.budget.nfev + budget.nfev,
    }
    if mode == "backsolve":
        info["reconstruction_error"] = drift[0]
    return RosenbrockResult(loss, a0, grad_theta, grad_times, info)


def _quadrature(compiled, theta, traj, segments, N, n, p) -> NDArray:
    r""":math:`dL/d\theta = \int (\partial f/\partial\theta)^T a\, dt` by 5-point
    Gauss–Legendre between consecutive boundaries of the forward and the backward steps
    together, ``a`` and ``z`` from dense output: the forward steps resolve the fast
    transients of ``z`` (which the adjoint's own steps need not), the backward steps
    those of ``a``."""
    grad_theta = np.zeros(p)
    if not p:
        return grad_theta
    for index, segment in enumerate(segments):
        interval = N - 1 - index
        nodes = np.union1d(segment.ts, traj.segments[interval].ts)
        for t_lo, t_hi in itertools.pairwise(nodes):
            h = t_hi - t_lo
            for x, w in zip(_GL_X, _GL_W, strict=True):
                t = t_lo + x * h
                a = segment.evaluate(t)[:, :n]
                z = traj.evaluate(t, interval)
                grad_theta += w * h * compiled.vjp_params(z, theta, t, a).sum(axis=0)
    return grad_theta


def rosenbrock_backsolve_adjoint(compiled, z0, theta, times, options, *,
                                 data=None) -> RosenbrockResult:
    """Backsolve on Rodas4: ``z`` reconstructed backwards with ``a``.

    Rodas4 is L-stable, so integrated backwards it damps the modes that the backward flow
    amplifies: instead of overflowing (as an explicit solver does) the reconstruction of a
    stiff ``z`` loses its fast components, and ``info["reconstruction_error"]`` shows it.
    """
    return _adjoint(compiled, z0, theta, times, options, mode="backsolve", data=data)


def rosenbrock_interpolated_adjoint(compiled, z0, theta, times, options, *,
                                    data=None) -> RosenbrockResult:
    """The adjoint along the forward Rodas4 dense output (order 3)."""
    return _adjoint(compiled, z0, theta, times, options, mode="interpolated", data=data)


def rosenbrock_quadrature_adjoint(compiled, z0, theta, times, options, *,
                                  data=None) -> RosenbrockResult:
    """The adjoint for ``a`` alone, then ``dL/dtheta`` by quadrature."""
    return _adjoint(compiled, z0, theta, times, options, mode="quadrature", data=data)


def rosenbrock_forward_sensitivity(compiled, z0, theta, times, options, *,
                                   data=None) -> RosenbrockResult:
    r"""Forward sensitivities on Rodas4 (:class:`SensitivitySystem`), then
    :math:`dL/dz_0 = \sum_i S_z(t_i)^T g_i`, :math:`dL/d\theta = \sum_{i,b} S_\theta(t_i)^T
    g_i`, with ``info["term_scale"]`` as the explicit method gives it (the sums over
    magnitudes the gradient is made of)."""
    return RosenbrockResult(*solve_sensitivities(SensitivitySystem(compiled, theta), compiled,
                                                 z0, theta, times, options, data))
