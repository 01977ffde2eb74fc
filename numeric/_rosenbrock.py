"""Rosenbrock stepping (Rodas4): one step, step-size control, dense output, per interval.

The integrators here work on a :class:`RosenbrockSystem`: ``y' = F(t, y)`` with ``y`` of
shape ``(B, m)``, which also gives ``dF/dt`` and a factorisation of
:math:`I - h\\gamma\\, \\partial F/\\partial y`. Each system builds that factorisation from
its own structure (the state equation factors ``I - h gamma J``; the adjoint and
sensitivity systems reuse it blockwise), so the integrator never forms a Jacobian larger
than the state's. Like the explicit integrators they go one observation interval at a
time (``t_b < t_a`` integrates backwards), evaluate ``F`` only inside the interval, and
record every accepted step for dense output and the frozen grid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from ._batched_lu import BatchedLU, SingularMatrix
from ._errors import IntegrationError
from ._rosenbrock_tableau import RosenbrockTableau

__all__ = [
    "Factorization",
    "Linearization",
    "RosenbrockSegment",
    "RosenbrockSystem",
    "StateSystem",
    "rosenbrock_intervals",
    "rosenbrock_step",
]

#: Step-size controller of RODAS (Hairer & Wanner, "Solving ODEs II", IV.7 and IV.8):
#: the new step is ``h / fac`` with ``fac = err**(1/4) / SAFETY`` clipped so that
#: ``MIN_FACTOR <= h_new / h <= MAX_FACTOR``, and Gustafsson's predictive controller.
SAFETY = 0.9
MIN_FACTOR = 0.2
MAX_FACTOR = 6.0
#: A singular ``I - h gamma J`` halves the step; this many in a row stop the solve.
MAX_SINGULAR = 5


class Factorization(Protocol):
    """:math:`(I - h\\gamma\\, \\partial F/\\partial y)^{-1}` applied to ``(B, m)`` arrays."""

    def solve(self, r: NDArray) -> NDArray: ...


class Linearization(Protocol):
    """The Jacobian of ``F`` at the start of a step, ready to be factored for any ``h``."""

    def factor(self, h_gamma: Any) -> Factorization: ...


class RosenbrockSystem(Protocol):
    """``y' = F(t, y)`` with what a Rosenbrock step needs; ``y`` is ``(B, m)``."""

    def __call__(self, t: Any, y: NDArray) -> NDArray: ...  # F, (B, m)

    def time_partial(self, t: Any, y: NDArray) -> NDArray | None: ...  # dF/dt or None

    def linearize(self, t: Any, y: NDArray) -> Linearization: ...


class DenseFactorization:
    """LU factors of :math:`I - h\\gamma J` for a batch of dense Jacobians ``(B, n, n)``."""

    def __init__(self, jac: NDArray, h_gamma: Any):
        n = jac.shape[-1]
        self.lu = BatchedLU(np.eye(n) - h_gamma * jac)

    def solve(self, r: NDArray) -> NDArray:
        return self.lu.solve(r)


@dataclass
class DenseLinearization:
    """A dense Jacobian ``(B, n, n)``: factors :math:`I - h\\gamma J` on demand."""

    jac: NDArray

    def factor(self, h_gamma: Any) -> DenseFactorization:
        return DenseFactorization(self.jac, h_gamma)


class StateSystem:
    """The state equation ``z' = f(z, theta, t)`` of compiled dynamics, with its symbolic
    Jacobian ``jac_state`` and time derivative ``time_partial``."""

    def __init__(self, compiled, theta: NDArray):
        self.compiled, self.theta = compiled, theta

    def __call__(self, t, z):
        return self.compiled.rhs(z, self.theta, t)

    def time_partial(self, t, z):
        if self.compiled.autonomous:
            return None
        return self.compiled.time_partial(z, self.theta, t)

    def linearize(self, t, z) -> DenseLinearization:
        return DenseLinearization(self.compiled.jac_state(z, self.theta, t))


