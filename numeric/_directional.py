r"""Directional derivatives: one forward-mode computation per direction, whatever ``p``.

For a direction :math:`v = (v_{z_0}, v_\theta, v_t)` of the inputs, :math:`v^T g` is

- on a frozen grid, the complex step along ``v``: :math:`\operatorname{Im} L(x + i h v)/h`,
  one complex replay of the solver (the discrete reference, exact to rounding);
- in continuous time, the tangent system solved with the state (MATH.md, "Directional
  checks"):

  .. math:: \dot\delta = J\delta + \frac{\partial f}{\partial\theta} v_\theta, \qquad
            \delta(t_0) = v_{z_0} - f(z_0, t_0)\, v_{t_0},

  .. math:: v^T g = \sum_{i \ge 1} \nabla\ell(z(t_i))^T \big(\delta(t_i) +
            f(z(t_i), t_i)\, v_{t_i}\big),

  ``n`` extra unknowns per sample instead of the ``n p`` of forward sensitivity;
- by central differences along ``v`` on the frozen grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from symbolic import CompiledForm

from ._checks import SolverOptions, check_solver_options, observed
from ._discrete import (
    ANALYTIC_AGREEMENT,
    COMPLEX_STEP,
    COMPLEX_STEP_CHECK,
    FD_STEP_SCALE,
    FrozenGrid,
    replay,
)
from ._errors import IntegrationError, MethodUnavailable
from ._rk import StepBudget
from ._solve import integrate_intervals

__all__ = [
    "Direction",
    "DirectionalValue",
    "complex_step_directional",
    "finite_difference_directional",
    "tangent_directional",
    "tangent_directionals",
]


@dataclass(frozen=True)
class Direction:
    """A direction in the inputs: ``z0`` ``(B, n)``, ``theta`` ``(p,)``, ``times``
    ``(N+1,)`` (zeros where a block is not moved)."""

    z0: NDArray
    theta: NDArray
    times: NDArray

    def dot(self, z0: NDArray, theta: NDArray, times: NDArray) -> float:
        """:math:`v^T g` for a gradient given by its blocks."""
        return float(np.sum(self.z0 * z0) + self.theta @ theta + self.times @ times)


@dataclass(frozen=True)
class DirectionalValue:
    """:math:`v^T g` with an error bound (absolute) and what it cost."""

    value: float
    error: float
    method: str
    info: dict


def complex_step_directional(compiled: CompiledForm, z0: NDArray, theta: NDArray,
                             times: NDArray, grid: FrozenGrid, tableau, v: Direction, *,
                             data=None) -> DirectionalValue:
    r""":math:`\operatorname{Im} L(x + i h v) / h` on the frozen grid, checked against a
    larger step as the per-entry complex step is (MATH.md, "Finite differences"): two
    replays, whatever the number of parameters."""
    if compiled.non_analytic:
        raise MethodUnavailable(
            "complex_step",
            f"the dynamics or loss use {', '.join(compiled.non_analytic)}, which is not "
            "complex-analytic; use the discrete adjoint as the discrete reference.")
    values = []
    for h in (COMPLEX_STEP, COMPLEX_STEP_CHECK):
        run = replay(compiled, z0 + 1j * h * v.z0, theta + 1j * h * v.theta,
                     times + 1j * h * v.times, grid, tableau, data=data)
        values.append(float(run.loss.imag) / h)
    fine, coarse = values
    if abs(fine - coarse) > ANALYTIC_AGREEMENT * max(abs(fine), 1e-300):
        raise MethodUnavailable(
            "complex_step",
            f"the loss is not complex-analytic along the direction here: steps "
            f"{COMPLEX_STEP:g}i and {COMPLEX_STEP_CHECK:g}i give {fine:.6g} and {coarse:.6g} "
            "(a branch point, e.g. sqrt(t) at t = 0).")
    return DirectionalValue(fine, 0.0, "complex_step", {"replays": 2})


def finite_difference_directional(compiled: CompiledForm, z0: NDArray, theta: NDArray,
                                  times: NDArray, grid: FrozenGrid, tableau, v: Direction,
                                  *, data=None) -> DirectionalValue:
    r"""Central differences along ``v`` with :math:`h = \epsilon^{1/3}` on the scale of
    the inputs moved, and the step-doubling estimate of their error (as per entry)."""
    size = max(float(np.max(np.abs(x), initial=0.0)) for x in (v.z0, v.theta, v.times))
    moved = max([1.0] + [float(np.max(np.abs(x), initial=0.0)) for x, d in
                         ((z0, v.z0), (theta, v.theta), (times, v.times)) if np.any(d)])
    step = FD_STEP_SCALE * moved / max(size, 1e-300)
    gaps = np.diff(times)
    if np.any(v.times):  # keep the perturbed times increasing
        step = min(step, 0.05 * float(np.min(gaps)) / max(float(np.max(np.abs(v.times))),
                                                          1e-300))

    def loss(delta):
        try:
            return float(replay(compiled, z0 + delta * v.z0, theta + delta * v.theta,
                                times + delta * v.times, grid, tableau, data=data).loss)
        except IntegrationError as exc:
            raise MethodUnavailable(
                "finite_difference",
                f"moving the inputs along the direction by +-{abs(delta):.1e} makes the solve "
                f"fail ({exc.cause} at t={exc.t:.6g}).") from exc

    eps = float(np.finfo(float).eps)
    estimates = {}
    for factor in (1.0, 2.0):
        plus, minus = loss(factor * step), loss(-factor * step)
        estimates[factor] = ((plus - minus) / (2 * factor * step), abs(plus) + abs(minus))
    (d_h, size_h), (d_2h, _) = estimates[1.0], estimates[2.0]
    error = abs(d_h - d_2h) / 3 + eps * size_h / (2 * step)
    return DirectionalValue(d_h, error, "finite_difference", {"replays": 4})


#: The tolerances of the continuous directional reference, loosest first: the tight value
#: and the distances between the three bound its error (as for the tight reference
#: gradient: the error falls by at least MIN_DECADE_RATIO per decade of tolerance, or the
#: solves differ only by rounding).
TANGENT_RTOLS = (1e-11, 1e-12, 1e-13)
MIN_DECADE_RATIO = 3.0
ESTIMATE_SAFETY = 2.0


def tangent_directional(compiled: CompiledForm, z0: NDArray, theta: NDArray, times: NDArray,
                        v: Direction, *, data=None, rtols=TANGENT_RTOLS,
                        max_steps: int = 200_000) -> DirectionalValue:
    r"""The continuous :math:`v^T g` from the tangent system (module docstring) at the
    tolerances ``rtols``, the last one's value with an error bound from their distances;
    ``inf`` (and the reason in ``info["caveat"]``) where the error does not fall with the
    tolerance."""
    return tangent_directionals(compiled, z0, theta, times, [v], data=data, rtols=rtols,
                                max_steps=max_steps)[0]


def tangent_directionals(compiled: CompiledForm, z0: NDArray, theta: NDArray,
                         times: NDArray, directions: list[Direction], *, data=None,
                         rtols=TANGENT_RTOLS, max_steps: int = 200_000
                         ) -> list[DirectionalValue]:
    """:func:`tangent_directional` for several directions at once: one solve per
    tolerance carries the state and every direction's tangent."""
    runs = []
    steps = 0
    for rtol in rtols:
        options = check_solver_options("dopri5", steps=None, rtol=rtol, atol=rtol / 100,
                                       max_steps=max_steps)
        values, scales, used = _tangent_solve(compiled, z0, theta, times, directions,
                                              options, data)
        runs.append((values, scales))
        steps += used
    out = []
    for k in range(len(directions)):
        values = [run[0][k] for run in runs]
        scale = runs[-1][1][k]
        info = {"solves": len(rtols), "steps": steps, "scale": scale}
        out.append(_estimate(values, scale, info))
    return out


