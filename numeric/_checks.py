"""Input checks for the public entry points of ``numeric``: each names the argument, what
was expected, what was given and the fix."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from symbolic import CompiledForm, Dynamics, DynamicsError, compile_problem

from ._errors import InputError
from ._rosenbrock_tableau import RODAS4, RODAS4_FIXED_STEP, RosenbrockTableau
from ._tableaus import TABLEAUS, ButcherTableau

__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_MAX_STEPS",
    "DEFAULT_RTOL",
    "DEFAULT_STEPS",
    "SOLVERS",
    "CheckedProblem",
    "SolverOptions",
    "check_compiled",
    "check_data",
    "check_problem",
    "check_solver_options",
    "check_state",
    "check_theta",
    "check_times",
    "observed",
]

DEFAULT_RTOL = 1e-8
DEFAULT_ATOL = 1e-10
DEFAULT_STEPS = 100
DEFAULT_MAX_STEPS = 10_000
#: Every solver by name: the explicit tableaus and the Rosenbrock method for stiff dynamics.
SOLVERS = (*TABLEAUS, RODAS4.name)


def _shape_text(value: Any) -> str:
    shape = getattr(value, "shape", None)
    return f"shape {shape}" if shape is not None else f"{type(value).__name__}"


def check_compiled(
    dynamics: Any, loss: Any, *, loss_required: bool = True, targets: Any = ()
) -> CompiledForm:
    """Compile ``dynamics`` (a :class:`symbolic.Dynamics`) and ``loss`` once, or accept an
    already compiled form."""
    if isinstance(dynamics, Dynamics):
        if loss is None and not loss_required:
            loss = 0
        return compile_problem(dynamics, loss, () if targets is None else targets)
    if isinstance(dynamics, CompiledForm):
        return dynamics
    raise DynamicsError(
        f"`dynamics` must be a symbolic.Dynamics, got {type(dynamics).__name__}; "
        "build one with Dynamics(rhs=..., state=..., params=..., time=...)."
    )


def _real_float_array(value: Any, name: str) -> NDArray:
    try:
        array = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise InputError(f"`{name}` must be an array of real numbers; got {value!r}.") from exc
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    ):
        raise InputError(
            f"`{name}` must hold real numbers, got dtype {array.dtype}; pass floats "
            "(complex input is used internally for the complex-step check only)."
        )
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise InputError(f"`{name}` contains inf or nan; give finite values.")
    return array


def check_state(z0: Any, n: int) -> tuple[NDArray, bool]:
    """``z0`` as a ``(B, n)`` float array, and whether the caller passed a single ``(n,)``."""
    array = _real_float_array(z0, "z0")
    if array.ndim == 0 and n == 1:
        return array.reshape(1, 1).copy(), True
    if array.ndim == 1 and array.shape[0] == n:
        return array[None, :].copy(), True
    if array.ndim == 2 and array.shape[1] == n and array.shape[0] >= 1:
        return array.copy(), False
    raise InputError(
        f"`z0` must have shape (n,) = ({n},) or (B, n) = (B, {n}), got {_shape_text(array)}; "
        "put the batch first, one row per sample."
    )


def check_theta(theta: Any, p: int) -> NDArray:
    """``theta`` as a ``(p,)`` float array in the order of ``Dynamics.params``."""
    array = _real_float_array(theta if theta is not None else np.zeros(0), "theta")
    if array.ndim == 0 and p == 1:
        array = array[None]
    if array.shape != (p,):
        raise InputError(
            f"`theta` must have shape (p,) = ({p},), in the order of Dynamics.params, got "
            f"{_shape_text(array)}; flatten a parameter matrix row-major."
        )
    return array.copy()


def check_times(times: Any) -> NDArray:
    """``times`` as a strictly increasing ``(N+1,)`` float array with ``N >= 1``."""
    array = _real_float_array(times, "times")
    if array.ndim != 1 or array.shape[0] < 2:
        raise InputError(
            f"`times` must be a 1-D array [t_0, t_1, ..., t_N] with at least two entries "
            f"(a start and one observation), got {_shape_text(array)}."
        )
    with np.errstate(over="ignore"):  # an overflowing span is refused below
        gaps = np.diff(array)
        span = array[-1] - array[0]
    if np.any(gaps <= 0):
        where = int(np.argmax(gaps <= 0))
        raise InputError(
            f"`times` must be strictly increasing, but times[{where}] = {array[where]:g} and "
            f"times[{where + 1}] = {array[where + 1]:g}; sort them and drop repeats."
        )
    if not np.isfinite(span):
        raise InputError(
            f"`times` spans {array[0]:g} to {array[-1]:g}, a length beyond float64's range "
            "(1.8e308); shift or rescale the time axis."
        )
    return array.copy()


@dataclass(frozen=True)
class SolverOptions:
    """A checked solver choice: the tableau with its step count or tolerances."""

    tableau: ButcherTableau | RosenbrockTableau
    steps: int | None
    rtol: float | None
    atol: float | None
    max_steps: int

    @property
    def name(self) -> str:
        return self.tableau.name

    def describe(self) -> str:
        if self.tableau.adaptive:
            return f"{self.name} (rtol={self.rtol:g}, atol={self.atol:g})"
        return f"{self.name} ({self.steps} step{'s' if self.steps != 1 else ''} per interval)"


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


def _tolerance(value: Any, name: str, *, allow_zero: bool) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        expected = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise InputError(f"`{name}` must be {expected}, got {value!r}.")
    return float(value)


def check_solver_options(
    solver: Any, *, steps: Any, rtol: Any, atol: Any, max_steps: Any
) -> SolverOptions:
    """Check the solver name and the options that belong to it.

    Fixed-step solvers take ``steps`` (equal steps per observation interval); ``dopri5``
    takes ``rtol`` and ``atol``; ``rodas4`` takes ``rtol`` and ``atol``, or ``steps`` for
    its fixed-step mode (equal steps, no error control: the discrete map a convergence
    study differentiates). Giving an option the solver does not use is an error, not
    silently ignored.
    """
    if not isinstance(solver, str) or solver not in SOLVERS:
        raise InputError(
            f"`solver` must be one of {', '.join(repr(k) for k in SOLVERS)}, got {solver!r}."
        )
    if solver == RODAS4.name:  # stiff solver: adaptive, or fixed-step when `steps` is given
        if steps is not None and (rtol is not None or atol is not None):
            raise InputError(
                "`steps` (rodas4's fixed-step mode) and `rtol`/`atol` (its adaptive mode) "
                "exclude each other; give one."
            )
        tableau = RODAS4 if steps is None else RODAS4_FIXED_STEP
    else:
        tableau = TABLEAUS[solver]
    max_steps = _positive_int(max_steps, "max_steps")
    if tableau.adaptive:
        if steps is not None:
            raise InputError(
                f"`steps` applies to the fixed-step solvers, not to {solver!r}, which chooses "
                "its own steps; set rtol/atol instead, or pick solver='rk4'."
            )
        rtol = _tolerance(DEFAULT_RTOL if rtol is None else rtol, "rtol", allow_zero=False)
        if atol is not None and atol == 0:
            raise InputError(
                "`atol` must be > 0: the adjoint's parameter part and the sensitivities start "
                "at exactly zero, where a purely relative error test rejects every step; use "
                "a small atol, e.g. atol = rtol / 100."
            )
        atol = _tolerance(DEFAULT_ATOL if atol is None else atol, "atol", allow_zero=False)
        if rtol < 100 * np.finfo(float).eps:
            raise InputError(
                f"`rtol` = {rtol:g} is below what float64 can deliver (100 * machine epsilon "
                f"= {100 * np.finfo(float).eps:.1e}); use rtol >= 1e-13."
            )
        return SolverOptions(tableau, None, rtol, atol, max_steps)
    if rtol is not None or atol is not None:
        raise InputError(
            f"`rtol`/`atol` apply to the adaptive solvers 'dopri5' and 'rodas4', not to "
            f"{solver!r}, which takes `steps` (equal steps per observation interval)."
        )
    steps = _positive_int(DEFAULT_STEPS if steps is None else steps, "steps")
    return SolverOptions(tableau, steps, None, None, max_steps)


def check_data(data: Any, k: int, n_obs: int, batch: int) -> NDArray | None:
    """Target values of the loss as a ``(N, B, k)`` array (None when the loss has no
    targets); ``(N, k)`` is broadcast over the batch."""
    if k == 0:
        if data is not None:
            raise InputError(
                "`data` was given but the loss declares no targets; pass `targets=` (the data "
                "symbols of the loss) with it, or drop `data`."
            )
        return None
    if data is None:
        raise InputError(
            f"the loss uses {k} target symbol(s); give `data` of shape (N, B, {k}) or "
            f"(N, {k}): their values at each of the N = {n_obs} observation times."
        )
    array = _real_float_array(data, "data")
    if array.ndim == 2 and array.shape == (n_obs, k):
        array = np.broadcast_to(array[:, None, :], (n_obs, batch, k))
    if array.shape != (n_obs, batch, k):
        raise InputError(
            f"`data` must have shape (N, B, k) = ({n_obs}, {batch}, {k}) or (N, k) = "
            f"({n_obs}, {k}), got {_shape_text(array)}; one row of targets per observation "
            "time t_1..t_N (not t_0) and sample."
        )
    return np.array(array)


def observed(data: NDArray | None, i: int) -> NDArray | None:
    """The targets at observation ``i`` (``1 <= i <= N``), or None without targets."""
    return None if data is None else data[i - 1]


@dataclass(frozen=True)
class CheckedProblem:
    """The inputs of a gradient problem, checked once at a public entry point.

    ``z0`` is always ``(B, n)``; ``single`` says the caller passed one ``(n,)`` sample.
    """

    compiled: CompiledForm
    z0: NDArray
    single: bool
    theta: NDArray
    times: NDArray
    data: NDArray | None


def check_problem(dynamics: Any, loss: Any, z0: Any, theta: Any, times: Any, *,
                  targets: Any = (), data: Any = None) -> CheckedProblem:
    """Compile and check every input of a gradient problem (the ``check_*`` helpers above)."""
    compiled = check_compiled(dynamics, loss, targets=targets)
    z0_2d, single = check_state(z0, compiled.n)
    theta = check_theta(theta, compiled.p)
    times = check_times(times)
    data = check_data(data, compiled.k, len(times) - 1, z0_2d.shape[0])
    return CheckedProblem(compiled, z0_2d, single, theta, times, data)
