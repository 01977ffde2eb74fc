r"""Gragg–Bulirsch–Stoer extrapolation in double-double arithmetic, vectorised over the batch.

The method, order and step-size control are those of the library's mpmath reference
(:class:`numeric._extrapolation.Extrapolation`, whose ODEX control this class inherits):
column ``j`` of the tableau is the modified midpoint rule with :math:`n_j = 2(j+1)`
substeps, Aitken–Neville extrapolation in :math:`h^2` gives order :math:`2j+2`, and
:math:`\|T_{j,j} - T_{j,j-1}\|` decides acceptance, step size and order. What differs:

- every sample of the batch takes the same macro steps (the error test takes the worst
  sample), so one step is a handful of array operations on the whole batch;
- the arithmetic is double-double (:mod:`numeric._double_double`), and inside a macro step
  the midpoint rule and the tableau work on *increments* :math:`u - y_0`, whose rounding
  errors are relative to :math:`\|u - y_0\| \sim H \|f\|` rather than to :math:`\|y\|`.

The error is measured in the max-norm of each block (state, tangent) of each sample,
relative to that block's size: accuracy relative to the scale of each block of each sample,
as the audits' error measure and double-double arithmetic itself (whose matrix products are
accurate relative to the size of their rows) provide. (The mpmath reference floors each
component at ``2**-10`` of its block instead; here that floor would demand digits below the
rounding noise from components a thousand times smaller than their block.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import mpmath
import numpy as np

from ._double_double import DD, dd_constant
from ._errors import IntegrationError
from ._extrapolation import Extrapolation, SolveStats, StepFailure

__all__ = ["MAX_MAGNITUDE", "DDExtrapolation"]

#: Largest magnitude of a state entry: double-double products (Dekker's split) overflow
#: near 2**996.
MAX_MAGNITUDE = 1e280
#: Relative size below which a macro step is a step-size underflow (about 2**-100: below
#: it, t + H does not move t in double-double).
_TIME_RESOLUTION = 2.0**-100


def error_norm(delta: np.ndarray, y: np.ndarray, y_new: np.ndarray,
               blocks: Sequence[slice]) -> float:
    r""":math:`\max_{b, B} \max_{i \in B} |\Delta_{bi}| / \max_{i \in B} \max(|y_{bi}|,
    |\hat y_{bi}|)` over the samples ``b`` (rows) and blocks ``B`` of columns: the error of
    each block of each sample in the max-norm, relative to that block's size; inf where a
    block is zero but its difference is not."""
    magnitude = np.maximum(np.abs(y), np.abs(y_new))
    worst = 0.0
    for block in blocks:
        if block.stop - block.start == 0:
            continue
        scale = magnitude[:, block].max(axis=1)
        d = np.abs(delta[:, block]).max(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(d == 0, 0.0, d / scale)
        worst = max(worst, float(ratio.max()))
    return worst


class DDExtrapolation(Extrapolation):
    """GBS macro steps on a double-double state ``(B, m)``; see the module docstring.

    Parameters
    ----------
    rhs : callable
        ``rhs(t, y)`` with ``t`` a 0-d DD and ``y`` a DD ``(B, m)``, returning a DD
        ``(B, m)``.
    blocks : sequence of slice
        Column blocks with their own error scale (state, tangent).
    tol : float
        Relative local tolerance of a macro step.
    max_columns : int
        Columns of the tableau allowed (order ``2 * max_columns``).
    stats : SolveStats
    max_steps : int
        Budget of attempted macro steps.
    """

    def __init__(self, rhs: Callable[[DD, DD], DD], blocks: Sequence[slice], tol: float,
                 max_columns: int, stats: SolveStats, *, max_steps: int):
        self.rhs, self.blocks, self.tol, self.stats = rhs, blocks, tol, stats
        self.max_steps = max_steps
        self.kmax = max_columns
        self.seq = [2 * (j + 1) for j in range(max_columns)]
        self.work = list(np.cumsum([self.seq[0]] + [s - 1 for s in self.seq[1:]]))
        with mpmath.workprec(256):
            self.neville = [
                [None] + [dd_constant(mpmath.mpf(self.seq[j - l] ** 2)
                                      / (self.seq[j] ** 2 - self.seq[j - l] ** 2))
                          for l in range(1, j + 1)]
                for j in range(max_columns)
            ]
        self.k = max(2, min(self.kmax - 2, int(0.4 * -math.log10(tol))))
        self.H: float | None = None
        self.attempts = 0

    def _evaluate(self, t: DD, y: DD) -> DD:
        self.stats.nfev += 1
        return self.rhs(t, y)

    def _midpoint(self, t: DD, y0: DD, f0: DD, n_sub: int, H: DD) -> DD:
        """The increment :math:`u_{n} - y_0` of the modified midpoint rule."""
        h = H / float(n_sub)
        h2 = h * 2.0
        u_prev = None
        u = f0 * h
        for i in range(1, n_sub):
            f = self._evaluate(t + h * float(i), y0 + u)
            step = f * h2
            u_prev, u = u, (step if u_prev is None else u_prev + step)
        if not np.all(np.isfinite(u.hi)):
            raise StepFailure("the solution became non-finite")
        return u

    def _macro_step(self, t, y0: DD, f0: DD, H: DD, last_rejected: bool) -> DD | None:
        k, kmax, seq, work = self.k, self.kmax, self.seq, self.work
        H_float = float(H)
        row: list[DD] = []
        H_opt: dict[int, float] = {}
        W: dict[int, float] = {}
        for j in range(min(k + 2, kmax)):
            T = [self._midpoint(t, y0, f0, seq[j], H)]
            for l in range(1, j + 1):
                T.append(T[l - 1] + (T[l - 1] - row[l - 1]) * self.neville[j][l])
            row = T
            if j == 0:
                continue
            y_new = y0 + T[j]
            err = error_norm((T[j] - T[j - 1]).hi, y0.hi, y_new.hi, self.blocks) / self.tol
            if not math.isfinite(err):
                raise StepFailure("the error estimate is not finite")
            H_opt[j] = H_float * self._step_factor(err, j)
            W[j] = work[j] / H_opt[j]
            if j < k - 1:
                continue
            if err <= 1.0:
                if np.max(np.abs(y_new.hi)) > MAX_MAGNITUDE:
                    raise StepFailure("the solution exceeds the double-double range (it "
                                      "blows up)")
                self._choose_next(j, H_opt, W, last_rejected)
                self.stats.max_order = max(self.stats.max_order, 2 * j + 2)
                return y_new
            converging = (
                (j == k - 1 and err <= (seq[k + 1] * seq[k] / seq[0] ** 2) ** 2)
                or (j == k and err <= (seq[k + 1] / seq[0]) ** 2)
            )
            if not converging or j == kmax - 1:
                break
        self.H = min(H_opt[max(H_opt)], 0.5 * H_float)
        return None

    def _derivative(self, t: DD, y: DD) -> DD:
        try:
            f0 = self._evaluate(t, y)
        except (ArithmeticError, ValueError) as exc:
            raise IntegrationError(f"high-precision integration failed at t = "
                                   f"{float(t):.17g}: {exc}", t=float(t), cause=str(exc)) from exc
        if not np.all(np.isfinite(f0.hi)):
            raise IntegrationError(
                f"high-precision integration failed at t = {float(t):.17g}: the right-hand "
                "side is not finite there", t=float(t), cause="non-finite right-hand side")
        return f0

    def integrate(self, y: DD, t_start: DD, t_end: DD) -> DD:
        """Integrate ``y`` from ``t_start`` to exactly ``t_end`` (0-d DDs)."""
        t = t_start
        span = float(t_end - t_start)
        if self.H is None:
            self.H = span
        failure = ""
        last_rejected = False
        with np.errstate(all="ignore"):
            f0 = self._derivative(t, y)
            while t < t_end:
                H, landing = self._next_size(t, t_end, span, failure, y)
                self.attempts += 1
                if self.attempts > self.max_steps:
                    raise IntegrationError(
                        f"high-precision integration stopped at t = {float(t):.17g}: the "
                        f"budget of {self.max_steps} macro steps ran out before t = "
                        f"{float(t_end):.17g}", t=float(t), cause="step budget exhausted")
                try:
                    y_new = self._macro_step(t, y, f0, H, last_rejected)
                except StepFailure as exc:
                    failure = str(exc)
                    y_new = None
                    self.H = 0.25 * float(H)
                if y_new is None:
                    self.stats.rejected += 1
                    last_rejected = True
                    continue
                y = y_new
                t = t_end if landing else t + H
                self.stats.accepted += 1
                last_rejected, failure = False, ""
                f0 = self._derivative(t, y)
        return y

    def _next_size(self, t: DD, t_end: DD, span: float, failure: str, y: DD):
        """The next macro step (a 0-d DD) and whether it lands on ``t_end``."""
        remaining = t_end - t
        H_float = min(self.H, 4 * span)
        landing = H_float >= 0.999 * float(remaining)
        if landing:
            H = remaining
        else:
            if 2 * H_float > float(remaining):  # two roughly equal steps to the end
                H_float = float(remaining) / 2
            H = DD(np.float64(H_float))
        if float(H) <= max(self.tol * span, abs(float(t)) * _TIME_RESOLUTION):
            why = failure or "the local error test cannot be met"
            size = float(np.max(np.abs(y.hi[:, self.blocks[0]])))
            raise IntegrationError(
                f"high-precision integration failed at t = {float(t):.17g}: the step size "
                f"underflowed to {float(H):.3g} ({why}; max |z| = {size:.3g}); does the "
                "solution blow up or leave the domain of f, or is the tolerance below what "
                "double-double arithmetic resolves?",
                t=float(t), cause=f"step size underflow: {why}")
        return H, landing
