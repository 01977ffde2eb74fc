"""Does a fixed-step grid resolve the solution? Asked before a continuous method answers.

A continuous method on a fixed grid approximates the gradient of the continuous problem to
the order of the solver; on a grid that does not resolve the solution (a blow-up, a step
beyond the stability limit) its numbers mean nothing, while the discrete methods still
differentiate the discrete map exactly. The test is Richardson's: solve on the grid and on
one twice as fine; the difference, times ``2^q / (2^q - 1)``, estimates the error of the
coarse solution at every observation time (Hairer, Nørsett & Wanner, "Solving ODEs I",
II.4). Where that estimate reaches ``UNRESOLVED`` times the state itself, the solution has
no correct digit and the method refuses.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from numpy.typing import NDArray

from symbolic import CompiledForm

from ._checks import SolverOptions, check_solver_options
from ._errors import IntegrationError, UnresolvedGrid
from ._solve import solve_trajectory

__all__ = ["UNRESOLVED", "check_resolved"]

#: Estimated error of the coarse solution, relative to the state at an observation time
#: (max norm per sample), at which the grid counts as not resolving the solution: half the
#: state's size, so that no correct digit is left. Ordinary coarse grids (a few percent,
#: the regime a convergence study starts in) stay far below it.
UNRESOLVED = 0.5


#: Verdicts of the last few grids checked, so that the continuous methods of one audit
#: share one check: (compiled, z0, theta, times, solver, steps) -> reason or None.
_VERDICTS: OrderedDict[tuple, str | None] = OrderedDict()
_REMEMBERED = 16


def check_resolved(compiled: CompiledForm, z0: NDArray, theta: NDArray, times: NDArray,
                   method: str, options: SolverOptions) -> None:
    """Refuse a continuous ``method`` on a fixed grid that does not resolve the solution.

    Raises
    ------
    UnresolvedGrid
        (a ``MethodUnavailable``) Doubling the steps changes the state at an observation
        time by more than the Richardson bound allows (see the module docstring), or the
        finer solve fails where the coarse one did not (the coarse grid stepped over a
        blow-up).
    """
    if options.tableau.adaptive:
        return
    key = (compiled, z0.shape, z0.tobytes(), theta.tobytes(), times.tobytes(), options.name,
           options.steps)
    try:
        hash(key)
    except TypeError:  # a compiled form without a hash: no sharing
        key = (object(),)
    if key not in _VERDICTS:
        _VERDICTS[key] = _unresolved(compiled, z0, theta, times, options)
        while len(_VERDICTS) > _REMEMBERED:
            _VERDICTS.popitem(last=False)
    _VERDICTS.move_to_end(key)
    reason = _VERDICTS[key]
    if reason is not None:
        raise UnresolvedGrid(method, reason)


def _unresolved(compiled, z0, theta, times, options: SolverOptions) -> str | None:
    """Why the grid of ``options`` does not resolve the solution, or None when it does."""
    coarse = solve_trajectory(compiled, z0, theta, times, options).zs
    finer_options = check_solver_options(options.name, steps=2 * options.steps, rtol=None,
                                         atol=None, max_steps=2 * options.max_steps)
    advice = (f"use more steps than {options.steps}, the adaptive 'dopri5', or a discrete "
              "method ('discrete_adjoint', 'complex_step', 'finite_difference'), which "
              "differentiate the discrete map itself")
    try:
        finer = solve_trajectory(compiled, z0, theta, times, finer_options).zs
    except IntegrationError as exc:
        return (f"{options.describe()} does not resolve the solution: with twice the steps the "
                f"solve fails ({exc.cause} at t={exc.t:.6g}), so the coarse solution stepped "
                f"over a blow-up and no continuous gradient exists on it; {advice}.")
    q = options.tableau.order
    with np.errstate(all="ignore"):
        error = np.max(np.abs(coarse - finer), axis=2) * 2**q / (2**q - 1)  # (N+1, B)
        size = np.maximum(np.max(np.abs(finer), axis=2), np.finfo(float).tiny)
        relative = error / size
    worst = np.unravel_index(int(np.argmax(relative)), relative.shape)
    if relative[worst] < UNRESOLVED:
        return None
    i, b = int(worst[0]), int(worst[1])
    return (f"{options.describe()} does not resolve the solution: at t_{i} = {times[i]:.6g} "
            f"(sample {b}) the state changes by {relative[worst]:.1e} of itself when the steps "
            f"are doubled, so it has no correct digit and a continuous gradient computed on "
            f"this grid would be meaningless; {advice}.")
