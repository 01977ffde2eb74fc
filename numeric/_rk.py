"""Explicit Runge–Kutta stepping: fixed steps, adaptive Dormand–Prince, dense output.

The integrators here work on any right-hand side ``rhs(t, y) -> dy/dt`` with ``y`` of shape
``(B, m)``: the state equation, the augmented adjoint system and the forward-sensitivity
system all go through the same code. They integrate one interval ``[t_a, t_b]`` at a time
(``t_b < t_a`` integrates backwards), never evaluate ``rhs`` outside it, and record every
accepted step so that the caller can interpolate (dense output) or freeze the grid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from ._errors import IntegrationError
from ._tableaus import ButcherTableau

__all__ = ["Segment", "StepBudget", "adaptive_segment", "combine", "fixed_segment", "rk_step"]

Rhs = Callable[[float, NDArray], NDArray]

#: Step-size controller constants (Hairer, Nørsett & Wanner, "Solving ODEs I", II.4).
SAFETY = 0.9
MIN_FACTOR = 0.2
MAX_FACTOR = 10.0


def combine(base: NDArray | None, h, pairs, k: NDArray, out: NDArray | None = None) -> NDArray:
    r"""``base + h * sum_j c_j k[j]`` over the ``(j, c_j)`` in ``pairs`` (the nonzero
    coefficients of a tableau row), with as few temporaries as NumPy allows."""
    if not pairs:
        if out is None:
            return np.zeros_like(k[0]) if base is None else base.copy()
        out[...] = 0 if base is None else base
        return out
    (j0, c0), rest = pairs[0], pairs[1:]
    acc = np.multiply(k[j0], h * c0, out=out)
    for j, c in rest:
        acc += (h * c) * k[j]
    if base is not None:
        acc += base
    return acc


def rk_step(
    rhs: Rhs,
    t,
    z: NDArray,
    h,
    tableau: ButcherTableau,
    k_first: NDArray | None = None,
    *,
    t_end=None,
) -> tuple[NDArray, NDArray]:
    r"""One explicit Runge–Kutta step for every sample in the batch.

    .. math:: k_i = f\big(z + h \sum_{j<i} a_{ij} k_j,\ t + c_i h\big), \qquad
              z_{+} = z + h \sum_i b_i k_i

    Parameters
    ----------
    rhs : callable ``rhs(t, y)``
    t, h : scalar
        Start of the step and its (signed) size.
    z : ndarray, shape (B, m) (any shape: the state is treated entrywise)
    tableau : ButcherTableau
    k_first : ndarray, optional
        ``f(z, t)`` if already known (the FSAL stage of the previous step).
    t_end : scalar, optional
        The end of the step as the caller holds it (an observation time, say): ``t + h``
        can round one ulp past it, and stages are kept inside ``[t, t_end]``.

    Returns
    -------
    z_next : ndarray, shape of ``z``
    k : ndarray, shape ``(s, *z.shape)``
        The stages, kept for the error estimate and dense output.
    """
    plan = tableau.plan
    s = tableau.stages
    k = np.empty((s, *z.shape), dtype=np.result_type(z, h))
    t_end = t + h if t_end is None else t_end
    lo, hi = (t, t_end) if np.real(h) >= 0 else (t_end, t)
    for i in range(s):
        if i == 0 and k_first is not None:
            k[0] = k_first
            continue
        stage_z = combine(z, h, plan.a[i], k) if i else z
        stage_t = t_end if tableau.c[i] == 1.0 else t + tableau.c[i] * h
        if np.isrealobj(stage_t):  # never step outside the interval through rounding
            stage_t = min(max(stage_t, lo), hi)
        k[i] = rhs(stage_t, stage_z)
    if tableau.fsal:  # the last stage input is the new state
        z_next = combine(z, h, plan.a[-1], k)
    else:
        z_next = combine(z, h, plan.b, k)
    return z_next, k


@dataclass
class StepBudget:
    """Counts attempted steps over a whole solve (all intervals) against ``max_steps``."""

    max_steps: int
    used: int = 0
    rejected: int = 0
    nfev: int = 0

    def spend(self, t: float) -> None:
        self.used += 1
        if self.used > self.max_steps:
            raise IntegrationError(
                f"integration stopped at t={t:.6g}: max_steps={self.max_steps} reached; "
                "raise max_steps, loosen rtol/atol, or check the dynamics for stiffness.",
                t=float(t),
                cause="max_steps reached",
            )


@dataclass
class Segment:
    """The accepted steps of one interval: enough to interpolate anywhere inside it.

    Attributes
    ----------
    ts : ndarray, shape (K+1,)
        Step boundaries, ``ts[0] = t_a``, ``ts[-1] = t_b`` exactly.
    ys : ndarray, shape (K+1, B, m)
        The solution at the boundaries.
    ks : ndarray, shape (K, s, B, m)
        The stages of every step.
    tableau : ButcherTableau
    """

    ts: NDArray
    ys: NDArray
    ks: NDArray
    tableau: ButcherTableau
    f_end: NDArray | None = field(default=None, repr=False)

    @property
    def steps(self) -> int:
        return len(self.ts) - 1

    def fractions(self) -> NDArray:
        """Step boundaries as fractions of the interval, from exactly 0 to exactly 1."""
        s = (self.ts - self.ts[0]) / (self.ts[-1] - self.ts[0])
        s[0], s[-1] = 0.0, 1.0
        return s

    def evaluate_many(self, ts: NDArray) -> NDArray:
        """The dense-output solution at every time in ``ts`` (inside the interval), shape
        ``(len(ts), *y.shape)``: :meth:`evaluate` vectorised over times."""
        ts = np.asarray(ts, dtype=float)
        forward = self.ts[-1] >= self.ts[0]
        keys = self.ts if forward else -self.ts
        idx = np.searchsorted(keys, ts if forward else -ts, side="right") - 1
        idx = np.clip(idx, 0, self.steps - 1)
        h = self.ts[idx + 1] - self.ts[idx]
        x = (ts - self.ts[idx]) / h
        y0 = self.ys[idx]
        k = self.ks[idx]  # (len, s, ...)
        shape = (-1,) + (1,) * (y0.ndim - 1)
        if self.tableau.dense is not None:
            powers = x[:, None] ** np.arange(1, self.tableau.dense.shape[1] + 1)
            weights = powers @ self.tableau.dense.T  # (len, s)
            return y0 + (h.reshape(shape) * np.einsum("ls,ls...->l...", weights, k))
        y1 = self.ys[idx + 1]
        f0 = k[:, 0]
        ends = np.concatenate([self.ks[1:, 0], self.f_end[None]]) if self.f_end is not None \
            else self.ks[:, 0]
        f1 = ends[idx]
        xs = x.reshape(shape)
        hs = h.reshape(shape)
        h00 = 2 * xs**3 - 3 * xs**2 + 1
        h10 = xs**3 - 2 * xs**2 + xs
        h01 = -2 * xs**3 + 3 * xs**2
        h11 = xs**3 - xs**2
        return h00 * y0 + h10 * hs * f0 + h01 * y1 + h11 * hs * f1

    def evaluate(self, t: float) -> NDArray:
        """The dense-output solution at ``t`` inside the interval, shape ``(B, m)``.

        Dormand–Prince uses its own continuous extension of order 4; the other methods use
        cubic Hermite interpolation between the step boundaries (order 3, with derivatives
        from the first stage of each step).
        """
        ts = self.ts
        forward = ts[-1] >= ts[0]
        if forward:
            idx = int(np.searchsorted(ts, t, side="right")) - 1
        else:
            idx = int(np.searchsorted(-ts, -t, side="right")) - 1
        idx = min(max(idx, 0), self.steps - 1)
        h = ts[idx + 1] - ts[idx]
        x = (t - ts[idx]) / h
        y0 = self.ys[idx]
        k = self.ks[idx]
        if self.tableau.dense is not None:
            powers = x ** np.arange(1, self.tableau.dense.shape[1] + 1)
            weights = self.tableau.dense @ powers
            return y0 + (h * (weights @ k.reshape(k.shape[0], -1))).reshape(y0.shape)
        y1 = self.ys[idx + 1]
        f0 = k[0]
        f1 = self.ks[idx + 1][0] if idx + 1 < self.steps else self.f_end
        h00 = 2 * x**3 - 3 * x**2 + 1
        h10 = x**3 - 2 * x**2 + x
        h01 = -2 * x**3 + 3 * x**2
        h11 = x**3 - x**2
        return h00 * y0 + h10 * h * f0 + h01 * y1 + h11 * h * f1


def _check_finite(y: NDArray, t: float, what: str) -> None:
    if not np.all(np.isfinite(y)):
        raise IntegrationError(
            f"integration stopped at t={t:.6g}: the {what} became non-finite (inf or nan); "
            "the solution blows up or the step is too large for the dynamics.",
            t=float(t),
            cause=f"non-finite {what}",
        )


def fixed_segment(
    rhs: Rhs,
    y: NDArray,
    t_a: float,
    t_b: float,
    tableau: ButcherTableau,
    steps: int,
    budget: StepBudget,
    *,
    what: str = "state",
    need_end_derivative: bool = False,
    dense: bool = True,
) -> Segment:
    """Integrate ``[t_a, t_b]`` with ``steps`` equal steps of a fixed-step method.

    ``dense=False`` keeps only the end points (no dense output), for passes whose steps
    are not needed afterwards."""
    fractions = np.linspace(0.0, 1.0, steps + 1)
    ts = t_a + fractions * (t_b - t_a)
    ts[-1] = t_b
    kept = steps if dense else 1
    ys = np.empty((kept + 1, *y.shape), dtype=y.dtype)
    ks = np.empty((kept if dense else 0, tableau.stages, *y.shape), dtype=y.dtype)
    ys[0] = y
    current = y
    for i in range(steps):
        budget.spend(ts[i])
        current, k = rk_step(rhs, ts[i], current, ts[i + 1] - ts[i], tableau,
                             t_end=ts[i + 1])
        if dense:
            ys[i + 1], ks[i] = current, k
        budget.nfev += tableau.stages
        _check_finite(current, ts[i + 1], what)
    ys[-1] = current
    f_end = None
    if need_end_derivative:
        f_end = rhs(t_b, ys[-1])
        budget.nfev += 1
    return Segment(ts=ts, ys=ys, ks=ks, tableau=tableau, f_end=f_end)


def _rms(x: NDArray) -> float:
    return float(np.sqrt(np.mean(np.abs(x) ** 2))) if x.size else 0.0


def initial_step(
    rhs: Rhs, t: float, t_b: float, y: NDArray, f0: NDArray, order: int, rtol: float,
    atol: float,
) -> float:
    """Starting step size (Hairer, Nørsett & Wanner, II.4), never longer than ``span``."""
    direction = 1.0 if t_b >= t else -1.0
    span = abs(t_b - t)
    scale = atol + np.abs(y) * rtol
    d0, d1 = _rms(y / scale), _rms(f0 / scale)
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    h0 = min(h0, span)
    if not h0 > 0:  # |f| / |y| beyond float64's range: no step size resolves it
        raise IntegrationError(
            f"integration cannot start at t={t:.6g}: the initial step size underflows to 0 "
            "because |dy/dt| is too large relative to y (the dynamics or the inputs are "
            "beyond float64's range); rescale them.",
            t=float(t),
            cause="step size underflow",
        )
    y1 = y + h0 * direction * f0
    f1 = rhs(t_b if h0 >= span else t + h0 * direction, y1)
    d2 = _rms((f1 - f0) / scale) / h0
    if d1 <= 1e-15 and d2 <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / (order + 1))
    return min(100 * h0, h1, span)


@dataclass
class AdaptiveState:
    """What carries over from one interval to the next: the step size to try and f(t, y);
    with a ``controlled`` slice, the local errors of the entries outside it, summed."""

    h_abs: float | None = None
    f: NDArray | None = None
    controlled: slice | None = None
    unchecked: NDArray | None = None
    magnitude: NDArray | None = None  # |increments| of the unchecked entries, summed


def adaptive_segment(
    rhs: Rhs,
    y: NDArray,
    t_a: float,
    t_b: float,
    tableau: ButcherTableau,
    rtol: float,
    atol: float,
    budget: StepBudget,
    carry: AdaptiveState,
    *,
    what: str = "state",
    dense: bool = True,
) -> Segment:
    """Integrate ``[t_a, t_b]`` adaptively with an embedded pair (Dormand–Prince 5(4)).

    The error of a step is the RMS over the whole batch of ``err / (atol + rtol *
    max(|y|, |y_new|))``; a step is accepted when it is at most 1. The step that reaches
    ``t_b`` is shortened to land on it exactly.

    ``carry.controlled`` (a slice of a flat ``y``) restricts the test to those entries (a
    seminorm: the others are quadrature variables that feed nothing back); the local
    error estimates of the others are summed in ``carry.unchecked`` for the caller to
    check afterwards.
    """
    direction = 1.0 if t_b >= t_a else -1.0
    t = t_a
    f = carry.f if carry.f is not None else rhs(t, y)
    if carry.f is None:
        budget.nfev += 1
    _check_finite(f, t, what + " derivative")
    if carry.h_abs is None:
        h_abs = initial_step(rhs, t, t_b, y, f, tableau.error_order, rtol, atol)
        budget.nfev += 1
    else:
        h_abs = carry.h_abs
    exponent = -1.0 / (tableau.error_order + 1)
    ts, ys, ks = [t], [y], []
    nonfinite = False
    controlled = carry.controlled
    while t != t_b:
        budget.spend(t)
        remaining = abs(t_b - t)
        last = h_abs >= remaining
        if not last and remaining - h_abs < 0.1 * h_abs:
            h_abs = remaining / 2  # two even steps instead of one sliver at the end
        h = (t_b - t) if last else direction * h_abs
        min_step = 10 * np.spacing(max(abs(t), abs(t_b)))
        if abs(h) < min_step:
            cause = "non-finite " + what if nonfinite else "step size underflow"
            raise IntegrationError(
                f"integration stopped at t={t:.6g}: the step size underflowed "
                f"(h={abs(h):.3g})"
                + (f" while the {what} became non-finite on every step tried; the solution "
                   "blows up here." if nonfinite else
                   "; the dynamics are too stiff or singular here for an explicit solver "
                   "at this tolerance."),
                t=float(t),
                cause=cause,
            )
        t_next = t_b if last else t + h
        y_new, k = rk_step(rhs, t, y, h, tableau, k_first=f, t_end=t_next)
        budget.nfev += tableau.stages - 1
        with np.errstate(invalid="ignore", over="ignore"):
            local = combine(None, h, tableau.plan.b_err, k)
            if controlled is None:
                err = _rms(local / (atol + rtol * np.maximum(np.abs(y), np.abs(y_new))))
            else:
                err = _rms(local[controlled] / (atol + rtol * np.maximum(
                    np.abs(y[controlled]), np.abs(y_new[controlled]))))
        nonfinite = not (np.isfinite(err) and np.all(np.isfinite(k)))
        if not nonfinite and err <= 1.0:
            if controlled is not None:
                rest, size = np.abs(local), np.abs(y_new - y)
                rest[controlled] = size[controlled] = 0.0
                if carry.unchecked is None:
                    carry.unchecked, carry.magnitude = rest, size
                else:
                    carry.unchecked += rest
                    carry.magnitude += size
            t = t_next
            y = y_new
            f = k[-1] if tableau.fsal else rhs(t, y)
            ts.append(t)
            if dense:
                ys.append(y)
                ks.append(k)
            factor = MAX_FACTOR if err == 0 else min(MAX_FACTOR, SAFETY * err**exponent)
            h_abs = max(h_abs if last else 0.0, abs(h) * max(MIN_FACTOR, factor))
        else:
            budget.rejected += 1
            factor = MIN_FACTOR if nonfinite else SAFETY * err**exponent
            h_abs = abs(h) * min(1.0, max(MIN_FACTOR, factor))
    carry.h_abs = h_abs
    carry.f = f
    if not dense:
        ys.append(y)
    return Segment(ts=np.array(ts), ys=np.array(ys), ks=np.array(ks), tableau=tableau)