def combine(weights: NDArray, stack: NDArray) -> NDArray:
    """``sum_i weights[i] * stack[i]`` for a short stack of ``(B, m)`` arrays (what
    ``np.tensordot(weights, stack, axes=1)`` computes, at a fraction of its overhead on the
    small arrays of a step)."""
    return (weights @ stack.reshape(len(weights), -1)).reshape(stack.shape[1:])


def combine_rows(weights: NDArray, stack: NDArray) -> NDArray:
    """``weights @ stack`` over the first axis for a ``(r, s)`` weight matrix: ``(r, B, m)``."""
    return (weights @ stack.reshape(stack.shape[0], -1)).reshape(len(weights),
                                                                   *stack.shape[1:])


def rosenbrock_step(
    system: RosenbrockSystem,
    factors: Factorization,
    t,
    y: NDArray,
    h,
    tableau: RosenbrockTableau,
    f0: NDArray,
    dfdt: NDArray | None,
    *,
    t_end=None,
) -> tuple[NDArray, NDArray]:
    r"""One Rosenbrock step in the transformed form (see ``_rosenbrock_tableau``).

    .. math:: \Big(\frac{I}{h\gamma} - J\Big) u_i = F\Big(t + \alpha_i h,\ y +
              \sum_{j<i} a_{ij} u_j\Big) + \sum_{j<i} \frac{c_{ij}}{h} u_j
              + h \gamma_i \frac{\partial F}{\partial t}, \qquad
              y_+ = y + \sum_i m_i u_i

    Parameters
    ----------
    factors : Factorization
        Of :math:`I - h\gamma J`; :math:`(I/(h\gamma) - J)^{-1} = h\gamma (I - h\gamma
        J)^{-1}`.
    y, f0 : ndarray, shape (B, m)
        The state and ``F(t, y)``.
    dfdt : ndarray, shape (B, m), or None
        :math:`\partial F/\partial t` at ``(t, y)``; None for an autonomous system.
    t_end : scalar, optional
        The end of the step as the caller holds it; stages with :math:`\alpha_i = 1` are
        evaluated there.

    Returns
    -------
    y_next : ndarray, shape (B, m)
    u : ndarray, shape (s, B, m)
        The transformed stages (error estimate ``sum m_err u``, dense output).
    """
    s = tableau.stages
    u = np.empty((s, *y.shape), dtype=np.result_type(y, h, f0))
    t_end = t + h if t_end is None else t_end
    h_gamma = h * tableau.gamma
    for i in range(s):
        if i == 0:
            rhs = f0.copy() if dfdt is None else f0 + (h * tableau.d[0]) * dfdt
        else:
            stage_y = y + combine(tableau.a[i, :i], u[:i])
            stage_t = t_end if tableau.c[i] == 1.0 else t + tableau.c[i] * h
            rhs = system(stage_t, stage_y) + combine(tableau.c_matrix[i, :i] / h, u[:i])
            if dfdt is not None and tableau.d[i] != 0.0:
                rhs = rhs + (h * tableau.d[i]) * dfdt
        u[i] = h_gamma * factors.solve(rhs)
    return y + combine(tableau.m, u), u


