"""The discrete map of a Runge–Kutta solver on a frozen step grid, and its derivatives.

The grid is a set of step boundaries given as fractions of each observation interval,
``t = t_j + s (t_{j+1} - t_j)``. For a fixed-step solver the fractions are uniform; for
``dopri5`` they are the accepted steps of the forward solve, recorded and then frozen
(shared/MATH.md, "Discrete adjoint"). With the fractions fixed, the solution is a smooth
function of ``z0``, ``theta`` and ``times``: the discrete adjoint differentiates it exactly;
complex step and finite differences evaluate it at perturbed inputs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from symbolic import CompiledForm
from symbolic._buffers import POOL

from . import _linear_map as linear_map
from ._budget import check_per_entry
from ._checks import observed
from ._errors import IntegrationError, MethodUnavailable
from ._rk import combine
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


@dataclass(frozen=True)
class _Stages:
    """The stages a discrete map needs and their coefficients as ``(index, value)`` pairs.

    For an FSAL pair the last stage has weight 0 and feeds no other stage: it is the first
    stage of the next step, which the replay evaluates there. Dropping it leaves the map
    unchanged and makes the reverse pass see that value once, as the next step's first
    stage.
    """

    live: int
    rows: tuple  # rows[i]: the (j, a_ij) with j < i, for the stage inputs
    weights: tuple  # (i, w_i): the propagated solution
    columns: tuple  # columns[i]: the (m, a_mi) with m > i, for the reverse pass
    weight_of: tuple  # w_i for every live stage (0 where absent)
    feeds: tuple  # stage i's cotangent can be nonzero
    a: NDArray  # (live, live)
    c: NDArray  # (live,)
    w: NDArray  # (live,)

    @classmethod
    @functools.cache
    def of(cls, tableau: ButcherTableau) -> _Stages:
        live = tableau.stages - 1 if tableau.fsal else tableau.stages
        w = tableau.a[-1, :-1] if tableau.fsal else tableau.b
        a = tableau.a[:live, :live]
        rows = tuple(tuple((j, float(a[i, j])) for j in range(i) if a[i, j] != 0)
                     for i in range(live))
        columns = tuple(tuple((m, float(a[m, i])) for m in range(i + 1, live) if a[m, i] != 0)
                        for i in range(live))
        feeds = tuple(bool(w[i] != 0 or columns[i]) for i in range(live))
        return cls(live, rows, tuple((i, float(w[i])) for i in range(live) if w[i] != 0),
                   columns, tuple(float(x) for x in w[:live]), feeds, a,
                   np.array(tableau.c[:live]), np.array(w[:live], dtype=float))


@dataclass
class Replay:
    """The discrete solution on a frozen grid.

    Attributes
    ----------
    zs : ndarray, shape (N+1, B, n)
    sample_loss : ndarray, shape (B,)
        ``sum_i l(z_b(t_i))`` for each sample ``b``.
    tape, kernel
        What the reverse pass needs, kept only when asked for: the kernel's tape (one slot
        per stage) and the kernel itself.
    k : ndarray, shape (steps, live, B, n)
        The stages of every step (kept only when asked for).
    steps : list of (interval, t_k, h, t_next, s_k, ds)
        Every step of the grid: its interval, start, size, end, and its start and size as
        fractions of the interval.
    """

    zs: NDArray
    sample_loss: NDArray
    tape: object = None
    kernel: object = None
    k: NDArray | None = None
    steps: list = field(default_factory=list)

    @property
    def loss(self):
        return self.sample_loss.sum()


def _grid_steps(times: NDArray, grid: FrozenGrid) -> list:
    r"""Every step of the frozen grid: :math:`t_k = t_j + s_k \Delta_j`, :math:`h_k =
    (s_{k+1} - s_k) \Delta_j`; the last step of an interval ends on the observation time
    itself, not on ``t_k + h``, which can round one ulp past it (equal in exact arithmetic,
    so the derivative is the same)."""
    out = []
    for j, fractions in enumerate(grid.fractions):
        t_a, delta = times[j], times[j + 1] - times[j]
        last = len(fractions) - 2
        for k in range(len(fractions) - 1):
            t_k = t_a + fractions[k] * delta
            ds = fractions[k + 1] - fractions[k]
            h = ds * delta
            out.append((j, t_k, h, times[j + 1] if k == last else t_k + h, fractions[k], ds))
    return out


def _stage_input(z: NDArray, h, row: tuple, k: NDArray, out: NDArray | None) -> NDArray:
    """``z + h sum_j a_ij k_j`` (into ``out`` if given); the common one-term row inline."""
    if len(row) == 1:
        (j, a), = row
        out = np.multiply(k[j], h * a, out=out)
        out += z
        return out
    return combine(z, h, row, k, out=out)


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
    ring: bool = False,
) -> Replay:
    r"""Run the solver on the frozen grid, in the dtype of the inputs (complex flows through).

    .. math:: Z_i = z_k + h \sum_{j<i} a_{ij} K_j, \quad K_i = f(Z_i, \theta, t_k + c_i h),
              \quad z_{k+1} = z_k + h \sum_i b_i K_i
    """
    if is_rosenbrock(tableau):  # the stiff solver's map: numeric/_rosenbrock_discrete.py
        return rosenbrock_replay(compiled, z0, theta, times, grid, tableau, keep=keep,
                                 data=data)
    dtype = np.result_type(z0, theta, times)
    kernel = compiled.kernel(np.asarray(theta, dtype=dtype))
    stages = _Stages.of(tableau)
    live, rows, weights = stages.live, stages.rows, stages.weights
    steps = _grid_steps(times, grid)
    z = z0.astype(dtype)
    B = z.shape[0]
    tape = None
    if keep:  # ring (a kernel that can flush): the caller flushes step by step
        tape = (kernel.tape(len(steps) * live, B, dtype, ring=live)
                if ring and hasattr(kernel, "flush")
                else kernel.tape(len(steps) * live, B, dtype))
    K = POOL.empty((len(steps), live, *z.shape), dtype) if keep else np.empty(
        (1, live, *z.shape), dtype=dtype)
    zs = [z]
    sample_loss = np.zeros(B, dtype=dtype)
    nodes = [float(c) for c in tableau.c[:live]]
    rhs, buffer = kernel.rhs, kernel.stage_buffer
    save = kernel.tape_functions(tape)[0] if keep else None
    for index, (j, t_k, h, t_next, _, _) in enumerate(steps):
        k = K[index] if keep else K[0]
        for i in range(live):
            tau = t_next if nodes[i] == 1.0 else t_k + nodes[i] * h
            if not keep:
                k[i] = rhs(_stage_input(z, h, rows[i], k, None) if i else z, tau)
                continue
            slot = index * live + i
            if i:
                out = buffer(tape, slot)
                save(_stage_input(z, h, rows[i], k, out), tau, slot, k[i], out is not None)
            else:
                save(z, tau, slot, k[i], False)
        z = combine(z, h, weights, k)
        if index + 1 == len(steps) or steps[index + 1][0] != j:  # observation time t_{j+1}
            if not np.all(np.isfinite(z)):  # a non-finite state stays non-finite
                end, begin = float(np.real(times[j + 1])), float(np.real(times[j]))
                raise IntegrationError(
                    f"integration on the frozen grid stopped at t={end:.6g}: the state became "
                    f"non-finite (inf or nan) after t={begin:.6g}.",
                    t=float(np.real(times[j + 1])),
                    cause="non-finite state",
                )
            zs.append(z)
            sample_loss = sample_loss + compiled.loss(z, observed(data, j + 1))
    return Replay(zs=np.stack(zs), sample_loss=sample_loss, tape=tape,
                  kernel=kernel if keep else None, k=K if keep else None, steps=steps)


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

    The parameter terms are recorded on the kernel's tape and summed at the end, a few
    large products for the whole pass. For the times, :math:`\bar\tau_i = \bar K_i^T
    \partial f/\partial t` at the stage times :math:`\tau_i = t_k + c_i h`, :math:`\bar h =
    \lambda^T \sum_i b_i K_i + \sum_i \bar Z_i^T \sum_j a_{ij} K_j + \sum_i c_i
    \bar\tau_i`, chained to ``times`` through :math:`t_k = t_j + s_k \Delta_j`, :math:`h =
    (s_{k+1} - s_k) \Delta_j` (all steps at once, after the pass).

    Returns
    -------
    loss : float
    grad_z0 : ndarray, shape (B, n)
    grad_theta : ndarray, shape (p,)
    grad_times : ndarray, shape (N+1,)
    """
    if linear_map.applies(compiled, grid, tableau, z0.shape[0]):  # numeric/_linear_map.py
        return linear_map.linear_map_gradient(compiled, z0, theta, times, grid, tableau,
                                              data=data)
    run = replay(compiled, z0, theta, times, grid, tableau, keep=True, data=data,
                 ring=all(_Stages.of(tableau).feeds))  # every ring slot rewritten per step
    kernel, tape, K = run.kernel, run.tape, run.k
    flush = kernel.flush if getattr(tape, "ring", 0) else None
    stages = _Stages.of(tableau)
    live, c_live = stages.live, stages.c
    want_t = not compiled.autonomous
    N = len(times) - 1
    count = len(run.steps)
    lam = compiled.loss_grad(run.zs[N], observed(data, N))
    # one step's stage cotangents (a stage that feeds nothing keeps its zero)
    zbar_step = POOL.zeros((live, *lam.shape), lam.dtype)
    tbar = np.zeros((count, live))
    # per step, lambda^T sum_i w_i K_i + sum_ij a_ij Zbar_i^T K_j (the time terms of h)
    h_inner = np.zeros(count, dtype=np.result_type(lam, K))
    pairs = [(i, j, float(stages.a[i, j])) for i in range(live) for j in range(live)
             if stages.a[i, j] != 0]
    reverse = kernel.tape_functions(tape)[1]
    buffer = kernel.cot_buffer
    feeds = [i for i in range(live - 1, -1, -1) if stages.feeds[i]]
    nodes = [float(c) for c in c_live]
    for index in range(count - 1, -1, -1):
        j, t_k, h, t_next, _, _ = run.steps[index]
        k_flat = K[index].reshape(live, -1)
        with np.errstate(invalid="ignore"):
            h_inner[index] = (k_flat @ lam.reshape(-1)) @ stages.w
        for i in feeds:
            slot = index * live + i
            weight = stages.weight_of[i]
            kbar = buffer(tape, slot)
            placed = kbar is not None
            if weight:
                kbar = np.multiply(lam, h * weight, out=kbar)
            elif placed:
                kbar[...] = 0.0
            else:
                kbar = np.zeros_like(lam)
            for m, a_mi in stages.columns[i]:
                kbar += (h * a_mi) * zbar_step[m]
            tau = t_next if nodes[i] == 1.0 else t_k + nodes[i] * h
            out = zbar_step[i]
            zb, tbar[index, i] = reverse(kbar, tau, slot, want_t, out, placed)
            if zb is not out:
                out[...] = zb
        if flush is not None:  # the step's parameter products while its slots are warm
            flush(tape, index * live, (index + 1) * live)
        with np.errstate(invalid="ignore"):
            for i, m, a_im in pairs:
                h_inner[index] += a_im * np.dot(zbar_step[i].reshape(-1), k_flat[m])
        lam = lam + zbar_step.sum(axis=0)
        if index == 0 or run.steps[index - 1][0] != j:  # arrived at t_j, an observation
            if j >= 1:
                lam = lam + compiled.loss_grad(run.zs[j], observed(data, j))
    grad_theta = kernel.parameter_gradient(tape) if compiled.p else np.zeros(0)
    grad_times = _time_gradient(run, stages, h_inner, tbar, N)
    tape.release()
    POOL.release(K, zbar_step)
    return float(run.loss), lam, np.asarray(grad_theta), grad_times


