"""Verification layer of adjoint-verify: audits, reports, problems and the CLI."""

from ._assertions import GradientMismatch as GradientMismatch
from ._assertions import assert_gradient_correct as assert_gradient_correct
from ._audit import audit as audit
from ._audit import audit_problem as audit_problem
from ._audit_gradient import DEFAULT_GRADIENT_RTOL as DEFAULT_GRADIENT_RTOL
from ._audit_gradient import GradientShapeError as GradientShapeError
from ._audit_gradient import audit_gradient as audit_gradient
from ._convergence import ConvergenceStudy as ConvergenceStudy
from ._convergence import convergence_study as convergence_study
from ._peers import peers as peers
from ._problems import BUILTIN_PROBLEMS as BUILTIN_PROBLEMS
from ._problems import Problem as Problem
from ._problems import builtin_problem as builtin_problem
from ._report import Report as Report
from ._report import Row as Row
from ._tolerances import FINITE_DIFFERENCE as FINITE_DIFFERENCE
from ._tolerances import ROUNDING as ROUNDING
from ._tolerances import block_error as block_error
from ._tolerances import solver_tolerance as solver_tolerance

__all__ = [
    "BUILTIN_PROBLEMS",
    "DEFAULT_GRADIENT_RTOL",
    "FINITE_DIFFERENCE",
    "ROUNDING",
    "ConvergenceStudy",
    "GradientMismatch",
    "GradientShapeError",
    "Problem",
    "Report",
    "Row",
    "assert_gradient_correct",
    "audit",
    "audit_gradient",
    "audit_problem",
    "block_error",
    "builtin_problem",
    "convergence_study",
    "peers",
    "solver_tolerance",
]
