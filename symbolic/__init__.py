"""SymPy layer of adjoint-verify: dynamics, exact adjoint derivation and compilation."""

from ._adjoint import AdjointSystem as AdjointSystem
from ._adjoint import derive_adjoint as derive_adjoint
from ._backends import BACKENDS as BACKENDS
from ._backends import BackendForm as BackendForm
from ._backends import backend_form as backend_form
from ._compile import CompiledDynamics as CompiledDynamics
from ._compile import CompiledForm as CompiledForm
from ._compile import LinearStructure as LinearStructure
from ._compile import MpmathFunctions as MpmathFunctions
from ._compile import MpmathSecondDerivatives as MpmathSecondDerivatives
from ._compile import compile_problem as compile_problem
from ._dynamics import Dynamics as Dynamics
from ._dynamics import DynamicsError as DynamicsError
from ._loss_gradient import ScalarLossGradient as ScalarLossGradient
from ._loss_gradient import scalar_loss_gradient as scalar_loss_gradient
from ._loss_gradient import targets_by_name as targets_by_name

__all__ = [
    "BACKENDS",
    "AdjointSystem",
    "BackendForm",
    "CompiledDynamics",
    "CompiledForm",
    "Dynamics",
    "DynamicsError",
    "LinearStructure",
    "MpmathFunctions",
    "MpmathSecondDerivatives",
    "ScalarLossGradient",
    "backend_form",
    "compile_problem",
    "derive_adjoint",
    "scalar_loss_gradient",
    "targets_by_name",
]
