"""Numerical layer of adjoint-verify: Runge–Kutta solvers and every way of computing the
gradient of a Neural-ODE loss."""

from ._checks import SolverOptions as SolverOptions
from ._checks import check_solver_options as check_solver_options
from ._errors import InputError as InputError
from ._errors import IntegrationError as IntegrationError
from ._errors import MethodUnavailable as MethodUnavailable
from ._errors import UnresolvedGrid as UnresolvedGrid
from ._gradient import CONTINUOUS_METHODS as CONTINUOUS_METHODS
from ._gradient import DISCRETE_METHODS as DISCRETE_METHODS
from ._gradient import METHODS as METHODS
from ._gradient import REFERENCE_METHODS as REFERENCE_METHODS
from ._gradient import Gradient as Gradient
from ._gradient import compute_gradient as compute_gradient
from ._gradient import gradient as gradient
from ._solve import solve as solve
from ._tableaus import DOPRI5 as DOPRI5
from ._tableaus import EULER as EULER
from ._tableaus import MIDPOINT as MIDPOINT
from ._tableaus import RK4 as RK4
from ._tableaus import TABLEAUS as TABLEAUS
from ._tableaus import ButcherTableau as ButcherTableau

__all__ = [
    "CONTINUOUS_METHODS",
    "DISCRETE_METHODS",
    "DOPRI5",
    "EULER",
    "METHODS",
    "MIDPOINT",
    "REFERENCE_METHODS",
    "RK4",
    "TABLEAUS",
    "ButcherTableau",
    "Gradient",
    "InputError",
    "IntegrationError",
    "MethodUnavailable",
    "SolverOptions",
    "UnresolvedGrid",
    "check_solver_options",
    "compute_gradient",
    "gradient",
    "solve",
]