@dataclass
class RosenbrockSegment:
    """The accepted Rosenbrock steps of one interval, with Rodas' continuous extension.

    Attributes
    ----------
    ts : ndarray, shape (K+1,)
        Step boundaries, ``ts[0] = t_a``, ``ts[-1] = t_b`` exactly.
    ys : ndarray, shape (K+1, B, m)
    us : ndarray, shape (K, s, B, m)
        The transformed stages of every step.
    tableau : RosenbrockTableau
    """

    ts: NDArray
    ys: NDArray
    us: NDArray
    tableau: RosenbrockTableau

    @property
    def steps(self) -> int:
        return len(self.ts) - 1

    def fractions(self) -> NDArray:
        """Step boundaries as fractions of the interval, from exactly 0 to exactly 1."""
        s = (self.ts - self.ts[0]) / (self.ts[-1] - self.ts[0])
        s[0], s[-1] = 0.0, 1.0
        return s

    def _locate(self, t: float) -> tuple[int, float, float]:
        ts = self.ts
        if ts[-1] >= ts[0]:
            idx = int(np.searchsorted(ts, t, side="right")) - 1
        else:
            idx = int(np.searchsorted(-ts, -t, side="right")) - 1
        idx = min(max(idx, 0), self.steps - 1)
        h = ts[idx + 1] - ts[idx]
        return idx, h, (t - ts[idx]) / h

    def _differences(self, idx: int) -> tuple[NDArray, NDArray]:
        """:math:`D_2, D_3` of step ``idx`` (computed once per step)."""
        cache = self.__dict__.setdefault("_dense_cache", {})
        if idx not in cache:
            u = self.us[idx]
            both = combine_rows(self.tableau.dense, u)
            cache[idx] = (both[0], both[1])
        return cache[idx]

    def evaluate(self, t: float) -> NDArray:
        r"""The continuous extension at ``t``, shape ``(B, m)`` (order 3):
        :math:`(1-\theta) y_k + \theta (y_{k+1} + (1-\theta)(D_2 + \theta D_3))`."""
        idx, _h, x = self._locate(t)
        d2, d3 = self._differences(idx)
        y0, y1 = self.ys[idx], self.ys[idx + 1]
        return (1 - x) * y0 + x * (y1 + (1 - x) * (d2 + x * d3))

    def derivative(self, t: float) -> NDArray:
        """The time derivative of :meth:`evaluate` at ``t``, shape ``(B, m)``."""
        idx, h, x = self._locate(t)
        d2, d3 = self._differences(idx)
        y0, y1 = self.ys[idx], self.ys[idx + 1]
        return (y1 - y0 + (1 - 2 * x) * d2 + (2 * x - 3 * x * x) * d3) / h


def _rms(x: NDArray) -> float:
    return float(np.sqrt(np.mean(np.abs(x) ** 2))) if x.size else 0.0


def _check_finite(y: NDArray, t: float, what: str) -> None:
    if not np.all(np.isfinite(y)):
        raise IntegrationError(
            f"integration stopped at t={t:.6g}: the {what} became non-finite (inf or nan); "
            "the solution blows up or the step is too large for the dynamics.",
            t=float(t),
            cause=f"non-finite {what}",
        )


def _time_partial(system: RosenbrockSystem, t, y: NDArray, what: str) -> NDArray | None:
    """``dF/dt`` at a step start, which must be finite (e.g. not ``sqrt(t)`` at ``t = 0``)."""
    dfdt = system.time_partial(t, y)
    if dfdt is not None and not np.all(np.isfinite(dfdt)):
        raise IntegrationError(
            f"integration stopped at t={t:.6g}: the time derivative of the {what} equation is "
            "not finite there (e.g. sqrt(t) at t = 0), and a Rosenbrock step uses it; start "
            "the time span inside the domain where f is differentiable, or use an explicit "
            "solver.",
            t=float(t), cause="non-finite time derivative")
    return dfdt


@dataclass
class _Controller:
    """Step size carried from step to step and interval to interval, with the memory of
    Gustafsson's predictive controller."""

    h_abs: float | None = None
    h_accepted: float | None = None
    err_accepted: float = 1.0


def _initial_step(y: NDArray, f0: NDArray, span: float, rtol: float, atol: float) -> float:
    """A cautious first step (Hairer, Nørsett & Wanner I, II.4, first estimate): 1% of the
    state's scale over its rate of change; the controller grows it by up to 6 per step."""
    scale = atol + rtol * np.abs(y)
    d0, d1 = _rms(y / scale), _rms(f0 / scale)
    h0 = 1e-6 * span if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    return float(min(h0, span))