def _estimate(values: list[float], scale: float, info: dict) -> DirectionalValue:
    """The tightest value with an error bound from the distances between the solves."""
    if len(values) < 3:
        return DirectionalValue(values[-1], abs(values[-1] - values[0]), "tangent", info)
    d1, d2 = abs(values[0] - values[1]), abs(values[1] - values[2])
    floor = np.finfo(float).eps * max(scale, abs(values[-1]), 1e-300)
    noise = 1e4 * floor  # distances of rounding size, amplified along the flow
    if d1 >= MIN_DECADE_RATIO * d2 or max(d1, d2) <= noise:
        claim = d2 if d1 >= MIN_DECADE_RATIO * d2 else max(d1, d2)
        return DirectionalValue(values[-1], ESTIMATE_SAFETY * max(claim, floor), "tangent",
                                info)
    info["caveat"] = (f"the tangent solve's error does not fall with the tolerance (distances "
                      f"{d1:.1e} and {d2:.1e} between its three tolerances)")
    return DirectionalValue(values[-1], np.inf, "tangent", info)


def _tangent_solve(compiled, z0, theta, times, directions: list[Direction],
                   options: SolverOptions, data) -> tuple[list, list, int]:
    """``(v^T g per direction, the size of the terms each sums, steps)`` from one solve of
    the state with every direction's tangent at ``options``."""
    kernel = compiled.kernel(theta)
    tangents = [kernel.along(v.theta if np.any(v.theta) else None) for v in directions]
    B, n = z0.shape
    size = B * n
    K = len(directions)

    def rhs(t, y):
        z = y[:size].reshape(B, n)
        out = np.empty_like(y)
        f = None
        for k, tangent in enumerate(tangents):
            delta = y[size * (k + 1): size * (k + 2)].reshape(B, n)
            f, d = tangent(z, t, delta, want_f=True)
            out[size * (k + 1): size * (k + 2)] = d.ravel()
        out[:size] = (f if f is not None else kernel.rhs(z, t)).ravel()
        return out

    f0 = kernel.rhs(z0, times[0])
    y0 = np.concatenate([z0.ravel()] + [(v.z0 - f0 * v.times[0]).ravel()
                                        for v in directions])
    budget = StepBudget(options.max_steps)
    segments = integrate_intervals(rhs, y0, times, options, budget, what="tangent",
                                   dense=False)
    totals, scales = np.zeros(K), np.zeros(K)
    for i, segment in enumerate(segments, start=1):
        end = segment.ys[-1]
        z = end[:size].reshape(B, n)
        g = compiled.loss_grad(z, observed(data, i))
        f = kernel.rhs(z, times[i])
        for k, v in enumerate(directions):
            moved = end[size * (k + 1): size * (k + 2)].reshape(B, n) + f * v.times[i]
            totals[k] += float(np.sum(g * moved))
            scales[k] += float(np.sum(np.abs(g * moved)))
    return list(totals), list(scales), budget.used
