"""Convergence studies: a method's error against a reference as the step or tolerance
shrinks, and the observed order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from numeric import (
    IntegrationError,
    MethodUnavailable,
    UnresolvedGrid,
    check_solver_options,
    compute_gradient,
)
from numeric._checks import check_problem
from numeric._finite import check_loss_on_path
from numeric._gradient import check_method

from . import _references
from ._nonsmooth import unique_kinks
from ._quiet import quiet_numerics
from ._references import term_scale
from ._report import BLOCKS
from ._tolerances import ROUNDING, block_error

__all__ = ["ORDER_TOLERANCE", "ConvergenceStudy", "convergence_study"]

#: An observed order counts as the method's order within this margin: the fitted slope of
#: a method of order q on a handful of step halvings carries O(h) corrections of a few
#: tenths.
ORDER_TOLERANCE = 0.3
#: Errors below this multiple of ROUNDING are at the rounding floor and are left out of the
#: fit: they no longer follow the truncation error.
FLOOR_MULTIPLE = 100.0
#: Errors above this are not in the asymptotic regime of any method: an order fitted to
#: them means nothing (the convergence study then fails and says so).
ASYMPTOTIC_LIMIT = 0.1


@dataclass(frozen=True)
class ConvergenceStudy:
    """Errors of ``method`` on ``solver`` for a sequence of step counts or tolerances.

    Attributes
    ----------
    method, solver, reference : str
    parameter : {"steps", "rtol"}
    values : ndarray
        The step counts per interval, or the tolerances.
    step_sizes : ndarray
        The largest step ``h`` of each run (fixed step), or the tolerances (adaptive).
    errors : dict of str to ndarray
        Error measure (shared/MATH.md) of each block per run.
    observed_order : float
        Least-squares slope of ``log(max block error)`` against ``log(h)`` (fixed step) or
        ``log(rtol)`` (adaptive), over the runs above the rounding floor.
    expected_order : float
        The method's order for fixed step; 1 (error proportional to rtol) for adaptive.
    """

    method: str
    solver: str
    reference: str
    parameter: str
    values: NDArray
    step_sizes: NDArray
    errors: dict[str, NDArray]
    observed_order: float
    expected_order: float
    used: NDArray = field(repr=False, default_factory=lambda: np.zeros(0, bool))
    #: Kinks the trajectory meets (``info["nonsmooth"]``): past one, every solver converges
    #: only at first order, whatever its order on smooth problems.
    notes: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        """Observed order within :data:`~.ORDER_TOLERANCE` of the expected (at least that much
        for adaptive solves, which may converge faster than proportionally)."""
        if not np.isfinite(self.observed_order) or not self.asymptotic:
            return False
        if self.parameter == "rtol":
            return self.observed_order >= self.expected_order - ORDER_TOLERANCE
        return abs(self.observed_order - self.expected_order) <= ORDER_TOLERANCE

    @property
    def asymptotic(self) -> bool:
        """Every error used in the fit is below :data:`~.ASYMPTOTIC_LIMIT`, and every grid
        resolves the solution (an unresolved one has an infinite error)."""
        if not np.all(np.isfinite(self.max_errors())):
            return False
        worst = self.max_errors()[self.used] if self.used.size else self.max_errors()
        return bool(np.all(worst < ASYMPTOTIC_LIMIT))

    def max_errors(self) -> NDArray:
        return np.max(np.stack([self.errors[b] for b in BLOCKS]), axis=0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "solver": self.solver,
            "reference": self.reference,
            "parameter": self.parameter,
            "values": self.values.tolist(),
            "step_sizes": self.step_sizes.tolist(),
            "errors": {b: e.tolist() for b, e in self.errors.items()},
            "observed_order": self.observed_order,
            "expected_order": self.expected_order,
            "passed": self.passed,
            "notes": list(self.notes),
        }

    def plot(self, path: str) -> None:
        """Draw the errors against the step size (or rtol) on log-log axes to a PNG.

        Needs matplotlib (``pip install 'adjoint-verify[plot]'``); a reference line of the
        expected slope passes through the last point used in the fit.
        """
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
        x = self.step_sizes
        for block, marker in zip(BLOCKS, ("o", "s", "^"), strict=True):
            ax.loglog(x, self.errors[block], marker=marker, label=f"{block} block")
        if np.any(self.used):
            anchor = np.flatnonzero(self.used)[-1]
            y0 = self.max_errors()[anchor]
            guide = y0 * (x / x[anchor]) ** self.expected_order
            ax.loglog(x, guide, "k--", linewidth=1,
                      label=f"slope {self.expected_order:g} (expected)")
        ax.set_xlabel("step size h" if self.parameter == "steps" else "rtol")
        ax.set_ylabel("relative error")
        ax.set_title(f"{self.method} on {self.solver} vs {self.reference}\n"
                     f"observed order {self.observed_order:.2f}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)

    def __str__(self) -> str:
        fixed = self.parameter == "steps"
        lines = [
            f"convergence of {self.method} on {self.solver} toward {self.reference}:",
            f"   {self.parameter:>8} {'h' if fixed else '':>9} {'z0':>9} {'theta':>9} "
            f"{'times':>9}",
        ]
        for i, value in enumerate(self.values):
            cells = " ".join(f"{self.errors[b][i]:9.2e}" for b in BLOCKS)
            if not np.isfinite(self.max_errors()[i]):
                mark = "  (the grid does not resolve the solution)"
            else:
                mark = "" if self.used.size == 0 or self.used[i] else "  (rounding floor)"
            shown = f"{int(value):>8d}" if fixed else f"{value:>8.0e}"
            size = f"{self.step_sizes[i]:9.2e}" if fixed else " " * 9
            lines.append(f"   {shown} {size} {cells}{mark}")
        verdict = "pass" if self.passed else "FAIL"
        lines += [f"   note: {note}: solvers converge only at first order across it"
                  for note in self.notes]
        if not self.asymptotic:
            lines.append(f"   errors above {ASYMPTOTIC_LIMIT:g}: not in the asymptotic regime, "
                         "so the fitted order means nothing; use smaller steps or tolerances")
        lines.append(
            f"   observed order {self.observed_order:.2f}, expected {self.expected_order:g} "
            f"(within {ORDER_TOLERANCE}): {verdict}"
        )
        return "\n".join(lines)


def _fit_slope(x: NDArray, y: NDArray) -> float:
    if len(x) < 2:
        return float("nan")
    slope, _ = np.polyfit(np.log(x), np.log(y), 1)
    return float(slope)


@quiet_numerics
def convergence_study(
    dynamics,
    z0,
    theta,
    times,
    *,
    loss,
    method: str = "discrete_adjoint",
    solver: str = "rk4",
    steps: Sequence[int] = (4, 8, 16, 32),
    rtols: Sequence[float] = (1e-4, 1e-5, 1e-6, 1e-7, 1e-8),
    reference: str | None = None,
    targets=(),
    data=None,
) -> ConvergenceStudy:
    """Run ``method`` over a sequence of step counts (fixed-step ``solver``) or tolerances
    (``dopri5``, with ``atol = rtol / 100``) and fit the observed order against a reference.

    The reference is ``exact`` where it applies, else ``high_precision``, else forward
    sensitivity at rtol = 1e-13 (the audit's ladder); ``reference=`` picks one by name.

    Returns
    -------
    ConvergenceStudy
        With ``observed_order`` and ``passed``.
    """
    checked = check_problem(dynamics, loss, z0, theta, times, targets=targets, data=data)
    compiled, z0, theta, times, data = (
        checked.compiled, checked.z0, checked.theta, checked.times, checked.data
    )
    method = check_method(method)
    check_loss_on_path(compiled, z0, theta, times, data)
    ref, ref_label = _reference(compiled, z0, theta, times, reference, data)
    terms = term_scale(compiled, z0, theta, times, data)
    adaptive = solver == "dopri5"  # rodas4 studies its fixed-step mode, as the others
    values = np.array(rtols if adaptive else steps, dtype=float)
    errors: dict[str, list[float]] = {b: [] for b in BLOCKS}
    sizes = []
    notes = list(ref.info.get("nonsmooth", ()))
    for value in values:
        if adaptive:
            options = check_solver_options(solver, steps=None, rtol=float(value),
                                           atol=float(value) / 100, max_steps=100_000)
            sizes.append(value)
        else:
            options = check_solver_options(solver, steps=int(value), rtol=None, atol=None,
                                           max_steps=100_000)
            sizes.append(float(np.max(np.diff(times))) / int(value))
        try:
            g = compute_gradient(compiled, z0, theta, times, method, options, data=data)
        except UnresolvedGrid:  # no correct digit on this grid: an infinite error
            for b in BLOCKS:
                errors[b].append(float("inf"))
            continue
        for b in BLOCKS:
            errors[b].append(block_error(getattr(g, b), getattr(ref, b), terms[b]))
        notes = unique_kinks([*notes, *g.info.get("nonsmooth", ())])
    err = {b: np.array(e) for b, e in errors.items()}
    worst = np.max(np.stack(list(err.values())), axis=0)
    used = (worst > FLOOR_MULTIPLE * ROUNDING) & np.isfinite(worst)
    sizes_arr = np.array(sizes)
    order = _fit_slope(sizes_arr[used], worst[used])
    return ConvergenceStudy(
        method=method,
        solver=solver,
        reference=ref_label,
        parameter="rtol" if adaptive else "steps",
        values=values,
        step_sizes=sizes_arr,
        errors=err,
        observed_order=order,
        expected_order=1.0 if adaptive else float(options.tableau.order),
        used=used,
        notes=tuple(notes),
    )


def _reference(compiled, z0, theta, times, name, data):
    ladder = [name] if name is not None else ["exact", "high_precision", "forward_sensitivity"]
    reasons = []
    for candidate in ladder:
        candidate = check_method(candidate)
        options = check_solver_options("dopri5", steps=None, rtol=1e-13, atol=1e-15,
                                       max_steps=_references.TIGHT_MAX_STEPS)
        try:
            g = compute_gradient(compiled, z0, theta, times, candidate, options, data=data)
        except (MethodUnavailable, IntegrationError) as exc:
            reasons.append(str(exc))
            continue
        label = candidate if candidate != "forward_sensitivity" else "forward_sensitivity@1e-13"
        return g, label
    raise MethodUnavailable("reference", "; ".join(reasons))
