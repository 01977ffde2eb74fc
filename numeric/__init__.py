"""Numerical layer of adjoint-verify: Runge–Kutta solvers (explicit, and the Rosenbrock
method rodas4 for stiff dynamics) and every way of computing the gradient of a Neural-ODE
loss."""

from ._checks import SOLVERS as SOLVERS
from ._checks import SolverOptions as SolverOptions
from ._checks import check_solver_options as check_solver_options
from ._directional_hp import high_precision_directional as high_precision_directional
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
from ._rosenbrock_tableau import RODAS4 as RODAS4
from ._rosenbrock_tableau import RosenbrockTableau as RosenbrockTableau
from ._solve import solve as solve
from ._tableaus import BOSH3 as BOSH3
from ._tableaus import DOPRI5 as DOPRI5
from ._tableaus import EULER as EULER
from ._tableaus import FIXED_STEP_SOLVERS as FIXED_STEP_SOLVERS
from ._tableaus import HEUN as HEUN
from ._tableaus import HEUN3 as HEUN3
from ._tableaus import MIDPOINT as MIDPOINT
from ._tableaus import RALSTON as RALSTON
from ._tableaus import RK4 as RK4
from ._tableaus import RK4_38 as RK4_38
from ._tableaus import TABLEAUS as TABLEAUS
from ._tableaus import TSIT5 as TSIT5
from ._tableaus import ButcherTableau as ButcherTableau

__all__ = [
    "BOSH3",
    "CONTINUOUS_METHODS",
    "DISCRETE_METHODS",
    "DOPRI5",
    "EULER",
    "FIXED_STEP_SOLVERS",
    "HEUN",
    "HEUN3",
    "METHODS",
    "MIDPOINT",
    "RALSTON",
    "REFERENCE_METHODS",
    "RK4",
    "RK4_38",
    "RODAS4",
    "SOLVERS",
    "TABLEAUS",
    "TSIT5",
    "ButcherTableau",
    "Gradient",
    "InputError",
    "IntegrationError",
    "MethodUnavailable",
    "RosenbrockTableau",
    "SolverOptions",
    "UnresolvedGrid",
    "check_solver_options",
    "compute_gradient",
    "gradient",
    "high_precision_directional",
    "solve",
]
