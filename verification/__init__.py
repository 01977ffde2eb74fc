"""Verification layer of adjoint-verify: audits, reports, problems and the CLI."""

from ._assertions import GradientMismatch as GradientMismatch
from ._assertions import assert_gradient_correct as assert_gradient_correct
from ._audit import audit as audit
from ._audit import audit_problem as audit_problem
from ._audit_gradient import DEFAULT_GRADIENT_RTOL as DEFAULT_GRADIENT_RTOL
from ._audit_gradient import GradientShapeError as GradientShapeError
from ._audit_gradient import audit_gradient as audit_gradient
from ._campaign import CampaignResult as CampaignResult
from ._campaign import campaign as campaign
from ._campaign import replay_campaign as replay_campaign
from ._check_suite import SuiteCheck as SuiteCheck
from ._check_suite import check_suite as check_suite
from ._convergence import ConvergenceStudy as ConvergenceStudy
from ._convergence import convergence_study as convergence_study
from ._peers import peers as peers
from ._problems import BUILTIN_PROBLEMS as BUILTIN_PROBLEMS
from ._problems import Problem as Problem
from ._problems import builtin_problem as builtin_problem
from ._report import Report as Report
from ._report import Row as Row
from ._suite_contents import SuiteError as SuiteError
from ._suite_sources import drawn_problems as drawn_problems
from ._suite_sources import grid_problems as grid_problems
from ._suite_sources import module_problems as module_problems
from ._sweep import SweepResult as SweepResult
from ._sweep import sweep as sweep
from ._tolerances import FINITE_DIFFERENCE as FINITE_DIFFERENCE
from ._tolerances import ROUNDING as ROUNDING
from ._tolerances import block_error as block_error
from ._tolerances import solver_tolerance as solver_tolerance

__all__ = [
    "BUILTIN_PROBLEMS",
    "DEFAULT_GRADIENT_RTOL",
    "FINITE_DIFFERENCE",
    "ROUNDING",
    "CampaignResult",
    "ConvergenceStudy",
    "GradientMismatch",
    "GradientShapeError",
    "Problem",
    "Report",
    "Row",
    "SuiteCheck",
    "SuiteError",
    "SweepResult",
    "assert_gradient_correct",
    "audit",
    "audit_gradient",
    "audit_problem",
    "block_error",
    "builtin_problem",
    "campaign",
    "check_suite",
    "convergence_study",
    "drawn_problems",
    "grid_problems",
    "module_problems",
    "peers",
    "replay_campaign",
    "solver_tolerance",
    "sweep",
]
