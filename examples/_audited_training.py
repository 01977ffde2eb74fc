"""The training loop the learning examples share: L-BFGS on a data-fitting loss, with the
gradient of a chosen method audited every k-th evaluation (the run stops at a failed audit).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np
import scipy.optimize

from numeric import gradient
from verification import Report, audit_gradient


@dataclass
class Training:
    """What a run produced: the best parameters, one row per evaluation, the failed audit."""

    theta: np.ndarray
    history: list = field(default_factory=list)  # (evaluation, loss, |dL/dtheta|, audit)
    stopped_by_audit: bool = False
    report: Report | None = None

    @property
    def initial_loss(self) -> float:
        return self.history[0][1]

    @property
    def final_loss(self) -> float:
        return min(row[1] for row in self.history)


class _AuditFailed(Exception):
    pass


def train_audited(model, loss, targets, z0, times, data, theta0, *, method: str,
                  options: dict, audit_rtol: float, audit_every: int,
                  iterations: int) -> Training:
    """Minimize ``sum_{b,i} loss(z_b(t_i), y_b(t_i))`` over ``theta`` with L-BFGS, the
    gradient from ``method``. Every ``audit_every``-th evaluation the gradient is audited
    against the reference, every entry within ``audit_rtol`` on its own scale: near the
    minimum an entry is a small difference of its terms, and the audit measures on the
    terms' scale, so no absolute tolerance is needed."""
    training = Training(theta=np.array(theta0, dtype=float))

    def grad_fn(z, theta, t):
        g = gradient(model, z, theta, t, loss=loss, targets=targets, data=data, method=method,
                     **options)
        return g.z0, g.theta, g.times

    def objective(theta):
        g = gradient(model, z0, theta, times, loss=loss, targets=targets, data=data,
                     method=method, **options)
        evaluation = len(training.history)
        status = ""
        if evaluation % audit_every == 0:
            report = audit_gradient(model, grad_fn, z0, theta, times, loss=loss,
                                    targets=targets, data=data, rtol=audit_rtol, name=method)
            status = "pass" if report.passed else "FAIL"
            if not report.passed:
                training.report = report
                training.history.append((evaluation, g.loss, float(np.linalg.norm(g.theta)),
                                         status))
                raise _AuditFailed
        training.history.append((evaluation, g.loss, float(np.linalg.norm(g.theta)), status))
        if g.loss <= training.final_loss:
            training.theta = theta.copy()
        return g.loss, g.theta

    try:
        scipy.optimize.minimize(objective, training.theta, jac=True, method="L-BFGS-B",
                                options={"maxiter": iterations, "maxfun": iterations,
                                         "ftol": 1e-15, "gtol": 1e-12})
    except _AuditFailed:
        training.stopped_by_audit = True
    return training


def print_history(training: Training, every: int, out=None) -> None:
    """The loss table: every ``every``-th evaluation, every audit and the last row."""
    out = out or sys.stdout
    print(f"{'eval':>5} {'loss':>12} {'|dL/dtheta|':>12}  audit", file=out)
    last = len(training.history) - 1
    for evaluation, value, norm, status in training.history:
        if evaluation % every == 0 or status or evaluation == last:
            print(f"{evaluation:>5} {value:12.4e} {norm:12.2e}  {status}", file=out)


def plot_loss(ax, training: Training, title: str) -> None:
    ax.semilogy([row[0] for row in training.history], [row[1] for row in training.history])
    ax.set_xlabel("function evaluation")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