def _time_gradient(run: Replay, stages: _Stages, h_inner, tbar, N) -> NDArray:
    """``dL/dtimes`` from the step and stage cotangents of the whole reverse pass
    (``h_inner``: the inner products of each step's stages with its cotangents)."""
    with np.errstate(invalid="ignore"):
        # a zero coefficient contributes exactly zero, even where df/dt is infinite
        # (sqrt(t) at t = 0)
        h_bar = h_inner + np.where(stages.c != 0, stages.c * tbar, 0.0).sum(axis=1)
    t_bar = tbar.sum(axis=1)
    info = np.array([(j, s_k, ds) for j, _, _, _, s_k, ds in run.steps])
    j, s_k, ds = info[:, 0].astype(int), info[:, 1], info[:, 2]
    with np.errstate(invalid="ignore"):
        # t_bar s_k is exactly zero where s_k is, even where t_bar is infinite
        start = np.where(s_k != 1.0, t_bar * (1.0 - s_k), 0.0) - h_bar * ds
        end = np.where(s_k != 0.0, t_bar * s_k, 0.0) + h_bar * ds
    grad_times = np.zeros(N + 1)
    np.add.at(grad_times, j, start)
    np.add.at(grad_times, j + 1, end)
    return grad_times


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
    check_per_entry("complex_step", z0.shape[1] + theta.shape[0] + times.shape[0], 2,
                    grid.steps * tableau.stages, z0.shape[0])
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
) -> tuple[float, NDArray, NDArray, NDArray, dict[str, NDArray]]:
    r"""Central differences of the discrete map on the frozen grid, with an error estimate.

    .. math:: D_h = \frac{L(x + h_j e_j) - L(x - h_j e_j)}{2 h_j}, \qquad
              h_j = \epsilon^{1/3} \max(1, |x_j|)

    The truncation error of :math:`D_h` is :math:`c h^2`, so :math:`|D_h - D_{2h}| / 3`
    estimates it; rounding adds :math:`\epsilon (|L(x+h)| + |L(x-h)| + 2 S) / (2h)`, with
    :math:`S` the magnitude of the values the loss is computed from (a loss formed with
    cancellation, ``log(cosh(z))`` near 0, rounds relative to ``cosh(z) ~ 1``). The last
    return value holds the estimate of every entry, per block (``z0``, ``theta``,
    ``times``: arrays of the blocks' shapes): absolute, so that a nearly zero entry is
    judged by what differences can resolve. A time step is kept below a tenth of the
    smallest observation gap so that the perturbed times stay increasing.
    """
    check_per_entry("finite_difference", z0.shape[1] + theta.shape[0] + times.shape[0], 4,
                    grid.steps * tableau.stages, z0.shape[0])

    def run(z=z0, th=theta, ts=times):
        return replay(compiled, z, th, ts, grid, tableau, data=data).sample_loss

    base = replay(compiled, z0, theta, times, grid, tableau, data=data)
    base_loss = base.sample_loss.sum()
    eps = float(np.finfo(float).eps)
    # what each sample's loss rounds relative to: its intermediate values, summed over the
    # observations (a loss formed with cancellation rounds far above eps |L|)
    scale_of = getattr(compiled, "loss_scale", None)
    rounding = sum((scale_of(base.zs[i], observed(data, i)) for i in range(1, len(times)))
                   if scale_of is not None else (), np.zeros(z0.shape[0]))

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
            size = np.abs(plus) + np.abs(minus) + 2 * rounding
            if total:
                plus, minus, size = plus.sum(), minus.sum(), size.sum()
            values[factor] = ((plus - minus) / (2 * factor * step), size)
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
    estimate = {"z0": est_z0, "theta": est_theta, "times": est_times}
    return float(base_loss), grad_z0, grad_theta, grad_times, estimate