def adaptive_rosenbrock_segment(
    system: RosenbrockSystem,
    y: NDArray,
    t_a: float,
    t_b: float,
    tableau: RosenbrockTableau,
    rtol: float,
    atol: float,
    budget,
    control: _Controller,
    *,
    what: str = "state",
) -> RosenbrockSegment:
    """Integrate ``[t_a, t_b]`` with error control on the embedded estimate ``sum m_err u``.

    The error of a step is the RMS over the batch of ``err / (atol + rtol * max(|y|,
    |y_new|))``; a step is accepted when it is at most 1. A rejected step is retried from
    the same point with the same Jacobian (only ``I - h gamma J`` is factored again); a
    singular matrix halves the step, a non-finite stage shrinks it by ``MIN_FACTOR``. The
    step that reaches ``t_b`` lands on it exactly. ``budget.spend`` is charged for every
    attempted step.
    """
    direction = 1.0 if t_b >= t_a else -1.0
    span = abs(t_b - t_a)
    t = t_a
    ts, ys, us = [t], [y], []
    exponent = 1.0 / (tableau.error_order + 1)
    while t != t_b:
        f0 = system(t, y)
        budget.nfev += 1
        _check_finite(f0, t, what + " derivative")
        dfdt = _time_partial(system, t, y, what)
        linear = system.linearize(t, y)
        if control.h_abs is None:
            control.h_abs = _initial_step(y, f0, span, rtol, atol)
        h_abs, rejected, singular, cause = control.h_abs, False, 0, ""
        while True:
            budget.spend(t)
            remaining = abs(t_b - t)
            last = h_abs >= remaining
            if not last and remaining - h_abs < 0.1 * h_abs:
                h_abs = remaining / 2  # two even steps instead of one sliver at the end
            h = (t_b - t) if last else direction * h_abs
            _check_step(h, t, t_b, what, cause)
            t_next = t_b if last else t + h
            try:
                y_new, u = rosenbrock_step(system, linear.factor(h * tableau.gamma), t, y, h,
                                           tableau, f0, dfdt, t_end=t_next)
            except SingularMatrix:
                singular += 1
                if singular >= MAX_SINGULAR:
                    raise IntegrationError(
                        f"integration stopped at t={t:.6g}: I - h*gamma*J stayed singular "
                        f"after {MAX_SINGULAR} halvings of the step (the Jacobian of the "
                        f"{what} equation is not finite or singular here).",
                        t=float(t), cause="singular matrix") from None
                budget.rejected += 1
                h_abs, rejected, cause = abs(h) / 2, True, "I - h*gamma*J is singular"
                continue
            budget.nfev += tableau.stages - 1
            scale = atol + rtol * np.maximum(np.abs(y), np.abs(y_new))
            with np.errstate(invalid="ignore", over="ignore"):
                err = _rms(combine(tableau.m_err, u) / scale)
            if not (np.isfinite(err) and np.all(np.isfinite(y_new))):
                budget.rejected += 1
                h_abs, rejected, cause = abs(h) * MIN_FACTOR, True, f"non-finite {what}"
                continue
            fac = min(1.0 / MIN_FACTOR, max(1.0 / MAX_FACTOR, err**exponent / SAFETY))
            if err <= 1.0:
                break
            budget.rejected += 1
            h_abs, rejected, cause = abs(h) / fac, True, "the local error test cannot be met"
        if control.h_accepted is not None:  # Gustafsson's predictive controller
            predicted = (control.h_accepted / abs(h)) * (
                err**2 / control.err_accepted) ** exponent / SAFETY
            fac = max(fac, min(1.0 / MIN_FACTOR, max(1.0 / MAX_FACTOR, predicted)))
        control.h_accepted, control.err_accepted = abs(h), max(1e-2, err)
        h_new = abs(h) / fac
        if rejected:
            h_new = min(h_new, abs(h))
        control.h_abs = max(h_new, h_abs if last else 0.0)
        t, y = t_next, y_new
        ts.append(t)
        ys.append(y)
        us.append(u)
    return RosenbrockSegment(ts=np.array(ts), ys=np.array(ys), us=np.array(us), tableau=tableau)


