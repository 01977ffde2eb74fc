"""``audit``: every applicable gradient method against the best reference available.

In three steps: plan (which methods, on which solver), compute (every gradient, the
references, the term scales) and compare (one row per block and comparison, MATH.md,
"Error measure").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from numeric import (
    CONTINUOUS_METHODS,
    FIXED_STEP_SOLVERS,
    METHODS,
    Gradient,
    InputError,
    IntegrationError,
    MethodUnavailable,
    check_solver_options,
    compute_gradient,
)
from numeric._checks import SolverOptions, check_problem
from numeric._directional import complex_step_directional, finite_difference_directional
from numeric._finite import check_loss_on_path
from numeric._gradient import check_method, frozen_grid
from numeric._stiffness import is_stiff

from ._diagnose import diagnose
from ._frozen_grid import frozen_grid_error
from ._nonsmooth import nonsmooth_notes, nonsmooth_reason
from ._problems import Problem
from ._quiet import quiet_numerics
from ._references import ReferenceGradient, best_reference, check_strategy, term_scale
from ._report import (
    BLOCKS,
    REFERENCE_KINDS,
    ProblemSummary,
    Report,
    Row,
    Skipped,
    entry_label,
)
from ._scale import DEFAULT_SEED as DIRECTIONAL_SEED
from ._scale import per_entry_affordable, random_directions
from ._tolerances import (
    FINITE_DIFFERENCE,
    ROUNDING,
    block_error,
    check_measure,
    compare_block,
    entry_scales,
    solver_tolerance,
)

__all__ = ["AUDIT_ATOL", "AUDIT_RTOL", "audit", "audit_problem"]

#: Default tolerances of the solver under audit: tight, so that a correct continuous
#: method lands within solver_tolerance(1e-10) ~ 1e-7 of the exact gradient.
AUDIT_RTOL = 1e-10
AUDIT_ATOL = 1e-12
#: For fixed-step solvers the tolerance of a continuous method is this multiple of the
#: discretization error, estimated by Richardson extrapolation of the discrete adjoint on
#: `steps` and `2 steps` (methods of the same order share the leading error term within a
#: small factor).
ORDER_SAFETY = 10.0
#: A fixed-step grid is too coarse to audit when the tolerance its discretization error
#: allows exceeds this (relative): a looser tolerance would pass a wrong gradient (a scale
#: error of a few percent, or worse).
COARSE_LIMIT = 1e-2
#: ... or when the discrete adjoint on steps, 2 steps, 4 steps does not converge at the
#: method's order within this margin: the Richardson estimate then means nothing.
ORDER_MARGIN = 0.5
#: A finite-difference entry may deviate by this multiple of its own error estimate: the
#: step-doubling estimate of the truncation error is asymptotically exact, the rounding
#: bound is a worst case, so a factor 10 covers both without hiding a real disagreement.
FD_SAFETY = 10.0
#: The continuous methods that read z(t) from the forward solve's dense output, and the
#: order of the cubic Hermite interpolation between steps that fixed-step solvers without a
#: continuous extension of their own get (numeric/_rk.py, Segment.evaluate).
_DENSE_OUTPUT_METHODS = ("interpolated_adjoint", "quadrature_adjoint")
HERMITE_ORDER = 4
#: Why an audit of stiff dynamics leaves out the high-precision row unless asked for it.
STIFF_HIGH_PRECISION = (
    "stiff dynamics: the stable (linearly implicit) high-precision extrapolation takes "
    "minutes here, and the verdicts need no more than the reference used; ask for it with "
    "methods=[..., 'high_precision']"
)
#: The methods whose results are references rather than rows of their own.
_REFERENCE_METHODS = ("exact", "high_precision")
#: Methods that differentiate the solver's discrete map on the frozen grid.
_FROZEN = ("discrete_adjoint", "complex_step")


@quiet_numerics
def audit(
    dynamics,
    z0,
    theta,
    times,
    *,
    loss,
    solver: str = "dopri5",
    rtol: float | None = None,
    atol: float | None = None,
    steps: int | None = None,
    methods: Sequence[str] | None = None,
    name: str = "problem",
    description: str = "",
    targets=(),
    data=None,
    measure: str = "componentwise",
    strategy: str = "auto",
) -> Report:
    """Run every applicable gradient method and compare each block with a reference.

    The continuous reference is the most accurate available: ``exact`` (linear autonomous
    dynamics), else ``high_precision`` (small smooth systems), else forward sensitivity at
    rtol = 1e-13 (with an estimated error). Continuous methods are held to
    ``solver_tolerance(rtol)`` (fixed-step solvers: a multiple of the discretization
    error; the discrete map on dopri5's frozen grid: at least its own estimated
    discretization error), the discrete adjoint to ``ROUNDING`` against complex step on
    the same frozen grid, and finite differences to ``FINITE_DIFFERENCE`` or their own error
    estimate (verification/_tolerances.py). Every entry is held to the tolerance on its own
    scale (``measure``, MATH.md "Error measure"). The references needed for the rows asked
    for are computed whether or not they are listed in ``methods``.

    Parameters
    ----------
    dynamics : symbolic.Dynamics
    z0 : array_like, shape (B, n) or (n,)
    theta : array_like, shape (p,)
    times : array_like, shape (N+1,)
    loss : sympy.Expr
    solver : str
        The solver under audit (default ``dopri5`` at rtol=1e-10, atol=1e-12).
    rtol, atol, steps
        Its options (see :func:`numeric.gradient`).
    methods : sequence of str, optional
        The methods to audit (default: all).
    name, description : str
        How the report names the problem.
    targets, data
        Data symbols of the loss and their values at ``times[1:]`` (see
        :func:`numeric.gradient`).
    measure : {"componentwise", "normwise"}
        ``componentwise`` (default): every entry on its own scale; ``normwise``: each
        block's 2-norm. The report names the measure.
    strategy : {"auto", "per-entry", "directional"}
        Per-entry references where they are affordable (``auto``), or at network size
        (or asked for) the interpolated adjoint at rtol 1e-12 certified along random
        directions as the continuous reference, and complex step and finite differences
        along random directions as the discrete ones.

    Returns
    -------
    Report
        ``passed`` is False when any comparison fails; a method that cannot serve the
        problem is listed in ``skipped`` with the reason.

    Raises
    ------
    numeric.InputError
        Malformed inputs, an unknown ``measure``, or ``methods`` that leave nothing to
        compare.
    numeric.IntegrationError
        The loss (or its gradient) is not finite at an observed state: undefined there
        (``log`` of a negative number) or beyond float64's range.
    """
    checked = check_problem(dynamics, loss, z0, theta, times, targets=targets, data=data)
    check_loss_on_path(checked.compiled, checked.z0, checked.theta, checked.times,
                       checked.data)
    measure = check_measure(measure)
    options = _solver_options(solver, rtol, atol, steps)
    wanted = _plan(methods)
    problem = _Inputs(checked.compiled, checked.z0, checked.theta, checked.times, checked.data,
                      options)
    strategy = check_strategy(strategy)
    directional = strategy == "directional" or (
        strategy == "auto" and not per_entry_affordable(problem.compiled, problem.z0))
    report = Report()
    stiff = is_stiff(problem.compiled, problem.z0, problem.theta, problem.times)
    if stiff and methods is None:
        wanted.discard("high_precision")
        report.skipped.append(Skipped(name, "high_precision", STIFF_HIGH_PRECISION))
    computed = _compute(problem, wanted, directional)
    reference = None
    try:
        # on stiff dynamics the reference need only be as accurate as the verdict: mpmath
        # extrapolation that is stable there (linearly implicit) is far slower than rodas4
        accuracy = (solver_tolerance(options.rtol, options.atol)
                    if options.tableau.adaptive and stiff else None)
        reference = best_reference(problem.compiled, problem.z0, problem.theta, problem.times,
                                   data=problem.data, known=computed.results,
                                   accuracy=accuracy,
                                   strategy="directional" if directional else "per-entry")
    except IntegrationError as exc:
        report.skipped.append(Skipped(name, "reference", f"no reference could be built: {exc}"))
    usable = reference
    if reference is not None and (reference.caveat or reference.error > COARSE_LIMIT):
        why = reference.caveat or f"its estimated error is {reference.error:.1e}"
        report.skipped.append(Skipped(
            name, "reference", f"no continuous comparison: {reference.label}, the best "
            f"reference available, cannot certify a verdict: {why}"))
        usable = None
    terms = term_scale(problem.compiled, problem.z0, problem.theta, problem.times,
                       problem.data, known=computed.results, reference=reference)
    rows = _Rows(report, computed, terms, measure, name, problem)
    notes = _compare(rows, problem, computed, wanted, usable)
    if usable is not None:
        report.skipped.extend(usable.not_compared(name))
    _list_leftovers(report, computed, wanted, name)
    if not report.rows:
        reasons = "; ".join(f"{s.method}: {s.reason}" for s in report.skipped)
        if methods is None:  # every method asked for, none comparable here
            raise MethodUnavailable("audit", f"no method can be compared with a reference on "
                                    f"this problem. {reasons}")
        raise InputError(
            f"`methods`={sorted(wanted)} leaves nothing to compare: 'exact' and "
            "'high_precision' are references (together they check each other), and "
            "'complex_step' is the reference of 'discrete_adjoint' and 'finite_difference'; "
            "add a method to audit." + (f" Not applicable here: {reasons}" if reasons else "")
        )
    compiled = problem.compiled
    report.problems.append(ProblemSummary(
        name=name,
        description=description,
        shape=f"n={compiled.n}, p={compiled.p}, batch B={problem.z0.shape[0]}, "
              f"N={len(problem.times) - 1} observations",
        solver=options.describe(),
        reference=reference.describe() if reference else "none available",
        notes=(*notes, *nonsmooth_notes(computed.results, reference)),
        measure=measure,
    ))
    return report


@dataclass(frozen=True)
class _Inputs:
    """The checked problem and the solver under audit."""

    compiled: object
    z0: NDArray
    theta: NDArray
    times: NDArray
    data: NDArray | None
    options: SolverOptions


@dataclass
class _Computed:
    """Every gradient computed, every solve that failed and every method that does not
    apply (with the reason), by method name."""

    results: dict[str, Gradient] = field(default_factory=dict)
    failures: dict[str, IntegrationError] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)

    def ran(self, method: str) -> bool:
        return method in self.results or method in self.failures


def _solver_options(solver, rtol, atol, steps) -> SolverOptions:
    if steps is None and solver not in FIXED_STEP_SOLVERS:  # adaptive (rodas4 also takes
        # steps=, its fixed-step mode; an unknown name: check_solver_options says)
        rtol = AUDIT_RTOL if rtol is None else rtol
        atol = AUDIT_ATOL if atol is None else atol
    return check_solver_options(solver, steps=steps, rtol=rtol, atol=atol, max_steps=10_000)


def _plan(methods) -> set[str]:
    """The methods asked for, checked; complex step joins as the discrete reference."""
    methods = list(METHODS if methods is None else methods)
    if not methods:
        raise InputError("`methods` is empty; name at least one method, or pass None for all.")
    return {check_method(m) for m in methods}


#: Why the per-entry methods are not run under the directional strategy.
PER_ENTRY_REPLACED = ("per entry beyond the directional strategy's budget (every entry a "
                      "solve or a sensitivity): checked along random directions instead")


def _compute(problem: _Inputs, wanted: set[str], directional: bool = False) -> _Computed:
    """Every method wanted, and complex step where a discrete method needs it; under the
    directional strategy the per-entry ones are listed as replaced."""
    computed = _Computed()
    order = ("exact", "high_precision", *CONTINUOUS_METHODS, "discrete_adjoint",
             "complex_step", "finite_difference")
    needed = [m for m in order if m in wanted]
    if wanted & {"discrete_adjoint", "finite_difference"} and "complex_step" not in needed:
        needed.append("complex_step")
    for method in needed:
        if directional and method in ("complex_step", "finite_difference",
                                      "forward_sensitivity", "high_precision"):
            computed.unavailable[method] = PER_ENTRY_REPLACED
            continue
        options = None if method in _REFERENCE_METHODS else problem.options
        stiff_failure = next((f for f in computed.failures.values() if f.cause == "stiff"),
                             None)
        if options is not None and stiff_failure is not None:
            computed.failures[method] = stiff_failure  # the same explicit solver fails alike
            continue
        try:
            computed.results[method] = compute_gradient(
                problem.compiled, problem.z0, problem.theta, problem.times, method, options,
                data=problem.data)
        except MethodUnavailable as exc:
            computed.unavailable[method] = exc.reason
        except IntegrationError as exc:
            computed.failures[method] = exc
    return computed


#: A per-block tolerance: a number, or ``tolerance(block, g, ref)`` giving a number or an
#: array of the block's shape (a tolerance per entry).
Tolerance = float | Callable[[str, Gradient, Gradient], "float | NDArray"]


@dataclass
class _Rows:
    """Appends the rows of one comparison to the report."""

    report: Report
    computed: _Computed
    terms: dict[str, NDArray]
    measure: str
    name: str
    problem: _Inputs

    def add(self, method: str, ref_name: str, ref: Gradient, tolerance: Tolerance, kind: str,
            *, force_fail: str = "", skip: Mapping[str, str] | None = None) -> None:
        """Rows of ``method`` against ``ref``; ``force_fail`` fails every row with that
        diagnosis (a comparison that cannot be made meaningful); the blocks in ``skip``
        (those the reference cannot certify) get no row."""
        g = self.computed.results.get(method)
        compiled = self.problem.compiled
        for block in BLOCKS:
            if skip and block in skip:
                continue
            if g is None:
                self.report.rows.append(Row(
                    block=block, method=method, reference=ref_name, error=math.inf,
                    tolerance=math.nan, passed=False, reference_kind=kind, problem=self.name,
                    diagnosis=f"the solve failed, so no gradient was computed: "
                              f"{self.computed.failures[method]}",
                ))
                continue
            tol = tolerance(block, g, ref) if callable(tolerance) else tolerance
            value, expected = getattr(g, block), getattr(ref, block)
            verdict = compare_block(value, expected, self.terms[block], rtol=tol,
                                    measure=self.measure)
            passed = verdict.passed and not force_fail
            text = "" if passed else force_fail or diagnose(
                block, value, expected, method=method, info=g.info,
                batch=self.problem.z0.shape[0], observations=len(self.problem.times) - 1,
                error=verdict.error, worst=verdict.index,
                state_names=tuple(compiled.state_names),
                param_names=tuple(compiled.param_names),
            )
            self.report.rows.append(Row(
                block=block, method=method, reference=ref_name, error=verdict.error,
                tolerance=verdict.tolerance, passed=passed, diagnosis=text,
                reference_kind=kind, problem=self.name,
                entry=entry_label(block, verdict.index, np.shape(value),
                                  state_names=tuple(compiled.state_names),
                                  param_names=tuple(compiled.param_names)),
            ))


def _compare(rows: _Rows, problem: _Inputs, computed: _Computed, wanted: set[str],
             reference: ReferenceGradient | None) -> list[str]:
    """Every comparison the methods asked for allow; returns notes for the summary."""
    notes: list[str] = []
    results = computed.results
    exact_kind, discrete_kind = REFERENCE_KINDS["exact"], REFERENCE_KINDS["discrete"]
    if reference is not None:
        if reference.label == "exact" and "high_precision" in results and (
            wanted & set(_REFERENCE_METHODS)
        ):
            rows.add("high_precision", "exact", reference.gradient, ROUNDING, exact_kind)
        continuous = [m for m in (*CONTINUOUS_METHODS, "discrete_adjoint") if m in wanted]
        if "complex_step" in wanted and "discrete_adjoint" not in wanted:
            continuous.append("complex_step")
        continuous = [m for m in continuous if computed.ran(m)]
        for method in [m for m in continuous if m in results]:
            reason = nonsmooth_reason(method, problem.options, results, reference)
            if reason:  # first-order convergence past a kink: not the method's fault
                rows.report.skipped.append(Skipped(rows.name, method, reason))
                continuous.remove(method)
        coarse = ""
        if continuous:  # the fixed-step estimate costs three solves: only when needed
            tolerance, coarse = _continuous_tolerance(problem, reference, rows.terms,
                                                      rows.measure)
        for method in continuous:
            tableau = problem.options.tableau
            if method in _DENSE_OUTPUT_METHODS and not tableau.adaptive and (
                tableau.dense is None and tableau.order > HERMITE_ORDER
            ) and method in results:
                rows.report.skipped.append(Skipped(rows.name, method, (
                    f"{tableau.name} has order {tableau.order} but its dense output is cubic "
                    f"Hermite interpolation, accurate to O(h^{HERMITE_ORDER}): that error "
                    "dominates, and the tolerance estimated from the solver's order would "
                    "fail a correct method; audit it with dopri5 or a solver of order <= 4")))
                continue
            if coarse and method in results:
                rows.report.skipped.append(Skipped(rows.name, method, coarse))
                continue
            if method in _FROZEN and problem.options.tableau.adaptive and method in results:
                tol = _FrozenGridTolerance(problem, reference, rows.terms, rows.measure,
                                           tolerance, computed)
                rows.add(method, reference.label, reference.gradient, tol, exact_kind,
                         skip=reference.uncertified)
                if tol.note:
                    notes.append(tol.note)
            else:
                start = len(rows.report.rows)
                rows.add(method, reference.label, reference.gradient, tolerance, exact_kind,
                         skip=reference.uncertified)
                note = _confirm_by_convergence(rows, problem, method, reference, tolerance,
                                               start)
                if note:
                    notes.append(note)

    discrete_ref = results.get("complex_step")
    fd_tolerance = _finite_difference_tolerance(rows.terms, rows.measure)
    if discrete_ref is None and "complex_step" in computed.unavailable and (
            "budget" in computed.unavailable["complex_step"]) and (
            computed.ran("discrete_adjoint") or "finite_difference" in wanted):
        notes.extend(_directional_discrete_rows(rows, problem, computed, wanted, reference))
        return notes
    if discrete_ref is not None:
        if computed.ran("discrete_adjoint"):
            rows.add("discrete_adjoint", "complex_step", discrete_ref, ROUNDING, discrete_kind)
        if computed.ran("finite_difference"):
            rows.add("finite_difference", "complex_step", discrete_ref, fd_tolerance,
                     discrete_kind)
    elif "discrete_adjoint" in results and "finite_difference" in results:
        rows.add("discrete_adjoint", "finite_difference", results["finite_difference"],
                 lambda block, g, ref: fd_tolerance(block, ref, g),
                 REFERENCE_KINDS["finite_difference"])
    return notes


#: An adaptive continuous method that misses the solver tier is solved again with rtol and
#: atol divided by this; it is correct, and the problem's error constant merely exceeds
#: SOLVER_ERROR_GROWTH at this rtol, when its error falls by at least CONVERGENCE_DROP and
#: lands within the tolerance. A wrong method (a missing term, a sign) keeps its error.
CONVERGENCE_TIGHTENING = 100.0
#: The least factor by which that second solve's error must fall.
CONVERGENCE_DROP = 10.0
#: The tightest rtol the confirmation solves at (float64 rounding below it).
CONVERGENCE_MIN_RTOL = 1e-13


def _confirm_by_convergence(rows: _Rows, problem: _Inputs, method: str,
                            reference: ReferenceGradient, tolerance, start: int) -> str:
    """Where ``method``'s rows from ``start`` on fail the solver tier only, solve again at a
    tighter rtol: if the error falls by CONVERGENCE_DROP to within the tolerance the method
    converges to the reference, and its rows pass with a note saying so; else they stay
    failed. Returns the note ("" where nothing was confirmed)."""
    options = problem.options
    failed = [k for k in range(start, len(rows.report.rows))
              if not rows.report.rows[k].passed and math.isfinite(rows.report.rows[k].error)]
    if not failed or not options.tableau.adaptive or method not in CONTINUOUS_METHODS:
        return ""
    rtol = options.rtol / CONVERGENCE_TIGHTENING
    if rtol < CONVERGENCE_MIN_RTOL:
        return ""
    tight = check_solver_options(options.name, steps=None, rtol=rtol,
                                 atol=options.atol / CONVERGENCE_TIGHTENING,
                                 max_steps=options.max_steps * 10)
    try:
        g = compute_gradient(problem.compiled, problem.z0, problem.theta, problem.times,
                             method, tight, data=problem.data)
    except (IntegrationError, MethodUnavailable):
        return ""
    confirmed = []
    for k in failed:
        row = rows.report.rows[k]
        tol = tolerance(row.block, g, reference.gradient) if callable(tolerance) else tolerance
        again = compare_block(getattr(g, row.block), getattr(reference.gradient, row.block),
                              rows.terms[row.block], rtol=tol, measure=rows.measure)
        if not (again.passed and again.error * CONVERGENCE_DROP <= row.error):
            return ""  # one block that does not converge: every failure stands
        confirmed.append((k, again))
    parts = []
    tier = rows.report.rows[failed[0]].tolerance
    compiled = problem.compiled
    for k, again in confirmed:
        row = rows.report.rows[k]
        # the row shows the confirming solve (its error is within the tolerance); the note
        # keeps the error at the audit's rtol
        rows.report.rows[k] = replace(
            row, passed=True, diagnosis="", error=again.error, tolerance=again.tolerance,
            entry=entry_label(row.block, again.index, np.shape(getattr(g, row.block)),
                              state_names=tuple(compiled.state_names),
                              param_names=tuple(compiled.param_names)))
        parts.append(f"{row.block} {row.error:.1e} -> {again.error:.1e}")
    return (f"{method} misses the tier {tier:.0e} at rtol {options.rtol:.0e} but converges "
            f"to the reference ({', '.join(parts)} at rtol {rtol:.0e}, shown in its rows): the "
            "problem's error constant exceeds the tier, the method is right")


#: Random directions per block for the discrete rows at network size (complex step and
#: finite differences along each: a few replays, not one per entry).
DISCRETE_DIRECTIONS_PER_BLOCK = 2


def _directional_discrete_rows(rows: _Rows, problem: _Inputs, computed: _Computed,
                               wanted: set[str], reference) -> list[str]:
    """At network size, where complex step and finite differences per entry exceed their
    budget: the discrete adjoint against complex step, and finite differences against it,
    along random directions ``xi / s`` per block (``s`` every entry's scale). A direction's
    error is ``|v^T g - d| / sum_j |v_j| s_j``, the deviation on the scale of the sum."""
    compiled, options = problem.compiled, problem.options
    grid = frozen_grid(compiled, problem.z0, problem.theta, problem.times, options)
    base = reference.gradient if reference is not None else computed.results.get(
        "discrete_adjoint")
    if base is None:
        return []
    scales = {b: entry_scales(getattr(base, b), rows.terms[b]).reshape(np.shape(rows.terms[b]))
              for b in BLOCKS}
    rng = np.random.default_rng(DIRECTIONAL_SEED)
    named = random_directions(compiled, scales, rng, DISCRETE_DIRECTIONS_PER_BLOCK)
    kind = REFERENCE_KINDS["discrete"]
    label = f"complex_step along {len(named)} directions"
    try:
        cs = [complex_step_directional(compiled, problem.z0, problem.theta, problem.times,
                                       grid, options.tableau, v, data=problem.data)
              for _, v in named]
    except (MethodUnavailable, IntegrationError) as exc:
        rows.report.skipped.append(Skipped(rows.name, "complex_step (directional)", str(exc)))
        return []
    da = computed.results.get("discrete_adjoint")
    fd = None
    if "finite_difference" in wanted:
        try:
            fd = [finite_difference_directional(compiled, problem.z0, problem.theta,
                                                problem.times, grid, options.tableau, v,
                                                data=problem.data) for _, v in named]
        except (MethodUnavailable, IntegrationError) as exc:
            rows.report.skipped.append(Skipped(rows.name, "finite_difference (directional)",
                                               str(exc)))
    for block in BLOCKS:
        picks = [k for k, (name, _) in enumerate(named) if _block_of(name) == block]
        for method, values, tolerance in (
            ("discrete_adjoint", None, ROUNDING),
            ("finite_difference (directional)", fd, None),
        ):
            if method == "discrete_adjoint" and da is None:
                continue
            if method != "discrete_adjoint" and values is None:
                continue
            worst, worst_k, worst_tol = -1.0, None, ROUNDING
            for k in picks:
                v = named[k][1]
                size = sum(float(np.sum(np.abs(getattr(v, b)) * scales[b])) for b in BLOCKS)
                got = (v.dot(da.z0, da.theta, da.times) if method == "discrete_adjoint"
                       else values[k].value)
                error = abs(got - cs[k].value) / max(size, np.finfo(float).tiny)
                tol = tolerance if tolerance is not None else max(
                    FINITE_DIFFERENCE, FD_SAFETY * values[k].error / max(size, 1e-300))
                if error / tol > worst / worst_tol:
                    worst, worst_k, worst_tol = error, k, tol
            if worst_k is None:
                continue
            passed = worst <= worst_tol
            rows.report.rows.append(Row(
                block=block, method=method, reference=label, error=worst,
                tolerance=worst_tol, passed=passed, reference_kind=kind, problem=rows.name,
                entry=f"direction {worst_k} ({named[worst_k][0]})",
                diagnosis="" if passed else (
                    f"along direction {worst_k} (moving {named[worst_k][0]}) the derivative "
                    f"of the discrete map differs from complex step by {worst:.1e} of its "
                    "scale"),
            ))
    for method in ("complex_step", "finite_difference"):
        if "budget" in computed.unavailable.get(method, ""):
            computed.unavailable.pop(method)
    return [f"complex step and finite differences per entry exceed their budget at this "
            f"size: checked along {len(named)} random directions instead "
            f"({DISCRETE_DIRECTIONS_PER_BLOCK} per block, seed {DIRECTIONAL_SEED})"]


def _block_of(name: str) -> str:
    return name if name in ("z0", "times") else "theta"


def _list_leftovers(report: Report, computed: _Computed, wanted: set[str], name: str) -> None:
    """Methods that do not apply, and failed solves with no reference to compare with."""
    for method in sorted(wanted):
        if method in computed.unavailable:
            report.skipped.append(Skipped(name, method, computed.unavailable[method]))
        if method in computed.failures and not any(r.method == method for r in report.rows):
            for block in BLOCKS:  # no reference to compare with: the failure is the row
                report.rows.append(Row(
                    block=block, method=method, reference="-", error=math.inf,
                    tolerance=math.nan, passed=False, problem=name,
                    diagnosis=f"the solve failed, so no gradient was computed: "
                              f"{computed.failures[method]}",
                ))


def _relative(absolute: NDArray, ref_block: NDArray, terms: NDArray, measure: str):
    """An absolute error per entry as a relative tolerance on each entry's scale (an array),
    or on the block's scale (a number) for the normwise measure."""
    if measure == "normwise":
        scale = max(float(np.linalg.norm(ref_block)), float(np.linalg.norm(terms)),
                    np.finfo(float).tiny)
        return float(np.linalg.norm(absolute)) / scale
    return np.asarray(absolute, dtype=float) / entry_scales(ref_block, terms)


def _finite_difference_tolerance(terms: dict[str, NDArray], measure: str):
    """Per-entry tolerance of a finite-difference gradient: ``FINITE_DIFFERENCE``, or
    ``FD_SAFETY`` times the method's own error estimate (truncation from step doubling plus
    rounding, MATH.md) relative to the entry's scale, whichever is larger: an entry the
    differences cannot resolve (nearly zero, or a loss much larger than its gradient) gets
    the tolerance the differences can deliver."""

    def tolerance(block: str, fd: Gradient, ref: Gradient):
        estimate = fd.info.get("error_estimate", {}).get(block)
        if estimate is None:
            return FINITE_DIFFERENCE
        ref_block = getattr(ref, block)
        estimate = np.broadcast_to(np.asarray(estimate, dtype=float), np.shape(ref_block))
        return np.maximum(FINITE_DIFFERENCE,
                          FD_SAFETY * _relative(estimate, ref_block, terms[block], measure))

    return tolerance


class _FrozenGridTolerance:
    """Tolerance of the discrete map on dopri5's frozen grid against the continuous
    reference: ``solver_tolerance(rtol)``, or, where an entry exceeds it, at least the
    grid's own discretization error as estimated from the grid with every step halved
    (:func:`frozen_grid_error`), computed only then. On a grid graded toward a singularity
    of ``f`` (``sqrt(t)`` near ``t = 0``) the derivative in ``t_0`` of the frozen grid's
    error is far above the tolerance the forward solve controls."""

    def __init__(self, problem: _Inputs, reference: ReferenceGradient, terms, measure: str,
                 base: float, computed: _Computed):
        self.problem, self.reference, self.terms, self.measure = problem, reference, terms, measure
        self.base, self.computed = base, computed
        self.estimate: dict[str, NDArray] | None = None
        self.note = ""

    def __call__(self, block: str, g: Gradient, ref: Gradient):
        verdict = compare_block(getattr(g, block), getattr(ref, block), self.terms[block],
                                rtol=self.base, measure=self.measure)
        if verdict.passed:
            return self.base
        if self.estimate is None:
            p = self.problem
            try:
                self.estimate, source = frozen_grid_error(
                    p.compiled, p.z0, p.theta, p.times, p.options, data=p.data,
                    known=self.computed.results)
            except (IntegrationError, MethodUnavailable) as exc:
                self.estimate = {}
                self.note = f"the frozen grid's discretization error could not be estimated: {exc}"
                return self.base
            self.note = (
                "where the discrete map on the frozen grid is further than "
                f"{self.base:.0e} from the continuous gradient, it is held to "
                f"{FROZEN_GRID_SAFETY:g} times its own discretization error, estimated from "
                f"{source} on the grid with every step halved (Richardson)"
            )
        if block not in self.estimate:
            return self.base
        ref_block = getattr(ref, block)
        grid = _relative(self.estimate[block], ref_block, self.terms[block], self.measure)
        return np.maximum(self.base, FROZEN_GRID_SAFETY * grid + self.reference.error)


#: The frozen grid's Richardson estimate is asymptotically exact (the same grid, every step
#: halved, the error drops by 2^q): a factor 2 covers the higher-order terms. It is not the
#: ORDER_SAFETY of fixed-step grids, which transfers one method's estimate to another.
FROZEN_GRID_SAFETY = 2.0


def _continuous_tolerance(problem: _Inputs, reference: ReferenceGradient,
                          terms: dict[str, NDArray], measure: str) -> tuple[float, str]:
    """Tolerance for a continuous method (or the discrete adjoint) against the continuous
    reference, and a reason the comparison cannot be made ("" when it can).

    Adaptive solver: ``solver_tolerance(rtol, atol)``. Fixed-step solver: ``ORDER_SAFETY``
    times the Richardson estimate of the discretization error from the discrete adjoint on
    ``steps`` and ``2 steps``; if that estimate exceeds ``COARSE_LIMIT``, or ``steps``,
    ``2 steps``, ``4 steps`` do not converge at the method's order, the grid is too coarse
    to audit anything.
    """
    options = problem.options
    if options.tableau.adaptive:
        return solver_tolerance(options.rtol, options.atol) + reference.error, ""
    try:
        runs = _refined_runs(problem)
    except (IntegrationError, MethodUnavailable) as exc:
        return math.inf, f"the discretization error cannot be estimated: {exc}"

    def distance(a, b):
        return max(block_error(getattr(a, blk), getattr(b, blk), terms[blk], measure=measure)
                   for blk in BLOCKS)

    q = options.tableau.order
    first, second = distance(runs[0], runs[1]), distance(runs[1], runs[2])
    estimate = first * 2**q / (2**q - 1)
    tolerance = ORDER_SAFETY * estimate + ROUNDING + reference.error
    if tolerance > COARSE_LIMIT:
        return tolerance, (
            f"{options.describe()} is too coarse to audit: the estimated "
            f"discretization error is {estimate:.1e} (relative), and a tolerance of "
            f"{tolerance:.0e} would pass a wrong gradient; use more steps"
        )
    if second > 100 * ROUNDING:
        observed = math.log2(first / second) if second > 0 else math.inf
        if abs(observed - q) > ORDER_MARGIN:
            return tolerance, (
                f"{options.describe()} is not in the asymptotic regime: the "
                f"discrete adjoint converges at observed order {observed:.2f} where "
                f"{options.name} has order {q}, so the error estimate cannot be trusted; use "
                "more steps"
            )
    return tolerance, ""


def _refined_runs(problem: _Inputs) -> list[Gradient]:
    """The discrete adjoint (else forward sensitivity) on steps, 2 steps, 4 steps."""
    options = problem.options

    def runs_of(method: str) -> list[Gradient]:
        out = []
        for factor in (1, 2, 4):
            finer = check_solver_options(options.name, steps=factor * options.steps,
                                         rtol=None, atol=None,
                                         max_steps=options.max_steps * factor)
            out.append(compute_gradient(problem.compiled, problem.z0, problem.theta,
                                        problem.times, method, finer, data=problem.data))
        return out

    try:
        return runs_of("discrete_adjoint")
    except MethodUnavailable:  # e.g. df/dt infinite at a stage: forward sensitivity
        return runs_of("forward_sensitivity")


def audit_problem(
    problem: Problem,
    *,
    solver: str = "dopri5",
    rtol: float | None = None,
    atol: float | None = None,
    steps: int | None = None,
    methods: Sequence[str] | None = None,
    measure: str = "componentwise",
    strategy: str = "auto",
) -> Report:
    """:func:`audit` of a :class:`Problem`, named after it; an adaptive solver takes the
    problem's own ``tolerances`` where it has them and none are given."""
    if problem.tolerances is not None and steps is None and rtol is None and atol is None:
        rtol, atol = problem.tolerances
    report = audit(
        problem.dynamics, problem.z0, problem.theta, problem.times, loss=problem.loss,
        solver=solver, rtol=rtol, atol=atol, steps=steps, methods=methods, name=problem.name,
        description=problem.description, targets=problem.targets, data=problem.data,
        measure=measure, strategy=strategy,
    )
    if problem.notes:
        summary = report.problems[-1]
        report.problems[-1] = replace(summary, notes=(*problem.notes, *summary.notes))
    return report
