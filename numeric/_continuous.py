"""Continuous adjoints (backsolve, interpolated, quadrature) and forward sensitivity.

All follow shared/MATH.md, "Continuous adjoint" and "Forward sensitivity": the adjoint
:math:`a` is integrated backwards from ``t_N`` with a jump :math:`\\nabla\\ell(z(t_i))` at every
observation time, the parameter gradient is :math:`\\int (\\partial f/\\partial\\theta)^T a\\,dt`,
and the time gradients are :math:`\\nabla\\ell(z(t_i))^T f(z(t_i))` for ``i >= 1`` and
:math:`-a(t_0)^T f(z_0, t_0)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from symbolic import CompiledForm

from ._checks import SolverOptions, observed
from ._rk import StepBudget
from ._solve import Trajectory, integrate_intervals, solve_trajectory

__all__ = [
    "ContinuousResult",
    "backsolve_adjoint",
    "forward_sensitivity",
    "interpolated_adjoint",
    "quadrature_adjoint",
]

#: Gauss–Legendre nodes and weights on [0, 1] for the quadrature adjoint: 5 points are
#: exact for polynomials of degree 9, beyond the order of every interpolant used.
_GL_X, _GL_W = np.polynomial.legendre.leggauss(5)
_GL_X = (_GL_X + 1.0) / 2.0
_GL_W = _GL_W / 2.0


@dataclass
class ContinuousResult:
    loss: float
    grad_z0: NDArray
    grad_theta: NDArray
    grad_times: NDArray
    info: dict


def _observation_terms(
    compiled: CompiledForm, traj: Trajectory, theta: NDArray, times: NDArray, data
) -> tuple[float, NDArray, NDArray]:
    """Loss, loss gradients ``g`` of shape (N+1, B, n) (``g[0] = 0``) and the time gradients
    ``dL/dt_i = sum_b g_i^T f(z(t_i))`` for ``i >= 1`` (``dL/dt_0`` is filled in later)."""
    N = len(times) - 1
    g = np.zeros_like(traj.zs)
    grad_times = np.zeros(N + 1)
    loss = 0.0
    for i in range(1, N + 1):
        z_i = traj.zs[i]
        loss += float(compiled.loss(z_i, observed(data, i)).sum())
        g[i] = compiled.loss_grad(z_i, observed(data, i))
        grad_times[i] = float(np.sum(g[i] * compiled.rhs(z_i, theta, times[i])))
    return loss, g, grad_times


def _start_time_gradient(compiled, z0, theta, t0, a0) -> float:
    """:math:`dL/dt_0 = -\\sum_b a_b(t_0)^T f(z_{0,b}, \\theta, t_0)`."""
    return -float(np.sum(a0 * compiled.rhs(z0, theta, t0)))


def _locate(times: NDArray, t: float) -> int:
    """Observation interval index j (``t_j <= t <= t_{j+1}``) of a time inside the span."""
    j = int(np.searchsorted(times, t, side="right")) - 1
    return min(max(j, 0), len(times) - 2)


def _adjoint_pass(
    compiled: CompiledForm,
    z0: NDArray,
    theta: NDArray,
    times: NDArray,
    options: SolverOptions,
    *,
    mode: str,
    data=None,
) -> ContinuousResult:
    """The backward pass shared by the three continuous adjoints.

    ``mode`` is ``"backsolve"`` (state ``[z, a, a_theta]``, ``z`` integrated backwards and
    reset to the forward value at each observation time), ``"interpolated"`` (state
    ``[a, a_theta]``, ``z`` from the forward dense output) or ``"quadrature"`` (state ``a``;
    ``dL/dtheta`` afterwards by Gauss–Legendre quadrature over the backward steps).
    """
    traj = solve_trajectory(compiled, z0, theta, times, options)
    loss, g, grad_times = _observation_terms(compiled, traj, theta, times, data)
    n, p, N = compiled.n, compiled.p, len(times) - 1
    B = z0.shape[0]
    budget = StepBudget(options.max_steps)
    reconstruction = [0.0]

    def z_at(t):
        return traj.evaluate(t, _locate(times, t))

    if mode == "backsolve":
        def rhs(t, y):
            z, a = y[:, :n], y[:, n : 2 * n]
            return np.concatenate(
                [
                    compiled.rhs(z, theta, t),
                    -compiled.vjp_state(z, theta, t, a),
                    -compiled.vjp_params(z, theta, t, a),
                ],
                axis=1,
            )

        y_start = np.concatenate([traj.zs[N], g[N], np.zeros((B, p))], axis=1)

        def at_node(i, y):
            j = N - i  # arrived at times[j]
            z_forward = traj.zs[j]
            drift = np.linalg.norm(y[:, :n] - z_forward) / max(np.linalg.norm(z_forward), 1e-300)
            reconstruction[0] = max(reconstruction[0], float(drift))
            y = y.copy()
            y[:, :n] = z_forward
            y[:, n : 2 * n] += g[j]
            return y

        a_slice, theta_slice = slice(n, 2 * n), slice(2 * n, 2 * n + p)
    else:
        with_theta = mode == "interpolated"

        def rhs(t, y):
            z = z_at(t)
            a = y[:, :n]
            parts = [-compiled.vjp_state(z, theta, t, a)]
            if with_theta:
                parts.append(-compiled.vjp_params(z, theta, t, a))
            return np.concatenate(parts, axis=1)

        y_start = np.concatenate([g[N], np.zeros((B, p if with_theta else 0))], axis=1)

        def at_node(i, y):
            y = y.copy()
            y[:, :n] += g[N - i]
            return y

        a_slice, theta_slice = slice(0, n), slice(n, n + p)

    segments = integrate_intervals(
        rhs, y_start, times[::-1], options, budget, at_node=at_node, what="adjoint",
        need_end_derivative=True,
    )
    y_end = segments[-1].ys[-1]
    # at_node already added the jump at t_0 = times[0]; g[0] is zero by definition
    a0 = y_end[:, a_slice]
    if mode == "quadrature":
        grad_theta = np.zeros(p)
        for seg_index, segment in enumerate(segments):
            interval = N - 1 - seg_index
            for k in range(segment.steps):
                t_lo, t_hi = segment.ts[k], segment.ts[k + 1]
                h = t_hi - t_lo
                for x, w in zip(_GL_X, _GL_W, strict=False):
                    t = t_lo + x * h
                    a = segment.evaluate(t)[:, :n]
                    z = traj.evaluate(t, interval)
                    grad_theta -= w * h * compiled.vjp_params(z, theta, t, a).sum(axis=0)
    else:
        grad_theta = y_end[:, theta_slice].sum(axis=0)
    grad_times[0] = _start_time_gradient(compiled, z0, theta, times[0], a0)
    info = {
        "forward_steps": sum(s.steps for s in traj.segments),
        "backward_steps": sum(s.steps for s in segments),
        "rejected_steps": traj.budget.rejected + budget.rejected,
        "nfev": traj.budget.nfev + budget.nfev,
    }
    if mode == "backsolve":
        info["reconstruction_error"] = reconstruction[0]
    return ContinuousResult(loss, a0, grad_theta, grad_times, info)


def backsolve_adjoint(compiled, z0, theta, times, options, *, data=None) -> ContinuousResult:
    """Adjoint with ``z`` reconstructed by integrating the dynamics backwards (O(1) memory).

    ``info["reconstruction_error"]`` is the largest relative distance, over the observation
    times, between the backward reconstruction of ``z`` and the forward solution: when the
    forward flow contracts it grows like the backward flow's expansion, and so does the
    error of the gradient (Gholami et al. 2019; Zhuang et al. 2020).
    """
    return _adjoint_pass(compiled, z0, theta, times, options, mode="backsolve", data=data)


def interpolated_adjoint(compiled, z0, theta, times, options, *, data=None) -> ContinuousResult:
    """Adjoint with ``z(t)`` from the forward solve's dense output."""
    return _adjoint_pass(compiled, z0, theta, times, options, mode="interpolated", data=data)


