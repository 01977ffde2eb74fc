"""``audit``: every applicable gradient method against the best reference available."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
from numeric._gradient import check_method

from ._diagnose import diagnose
from ._problems import Problem
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
#: The fallback continuous reference when neither `exact` nor `high_precision` applies:
#: forward sensitivity (no backward pass, stable wherever the forward solve is) at the
#: tightest tolerances float64 supports.
FALLBACK_RTOL = 1e-13
FALLBACK_ATOL = 1e-15
#: For fixed-step solvers the tolerance of a continuous method is this multiple of the
#: discretization error, estimated by Richardson extrapolation of the discrete adjoint on
#: `steps` and `2 steps` (methods of the same order share the leading error term within a
#: small factor).
ORDER_SAFETY = 10.0
#: A finite-difference block may deviate by this multiple of its own error estimate: the
#: step-doubling estimate of the truncation error is asymptotically exact, the rounding
#: bound is a worst case, so a factor 10 covers both without hiding a real disagreement.
FD_SAFETY = 10.0


@dataclass
class _Reference:
    gradient: Gradient
    label: str
    error: float  # relative error the reference itself may carry


def _gradient_scale(g: Gradient) -> float:
    return float(np.sqrt(sum(np.linalg.norm(getattr(g, b)) ** 2 for b in BLOCKS)))


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
    ``FINITE_DIFFERENCE`` (verification/_tolerances.py).

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
    """
    checked = check_problem(dynamics, loss, z0, theta, times, targets=targets, data=data)
    compiled, z0_2d, theta, times, data = (
        checked.compiled, checked.z0, checked.theta, checked.times, checked.data
    )
    if solver == "dopri5" or solver not in ("euler", "midpoint", "rk4"):
        rtol = AUDIT_RTOL if rtol is None else rtol
        atol = AUDIT_ATOL if atol is None else atol
    options = check_solver_options(solver, steps=steps, rtol=rtol, atol=atol, max_steps=10_000)
    if methods is None:
        methods = METHODS
    methods = [check_method(m) for m in methods]
    if not methods:
        raise InputError("`methods` is empty; name at least one method, or pass None for all.")

    report = Report()
    results: dict[str, Gradient] = {}
    errors: dict[str, IntegrationError] = {}

    def run(method: str, opts=options) -> Gradient | None:
        try:
            return compute_gradient(compiled, z0_2d, theta, times, method, opts, data=data)
        except MethodUnavailable as exc:
            report.skipped.append(Skipped(name, method, exc.reason))
        except IntegrationError as exc:
            errors[method] = exc
        return None

    wanted = set(methods)
    for method in ("exact", "high_precision", *CONTINUOUS_METHODS,
                   "discrete_adjoint", "complex_step", "finite_difference"):
        if method in wanted:
            result = run(method)
            if result is not None:
                results[method] = result

    reference = _continuous_reference(compiled, z0_2d, theta, times, results, report, name,
                                      data)
    scale = _gradient_scale(reference.gradient) if reference else 1.0
    B = z0_2d.shape[0]

    def compare(method: str, ref_name: str, ref: Gradient, tolerance, kind: str):
        """Rows of ``method`` against ``ref``; ``tolerance`` is a float or a per-block
        callable ``tolerance(block, g)``."""
        g = results.get(method)
        base_tolerance = tolerance
        for block in BLOCKS:
            if callable(base_tolerance):
                tolerance = base_tolerance(block, g, ref) if g is not None else 0.0
            if g is None:
                exc = errors[method]
                report.rows.append(Row(
                    block=block, method=method, reference=ref_name, error=float("inf"),
                    tolerance=tolerance, passed=False, reference_kind=kind, problem=name,
                    diagnosis=f"the solve failed, so no gradient was computed: {exc}",
                ))
                continue
            error = block_error(getattr(g, block), getattr(ref, block), scale)
            passed = error <= tolerance
            report.rows.append(Row(
                block=block, method=method, reference=ref_name, error=error,
                tolerance=tolerance, passed=passed, reference_kind=kind, problem=name,
                diagnosis="" if passed else diagnose(
                    block, getattr(g, block), getattr(ref, block), method=method,
                    info=g.info, batch=B,
                ),
            ))

    exact_kind = REFERENCE_KINDS["exact"]
    if reference is not None:
        if "exact" in results and "high_precision" in results and reference.label == "exact":
            compare("high_precision", "exact", reference.gradient, ROUNDING, exact_kind)
        continuous_tol = _continuous_tolerance(
            compiled, z0_2d, theta, times, options, reference, scale, data
        )
        for method in [*CONTINUOUS_METHODS, "discrete_adjoint"]:
            if method in results or method in errors:
                compare(method, reference.label, reference.gradient, continuous_tol, exact_kind)

    discrete_ref = results.get("complex_step")
    if discrete_ref is not None:
        if "discrete_adjoint" in wanted:
            compare("discrete_adjoint", "complex_step", discrete_ref, ROUNDING,
                    REFERENCE_KINDS["discrete"])
        if "finite_difference" in wanted:
            compare("finite_difference", "complex_step", discrete_ref,
                    _finite_difference_tolerance(scale), REFERENCE_KINDS["discrete"])
    elif "discrete_adjoint" in results and "finite_difference" in results:
        fd = results["finite_difference"]
        compare("discrete_adjoint", "finite_difference", fd,
                lambda block, g, ref: _finite_difference_tolerance(scale)(block, ref, g),
                REFERENCE_KINDS["finite_difference"])

    for method, exc in errors.items():
        if not any(r.method == method for r in report.rows):
            for block in BLOCKS:
                report.rows.append(Row(
                    block=block, method=method, reference="-", error=float("inf"),
                    tolerance=0.0, passed=False, problem=name,
                    diagnosis=f"the solve failed, so no gradient was computed: {exc}",
                ))

    n, p, N = compiled.n, compiled.p, len(times) - 1
    report.problems.append(ProblemSummary(
        name=name,
        description=description,
        shape=f"n={n} states, p={p} parameters, batch B={B}, N={N} observations",
        solver=options.describe(),
        reference=(
            f"{reference.label} (relative error <= {reference.error:.0e})"
            if reference else "none available"
        ),
    ))
    return report


