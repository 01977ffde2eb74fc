"""Forward solves: the state trajectory through every observation time."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from symbolic import CompiledForm

from ._checks import (
    DEFAULT_MAX_STEPS,
    SolverOptions,
    check_compiled,
    check_solver_options,
    check_state,
    check_theta,
    check_times,
)
from ._errors import IntegrationError
from ._rk import AdaptiveState, Segment, StepBudget, adaptive_segment, fixed_segment
from ._rosenbrock import StateSystem, rosenbrock_intervals
from ._rosenbrock_tableau import is_rosenbrock
from ._stiffness import explain_stiff_failure

__all__ = ["Trajectory", "integrate_intervals", "solve", "solve_trajectory"]


@dataclass
class Trajectory:
    """A forward solve: the state at every observation time and the steps in between.

    Attributes
    ----------
    zs : ndarray, shape (N+1, B, n)
    segments : list of Segment
        One per observation interval, for dense output and the frozen step grid.
    budget : StepBudget
        Steps taken, rejected and right-hand-side evaluations.
    """

    zs: NDArray
    segments: list[Segment]
    budget: StepBudget

    def evaluate(self, t: float, interval: int) -> NDArray:
        """Dense output at ``t`` inside observation interval ``interval``, shape (B, n)."""
        return self.segments[interval].evaluate(t)

    def grid(self) -> list[NDArray]:
        """The accepted steps as fractions of each interval (the frozen grid)."""
        return [segment.fractions() for segment in self.segments]


def integrate_intervals(
    rhs: Callable[[Any, NDArray], NDArray],
    y0: NDArray,
    nodes: Sequence[float],
    options: SolverOptions,
    budget: StepBudget,
    *,
    at_node: Callable[[int, NDArray], NDArray] | None = None,
    what: str = "state",
    need_end_derivative: bool = False,
    dense: bool = True,
    first_step: float | None = None,
    carry: AdaptiveState | None = None,
) -> list[Segment]:
    """Integrate ``rhs`` from ``nodes[0]`` through every later node (in either direction).

    ``at_node(i, y)`` is called on arrival at ``nodes[i]`` (i >= 1) and returns the state to
    continue from: the adjoint adds its jump there. ``dense=False`` keeps no steps (only
    each interval's end), for passes that need no dense output. ``first_step`` is the
    adaptive solver's first trial step (else it estimates one); the controller still checks
    it. ``carry`` passes a seminorm and receives its unchecked errors (see
    :func:`numeric._rk.adaptive_segment`).
    For the Rosenbrock solver ``rodas4``, ``rhs`` must be a ``RosenbrockSystem``
    (numeric/_rosenbrock.py): ``F`` with ``dF/dt`` and a factorisation of
    ``I - h gamma dF/dy``.
    """
    if is_rosenbrock(options.tableau):  # stiff solver: numeric/_rosenbrock.py
        return rosenbrock_intervals(rhs, y0, nodes, options, budget, at_node=at_node,
                                    what=what)
    segments = []
    carry = carry if carry is not None else AdaptiveState()
    if first_step is not None:
        carry.h_abs = first_step
    y = y0
    for i in range(1, len(nodes)):
        t_a, t_b = float(nodes[i - 1]), float(nodes[i])
        if options.tableau.adaptive:
            segment = adaptive_segment(
                rhs, y, t_a, t_b, options.tableau, options.rtol, options.atol, budget, carry,
                what=what, dense=dense,
            )
        else:
            segment = fixed_segment(
                rhs, y, t_a, t_b, options.tableau, options.steps, budget, what=what,
                need_end_derivative=need_end_derivative, dense=dense,
            )
        segments.append(segment)
        y = segment.ys[-1]
        if at_node is not None:
            y = at_node(i, y)
            carry.f = None  # the state jumped: f(t, y) must be evaluated again
    return segments


def solve_trajectory(
    compiled: CompiledForm, z0: NDArray, theta: NDArray, times: NDArray, options: SolverOptions
) -> Trajectory:
    """Solve ``dz/dt = f`` through ``times`` with the checked ``options``."""
    budget = StepBudget(options.max_steps)
    kernel = compiled.kernel(theta)

    def rhs(t, z):
        return kernel.rhs(z, t)

    if is_rosenbrock(options.tableau):  # the state equation with its symbolic Jacobian
        rhs = StateSystem(compiled, theta)

    segments = integrate_intervals(rhs, z0, times, options, budget, need_end_derivative=True)
    zs = np.stack([z0] + [segment.ys[-1] for segment in segments])
    return Trajectory(zs=zs, segments=segments, budget=budget)


def solve(
    dynamics,
    z0,
    theta,
    times,
    *,
    solver: str = "dopri5",
    rtol: float | None = None,
    atol: float | None = None,
    steps: int | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> NDArray:
    """Solve the Neural ODE ``dz/dt = f(z, theta, t)`` and return the state at ``times``.

    Parameters
    ----------
    dynamics : symbolic.Dynamics
    z0 : array_like, shape (B, n) or (n,)
    theta : array_like, shape (p,)
        In the order of ``dynamics.params``.
    times : array_like, shape (N+1,)
        Strictly increasing; ``times[0]`` is the start.
    solver : str
        ``"dopri5"`` (adaptive) or a fixed-step solver: ``"euler"``, ``"midpoint"``,
        ``"rk4"`` (classical), ``"rk4_38"`` (Kutta's 3/8 rule), ``"heun"``, ``"heun3"``,
        ``"ralston"``, ``"bosh3"``, ``"tsit5"`` (see ``numeric.TABLEAUS``).
        ``rodas4`` is the stiff solver (a Rosenbrock method with the symbolic Jacobian).
    rtol, atol : float, optional
        Tolerances of ``dopri5`` and ``rodas4`` (defaults 1e-8 and 1e-10).
    steps : int, optional
        Equal steps per observation interval for the fixed-step solvers (default 100), and
        for ``rodas4``'s fixed-step mode.
    max_steps : int
        Budget of attempted steps over the whole solve.

    Returns
    -------
    zs : ndarray, shape (N+1, B, n), or (N+1, n) for a single sample

    Raises
    ------
    numeric.IntegrationError
        When the state becomes non-finite, the step size underflows or ``max_steps`` runs
        out; the message names the time reached.
    """
    compiled = check_compiled(dynamics, None, loss_required=False)
    z0_2d, single = check_state(z0, compiled.n)
    theta = check_theta(theta, compiled.p)
    times = check_times(times)
    options = check_solver_options(
        solver, steps=steps, rtol=rtol, atol=atol, max_steps=max_steps
    )
    try:
        with np.errstate(all="ignore"):  # a non-finite state is an IntegrationError
            zs = solve_trajectory(compiled, z0_2d, theta, times, options).zs
    except IntegrationError as exc:  # an explicit solver on stiff dynamics says so
        explained = explain_stiff_failure(compiled, z0_2d, theta, times, options, exc)
        if explained is exc:
            raise
        raise explained from exc
    return zs[:, 0, :] if single else zs
