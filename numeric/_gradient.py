"""``gradient``: one entry point for every way of computing dL/d(z0, theta, times)."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from symbolic import CompiledForm

from ._checks import (
    DEFAULT_MAX_STEPS,
    SolverOptions,
    check_problem,
    check_solver_options,
)
from ._continuous import (
    backsolve_adjoint,
    forward_sensitivity,
    interpolated_adjoint,
    quadrature_adjoint,
)
from ._discrete import (
    FrozenGrid,
    complex_step_gradient,
    discrete_adjoint_gradient,
    finite_difference_gradient,
)
from ._errors import InputError, IntegrationError
from ._exact import exact_gradient
from ._finite import check_result
from ._high_precision import DEFAULT_DIGITS, high_precision_gradient
from ._resolution import check_resolved
from ._rosenbrock_continuous import (
    rosenbrock_backsolve_adjoint,
    rosenbrock_forward_sensitivity,
    rosenbrock_interpolated_adjoint,
    rosenbrock_quadrature_adjoint,
)
from ._rosenbrock_discrete import rosenbrock_discrete_adjoint
from ._rosenbrock_tableau import is_rosenbrock
from ._solve import solve_trajectory
from ._stiffness import explain_stiff_failure, is_stiff
from ._switching import check_switches

__all__ = ["CONTINUOUS_METHODS", "DISCRETE_METHODS", "METHODS", "Gradient", "gradient"]

#: Methods that approximate the continuous gradient to O(rtol) (or the method's order).
CONTINUOUS_METHODS = (
    "backsolve_adjoint",
    "interpolated_adjoint",
    "quadrature_adjoint",
    "forward_sensitivity",
)
#: Methods that differentiate the discrete map of the solver on a frozen grid.
DISCRETE_METHODS = ("discrete_adjoint", "complex_step", "finite_difference")
#: Methods that need no solver: exact continuous gradients.
REFERENCE_METHODS = ("exact", "high_precision")
METHODS = CONTINUOUS_METHODS + DISCRETE_METHODS + REFERENCE_METHODS
#: The continuous methods solved with the stiff solver rodas4 (each system with its own
#: Jacobian blocks and second derivatives).
ROSENBROCK_CONTINUOUS = {
    "backsolve_adjoint": rosenbrock_backsolve_adjoint,
    "interpolated_adjoint": rosenbrock_interpolated_adjoint,
    "quadrature_adjoint": rosenbrock_quadrature_adjoint,
    "forward_sensitivity": rosenbrock_forward_sensitivity,
}


@dataclass(frozen=True)
class Gradient:
    """The loss and its gradient with respect to every input.

    Attributes
    ----------
    loss : float
        :math:`L = \\sum_b \\sum_{i \\ge 1} \\ell(z_b(t_i))`.
    z0 : ndarray, shape (B, n), or (n,) for a single sample
    theta : ndarray, shape (p,)
    times : ndarray, shape (N+1,)
    method : str
    solver : str or None
        The solver with its options, None for the solver-free references.
    info : mapping
        Cost and diagnostics: step counts, ``nfev``, and per method e.g.
        ``reconstruction_error`` (backsolve) or ``error_estimate`` (high precision).
    """

    loss: float
    z0: NDArray
    theta: NDArray
    times: NDArray
    method: str
    solver: str | None = None
    info: Mapping[str, Any] = field(default_factory=dict)

    def blocks(self) -> dict[str, NDArray]:
        """The gradient blocks by name: ``z0``, ``theta``, ``times``."""
        return {"z0": self.z0, "theta": self.theta, "times": self.times}


def check_method(method: Any) -> str:
    if not isinstance(method, str) or method not in METHODS:
        raise InputError(
            f"`method` must be one of {', '.join(repr(m) for m in METHODS)}, got {method!r}."
        )
    return method


def frozen_grid(
    compiled: CompiledForm, z0: NDArray, theta: NDArray, times: NDArray, options: SolverOptions
) -> FrozenGrid:
    """The step grid a discrete method differentiates: uniform for fixed-step solvers, the
    accepted steps of a forward solve for ``dopri5``."""
    if not options.tableau.adaptive:
        return FrozenGrid.uniform(len(times) - 1, options.steps)
    traj = solve_trajectory(compiled, z0, theta, times, options)
    return FrozenGrid(tuple(traj.grid()))


def compute_gradient(
    compiled: CompiledForm,
    z0: NDArray,
    theta: NDArray,
    times: NDArray,
    method: str,
    options: SolverOptions | None,
    *,
    digits: int = DEFAULT_DIGITS,
    data: NDArray | None = None,
) -> Gradient:
    """:func:`gradient` on checked inputs (``z0`` is ``(B, n)``, ``data`` ``(N, B, k)`` or
    None); used by the audits.

    Before a method runs: where the trajectory crosses a switch of ``f`` every method
    refuses, and a kink it meets is noted in ``info["nonsmooth"]`` (``_switching``); a
    continuous method on a fixed grid that does not resolve the solution refuses
    (``_resolution``). After it: a non-finite loss or gradient, or finite differences that
    cannot resolve a block, become errors (``_finite``).
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # every block is checked for finiteness below, and every solve for its state
        nonsmooth = check_switches(compiled, z0, theta, times, method, options, data)
        if method in CONTINUOUS_METHODS:
            check_resolved(compiled, z0, theta, times, method, options)
        try:
            result = _compute(compiled, z0, theta, times, method, options, digits, data)
        except IntegrationError as exc:  # an explicit solver on stiff dynamics says so
            explained = explain_stiff_failure(compiled, z0, theta, times, options, exc)
            if explained is exc:
                raise
            raise explained from exc
        check_result(compiled, z0, theta, times, method, options, result.loss,
                     result.blocks(), result.info, data)
    if nonsmooth:
        result = replace(result, info=MappingProxyType({**result.info, "nonsmooth": nonsmooth}))
    return result


