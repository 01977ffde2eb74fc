"""Continuous adjoints (backsolve, interpolated, quadrature) and forward sensitivity.

All follow shared/MATH.md, "Continuous adjoint" and "Forward sensitivity": the adjoint
:math:`a` is integrated backwards from ``t_N`` with a jump :math:`\\nabla\\ell(z(t_i))` at every
observation time, the parameter gradient is :math:`\\int (\\partial f/\\partial\\theta)^T a\\,dt`,
and the time gradients are :math:`\\nabla\\ell(z(t_i))^T f(z(t_i))` for ``i >= 1`` and
:math:`-a(t_0)^T f(z_0, t_0)`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from symbolic import CompiledForm

from ._budget import check_memory
from ._checks import SolverOptions, observed
from ._quadrature import adaptive_parameter_integral
from ._rk import AdaptiveState, StepBudget
from ._solve import Trajectory, integrate_intervals, solve_trajectory

__all__ = [
    "ContinuousResult",
    "backsolve_adjoint",
    "forward_sensitivity",
    "interpolated_adjoint",
    "quadrature_adjoint",
    "sensitivity_gradient",
    "solve_sensitivities",
]


#: Entries of ``a_theta`` below this fraction of the largest one's term scale are held
#: to the largest's rounding, not to their own (the error measure's floor, ROUNDING).
QUADRATURE_FLOOR = 1e-12


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
    ``dL/dtheta`` afterwards by adaptive Gauss–Kronrod quadrature over the backward steps).
    The states are flat vectors; ``a_theta`` is summed over the batch (only the sum is
    needed), so it costs ``p`` unknowns, not ``B p``.
    """
    traj = solve_trajectory(compiled, z0, theta, times, options)
    loss, g, grad_times = _observation_terms(compiled, traj, theta, times, data)
    n, p, N = compiled.n, compiled.p, len(times) - 1
    B = z0.shape[0]
    Bn = B * n
    kernel = compiled.kernel(theta)
    budget = StepBudget(options.max_steps)
    reconstruction = [0.0]

    def z_at(t):
        return traj.evaluate(t, _locate(times, t))

    if mode == "backsolve":
        def rhs(t, y):
            z, a = y[:Bn].reshape(B, n), y[Bn : 2 * Bn].reshape(B, n)
            f, zbar, grad, _ = kernel.vjp(z, t, a, want_f=True)
            return np.concatenate([f.ravel(), -zbar.ravel(), -grad])

        y_start = np.concatenate([traj.zs[N].ravel(), g[N].ravel(), np.zeros(p)])

        def at_node(i, y):
            j = N - i  # arrived at times[j]
            z_forward = traj.zs[j]
            drift = np.linalg.norm(y[:Bn] - z_forward.ravel()) / max(
                np.linalg.norm(z_forward), 1e-300)
            reconstruction[0] = max(reconstruction[0], float(drift))
            y = y.copy()
            y[:Bn] = z_forward.ravel()
            y[Bn : 2 * Bn] += g[j].ravel()
            return y

        a_slice, theta_slice = slice(Bn, 2 * Bn), slice(2 * Bn, 2 * Bn + p)
    else:
        with_theta = mode == "interpolated"

        def rhs(t, y):
            a = y[:Bn].reshape(B, n)
            zbar, grad, _ = kernel.vjp(z_at(t), t, a, params=with_theta)
            if not with_theta:
                return -zbar.ravel()
            return np.concatenate([-zbar.ravel(), -grad])

        y_start = np.concatenate([g[N].ravel(), np.zeros(p if with_theta else 0)])

        def at_node(i, y):
            y = y.copy()
            y[:Bn] += g[N - i].ravel()
            return y

        a_slice, theta_slice = slice(0, Bn), slice(Bn, Bn + p)

    # the adjoint runs on the time scale of the forward solution: its largest last step is
    # a better first trial than a start from a_theta = 0, where the usual estimate creeps up
    last = traj.segments[-1].ts
    first_step = float(np.max(np.abs(np.diff(last)))) if options.tableau.adaptive else None

    def backward(controlled: slice | None, solver: SolverOptions = options):
        carry = AdaptiveState(controlled=controlled)
        segments = integrate_intervals(
            rhs, y_start, times[::-1], solver, budget, at_node=at_node, what="adjoint",
            need_end_derivative=True, dense=mode == "quadrature", first_step=first_step,
            carry=carry)
        return segments, carry

    seminorm = options.tableau.adaptive and mode != "quadrature" and p > 0
    segments, carry = backward(slice(0, theta_slice.start) if seminorm else None)
    if seminorm and not _quadrature_errors_acceptable(
            carry.unchecked[theta_slice], carry.magnitude[theta_slice],
            sum(s.steps for s in segments), options):
        # a_theta's integrand needs steps of its own: every entry in the error test, each
        # a_theta entry held to rtol on the size of what it sums (as the first pass
        # measured it), not to the state's atol, which can exceed a small entry entirely
        atol = np.full(y_start.shape, options.atol)
        atol[theta_slice] = np.minimum(options.atol, _quadrature_atol(
            carry.magnitude[theta_slice], options))
        segments, carry = backward(None, dataclasses.replace(options, atol=atol))
        seminorm = False
    y_end = segments[-1].ys[-1]
    # at_node already added the jump at t_0 = times[0]; g[0] is zero by definition
    a0 = y_end[a_slice].reshape(B, n)
    info = {}
    if mode == "quadrature":
        grad_theta, info = _quadrature(kernel, traj, segments, options, B, p)
    else:
        grad_theta = y_end[theta_slice]
    grad_times[0] = _start_time_gradient(compiled, z0, theta, times[0], a0)
    info.update({
        "forward_steps": sum(s.steps for s in traj.segments),
        "backward_steps": sum(s.steps for s in segments),
        "rejected_steps": traj.budget.rejected + budget.rejected,
        "nfev": traj.budget.nfev + budget.nfev,
    })
    if mode == "backsolve":
        info["reconstruction_error"] = reconstruction[0]
    if mode != "quadrature" and options.tableau.adaptive and p > 0:
        info["error_control"] = "seminorm" if seminorm else "full"
    return ContinuousResult(loss, a0, grad_theta, grad_times, info)


