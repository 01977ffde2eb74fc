"""The discrete map of a Runge–Kutta solver on a frozen step grid, and its derivatives.

The grid is a set of step boundaries given as fractions of each observation interval,
``t = t_j + s (t_{j+1} - t_j)``. For a fixed-step solver the fractions are uniform; for
``dopri5`` they are the accepted steps of the forward solve, recorded and then frozen
(shared/MATH.md, "Discrete adjoint"). With the fractions fixed, the solution is a smooth
function of ``z0``, ``theta`` and ``times``: the discrete adjoint differentiates it exactly;
complex step and finite differences evaluate it at perturbed inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from symbolic import CompiledForm

from ._checks import observed
from ._errors import IntegrationError, MethodUnavailable
from ._rosenbrock_discrete import rosenbrock_replay
from ._rosenbrock_tableau import is_rosenbrock
from ._tableaus import ButcherTableau

__all__ = [
    "COMPLEX_STEP",
    "FrozenGrid",
    "Replay",
    "complex_step_gradient",
    "discrete_adjoint_gradient",
    "finite_difference_gradient",
    "replay",
]

#: Complex-step size: no subtraction happens, so any tiny step is exact to rounding.
COMPLEX_STEP = 1e-30
#: A second, larger complex step: for an analytic map both agree to ~h^2 times the third
#: derivative (1e-40); at a branch point (sqrt at 0) Im L(x + ih)/h grows like h^(-1/2)
#: and the two differ wildly.
COMPLEX_STEP_CHECK = 1e-20
#: Relative disagreement of the two complex steps that marks the map as not analytic.
ANALYTIC_AGREEMENT = 1e-8
#: Central-difference step scale, eps**(1/3): balances O(h^2) truncation and O(eps/h)
#: rounding (shared/MATH.md, "Finite differences").
FD_STEP_SCALE = float(np.finfo(float).eps) ** (1.0 / 3.0)


@dataclass(frozen=True)
class FrozenGrid:
    """Step boundaries per observation interval, as fractions from exactly 0 to exactly 1."""

    fractions: tuple[NDArray, ...]

    @classmethod
    def uniform(cls, intervals: int, steps: int) -> FrozenGrid:
        s = np.linspace(0.0, 1.0, steps + 1)
        return cls(tuple(s for _ in range(intervals)))

    @property
    def steps(self) -> int:
        return sum(len(s) - 1 for s in self.fractions)


def _live_stages(tableau: ButcherTableau) -> tuple[int, NDArray]:
    """Stages the propagated solution needs, and its weights over them.

    For an FSAL pair the last stage has weight 0 and feeds no other stage: it is the first
    stage of the next step, which the replay evaluates there. Dropping it leaves the map
    unchanged and makes the reverse pass see that value once, as the next step's first
    stage.
    """
    if tableau.fsal:
        return tableau.stages - 1, tableau.a[-1, :-1]
    return tableau.stages, tableau.b


@dataclass
class Replay:
    """The discrete solution on a frozen grid.

    Attributes
    ----------
    zs : ndarray, shape (N+1, B, n)
    sample_loss : ndarray, shape (B,)
        ``sum_i l(z_b(t_i))`` for each sample ``b``.
    records : list
        Per interval, per step ``(t_k, h, t_next, Z, K)`` with stage inputs ``Z`` and stages
        ``K`` of shape ``(s, B, n)``; kept only when asked for.
    """

    zs: NDArray
    sample_loss: NDArray
    records: list = field(default_factory=list)

    @property
    def loss(self):
        return self.sample_loss.sum()


def replay(
    compiled: CompiledForm,
    z0: NDArray,
    theta: NDArray,
    times: NDArray,
    grid: FrozenGrid,
    tableau: ButcherTableau,
    *,
    keep: bool = False,
    data=None,
) -> Replay:
    r"""Run the solver on the frozen grid, in the dtype of the inputs (complex flows through).

    .. math:: t_k = t_j + s_k \Delta_j, \quad h_k = (s_{k+1} - s_k) \Delta_j, \quad
              \Delta_j = t_{j+1} - t_j
    """
    if is_rosenbrock(tableau):  # the stiff solver's map: numeric/_rosenbrock_discrete.py
        return rosenbrock_replay(compiled, z0, theta, times, grid, tableau, keep=keep,
                                 data=data)
    dtype = np.result_type(z0, theta, times)
    live, weights = _live_stages(tableau)
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
            # the last step's end is the observation time itself, not t_k + h, which can
            # round one ulp past it (equal in exact arithmetic, so the derivative is the same)
            t_next = times[j + 1] if k == len(fractions) - 2 else t_k + h
            stage_z = np.empty((live, *z.shape), dtype=dtype)
            stage_k = np.empty((live, *z.shape), dtype=dtype)
            for i in range(live):
                stage_z[i] = z + h * np.tensordot(tableau.a[i, :i], stage_k[:i], axes=1) if i else z
                tau = t_next if tableau.c[i] == 1.0 else t_k + tableau.c[i] * h
                stage_k[i] = compiled.rhs(stage_z[i], theta, tau)
            z = z + h * np.tensordot(weights, stage_k, axes=1)
            if not np.all(np.isfinite(z)):
                t_reached = float(np.real(t_k + h))
                raise IntegrationError(
                    f"integration on the frozen grid stopped at t={t_reached:.6g}: the state "
                    "became non-finite (inf or nan).",
                    t=t_reached,
                    cause="non-finite state",
                )
            if keep:
                interval.append((t_k, h, t_next, stage_z, stage_k))
        records.append(interval)
        zs.append(z)
        sample_loss = sample_loss + compiled.loss(z, observed(data, j + 1))
    return Replay(zs=np.stack(zs), sample_loss=sample_loss, records=records if keep else [])


def discrete_adjoint_gradient(
    compiled: CompiledForm,
    z0: NDArray,
    theta: NDArray,
    times: NDArray,
    grid: FrozenGrid,
    tableau: ButcherTableau,
    *,
    data=None,
) -> tuple[float, NDArray, NDArray, NDArray]:
    r"""Reverse-mode derivative of the discrete map (shared/MATH.md, "Discrete adjoint").

    Through the stages of each step in reverse:

    .. math:: \bar K_i = h b_i \lambda + h \sum_{m>i} a_{mi} \bar Z_m, \quad
              \bar Z_i = (\partial f/\partial z)^T \bar K_i, \quad
              \bar\theta \mathrel{+}= (\partial f/\partial \theta)^T \bar K_i, \quad
              \lambda \leftarrow \lambda + \sum_i \bar Z_i

    and, for the times, :math:`\bar\tau_i = \bar K_i^T \partial f/\partial t` at the stage
    times :math:`\tau_i = t_k + c_i h`, :math:`\bar h = \lambda^T \sum_i b_i K_i +
    \sum_i \bar Z_i^T \sum_j a_{ij} K_j + \sum_i c_i \bar\tau_i`, chained to ``times``
    through :math:`t_k = t_j + s_k \Delta_j`, :math:`h = (s_{k+1} - s_k) \Delta_j`.

    Returns
    -------
    loss : float
    grad_z0 : ndarray, shape (B, n)
    grad_theta : ndarray, shape (p,)
    grad_times : ndarray, shape (N+1,)
    """
    run = replay(compiled, z0, theta, times, grid, tableau, keep=True, data=data)
    live, weights = _live_stages(tableau)
    a_live = tableau.a[:live, :live]
    c_live = tableau.c[:live]
    # a stage whose cotangent is identically zero (weight 0, feeds nothing) is skipped
    feeds = [weights[i] != 0 or np.any(a_live[i + 1 :, i] != 0) for i in range(live)]
    N = len(times) - 1
    lam = compiled.loss_grad(run.zs[N], observed(data, N))
    grad_theta = np.zeros(compiled.p)
    grad_times = np.zeros(N + 1)
    for j in range(N - 1, -1, -1):
        fractions = grid.fractions[j]
        for k in range(len(fractions) - 1, 0, -1):
            t_k, h, t_next, stage_z, stage_k = run.records[j][k - 1]
            stage_zbar = np.zeros_like(stage_z)
            t_bar = 0.0
            h_bar = float(np.sum(lam * np.tensordot(weights, stage_k, axes=1)))
            for i in range(live - 1, -1, -1):
                if not feeds[i]:
                    continue
                k_bar = h * weights[i] * lam
                if i + 1 < live:
                    later = np.tensordot(a_live[i + 1 :, i], stage_zbar[i + 1 :], axes=1)
                    k_bar = k_bar + h * later
                tau = t_next if c_live[i] == 1.0 else t_k + c_live[i] * h
                stage_zbar[i] = compiled.vjp_state(stage_z[i], theta, tau, k_bar)
                if compiled.p:
                    grad_theta += compiled.vjp_params(stage_z[i], theta, tau, k_bar).sum(axis=0)
                if not compiled.autonomous:
                    tau_bar = float(np.sum(k_bar * compiled.time_partial(stage_z[i], theta, tau)))
                    t_bar += tau_bar
                    if c_live[i]:  # a zero coefficient contributes exactly zero, even where
                        h_bar += c_live[i] * tau_bar  # df/dt is infinite (sqrt(t) at t=0)
                if i:
                    h_bar += float(
                        np.sum(stage_zbar[i] * np.tensordot(a_live[i, :i], stage_k[:i], axes=1))
                    )
            lam = lam + stage_zbar.sum(axis=0)
            s_k, ds = fractions[k - 1], fractions[k] - fractions[k - 1]
            grad_times[j] += (t_bar * (1.0 - s_k) if s_k != 1.0 else 0.0) - h_bar * ds
            grad_times[j + 1] += (t_bar * s_k if s_k else 0.0) + h_bar * ds
        if j >= 1:
            lam = lam + compiled.loss_grad(run.zs[j], observed(data, j))
    return float(run.loss), lam, grad_theta, grad_times


def complex_step_gradient(
    compiled: CompiledForm,
    z0: NDArray,
    theta: NDArray,
    times: NDArray,
    grid: FrozenGrid,
    tableau: ButcherTableau,
    *,
    data=None,
) -> tuple[float, NDArray, NDArray, NDArray]:
    r"""Complex-step derivative of the discrete map, one perturbation per input direction.

    .. math:: \frac{\partial L}{\partial x_j} \approx \operatorname{Im} L(x + i h e_j) / h,
              \qquad h = 10^{-30}

    The batch is perturbed one state component at a time in every sample at once: samples
    do not interact, so each sample's loss carries its own derivative. Each direction is
    also run with the larger step ``COMPLEX_STEP_CHECK``: the two agree to rounding for an
    analytic map and disagree at a branch point (``sqrt(t)`` at ``t = 0``), where the method
    refuses with ``MethodUnavailable``. Cost: ``2 (n + p + N+1)`` complex replays.
    """
    if compiled.non_analytic:
        raise MethodUnavailable(
            "complex_step",
            f"the dynamics or loss use {', '.join(compiled.non_analytic)}, which is not "
            "complex-analytic, so Im L(x + ih)/h would be silently wrong; use "
            "'discrete_adjoint' or 'finite_difference'.",
        )
    def run(z=z0, th=theta, ts=times):
        return replay(compiled, z, th, ts, grid, tableau, data=data)

    def derivative(what: str, **moved) -> NDArray:
        """Im L / h for the complex step h, checked against the larger step."""
        values = []
        for h in (COMPLEX_STEP, COMPLEX_STEP_CHECK):
            out = run(**{key: make(h) for key, make in moved.items()})
            values.append((out.sample_loss if what.startswith("z0") else out.loss).imag / h)
        fine, coarse = values
        if np.any(np.abs(fine - coarse) > ANALYTIC_AGREEMENT * np.maximum(np.abs(fine), 1e-300)):
            raise MethodUnavailable(
                "complex_step",
                f"the loss is not complex-analytic in {what} here: steps {COMPLEX_STEP:g}i and "
                f"{COMPLEX_STEP_CHECK:g}i give {np.ravel(fine)[0]:.6g} and "
                f"{np.ravel(coarse)[0]:.6g} (a branch point, e.g. sqrt(t) at t = 0); use "
                "'discrete_adjoint'.",
            )
        return fine

    def shifted(array, index):
        def make(h):
            out = array.astype(complex)
            out[index] += 1j * h
            return out

        return make

    base = run()
    grad_z0 = np.zeros_like(z0)
    for j in range(z0.shape[1]):
        grad_z0[:, j] = derivative(f"z0[:, {j}]", z=shifted(z0, (slice(None), j)))
    grad_theta = np.array([derivative(f"theta[{j}]", th=shifted(theta, j))
                           for j in range(theta.shape[0])], dtype=float).reshape(theta.shape)
    grad_times = np.array([derivative(f"times[{j}]", ts=shifted(times, j))
                           for j in range(times.shape[0])], dtype=float)
    return float(base.loss), grad_z0, grad_theta, grad_times


def finite_difference_gradient(
    compiled: CompiledForm,
    z0: NDArray,
    theta: NDArray,
    times: NDArray,
    grid: FrozenGrid,
    tableau: ButcherTableau,
    *,
    data=None,
) -> tuple[float, NDArray, NDArray, NDArray, dict[str, float]]:
    r"""Central differences of the discrete map on the frozen grid, with an error estimate.

    .. math:: D_h = \frac{L(x + h_j e_j) - L(x - h_j e_j)}{2 h_j}, \qquad
              h_j = \epsilon^{1/3} \max(1, |x_j|)

    The truncation error of :math:`D_h` is :math:`c h^2`, so :math:`|D_h - D_{2h}| / 3`
    estimates it; rounding adds :math:`\epsilon (|L(x+h)| + |L(x-h)|) / (2h)`. The last
    return value holds the 2-norm of the estimate for each block (``z0``, ``theta``,
    ``times``): absolute, so that a nearly zero gradient is judged by what differences can
    resolve. A time step is kept below a tenth of the smallest observation gap so that the
    perturbed times stay increasing.
    """
    def run(z=z0, th=theta, ts=times):
        return replay(compiled, z, th, ts, grid, tableau, data=data).sample_loss

    base_loss = run().sum()
    eps = float(np.finfo(float).eps)

    def central(perturb, step, total: bool, what: str):
        """(D_h, error estimate) for one input direction; ``perturb(delta)`` gives the
        replay's per-sample losses with the entry moved by ``delta``."""
        values = {}
        for factor in (1.0, 2.0):
            try:
                plus, minus = perturb(factor * step), perturb(-factor * step)
            except IntegrationError as exc:
                raise MethodUnavailable(
                    "finite_difference",
                    f"moving {what} by +-{float(np.max(factor * step)):.1e} makes the solve fail "
                    f"({exc.cause} at t={exc.t:.6g}): the input sits at the edge of the "
                    "domain of f (e.g. sqrt(t) from t_0 = 0); use 'discrete_adjoint'.",
                ) from exc
            if total:
                plus, minus = plus.sum(), minus.sum()
            values[factor] = ((plus - minus) / (2 * factor * step), np.abs(plus) + np.abs(minus))
        (d_h, size), (d_2h, _) = values[1.0], values[2.0]
        return d_h, np.abs(d_h - d_2h) / 3 + eps * size / (2 * step)

    def moved(array, index, delta):
        out = array.copy()
        out[index] += delta
        return out

    grad_z0, est_z0 = np.zeros_like(z0), np.zeros_like(z0)
    for j in range(z0.shape[1]):
        step = FD_STEP_SCALE * np.maximum(1.0, np.abs(z0[:, j]))
        grad_z0[:, j], est_z0[:, j] = central(
            lambda d, j=j: run(z=moved(z0, (slice(None), j), d)),
            step, total=False, what=f"z0[:, {j}]")
    grad_theta, est_theta = np.zeros_like(theta), np.zeros_like(theta)
    for j in range(theta.shape[0]):
        step = FD_STEP_SCALE * max(1.0, abs(theta[j]))
        grad_theta[j], est_theta[j] = central(
            lambda d, j=j: run(th=moved(theta, j, d)),
            step, total=True, what=f"theta[{j}]")
    grad_times, est_times = np.zeros_like(times), np.zeros_like(times)
    min_gap = float(np.min(np.diff(times)))
    for j in range(times.shape[0]):
        step = min(FD_STEP_SCALE * max(1.0, abs(times[j])), 0.05 * min_gap)
        grad_times[j], est_times[j] = central(
            lambda d, j=j: run(ts=moved(times, j, d)),
            step, total=True, what=f"times[{j}]")
    estimate = {
        "z0": float(np.linalg.norm(est_z0)),
        "theta": float(np.linalg.norm(est_theta)),
        "times": float(np.linalg.norm(est_times)),
    }
    return float(base_loss), grad_z0, grad_theta, grad_times, estimate