def _compute(compiled, z0, theta, times, method, options, digits, data) -> Gradient:
    info: dict[str, Any] = {}
    if method in CONTINUOUS_METHODS:
        runner = {
            "backsolve_adjoint": backsolve_adjoint,
            "interpolated_adjoint": interpolated_adjoint,
            "quadrature_adjoint": quadrature_adjoint,
            "forward_sensitivity": forward_sensitivity,
        }[method]
        if is_rosenbrock(options.tableau):  # stiff solver: numeric/_rosenbrock_continuous.py
            runner = ROSENBROCK_CONTINUOUS[method]
        result = runner(compiled, z0, theta, times, options, data=data)
        loss, g_z0, g_theta, g_times = (
            result.loss, result.grad_z0, result.grad_theta, result.grad_times
        )
        info.update(result.info)
    elif method in DISCRETE_METHODS:
        grid = frozen_grid(compiled, z0, theta, times, options)
        runner = {
            "discrete_adjoint": discrete_adjoint_gradient,
            "complex_step": complex_step_gradient,
            "finite_difference": finite_difference_gradient,
        }[method]
        if method == "discrete_adjoint" and is_rosenbrock(options.tableau):
            runner = rosenbrock_discrete_adjoint  # the stiff solver's map

        result = runner(compiled, z0, theta, times, grid, options.tableau, data=data)
        loss, g_z0, g_theta, g_times = result[:4]
        if method == "finite_difference":
            info["error_estimate"] = MappingProxyType(result[4])
        info.update(grid_steps=grid.steps, frozen_grid=options.tableau.adaptive)
    elif method == "exact":
        loss, g_z0, g_theta, g_times = exact_gradient(compiled, z0, theta, times, data=data)
    else:
        loss, g_z0, g_theta, g_times, hp_info = high_precision_gradient(
            compiled, z0, theta, times, digits=digits, data=data,
            # linearly implicit when stiff (non-smooth dynamics are refused in any case)
            stiff=not compiled.non_analytic and is_stiff(compiled, z0, theta, times),
        )
        info.update(hp_info)
    return Gradient(
        loss=float(loss),
        z0=np.asarray(g_z0, dtype=float),
        theta=np.asarray(g_theta, dtype=float),
        times=np.asarray(g_times, dtype=float),
        method=method,
        solver=options.describe() if options is not None and method not in REFERENCE_METHODS
        else None,
        info=MappingProxyType(info),
    )


