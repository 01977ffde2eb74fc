"""``audit``: every applicable gradient method against the best reference available."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from numeric import (
    CONTINUOUS_METHODS,
    METHODS,
    Gradient,
    InputError,
    IntegrationError,
    MethodUnavailable,
    check_solver_options,
    compute_gradient,
)
from numeric._checks import check_problem
from numeric._finite import check_loss_on_path
from numeric._gradient import check_method

from ._diagnose import diagnose
from ._nonsmooth import nonsmooth_notes, nonsmooth_reason
from ._problems import Problem
from ._quiet import quiet_numerics
from ._references import ReferenceGradient, best_reference, term_scale
from ._report import BLOCKS, REFERENCE_KINDS, ProblemSummary, Report, Row, Skipped
from ._tolerances import (
    FINITE_DIFFERENCE,
    FLOOR_FRACTION,
    ROUNDING,
    block_error,
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
#: A finite-difference block may deviate by this multiple of its own error estimate: the
#: step-doubling estimate of the truncation error is asymptotically exact, the rounding
#: bound is a worst case, so a factor 10 covers both without hiding a real disagreement.
FD_SAFETY = 10.0
#: The methods whose results are references rather than rows of their own.
_REFERENCE_METHODS = ("exact", "high_precision")


def _gradient_scale(g: Gradient) -> float:
    return float(np.sqrt(sum(np.linalg.norm(getattr(g, b)) ** 2 for b in BLOCKS)))


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
) -> Report:
    """Run every applicable gradient method and compare each block with a reference.

    The continuous reference is the most accurate available: ``exact`` (linear autonomous
    dynamics), else ``high_precision`` (small smooth systems), else forward sensitivity at
    rtol = 1e-13. Continuous methods are held to ``solver_tolerance(rtol)`` (fixed-step
    solvers: a multiple of the discretization error), the discrete adjoint to ``ROUNDING``
    against complex step on the same frozen grid, and finite differences to
    ``FINITE_DIFFERENCE`` or their own error estimate (verification/_tolerances.py). The
    references needed for the rows asked for are computed whether or not they are listed
    in ``methods``.

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

    Returns
    -------
    Report
        ``passed`` is False when any comparison fails; a method that cannot serve the
        problem is listed in ``skipped`` with the reason.

    Raises
    ------
    numeric.InputError
        Malformed inputs, or ``methods`` that leave nothing to compare.
    numeric.IntegrationError
        The loss (or its gradient) is not finite at an observed state: undefined there
        (``log`` of a negative number) or beyond float64's range.
    """
    checked = check_problem(dynamics, loss, z0, theta, times, targets=targets, data=data)
    compiled, z0_2d, theta, times, data = (
        checked.compiled, checked.z0, checked.theta, checked.times, checked.data
    )
    check_loss_on_path(compiled, z0_2d, theta, times, data)
    if solver == "dopri5" or solver not in ("euler", "midpoint", "rk4"):
        rtol = AUDIT_RTOL if rtol is None else rtol
        atol = AUDIT_ATOL if atol is None else atol
    options = check_solver_options(solver, steps=steps, rtol=rtol, atol=atol, max_steps=10_000)
    methods_given = methods
    methods = list(METHODS if methods is None else methods)
    if not methods:
        raise InputError("`methods` is empty; name at least one method, or pass None for all.")
    wanted = {check_method(m) for m in methods}

    report = Report()
    results: dict[str, Gradient] = {}
    failures: dict[str, IntegrationError] = {}
    unavailable: dict[str, str] = {}

    def run(method: str) -> Gradient | None:
        if method in results or method in failures or method in unavailable:
            return results.get(method)
        opts = None if method in _REFERENCE_METHODS else options
        try:
            results[method] = compute_gradient(compiled, z0_2d, theta, times, method, opts,
                                               data=data)
        except MethodUnavailable as exc:
            unavailable[method] = exc.reason
        except IntegrationError as exc:
            failures[method] = exc
        return results.get(method)

    for method in ("exact", "high_precision", *CONTINUOUS_METHODS, "discrete_adjoint",
                   "complex_step", "finite_difference"):
        if method in wanted:
            run(method)
    if wanted & {"discrete_adjoint", "finite_difference"}:
        run("complex_step")  # the discrete reference
    reference = None
    try:
        reference = best_reference(compiled, z0_2d, theta, times, data=data, known=results)
    except IntegrationError as exc:
        report.skipped.append(Skipped(name, "reference", f"no reference could be built: {exc}"))
    scale = _gradient_scale(reference.gradient) if reference else 1.0
    terms = term_scale(compiled, z0_2d, theta, times, data, known=results)
    B = z0_2d.shape[0]

    def compare(method: str, ref_name: str, ref: Gradient, tolerance, kind: str,
                force_fail: str = ""):
        """Rows of ``method`` against ``ref``; ``tolerance`` is a float or a per-block
        callable ``tolerance(block, g, ref)``; ``force_fail`` fails every row with that
        diagnosis (a comparison that cannot be made meaningful)."""
        g = results.get(method)
        for block in BLOCKS:
            if g is None:
                report.rows.append(Row(
                    block=block, method=method, reference=ref_name, error=math.inf,
                    tolerance=math.nan, passed=False, reference_kind=kind, problem=name,
                    diagnosis=f"the solve failed, so no gradient was computed: "
                              f"{failures[method]}",
                ))
                continue
            tol = tolerance(block, g, ref) if callable(tolerance) else tolerance
            error = block_error(getattr(g, block), getattr(ref, block), scale, terms[block])
            passed = error <= tol and not force_fail
            text = "" if passed else force_fail or diagnose(
                block, getattr(g, block), getattr(ref, block), method=method, info=g.info,
                batch=B,
            )
            report.rows.append(Row(
                block=block, method=method, reference=ref_name, error=error, tolerance=tol,
                passed=passed, diagnosis=text, reference_kind=kind, problem=name,
            ))

    exact_kind, discrete_kind = REFERENCE_KINDS["exact"], REFERENCE_KINDS["discrete"]
    if reference is not None:
        if reference.label == "exact" and "high_precision" in results and (
            wanted & set(_REFERENCE_METHODS)
        ):
            compare("high_precision", "exact", reference.gradient, ROUNDING, exact_kind)
        continuous = [m for m in (*CONTINUOUS_METHODS, "discrete_adjoint") if m in wanted]
        if "complex_step" in wanted and "discrete_adjoint" not in wanted:
            continuous.append("complex_step")
        continuous = [m for m in continuous if m in results or m in failures]
        for method in [m for m in continuous if m in results]:
            reason = nonsmooth_reason(method, options, results, reference)
            if reason:  # first-order convergence past a kink: not the method's fault
                report.skipped.append(Skipped(name, method, reason))
                continuous.remove(method)
        if continuous:  # the fixed-step estimate costs three solves: only when needed
            tolerance, coarse = _continuous_tolerance(compiled, z0_2d, theta, times, options,
                                                      reference, scale, terms, data)
        for method in continuous:
            if coarse and method in results:
                report.skipped.append(Skipped(name, method, coarse))
            elif method in results or method in failures:
                compare(method, reference.label, reference.gradient, tolerance, exact_kind)

    discrete_ref = results.get("complex_step")
    if discrete_ref is not None:
        if "discrete_adjoint" in results or "discrete_adjoint" in failures:
            compare("discrete_adjoint", "complex_step", discrete_ref, ROUNDING, discrete_kind)
        if "finite_difference" in results or "finite_difference" in failures:
            compare("finite_difference", "complex_step", discrete_ref,
                    _finite_difference_tolerance(scale, terms), discrete_kind)
    elif "discrete_adjoint" in results and "finite_difference" in results:
        compare("discrete_adjoint", "finite_difference", results["finite_difference"],
                lambda block, g, ref: _finite_difference_tolerance(scale, terms)(block, ref, g),
                REFERENCE_KINDS["finite_difference"])

    for method in sorted(wanted):
        if method in unavailable:
            report.skipped.append(Skipped(name, method, unavailable[method]))
        if method in failures and not any(r.method == method for r in report.rows):
            for block in BLOCKS:  # no reference to compare with: the failure is the row
                report.rows.append(Row(
                    block=block, method=method, reference="-", error=math.inf,
                    tolerance=math.nan, passed=False, problem=name,
                    diagnosis=f"the solve failed, so no gradient was computed: "
                              f"{failures[method]}",
                ))
    if not report.rows:
        reasons = "; ".join(f"{s.method}: {s.reason}" for s in report.skipped)
        if methods_given is None:  # every method asked for, none comparable here
            raise MethodUnavailable("audit", f"no method can be compared with a reference on "
                                    f"this problem. {reasons}")
        raise InputError(
            f"`methods`={sorted(wanted)} leaves nothing to compare: 'exact' and "
            "'high_precision' are references (together they check each other), and "
            "'complex_step' is the reference of 'discrete_adjoint' and 'finite_difference'; "
            "add a method to audit." + (f" Not applicable here: {reasons}" if reasons else "")
        )

    n, p, N = compiled.n, compiled.p, len(times) - 1
    report.problems.append(ProblemSummary(
        name=name,
        notes=nonsmooth_notes(results, reference),
        description=description,
        shape=f"n={n}, p={p}, batch B={B}, N={N} observations",
        solver=options.describe(),
        reference=(
            f"{reference.label} (relative error <= {reference.error:.0e})"
            if reference else "none available"
        ),
    ))
    return report


def _finite_difference_tolerance(scale: float, terms: dict[str, float]):
    """Per-block tolerance of a finite-difference gradient: ``FINITE_DIFFERENCE``, or
    ``FD_SAFETY`` times the method's own error estimate (truncation from step doubling plus
    rounding, MATH.md) relative to the block, whichever is larger: a block the differences
    cannot resolve (a nearly zero gradient, a loss much larger than its gradient) gets the
    tolerance the differences can deliver."""

    def tolerance(block: str, fd: Gradient, ref: Gradient) -> float:
        estimate = fd.info.get("error_estimate", {}).get(block, 0.0)
        denominator = max(float(np.linalg.norm(getattr(ref, block))), FLOOR_FRACTION * scale,
                          terms[block], np.finfo(float).tiny)
        return max(FINITE_DIFFERENCE, FD_SAFETY * estimate / denominator)

    return tolerance


def _continuous_tolerance(compiled, z0, theta, times, options, reference: ReferenceGradient,
                          scale: float, terms: dict[str, float], data) -> tuple[float, str]:
    """Tolerance for a continuous method (or the discrete adjoint) against the continuous
    reference, and a reason the comparison cannot be made ("" when it can).

    Adaptive solver: ``solver_tolerance(rtol, atol)``. Fixed-step solver: ``ORDER_SAFETY``
    times the Richardson estimate of the discretization error from the discrete adjoint on
    ``steps`` and ``2 steps``; if that estimate exceeds ``COARSE_LIMIT``, or ``steps``,
    ``2 steps``, ``4 steps`` do not converge at the method's order, the grid is too coarse
    to audit anything.
    """
    if options.tableau.adaptive:
        return solver_tolerance(options.rtol, options.atol) + reference.error, ""
    def runs_of(method: str) -> list[Gradient]:
        out = []
        for factor in (1, 2, 4):
            finer = check_solver_options(options.name, steps=factor * options.steps,
                                         rtol=None, atol=None,
                                         max_steps=options.max_steps * factor)
            out.append(compute_gradient(compiled, z0, theta, times, method, finer, data=data))
        return out

    try:
        try:
            runs = runs_of("discrete_adjoint")
        except MethodUnavailable:  # e.g. df/dt infinite at a stage: forward sensitivity
            runs = runs_of("forward_sensitivity")
    except (IntegrationError, MethodUnavailable) as exc:
        return math.inf, f"the discretization error cannot be estimated: {exc}"

    def distance(a, b):
        return max(block_error(getattr(a, blk), getattr(b, blk), scale, terms[blk])
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


def audit_problem(
    problem: Problem,
    *,
    solver: str = "dopri5",
    rtol: float | None = None,
    atol: float | None = None,
    steps: int | None = None,
    methods: Sequence[str] | None = None,
) -> Report:
    """:func:`audit` of a :class:`Problem`, named after it."""
    report = audit(
        problem.dynamics, problem.z0, problem.theta, problem.times, loss=problem.loss,
        solver=solver, rtol=rtol, atol=atol, steps=steps, methods=methods, name=problem.name,
        description=problem.description, targets=problem.targets, data=problem.data,
    )
    if problem.notes:
        summary = report.problems[-1]
        report.problems[-1] = ProblemSummary(
            **{**summary.__dict__, "notes": (*problem.notes, *summary.notes)})
    return report