def _quadrature_atol(magnitude: NDArray, options: SolverOptions) -> NDArray:
    """The absolute tolerance of each ``a_theta`` entry: ``rtol`` times the size of what it
    sums, floored at rounding of the largest entry's (an entry that small is not measured
    by the error measure either)."""
    floor = QUADRATURE_FLOOR * float(np.max(magnitude, initial=0.0))
    return options.rtol * np.maximum(magnitude, floor) + np.finfo(float).tiny


def _quadrature_errors_acceptable(unchecked: NDArray, magnitude: NDArray, steps: int,
                                  options: SolverOptions) -> bool:
    r"""Whether ``a_theta``, integrated on steps chosen for ``a`` alone (a seminorm:
    Kidger, Chen, Lyons, "Hey, that's not an ODE", ICML 2021), is as accurate as full error
    control would make it.

    ``a_theta`` feeds nothing back, so its global error is the sum of its local errors
    (``unchecked``). Its natural scale is the size of what it sums, :math:`\sum_k |\Delta
    a_\theta|` over the steps (``magnitude``; the term scale of the error measure),
    not its final value,
    which can cancel to nearly zero. The seminorm solution is kept when the summed local
    errors stay within ``steps`` local tolerances ``rtol * magnitude`` in the RMS
    over entries, what a full-norm controller accepting every step allows; else the pass
    is repeated with every entry in the error test. The local tolerance of an entry is
    ``rtol`` on its own magnitude (:func:`_quadrature_atol`), not the state's ``atol``: a
    verdict measures every entry on its own term scale, and an entry far smaller than
    ``atol`` would otherwise be accepted with any error at all."""
    scale = _quadrature_atol(magnitude, options)
    return bool(np.sqrt(np.mean((unchecked / scale) ** 2)) <= steps)


#: Tolerances of the quadrature where the solver has none (fixed steps): the
#: discretization, not the quadrature, then limits the accuracy.
FIXED_STEP_QUADRATURE_RTOL = 1e-12