def gradient(
    dynamics,
    z0,
    theta,
    times,
    *,
    loss,
    method: str = "interpolated_adjoint",
    solver: str = "dopri5",
    rtol: float | None = None,
    atol: float | None = None,
    steps: int | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
    digits: int | None = None,
    targets=(),
    data=None,
) -> Gradient:
    """The loss and its gradient with respect to ``z0``, ``theta`` and ``times``.

    Parameters
    ----------
    dynamics : symbolic.Dynamics
    z0 : array_like, shape (B, n) or (n,)
    theta : array_like, shape (p,)
    times : array_like, shape (N+1,)
        Strictly increasing; the loss is applied at ``times[1:]``.
    loss : sympy.Expr
        Per-observation loss in the state symbols, summed over times and batch.
    method : str
        One of ``backsolve_adjoint``, ``interpolated_adjoint``, ``quadrature_adjoint``,
        ``forward_sensitivity`` (continuous); ``discrete_adjoint``, ``complex_step``,
        ``finite_difference`` (the solver's discrete map, on a frozen grid for ``dopri5``);
        ``exact`` (linear autonomous dynamics) and ``high_precision`` (mpmath).
    solver : str
        ``"dopri5"`` (adaptive) or a fixed-step solver: ``"euler"``, ``"midpoint"``,
        ``"rk4"`` (classical), ``"rk4_38"`` (Kutta's 3/8 rule), ``"heun"``, ``"heun3"``,
        ``"ralston"``, ``"bosh3"``, ``"tsit5"`` (see ``numeric.TABLEAUS``).
        ``rodas4`` is the stiff solver (Rosenbrock, symbolic Jacobian); an explicit solver
        that runs out of steps on stiff dynamics raises an error saying "stiff: use
        rodas4".
    rtol, atol : float, optional
        ``dopri5`` and ``rodas4`` tolerances (defaults 1e-8, 1e-10).
    steps : int, optional
        Steps per observation interval for fixed-step solvers (default 100), and for
        ``rodas4``'s fixed-step mode.
    max_steps : int
        Budget of attempted steps per solve.
    digits : int, optional
        Significant digits of ``high_precision`` (default 30).
    targets : sequence of Symbols, optional
        Data symbols the loss uses besides the state (e.g. ``y`` in ``|z - y|^2 / 2``).
    data : array_like, shape (N, B, k) or (N, k), optional
        Their values at the observation times ``times[1:]`` (per sample, or shared).

    Returns
    -------
    Gradient
        ``loss``, ``z0`` (shape of the input ``z0``), ``theta`` (p,), ``times`` (N+1,).

    Raises
    ------
    numeric.MethodUnavailable
        The method cannot serve this problem (the message says why).
    numeric.IntegrationError
        A solve failed; no gradient is computed from a failed solve.
    """
    checked = check_problem(dynamics, loss, z0, theta, times, targets=targets, data=data)
    compiled, z0_2d, single, theta, times, data = (
        checked.compiled, checked.z0, checked.single, checked.theta, checked.times,
        checked.data,
    )
    method = check_method(method)
    options = check_solver_options(solver, steps=steps, rtol=rtol, atol=atol, max_steps=max_steps)
    if digits is None:
        digits = DEFAULT_DIGITS
    elif method != "high_precision":
        raise InputError(f"`digits` applies to method='high_precision' only, not {method!r}.")
    elif isinstance(digits, bool) or not isinstance(digits, numbers.Integral) or digits < 16:
        raise InputError(
            f"`digits` must be an integer >= 16 (more than float64 gives), got {digits!r}."
        )
    result = compute_gradient(compiled, z0_2d, theta, times, method, options, digits=int(digits),
                              data=data)
    if single:
        return Gradient(
            loss=result.loss, z0=result.z0[0], theta=result.theta, times=result.times,
            method=result.method, solver=result.solver, info=result.info,
        )
    return result
