"""Verification layer of adjoint-verify: audits, reports, strategies and the CLI."""

from ._tolerances import FINITE_DIFFERENCE as FINITE_DIFFERENCE
from ._tolerances import ROUNDING as ROUNDING
from ._tolerances import block_error as block_error
from ._tolerances import solver_tolerance as solver_tolerance

__all__ = ["FINITE_DIFFERENCE", "ROUNDING", "block_error", "solver_tolerance"]
