"""Wrong answers an implementation is likely to compute, for the diagnoses to match.

Each is computed from the problem, not guessed: the gradient of a loss on the last
observation only (the observation-time jumps missing), and the adjoint equation integrated
with the wrong sign, ``da/dt = +(df/dz)^T a`` (e.g. ``expm(-W^T (t_hi - t))`` where
``expm(W^T (t_hi - t))`` belongs). The second is integrated here by a small classical
Runge–Kutta scheme on the public methods of the compiled form, refined until two grids
agree far below the match threshold of the diagnoses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from numeric import IntegrationError, MethodUnavailable
from numeric._checks import observed

from ._references import best_reference
from ._report import BLOCKS

__all__ = ["AuditContext", "alternatives"]

#: Alternatives are matched at this relative residual (verification/_diagnose.EXPLAINED);
#: the integrator below is refined until it is this much more accurate than that.
MATCH_RESIDUAL = 1e-6
REFINEMENT_MARGIN = 1e-3
#: Steps per observation interval of the first grid, and the most tried (doubling).
FIRST_STEPS, MAX_STEPS = 32, 1024

MISSING_JUMPS = ("the observation-time jumps are missing: the gradient matches a loss on the "
                 "last observation only")
WRONG_JUMP_SIGN = (
    "the observation-time jumps have the wrong sign: the gradient matches a(t_i^-) = "
    "a(t_i^+) - grad l(z(t_i)) at t_1 .. t_{N-1}; the jump adds the loss gradient"
)
WRONG_ADJOINT_SIGN = (
    "the adjoint equation has the wrong sign: the gradient matches da/dt = +(df/dz)^T a "
    "integrated backwards (e.g. expm(-W^T (t_hi - t)) where expm(W^T (t_hi - t)) belongs); "
    "the adjoint obeys da/dt = -(df/dz)^T a"
)


@dataclass
class AuditContext:
    """What the diagnoses need to build alternative answers and rerun the implementation."""

    compiled: Any
    grad_fn: Any
    z0: NDArray
    theta: NDArray
    times: NDArray
    single: bool
    digits: int
    data: NDArray | None = None


def alternatives(ctx: AuditContext, reference: dict[str, NDArray]
                 ) -> dict[str, list[tuple[str, NDArray]]]:
    """Per block, the (sentence, wrong answer) pairs a failed block is matched against."""
    found: dict[str, list[tuple[str, NDArray]]] = {b: [] for b in BLOCKS}
    last_only = last_observation_only(ctx)
    if last_only is not None and len(ctx.times) > 2:
        for b in BLOCKS:
            found[b].append((MISSING_JUMPS, last_only[b]))
        # an implementation may get dL/dt_i (i >= 1) right from the forward states and
        # only dL/dt_0 = -a(t_0)^T f wrong, through the same missing jumps
        mixed = np.array(reference["times"], dtype=float)
        mixed[0] = last_only["times"][0]
        found["times"].append((MISSING_JUMPS, mixed))
        # the adjoint is linear in its jumps: subtracting them at t_1 .. t_{N-1} gives
        # 2 (gradient of the last observation alone) - (the gradient)
        flipped = {b: 2 * last_only[b] - reference[b] for b in ("z0", "theta")}
        flipped["times"] = np.array(reference["times"], dtype=float)
        flipped["times"][0] = 2 * last_only["times"][0] - reference["times"][0]
        for b in BLOCKS:
            found[b].append((WRONG_JUMP_SIGN, flipped[b]))
    wrong = wrong_sign_adjoint(ctx, reference["times"])
    if wrong is not None:
        for b in BLOCKS:
            found[b].append((WRONG_ADJOINT_SIGN, wrong[b]))
        # the same, with the parameter integral taken with the flipped sign as well (the
        # whole backward system [a, a_theta] integrated forwards in reverse time)
        found["theta"].append((WRONG_ADJOINT_SIGN, -wrong["theta"]))
    return found


def last_observation_only(ctx: AuditContext) -> dict[str, NDArray] | None:
    """Gradient of the loss applied at t_N only, on the same trajectory."""
    short = np.array([ctx.times[0], ctx.times[-1]])
    try:
        last = None if ctx.data is None else ctx.data[-1:]
        ref = best_reference(ctx.compiled, ctx.z0, ctx.theta, short, digits=ctx.digits,
                             data=last, accuracy=MATCH_RESIDUAL, certify=False)
    except (IntegrationError, MethodUnavailable):
        return None
    if ref.caveat:
        return None
    times_grad = np.zeros_like(ctx.times)
    times_grad[0], times_grad[-1] = ref.gradient.times
    return {"z0": ref.gradient.z0, "theta": ref.gradient.theta, "times": times_grad}


def wrong_sign_adjoint(ctx: AuditContext, reference_times: NDArray
                       ) -> dict[str, NDArray] | None:
    r"""The gradient with the adjoint equation's sign flipped:

    .. math:: \dot a = +(\partial f/\partial z)^T a, \qquad
              \frac{dL}{d\theta} = \int_{t_0}^{t_N} (\partial f/\partial\theta)^T a\,dt,

    integrated backwards from :math:`a(t_N) = \nabla\ell(z(t_N))` with the jumps
    :math:`\nabla\ell(z(t_i))`; ``dL/dz_0 = a(t_0)``, ``dL/dt_0 = -a(t_0)^T f(z_0, t_0)`` and
    the observation times as in the reference. None where the integration does not settle
    (a blow-up, or no agreement of two grids within ``MAX_STEPS``).
    """
    previous = None
    steps = FIRST_STEPS
    with np.errstate(all="ignore"):
        while steps <= MAX_STEPS:
            current = _integrate_flipped(ctx, steps)
            if current is None:
                return None
            if previous is not None and _agree(previous, current):
                z0_grad, theta_grad = current
                times = np.array(reference_times, dtype=float)
                f0 = ctx.compiled.rhs(ctx.z0, ctx.theta, ctx.times[0])
                times[0] = -float(np.sum(z0_grad * f0))
                return {"z0": z0_grad, "theta": theta_grad, "times": times}
            previous, steps = current, 2 * steps
    return None


def _agree(a: tuple[NDArray, NDArray], b: tuple[NDArray, NDArray]) -> bool:
    for x, y in zip(a, b, strict=True):
        scale = max(float(np.linalg.norm(y)), np.finfo(float).tiny)
        if not float(np.linalg.norm(x - y)) <= REFINEMENT_MARGIN * MATCH_RESIDUAL * scale:
            return False
    return True


def _integrate_flipped(ctx: AuditContext, steps: int) -> tuple[NDArray, NDArray] | None:
    """Classical RK4 with ``steps`` steps per interval: forwards for ``z`` (at half steps,
    so that the backward stages find ``z`` at their times), then backwards for the flipped
    adjoint and the parameter integral."""
    c = ctx.compiled
    theta, times = ctx.theta, ctx.times
    N = len(times) - 1
    states = []  # per interval: z at t_j + k h / 2, k = 0 .. 2 steps
    z = np.array(ctx.z0, dtype=float)
    for j in range(N):
        h = (times[j + 1] - times[j]) / (2 * steps)
        ts = times[j] + h * np.arange(2 * steps + 1)
        zs = [z]
        for k in range(2 * steps):
            z = _rk4_step(lambda t, y: c.rhs(y, theta, t), ts[k], z, h)
            zs.append(z)
        if not np.all(np.isfinite(z)):
            return None
        states.append((ts, zs))

    def backward(t, y, z_t):  # the flipped adjoint, and a_theta as in numeric's adjoints
        a = y[:, : c.n]
        return np.concatenate([c.vjp_state(z_t, theta, t, a),
                               -c.vjp_params(z_t, theta, t, a)], axis=1)

    y = np.zeros((ctx.z0.shape[0], c.n + c.p))
    for j in range(N - 1, -1, -1):
        ts, zs = states[j]
        y[:, : c.n] += c.loss_grad(zs[-1], observed(ctx.data, j + 1))
        h = -(ts[-1] - ts[0]) / steps  # backwards, over two stored half steps per step
        for k in range(2 * steps, 0, -2):
            t = ts[k]
            k1 = backward(t, y, zs[k])
            k2 = backward(t + h / 2, y + h / 2 * k1, zs[k - 1])
            k3 = backward(t + h / 2, y + h / 2 * k2, zs[k - 1])
            k4 = backward(t + h, y + h * k3, zs[k - 2])
            y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        if not np.all(np.isfinite(y)):
            return None
    # a_theta(t_0) = int_{t_0}^{t_N} (df/dtheta)^T a dt, integrated backwards from zero
    return y[:, : c.n], y[:, c.n :].sum(axis=0)


def _rk4_step(f, t, y, h):
    k1 = f(t, y)
    k2 = f(t + h / 2, y + h / 2 * k1)
    k3 = f(t + h / 2, y + h / 2 * k2)
    k4 = f(t + h, y + h * k3)
    return y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
