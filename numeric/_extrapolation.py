"""Gragg–Bulirsch–Stoer extrapolation in fixed-point arithmetic, for the high-precision
reference (Hairer, Nørsett & Wanner, "Solving ODEs I", II.9)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import mpmath
import numpy as np
from mpmath.libmp import from_man_exp, round_nearest

from ._errors import IntegrationError

__all__ = [
    "NO_EXPONENT",
    "Extrapolation",
    "SolveStats",
    "StepFailure",
    "error_norm",
    "exponent",
    "flat_values",
    "from_fixed",
    "max_columns",
    "to_fixed",
]

#: Step-size control of ODEX (Hairer, Nørsett & Wanner, II.9): the new step is
#: ``H / fac`` with ``fac = (err / _SAFE1)**(1/(2j+1)) / _SAFE2`` clipped to
#: ``[_FAC1**(1/(2j+1)), _FAC2 / _FAC1**(1/(2j+1))]``.
_SAFE1, _SAFE2, _FAC1, _FAC2 = 0.65, 0.94, 0.02, 4.0
#: Error-norm floor: a component is measured against ``max(|y_i|, 2**-_FLOOR_BITS |block|)``
#: (about 1e-3 of the largest entry of its block: sensitivities start at zero).
_FLOOR_BITS = 10
#: Largest binary exponent of a state entry: beyond it float64 cannot hold the answer.
MAX_EXPONENT = 996
#: Binary exponent standing for "zero" when looking for the magnitude of a block.
NO_EXPONENT = -(10**9)


def flat_values(result: Any) -> list:
    """A lambdified result as a list: ``lambdify`` returns a list for list expressions, but
    be robust to a bare scalar (one entry) or a matrix/array-like."""
    if type(result) is list:
        return result
    if isinstance(result, tuple):
        return list(result)
    if hasattr(result, "tolist"):
        flat: list = []

        def walk(item):
            if isinstance(item, (list, tuple)):
                for sub in item:
                    walk(sub)
            else:
                flat.append(item)

        walk(result.tolist())
        return flat
    return [result]


class StepFailure(Exception):
    """A trial macro step produced something unusable (non-finite, complex, beyond float64,
    or an evaluation error): the step is retried with a smaller size."""


@dataclass
class SolveStats:
    accepted: int = 0
    rejected: int = 0
    nfev: int = 0
    max_order: int = 0


def mpf_parts(v: Any) -> tuple:
    """The mpmath ``(sign, mantissa, exponent, bitcount)`` of a real number ``v``."""
    if type(v) is int:
        return mpmath.mpf(v)._mpf_
    try:
        return v._mpf_
    except AttributeError:  # a float, or a complex value (TypeError)
        return mpmath.mpf(v)._mpf_


def exponent(v: Any) -> int:
    """Binary exponent ``e`` with ``2**(e-1) <= |v| < 2**e`` (``NO_EXPONENT`` for zero)."""
    _sign, man, exp, bc = mpf_parts(v)
    return exp + bc if man else NO_EXPONENT


def to_fixed(v: Any, shift: int) -> int:
    """``round(v * 2**shift)`` as an int; non-finite or complex ``v`` fails the step."""
    if type(v) is int:
        return v << shift if shift >= 0 else (v + (1 << (-shift - 1))) >> -shift
    try:
        sign, man, exp, bc = mpf_parts(v)
    except TypeError as exc:
        raise StepFailure(f"f took a complex value ({v})") from exc
    if not man:
        if exp or bc:
            raise StepFailure("f took a non-finite value")
        return 0
    s = exp + shift
    x = man << s if s >= 0 else (man + (1 << (-s - 1))) >> -s
    return -x if sign else x


def from_fixed(x: int, shift: int, prec: int) -> mpmath.mpf:
    """The mpf ``x * 2**-shift`` rounded to ``prec`` bits."""
    return mpmath.mp.make_mpf(from_man_exp(x, -shift, prec, round_nearest))


def error_norm(delta: list, y: list, y_new: list, blocks: Sequence[slice]) -> float:
    r""":math:`\max_i |\Delta_i| / \max(|y_i|, |\hat y_i|, \mathrm{floor}_{\mathrm{block}})`
    on the fixed-point ints of one block at a time (their common scale cancels), with the
    floor :math:`2^{-10}` of the block's largest entry: an absolute floor on the scale of
    the solution, since sensitivities start at zero."""
    worst = 0.0
    for block in blocks:
        magnitude = [max(abs(a), abs(b)) for a, b in zip(y[block], y_new[block], strict=True)]
        if not magnitude:
            continue
        floor = max(magnitude) >> _FLOOR_BITS
        for d, m in zip(delta[block], magnitude, strict=True):
            if d:
                scale = max(m, floor)
                if not scale:
                    return math.inf
                try:
                    worst = max(worst, abs(d) / scale)
                except OverflowError:
                    return math.inf
    return worst


class Extrapolation:
    r"""Gragg–Bulirsch–Stoer macro steps with ODEX-style order and step-size control.

    Column ``j`` (0-based) of the tableau is the modified midpoint rule with
    :math:`n_j = 2(j+1)` substeps of size :math:`h_j = H/n_j`,

    .. math:: u_0 = y, \quad u_1 = u_0 + h_j F(t, u_0), \quad
              u_{i+1} = u_{i-1} + 2 h_j F(t + i h_j, u_i), \qquad T_{j,0} = u_{n_j},

    whose error expands in even powers of :math:`h_j` (Gragg); Aitken–Neville extrapolation
    to :math:`h = 0`,

    .. math:: T_{j,l} = T_{j,l-1} + \frac{T_{j,l-1} - T_{j-1,l-1}}{(n_j/n_{j-l})^2 - 1},

    gives :math:`T_{j,j}` of order :math:`2j+2`; :math:`\|T_{j,j} - T_{j,j-1}\|` estimates
    the local error of :math:`T_{j,j-1}` and decides acceptance, step size and order.
    Every evaluation of :math:`F` is at :math:`t \le t + i h_j < t + H`, and the last macro
    step of an interval ends exactly on its end, so :math:`F` is never evaluated outside
    ``[t_0, t_N]``.

    Inside a macro step the arithmetic is fixed point on Python ints, a common binary scale
    per block (``z``, ``S_z``, ``S_theta``) chosen from the block's largest entry at the
    start of the step so that it carries ``EXTRA_BITS`` more than the working precision,
    with rounding to nearest: pure-Python mpf arithmetic would cost several times more.
    Accepted states are rounded back to mpf at the working precision.
    """

    # ``rhs(t, u)`` works on the fixed-point ints of the state and has a ``shifts``
    # attribute, the per-block scales, which the stepper sets at every accepted point.
    def __init__(self, rhs: Callable[[Any, list], list], blocks: Sequence[slice], tol: float,
                 max_columns: int, stats: SolveStats, *, bits: int, prec: int,
                 max_steps: int):
        self.rhs, self.blocks, self.tol, self.stats = rhs, blocks, tol, stats
        self.max_steps = max_steps
        self.bits, self.prec = bits, prec
        self.kmax = max_columns
        self.seq = [2 * (j + 1) for j in range(max_columns)]
        # work per column: F at the start once, then n_j - 1 evaluations per column
        self.work = list(np.cumsum([self.seq[0]] + [s - 1 for s in self.seq[1:]]))
        # Neville weights 1 / ((n_j / n_{j-l})^2 - 1) in fixed point with rounding
        self.neville_shift = self.bits + 8
        self.neville = [
            [0] + [
                self._fixed_ratio(self.seq[j - l] ** 2, self.seq[j] ** 2 - self.seq[j - l] ** 2)
                for l in range(1, j + 1)
            ]
            for j in range(max_columns)
        ]
        # target column: about one column per 2.5 digits asked for (ODEX starts at
        # 0.6 log10(1/tol) + 1.5 columns of the sequence 2, 4, 6, ...; capped by kmax)
        self.k = max(2, min(self.kmax - 2, int(0.4 * -math.log10(tol))))
        self.H: float | None = None
        self.attempts = 0

    def _fixed_ratio(self, num: int, den: int) -> int:
        return ((num << (self.neville_shift + 1)) + den) // (2 * den)

    def _shifts(self, y: list) -> tuple[int, ...]:
        """Fixed-point scale of every block: ``bits`` below the block's largest entry (an
        all-zero block borrows the scale of ``z``)."""
        exponents = [max((exponent(v) for v in y[block]), default=NO_EXPONENT)
                     for block in self.blocks]
        base = exponents[0] if exponents[0] != NO_EXPONENT else 1
        return tuple(self.bits - (e if e != NO_EXPONENT else base) for e in exponents)

    def _midpoint(self, t, u0: list, f0: list, n_sub: int, H) -> list:
        h = H / n_sub
        shift = self.bits - exponent(h)
        if shift < 1:  # a step beyond the fixed-point range (spans like 1e300): shorten it
            raise StepFailure("the step size exceeds the working range")
        h_fixed = to_fixed(h, shift)
        h2, half = 2 * h_fixed, 1 << (shift - 1)
        u_prev = u0
        u = [a + ((h_fixed * b + half) >> shift) for a, b in zip(u0, f0, strict=True)]
        for i in range(1, n_sub):
            f = self.rhs(t + i * h, u)
            u_prev, u = u, [a + ((h2 * b + half) >> shift) for a, b in zip(u_prev, f,
                                                                             strict=True)]
        return u

    def _step_factor(self, err: float, j: int) -> float:
        """``H_new / H`` for the error ``err`` of column ``j`` (ODEX)."""
        expo = 1.0 / (2 * j + 1)
        facmin = _FAC1**expo
        fac = min(_FAC2 / facmin, max(facmin, (err / _SAFE1) ** expo / _SAFE2))
        return 1.0 / fac

    def _to_mpf(self, u: list, shifts: tuple[int, ...]) -> list:
        y = []
        for block, shift in zip(self.blocks, shifts, strict=True):
            for x in u[block]:
                if x.bit_length() - shift > MAX_EXPONENT:
                    raise StepFailure("the solution exceeds the float64 range (it blows up)")
                y.append(from_fixed(x, shift, self.prec))
        return y

    def _start(self, t, y: list) -> tuple:
        """Fixed-point state and derivative at an accepted point."""
        shifts = self._shifts(y)
        self.rhs.shifts = shifts
        u = [to_fixed(v, shift) for block, shift in zip(self.blocks, shifts, strict=True)
             for v in y[block]]
        return shifts, u, self.rhs(t, u)

    def _restart(self, t, y: list) -> tuple:
        """:meth:`_start`, with an unusable point reported as the solve's failure there."""
        try:
            return self._start(t, y)
        except StepFailure as exc:
            raise IntegrationError(
                f"high-precision integration failed at t = {float(t):.17g}: {exc}",
                t=float(t), cause=str(exc)) from exc

    def integrate(self, y: list, t_start, t_end) -> list:
        """Integrate the mpf state ``y`` from ``t_start`` to exactly ``t_end`` (mpf)."""
        t = t_start
        span = float(t_end - t_start)
        if self.H is None:
            self.H = span
        failure = ""
        shifts, u, f0 = self._restart(t, y)
        last_rejected = False
        while t < t_end:
            remaining = t_end - t
            H_float = min(self.H, 4 * span)
            landing = H_float >= 0.999 * float(remaining)
            if landing:
                H = remaining
            else:
                if 2 * H_float > float(remaining):  # two roughly equal steps to the end
                    H_float = float(remaining) / 2
                H = mpmath.mpf(H_float)
            if float(H) <= max(self.tol * span, abs(float(t)) * 2.0 ** (8 - self.prec)):
                why = failure or "the local error test cannot be met"
                size = mpmath.nstr(max(abs(v) for v in y[self.blocks[0]]), 3)
                raise IntegrationError(
                    f"high-precision integration failed at t = {float(t):.17g}: the step "
                    f"size underflowed to {float(H):.3g} ({why}; |z| = {size}); does the "
                    "solution blow up or leave the domain of f?",
                    t=float(t),
                    cause=f"step size underflow: {why}",
                )
            self.attempts += 1
            if self.attempts > self.max_steps:
                raise IntegrationError(
                    f"high-precision integration stopped at t = {float(t):.17g}: the budget "
                    f"of {self.max_steps} macro steps ran out before t = {float(t_end):.17g}",
                    t=float(t),
                    cause="step budget exhausted",
                )
            try:
                u_new = self._macro_step(t, u, f0, H, last_rejected)
                y_new = None if u_new is None else self._to_mpf(u_new, shifts)
            except StepFailure as exc:
                failure = str(exc)
                u_new = y_new = None
                self.H = 0.25 * float(H)
            if y_new is None:
                self.stats.rejected += 1
                last_rejected = True
                continue
            y = y_new
            t = t_end if landing else t + H
            self.stats.accepted += 1
            last_rejected = False
            failure = ""
            shifts, u, f0 = self._restart(t, y)
        return y

    def _macro_step(self, t, u: list, f0: list, H, last_rejected: bool) -> list | None:
        """One macro step of size ``H``; the new state, or None when rejected (``self.H``
        and ``self.k`` are updated either way)."""
        k, kmax, seq, work = self.k, self.kmax, self.seq, self.work
        shift_r = self.neville_shift
        half_r = 1 << (shift_r - 1)
        H_float = float(H)
        row: list[list] = []
        H_opt: dict[int, float] = {}
        W: dict[int, float] = {}
        for j in range(min(k + 2, kmax)):
            T = [self._midpoint(t, u, f0, seq[j], H)]
            for l in range(1, j + 1):
                r = self.neville[j][l]
                T.append([a + (((a - b) * r + half_r) >> shift_r)
                          for a, b in zip(T[l - 1], row[l - 1], strict=True)])
            row = T
            if j == 0:
                continue
            u_new = T[j]
            delta = [a - b for a, b in zip(u_new, T[j - 1], strict=True)]
            err = error_norm(delta, u, u_new, self.blocks) / self.tol
            H_opt[j] = H_float * self._step_factor(err, j)
            W[j] = work[j] / H_opt[j]
            if j < k - 1:
                continue
            if err <= 1.0:
                self._choose_next(j, H_opt, W, last_rejected)
                self.stats.max_order = max(self.stats.max_order, 2 * j + 2)
                return u_new
            converging = (
                (j == k - 1 and err <= (seq[k + 1] * seq[k] / seq[0] ** 2) ** 2)
                or (j == k and err <= (seq[k + 1] / seq[0]) ** 2)
            )
            if not converging or j == kmax - 1:
                break
        # rejected: keep the order (far from convergence the work estimates of the lower
        # columns mislead and would ratchet the order down), and shrink the step as the
        # highest column computed predicts
        self.H = min(H_opt[max(H_opt)], 0.5 * H_float)
        return None

    def _choose_next(self, j: int, H_opt: dict, W: dict, last_rejected: bool) -> None:
        """Order and step size after convergence in column ``j`` (Hairer, Nørsett &
        Wanner, II.9, "Order and step size control")."""
        k_new, H_new = j, H_opt[j]
        if j >= 2 and W[j - 1] < 0.8 * W[j]:
            k_new, H_new = j - 1, H_opt[j - 1]
        elif j >= 2 and W[j] < 0.9 * W[j - 1] and j + 1 < self.kmax - 1:
            k_new, H_new = j + 1, H_opt[j] * self.work[j + 1] / self.work[j]
        if last_rejected:  # no increase right after a rejection
            k_new = min(k_new, self.k)
            H_new = min(H_new, self.H)
        self.k = min(max(k_new, 2), self.kmax - 2)
        self.H = H_new


def max_columns(working_digits: int) -> int:
    """Columns of the tableau allowed (order ``2 * columns``); the work-per-step control
    picks the order, which for 30-40 digits settles at 12-16 columns."""
    return int(min(30, max(8, working_digits // 2)))