def _quadrature(kernel, traj: Trajectory, segments, options: SolverOptions, B: int,
                p: int) -> tuple[NDArray, dict]:
    """``dL/dtheta`` by adaptive Gauss–Kronrod over the backward steps (see
    :mod:`numeric._quadrature`), with ``a`` and ``z`` from dense output."""
    N = len(segments)
    pieces = []
    for seg_index, segment in enumerate(segments):
        interval = N - 1 - seg_index
        for k in range(segment.steps):
            lo, hi = sorted((float(segment.ts[k]), float(segment.ts[k + 1])))
            pieces.append((interval, lo, hi))
    n = traj.zs.shape[-1]

    def integrand(interval, ts):
        a = segments[N - 1 - interval].evaluate_many(ts).reshape(len(ts), B, n)
        z = traj.segments[interval].evaluate_many(ts)
        rows = len(ts) * B
        t_rows = np.repeat(ts, B)
        return kernel.parameter_integrand(z.reshape(rows, n), t_rows, a.reshape(rows, n),
                                          len(ts))

    rtol = options.rtol if options.rtol is not None else FIXED_STEP_QUADRATURE_RTOL
    atol = options.atol if options.atol is not None else 0.0
    result = adaptive_parameter_integral(integrand, pieces, p, B, rtol=rtol, atol=atol)
    return result.value, {"quadrature_pieces": result.pieces,
                          "quadrature_levels": result.levels}


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
    """Adjoint for ``a`` alone, then ``dL/dtheta`` by adaptive Gauss–Kronrod quadrature of
    :math:`(\\partial f/\\partial\\theta)^T a` over the backward steps, with ``a`` and ``z``
    from dense output, to the solver's tolerances (pieces are halved where the integrand
    is not resolved)."""
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
    stages = options.tableau.stages + 4  # the stages, the state, the step's temporaries
    check_memory("forward_sensitivity", 8.0 * stages * B * m,
                 f"the sensitivities dz/dz0 and dz/dtheta ({B} x {n} x {n + p} numbers)",
                 "'interpolated_adjoint' (or an audit, which checks along directions)")

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

    return ContinuousResult(*solve_sensitivities(rhs, compiled, z0, theta, times, options,
                                                 data, dense=False))


def solve_sensitivities(rhs, compiled: CompiledForm, z0: NDArray, theta: NDArray,
                        times: NDArray, options, data=None, **integrate) -> tuple:
    r"""Integrate the forward-sensitivity system ``rhs`` (a function, or the stiff solver's
    system with its Jacobian) from :math:`z_0`, :math:`S_z = I`, :math:`S_\theta = 0` over
    the observation intervals and return ``(loss, dL/dz0, dL/dtheta, dL/dtimes, info)``
    (:func:`sensitivity_gradient`); ``integrate`` goes to ``integrate_intervals``. Shared by
    forward sensitivity on the explicit tableaus and on rodas4."""
    n, p, B = compiled.n, compiled.p, z0.shape[0]
    y0 = np.concatenate(
        [z0, np.broadcast_to(np.eye(n).reshape(1, -1), (B, n * n)), np.zeros((B, n * p))], axis=1
    )
    budget = StepBudget(options.max_steps)
    segments = integrate_intervals(rhs, y0, times, options, budget, what="sensitivity",
                                   **integrate)
    finals = [(y[:, :n], y[:, n : n + n * n].reshape(B, n, n),
               y[:, n + n * n :].reshape(B, n, p)) for y in (s.ys[-1] for s in segments)]
    loss, grad_z0, grad_theta, grad_times, terms = sensitivity_gradient(
        compiled, z0, theta, times, finals, data)
    info = {
        "forward_steps": sum(s.steps for s in segments),
        "rejected_steps": budget.rejected,
        "nfev": budget.nfev,
        "term_scale": terms,
    }
    return loss, grad_z0, grad_theta, grad_times, info


def sensitivity_gradient(compiled: CompiledForm, z0: NDArray, theta: NDArray,
                         times: NDArray, finals: list, data=None):
    r"""The gradient from the sensitivities at the observations, ``finals[i - 1] = (z,
    S_z, S_theta)`` at ``t_i``: :math:`dL/dz_0 = \sum_i S_z^T g_i`, :math:`dL/d\theta =
    \sum_{i,b} S_\theta^T g_i`, the time gradients, and per block and entry the sums of
    magnitudes they are made of (the term scales; the loss gradient taken without its
    data, which may cancel it). Returns ``(loss, grad_z0, grad_theta, grad_times,
    terms)``."""
    p, N = compiled.p, len(times) - 1
    grad_z0 = np.zeros_like(z0)
    grad_theta = np.zeros(p)
    grad_times = np.zeros(N + 1)
    terms = {"z0": np.zeros_like(z0), "theta": np.zeros(p), "times": np.zeros(N + 1)}
    loss = 0.0
    for i, (z, s_z, s_theta) in enumerate(finals, start=1):
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
    return loss, grad_z0, grad_theta, grad_times, terms