def _check_step(h: float, t: float, t_b: float, what: str, cause: str) -> None:
    min_step = 10 * np.spacing(max(abs(t), abs(t_b)))
    if abs(h) >= min_step:
        return
    why = cause or "the local error test cannot be met"
    raise IntegrationError(
        f"integration stopped at t={t:.6g}: the step size underflowed (h={abs(h):.3g}) "
        f"({why}); the {what} is singular or blows up here.",
        t=float(t),
        cause="non-finite " + what if cause.startswith("non-finite") else "step size underflow",
    )


def fixed_rosenbrock_segment(
    system: RosenbrockSystem,
    y: NDArray,
    t_a: float,
    t_b: float,
    tableau: RosenbrockTableau,
    steps: int,
    budget,
    *,
    what: str = "state",
) -> RosenbrockSegment:
    """Integrate ``[t_a, t_b]`` with ``steps`` equal Rosenbrock steps, no error control."""
    fractions = np.linspace(0.0, 1.0, steps + 1)
    ts = t_a + fractions * (t_b - t_a)
    ts[-1] = t_b
    ys = np.empty((steps + 1, *y.shape), dtype=y.dtype)
    us = np.empty((steps, tableau.stages, *y.shape), dtype=y.dtype)
    ys[0] = y
    for i in range(steps):
        budget.spend(ts[i])
        h = ts[i + 1] - ts[i]
        f0 = system(ts[i], ys[i])
        dfdt = _time_partial(system, ts[i], ys[i], what)
        try:
            factors = system.linearize(ts[i], ys[i]).factor(h * tableau.gamma)
        except SingularMatrix:
            raise IntegrationError(
                f"integration stopped at t={ts[i]:.6g}: I - h*gamma*J is singular for the "
                f"fixed step h={abs(h):.3g}; use more steps or the adaptive rodas4.",
                t=float(ts[i]), cause="singular matrix") from None
        ys[i + 1], us[i] = rosenbrock_step(system, factors, ts[i], ys[i], h, tableau, f0,
                                           dfdt, t_end=ts[i + 1])
        budget.nfev += tableau.stages
        _check_finite(ys[i + 1], ts[i + 1], what)
    return RosenbrockSegment(ts=ts, ys=ys, us=us, tableau=tableau)


def rosenbrock_intervals(
    system: RosenbrockSystem,
    y0: NDArray,
    nodes: Sequence[float],
    options,
    budget,
    *,
    at_node: Callable[[int, NDArray], NDArray] | None = None,
    what: str = "state",
) -> list[RosenbrockSegment]:
    """Integrate ``system`` from ``nodes[0]`` through every later node (either direction),
    adaptively (``options.rtol``, ``options.atol``) or with ``options.steps`` equal steps
    per interval; ``at_node(i, y)`` is called on arrival at ``nodes[i]`` and returns the
    state to continue from (the adjoint adds its jump there)."""
    for method in ("__call__", "time_partial", "linearize"):
        if not callable(getattr(system, method, None)):
            raise TypeError(
                f"the Rosenbrock solver {options.name!r} needs a RosenbrockSystem (F, dF/dt "
                f"and a factorisation of I - h*gamma*dF/dy), got {type(system).__name__} "
                f"without {method}()"
            )
    tableau = options.tableau
    control = _Controller()
    segments = []
    y = y0
    for i in range(1, len(nodes)):
        t_a, t_b = float(nodes[i - 1]), float(nodes[i])
        if tableau.adaptive:
            segment = adaptive_rosenbrock_segment(system, y, t_a, t_b, tableau, options.rtol,
                                                  options.atol, budget, control, what=what)
        else:
            segment = fixed_rosenbrock_segment(system, y, t_a, t_b, tableau, options.steps,
                                               budget, what=what)
        segments.append(segment)
        y = segment.ys[-1]
        if at_node is not None:
            y = at_node(i, y)
    return segments
