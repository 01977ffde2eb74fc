"""The discrete map of Rodas4 on a frozen step grid, and its exact reverse-mode derivative.

As for the explicit solvers (numeric/_discrete.py), the grid is a set of step boundaries
given as fractions of each observation interval, ``t = t_j + s (t_{j+1} - t_j)``, uniform
for the fixed-step mode and the accepted steps of a forward solve otherwise. With the
fractions fixed the Rosenbrock solution is a smooth function of ``z0``, ``theta`` and
``times`` (no Newton iteration, no step control): :func:`rosenbrock_replay` evaluates it in
the dtype of its inputs (complex flows through, for the complex-step check and finite
differences), and :func:`rosenbrock_discrete_adjoint` differentiates it exactly with
transposed solves and the second derivatives of ``f`` that SymPy gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from symbolic import CompiledForm

from ._batched_lu import BatchedLU, SingularMatrix
from ._checks import observed
from ._errors import IntegrationError
from ._rosenbrock import combine
from ._rosenbrock_tableau import RosenbrockTableau

__all__ = ["RosenbrockReplay", "rosenbrock_discrete_adjoint", "rosenbrock_replay"]


@dataclass
class _Step:
    """What the reverse pass needs of one step: its times, the start state, the LU factors
    of :math:`I - h\\gamma J`, :math:`\\partial f/\\partial t` there, the stage inputs
    ``Y`` and the transformed stages ``U`` (both ``(s, B, n)``)."""

    t: object
    h: object
    t_next: object
    z: NDArray
    lu: BatchedLU
    f_t: NDArray | None
    stage_z: NDArray
    stage_u: NDArray


@dataclass
class RosenbrockReplay:
    """The discrete Rodas4 solution on a frozen grid (the fields of ``_discrete.Replay``).

    Attributes
    ----------
    zs : ndarray, shape (N+1, B, n)
    sample_loss : ndarray, shape (B,)
    records : list of list of _Step
        Per interval, per step; kept only when asked for.
    """

    zs: NDArray
    sample_loss: NDArray
    records: list = field(default_factory=list)

    @property
    def loss(self):
        return self.sample_loss.sum()


def _stage_time(tableau: RosenbrockTableau, i: int, t, h, t_next):
    return t_next if tableau.c[i] == 1.0 else t + tableau.c[i] * h


def _rosenbrock_map(compiled: CompiledForm, z: NDArray, theta: NDArray, t, h, t_next,
                    tableau: RosenbrockTableau) -> _Step:
    r"""One step of the transformed form (see numeric/_rosenbrock_tableau.py):
    :math:`M U_i = f(Y_i, \theta, \tau_i) + \sum_{j<i} (c_{ij}/h) U_j + h \gamma_i f_t`,
    :math:`M = I/(h\gamma) - J`, :math:`Y_i = z + \sum_{j<i} a_{ij} U_j`."""
    s = tableau.stages
    dtype = np.result_type(z, theta, h)
    h_gamma = h * tableau.gamma
    jac = compiled.jac_state(z, theta, t)
    try:
        lu = BatchedLU(np.eye(z.shape[1]) - h_gamma * jac)
    except SingularMatrix:
        t_reached = float(np.real(t))
        raise IntegrationError(
            f"integration on the frozen grid stopped at t={t_reached:.6g}: I - h*gamma*J is "
            "singular (or the Jacobian is not finite) for this step.",
            t=t_reached, cause="singular matrix") from None
    f_t = None if compiled.autonomous else compiled.time_partial(z, theta, t)
    stage_z = np.empty((s, *z.shape), dtype=dtype)
    stage_u = np.empty((s, *z.shape), dtype=dtype)
    for i in range(s):
        stage_z[i] = z + combine(tableau.a[i, :i], stage_u[:i]) if i else z
        rhs = compiled.rhs(stage_z[i], theta, _stage_time(tableau, i, t, h, t_next))
        if i:
            rhs = rhs + combine(tableau.c_matrix[i, :i] / h, stage_u[:i])
        if f_t is not None and tableau.d[i] != 0.0:
            rhs = rhs + (h * tableau.d[i]) * f_t
        stage_u[i] = h_gamma * lu.solve(rhs)
    return _Step(t, h, t_next, z, lu, f_t, stage_z, stage_u)


def rosenbrock_replay(
    compiled: CompiledForm,
    z0: NDArray,
    theta: NDArray,
    times: NDArray,
    grid,
    tableau: RosenbrockTableau,
    *,
    keep: bool = False,
    data=None,
) -> RosenbrockReplay:
    r"""Run Rodas4 on the frozen grid, in the dtype of the inputs (complex flows through).

    .. math:: t_k = t_j + s_k \Delta_j, \quad h_k = (s_{k+1} - s_k) \Delta_j, \quad
              \Delta_j = t_{j+1} - t_j, \qquad z_{k+1} = z_k + \sum_i m_i U_i
    """
    dtype = np.result_type(z0, theta, times)
    z = z0.astype(dtype)
    zs = [z]
    sample_loss = np.zeros(z.shape[0], dtype=dtype)
    records = []
    for j, fractions in enumerate(grid.fractions):
        t_a, delta = times[j], times[j + 1] - times[j]
        interval = []
        for k in range(len(fractions) - 1):
            t_k = t_a + fractions[k] * delta
            h = (fractions[k + 1] - fractions[k]) * delta
            t_next = times[j + 1] if k == len(fractions) - 2 else t_k + h
            step = _rosenbrock_map(compiled, z, theta, t_k, h, t_next, tableau)
            z = z + combine(tableau.m, step.stage_u)
            if not np.all(np.isfinite(z)):
                t_reached = float(np.real(t_next))
                raise IntegrationError(
                    f"integration on the frozen grid stopped at t={t_reached:.6g}: the state "
                    "became non-finite (inf or nan).",
                    t=t_reached, cause="non-finite state")
            if keep:
                interval.append(step)
        records.append(interval)
        zs.append(z)
        sample_loss = sample_loss + compiled.loss(z, observed(data, j + 1))
    return RosenbrockReplay(zs=np.stack(zs), sample_loss=sample_loss,
                            records=records if keep else [])


def _reverse_step(compiled: CompiledForm, theta: NDArray, step: _Step, lam: NDArray,
                  tableau: RosenbrockTableau, grad_theta: NDArray) -> tuple[NDArray, float, float]:
    r"""Cotangents of one step's inputs ``z``, ``t``, ``h`` given :math:`\lambda =
    \partial L/\partial z_{k+1}`; adds the step's :math:`\bar\theta` to ``grad_theta``.

    In reverse through :math:`z_{k+1} = z + \sum m_i U_i`, :math:`U_i = M^{-1} R_i`,
    :math:`R_i = f(Y_i, \tau_i) + \sum_{j<i} (c_{ij}/h) U_j + h\gamma_i f_t`,
    :math:`Y_i = z + \sum_{j<i} a_{ij} U_j`, :math:`M = I/(h\gamma) - J(z, t)`:

    .. math:: \bar R_i = M^{-T} \bar U_i, \quad \bar J = \sum_i \bar R_i U_i^T, \quad
              \bar h \mathrel{+}= \frac{\bar R_i^T U_i}{h^2 \gamma}, \quad
              \bar U_j \mathrel{+}= \frac{c_{ij}}{h} \bar R_i + a_{ij} \bar Y_i, \quad
              \bar Y_i = (\partial f/\partial z)^T \bar R_i

    and :math:`\bar J` reaches ``z``, ``theta`` and ``t`` through the second derivatives,
    :math:`\partial (\bar R_i^T J U_i)/\partial z = J'(U_i, 0)^T \bar R_i` (the Hessians
    of ``f`` are symmetric), the time-derivative term through :math:`\partial f_t /
    \partial z = J'(0, 1)` and :math:`\partial^2 f/\partial t^2`.
    """
    s = tableau.stages
    t, h, z, lu, f_t = step.t, step.h, step.z, step.lu, step.f_t
    u, y = step.stage_u, step.stage_z
    h_gamma = h * tableau.gamma
    u_bar = tableau.m[:, None, None] * lam[None]
    r_bar = np.empty_like(u)
    z_bar = lam.copy()
    h_bar = t_bar = 0.0
    w_ft = np.zeros_like(lam)
    for i in range(s - 1, -1, -1):
        r_bar[i] = h_gamma * lu.solve_transposed(u_bar[i])
        h_bar += float(np.sum(r_bar[i] * u[i])) / (h * h_gamma)
        for j in range(i):
            coefficient = tableau.c_matrix[i, j]
            if coefficient:
                u_bar[j] += (coefficient / h) * r_bar[i]
                h_bar -= coefficient * float(np.sum(r_bar[i] * u[j])) / (h * h)
        if f_t is not None and tableau.d[i] != 0.0:
            h_bar += tableau.d[i] * float(np.sum(r_bar[i] * f_t))
            w_ft += (h * tableau.d[i]) * r_bar[i]
        tau = _stage_time(tableau, i, t, h, step.t_next)
        y_bar = compiled.vjp_state(y[i], theta, tau, r_bar[i])
        if compiled.p:
            grad_theta += compiled.vjp_params(y[i], theta, tau, r_bar[i]).sum(axis=0)
        if f_t is not None:
            tau_bar = float(np.sum(r_bar[i] * compiled.time_partial(y[i], theta, tau)))
            t_bar += tau_bar
            if tableau.c[i]:  # a zero coefficient contributes exactly zero
                h_bar += tableau.c[i] * tau_bar
        z_bar += y_bar
        for j in range(i):
            if tableau.a[i, j]:
                u_bar[j] += tableau.a[i, j] * y_bar
    # the Jacobian J(z, theta, t): J_bar = sum_i r_bar_i u_i^T, contracted one stage at a time
    B, n = z.shape
    stacked_z = np.broadcast_to(z, (s, B, n)).reshape(s * B, n)
    flat_u, flat_r = u.reshape(s * B, n), r_bar.reshape(s * B, n)
    along = compiled.jac_state_jvp(stacked_z, theta, t, flat_u, 0.0)
    z_bar += np.einsum("bij,bi->bj", along, flat_r).reshape(s, B, n).sum(axis=0)
    if compiled.p:
        along_theta = compiled.jac_params_jvp(stacked_z, theta, t, flat_u, 0.0)
        grad_theta += np.einsum("bij,bi->j", along_theta, flat_r)
    if f_t is not None:
        zeros = np.zeros_like(lam)
        jac_t = compiled.jac_state_jvp(z, theta, t, zeros, 1.0)  # dJ/dt = d f_t / dz
        t_bar += float(np.einsum("sbi,bij,sbj->", r_bar, jac_t, u))
        z_bar += np.einsum("bij,bi->bj", jac_t, w_ft)
        if compiled.p:
            grad_theta += np.einsum("bij,bi->j", compiled.jac_params_jvp(z, theta, t, zeros, 1.0),
                                    w_ft)
        t_bar += float(np.sum(w_ft * compiled.time_second_partial(z, theta, t)))
    return z_bar, t_bar, h_bar


def rosenbrock_discrete_adjoint(
    compiled: CompiledForm,
    z0: NDArray,
    theta: NDArray,
    times: NDArray,
    grid,
    tableau: RosenbrockTableau,
    *,
    data=None,
) -> tuple[float, NDArray, NDArray, NDArray]:
    r"""Reverse-mode derivative of Rodas4's discrete map on the frozen grid.

    Steps are reversed one at a time (:func:`_reverse_step`); the step cotangents
    :math:`\bar t_k`, :math:`\bar h_k` reach ``times`` through :math:`t_k = t_j + s_k
    \Delta_j` and :math:`h_k = (s_{k+1} - s_k) \Delta_j`, and :math:`\nabla\ell(z(t_j))`
    joins :math:`\lambda` at every observation.

    Returns
    -------
    loss : float
    grad_z0 : ndarray, shape (B, n)
    grad_theta : ndarray, shape (p,)
    grad_times : ndarray, shape (N+1,)
    """
    run = rosenbrock_replay(compiled, z0, theta, times, grid, tableau, keep=True, data=data)
    N = len(times) - 1
    lam = compiled.loss_grad(run.zs[N], observed(data, N))
    grad_theta = np.zeros(compiled.p)
    grad_times = np.zeros(N + 1)
    for j in range(N - 1, -1, -1):
        fractions = grid.fractions[j]
        for k in range(len(fractions) - 1, 0, -1):
            lam, t_bar, h_bar = _reverse_step(compiled, theta, run.records[j][k - 1], lam,
                                              tableau, grad_theta)
            s_k, ds = fractions[k - 1], fractions[k] - fractions[k - 1]
            grad_times[j] += (t_bar * (1.0 - s_k) if s_k != 1.0 else 0.0) - h_bar * ds
            grad_times[j + 1] += (t_bar * s_k if s_k else 0.0) + h_bar * ds
        if j >= 1:
            lam = lam + compiled.loss_grad(run.zs[j], observed(data, j))
    return float(run.loss), lam, grad_theta, grad_times