def quadrature_adjoint(compiled, z0, theta, times, options, *, data=None) -> ContinuousResult:
    """Adjoint for ``a`` alone, then ``dL/dtheta`` by 5-point Gauss–Legendre quadrature of
    :math:`(\\partial f/\\partial\\theta)^T a` over every backward step, with ``a`` and ``z``
    from dense output."""
    return _adjoint_pass(compiled, z0, theta, times, options, mode="quadrature", data=data)


def forward_sensitivity(compiled, z0, theta, times, options, *, data=None) -> ContinuousResult:
    r"""Forward sensitivities :math:`S_z = \partial z/\partial z_0`, :math:`S_\theta =
    \partial z/\partial\theta` integrated with the state:

    .. math:: \dot S_z = J S_z,\ S_z(t_0) = I; \qquad
              \dot S_\theta = J S_\theta + \partial f/\partial\theta,\ S_\theta(t_0) = 0

    then :math:`dL/dz_0 = \sum_i S_z(t_i)^T g_i`, :math:`dL/d\theta = \sum_{i,b}
    S_\theta(t_i)^T g_i`. Cost grows with ``n + p``; no backward pass.

    ``info["term_scale"]`` holds, per block and per entry (arrays of the blocks' shapes),
    the same sums taken over magnitudes, :math:`\sum_i |S(t_i)|^T \max(|g_i|, |g_i^0|)`
    with :math:`g^0` the loss gradient with zero targets: the scale of the terms each entry
    of the gradient is summed from. Near a fit (or any stationary point) the gradient is a
    small difference of such terms, and every method's error is relative to them, not to
    the gradient.
    """
    n, p = compiled.n, compiled.p
    B = z0.shape[0]
    m = n + n * n + n * p

    def rhs(t, y):
        z = y[:, :n]
        s_z = y[:, n : n + n * n].reshape(B, n, n)
        s_theta = y[:, n + n * n :].reshape(B, n, p)
        jac = compiled.jac_state(z, theta, t)
        out = np.empty((B, m), dtype=y.dtype)
        out[:, :n] = compiled.rhs(z, theta, t)
        out[:, n : n + n * n] = np.matmul(jac, s_z).reshape(B, n * n)
        if p:
            out[:, n + n * n :] = (
                np.matmul(jac, s_theta) + compiled.jac_params(z, theta, t)
            ).reshape(B, n * p)
        return out

    y0 = np.concatenate(
        [z0, np.broadcast_to(np.eye(n).reshape(1, -1), (B, n * n)), np.zeros((B, n * p))], axis=1
    )
    budget = StepBudget(options.max_steps)
    segments = integrate_intervals(rhs, y0, times, options, budget, what="sensitivity")
    N = len(times) - 1
    grad_z0 = np.zeros_like(z0)
    grad_theta = np.zeros(p)
    grad_times = np.zeros(N + 1)
    terms = {"z0": np.zeros_like(z0), "theta": np.zeros(p), "times": np.zeros(N + 1)}
    loss = 0.0
    for i, segment in enumerate(segments, start=1):
        y = segment.ys[-1]
        z = y[:, :n]
        s_z = y[:, n : n + n * n].reshape(B, n, n)
        s_theta = y[:, n + n * n :].reshape(B, n, p)
        g = compiled.loss_grad(z, observed(data, i))
        f = compiled.rhs(z, theta, times[i])
        loss += float(compiled.loss(z, observed(data, i)).sum())
        grad_z0 += np.einsum("bij,bi->bj", s_z, g)
        grad_theta += np.einsum("bij,bi->j", s_theta, g)
        grad_times[i] = float(np.sum(g * f))
        # the same sums of magnitudes, with the loss gradient not cancelled by its data
        uncancelled = np.abs(g)
        if data is not None:
            uncancelled = np.maximum(uncancelled, np.abs(compiled.loss_grad(z, 0 * data[i - 1])))
        terms["z0"] += np.einsum("bij,bi->bj", np.abs(s_z), uncancelled)
        terms["theta"] += np.einsum("bij,bi->j", np.abs(s_theta), uncancelled)
        terms["times"][i] = float(np.sum(uncancelled * np.abs(f)))
    grad_times[0] = _start_time_gradient(compiled, z0, theta, times[0], grad_z0)
    terms["times"][0] = float(np.sum(terms["z0"] * np.abs(compiled.rhs(z0, theta, times[0]))))
    info = {
        "forward_steps": sum(s.steps for s in segments),
        "rejected_steps": budget.rejected,
        "nfev": budget.nfev,
        "term_scale": terms,
    }
    return ContinuousResult(loss, grad_z0, grad_theta, grad_times, info)
