"""``assert_gradient_correct``: an audit as a test assertion."""

from __future__ import annotations

from collections.abc import Callable

from ._audit_gradient import DEFAULT_GRADIENT_RTOL, audit_gradient
from ._explain import library_untraced
from ._problems import Problem
from ._report import Report

__all__ = ["GradientMismatch", "assert_gradient_correct"]


class GradientMismatch(AssertionError):
    """An implementation's gradient disagrees with the reference, or a block of it could not
    be checked (the reference cannot certify it: the verdict is NOT CERTIFIED, never a
    pass); the message is the audit table with the diagnosis of every failed block."""

    def __init__(self, report: Report):
        total, failed = len(report.rows), len(report.failures)
        if failed or not report.uncertified:
            what = "the gradient is wrong"
        else:
            blocks = ", ".join(dict.fromkeys(s.method for s in report.uncertified))
            what = (f"the gradient could not be certified: no check failed, but the "
                    f"reference cannot certify {blocks}")
        super().__init__(f"{what}:\n{report}")
        self.report = report
        #: One line for summaries (pytest's short test summary): the table is the message.
        self.summary = (f"{what}: {total - failed} of {total} checks passed, {failed} failed "
                        "(the audit table is in the failure above)")


def assert_gradient_correct(
    grad_fn: Callable,
    problem: Problem,
    *,
    rtol: float | None = None,
    atol: float = 0.0,
    reference: str | None = None,
    solver: str = "rk4",
    steps: int | None = None,
    strategy: str = "auto",
    seed: int | None = None,
) -> Report:
    """Assert that ``grad_fn(z0, theta, times)`` returns the right gradient for ``problem``.

    Parameters
    ----------
    grad_fn : callable
        ``grad_fn(z0, theta, times) -> (dz0, dtheta[, dtimes])``.
    problem : verification.Problem
        Dynamics, loss and inputs (e.g. drawn by ``verification.strategies.problems()``).
    rtol : float, optional
        Tolerance per block, relative (default 1e-6).
    atol : float, optional
        Absolute tolerance per block (default 0).
    reference : str, optional
        ``None`` (the most accurate available), ``"exact"``, ``"high_precision"``,
        ``"forward_sensitivity"`` or ``"discrete"`` (the exact derivative of the fixed-step
        ``solver`` with ``steps`` per interval, for code that backpropagates through it).
    strategy, seed : optional
        Per-entry references, or at network size a reference certified along random
        directions with that seed (see :func:`verification.audit_gradient`).

    Returns
    -------
    Report
        When every block passes.

    Raises
    ------
    GradientMismatch
        An ``AssertionError`` whose message is the audit table with its diagnosis; also
        where no check failed but a block could not be compared, because the reference
        cannot certify its error there (the message says so).
    """
    __tracebackhide__ = True  # pytest shows the caller's line, not this one
    with library_untraced():  # the failure path is the library's, not the code's under test
        report = audit_gradient(
            problem.dynamics, grad_fn, problem.z0, problem.theta, problem.times,
            loss=problem.loss, rtol=DEFAULT_GRADIENT_RTOL if rtol is None else rtol, atol=atol,
            reference=reference, solver=solver, steps=steps, targets=problem.targets,
            data=problem.data, strategy=strategy, seed=seed,
        )
        if not report.passed:
            raise GradientMismatch(report)
    return report