def _finite_difference_tolerance(scale: float):
    """Per-block tolerance of a finite-difference gradient: ``FINITE_DIFFERENCE``, or
    ``FD_SAFETY`` times the method's own error estimate (truncation from step doubling plus
    rounding, MATH.md) relative to the block, whichever is larger: a block the differences
    cannot resolve (a nearly zero gradient, a loss much larger than its gradient) gets the
    tolerance the differences can deliver."""

    def tolerance(block: str, fd: Gradient, ref: Gradient) -> float:
        estimate = fd.info.get("error_estimate", {}).get(block, 0.0)
        denominator = max(float(np.linalg.norm(getattr(ref, block))), FLOOR_FRACTION * scale,
                          np.finfo(float).tiny)
        return max(FINITE_DIFFERENCE, FD_SAFETY * estimate / denominator)

    return tolerance


def _continuous_reference(compiled, z0, theta, times, results, report, name, data):
    """The most accurate continuous gradient available, with the error it may carry."""
    if "exact" in results:
        return _Reference(results["exact"], "exact", ROUNDING)
    if "high_precision" in results:
        g = results["high_precision"]
        return _Reference(g, "high_precision", max(ROUNDING, g.info.get("error_estimate", 0)))
    fallback_options = check_solver_options(
        "dopri5", steps=None, rtol=FALLBACK_RTOL, atol=FALLBACK_ATOL, max_steps=100_000
    )
    try:
        g = compute_gradient(compiled, z0, theta, times, "forward_sensitivity", fallback_options,
                             data=data)
    except IntegrationError as exc:
        report.skipped.append(Skipped(name, "reference", f"no reference could be built: {exc}"))
        return None
    return _Reference(g, "forward_sensitivity@1e-13", solver_tolerance(FALLBACK_RTOL,
                                                                         FALLBACK_ATOL))


def _continuous_tolerance(compiled, z0, theta, times, options, reference, scale,
                          data) -> float:
    """Tolerance for a continuous method (or the discrete adjoint) against the continuous
    reference: ``solver_tolerance(rtol, atol)`` for an adaptive solver; for a fixed-step
    solver ``ORDER_SAFETY`` times the Richardson estimate of the discretization error."""
    if options.tableau.adaptive:
        return solver_tolerance(options.rtol, options.atol) + reference.error
    coarse = compute_gradient(compiled, z0, theta, times, "discrete_adjoint", options,
                              data=data)
    finer_options = check_solver_options(
        options.name, steps=2 * options.steps, rtol=None, atol=None,
        max_steps=options.max_steps * 2,
    )
    fine = compute_gradient(compiled, z0, theta, times, "discrete_adjoint", finer_options,
                            data=data)
    q = options.tableau.order
    estimate = max(
        block_error(getattr(coarse, b), getattr(fine, b), scale) for b in BLOCKS
    ) * 2**q / (2**q - 1)
    return ORDER_SAFETY * estimate + ROUNDING + reference.error


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
        report.problems[-1] = ProblemSummary(**{**summary.__dict__, "notes": problem.notes})
    return report
