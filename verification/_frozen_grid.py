"""How far the discrete map on an adaptive solver's frozen grid is from the continuous one.

The discrete adjoint on ``dopri5`` differentiates the map with the accepted steps frozen
(MATH.md, "Discrete adjoint"). The forward solve controls the error of ``z``, not of the
derivative of the grid's error with respect to the inputs: next to a singularity of ``f``
(``sqrt(t)`` near ``t = 0``), where the grid is graded, ``dL/dt_0`` on the frozen grid can be
far from the continuous ``dL/dt_0`` though it is the exact derivative of the discrete map.
The same grid with every step halved converges at the method's order ``q``, so the
difference of the two is a Richardson estimate of that error.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from numeric import Gradient, IntegrationError, MethodUnavailable
from numeric._checks import SolverOptions
from numeric._discrete import FrozenGrid, complex_step_gradient, discrete_adjoint_gradient
from numeric._gradient import frozen_grid

from ._report import BLOCKS

__all__ = ["frozen_grid_error", "halved"]


def halved(grid: FrozenGrid) -> FrozenGrid:
    """The same grid with every step split in two at its midpoint."""
    return FrozenGrid(tuple(
        np.sort(np.concatenate([s, (s[:-1] + s[1:]) / 2.0])) for s in grid.fractions
    ))


def frozen_grid_error(compiled, z0: NDArray, theta: NDArray, times: NDArray,
                      options: SolverOptions, *, data: NDArray | None = None,
                      known: Mapping[str, Gradient] | None = None
                      ) -> tuple[dict[str, NDArray], str]:
    r"""Richardson estimate of the distance of the frozen-grid derivative from the
    continuous gradient, per entry.

    .. math:: e_h \approx (D_h - D_{h/2}) \frac{2^q}{2^q - 1}

    with :math:`D_h` the derivative of the discrete map on the frozen grid and
    :math:`D_{h/2}` on the grid with every step halved, ``q`` the solver's order. The
    derivative is taken by complex step (independent of the discrete adjoint under audit),
    or by the discrete adjoint where ``f`` is not complex-analytic.

    Parameters
    ----------
    compiled : CompiledForm
    z0 : ndarray, shape (B, n)
    theta : ndarray, shape (p,)
    times : ndarray, shape (N+1,)
    options : SolverOptions
        The adaptive solver whose accepted steps make the grid.
    known : mapping, optional
        Gradients already computed on that grid, by method name.

    Returns
    -------
    estimate : dict
        Absolute estimates, arrays of the blocks' shapes (``z0`` as ``(B, n)``).
    source : str
        The method the estimate comes from.

    Raises
    ------
    IntegrationError, MethodUnavailable
        Neither derivative could be taken on both grids.
    """
    known = known or {}
    grid = frozen_grid(compiled, z0, theta, times, options)
    tableau = options.tableau
    q = tableau.order
    last: Exception | None = None
    for method, runner in (("complex_step", complex_step_gradient),
                           ("discrete_adjoint", discrete_adjoint_gradient)):
        try:
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                coarse = known.get(method)
                coarse_blocks = (coarse.blocks() if coarse is not None else dict(zip(
                    BLOCKS, runner(compiled, z0, theta, times, grid, tableau, data=data)[1:4],
                    strict=True)))
                fine = runner(compiled, z0, theta, times, halved(grid), tableau, data=data)
        except (MethodUnavailable, IntegrationError) as exc:
            last = exc
            continue
        fine_blocks = dict(zip(BLOCKS, fine[1:4], strict=True))
        estimate = {
            b: np.abs(np.asarray(coarse_blocks[b], float) - np.asarray(fine_blocks[b], float))
            * 2**q / (2**q - 1)
            for b in BLOCKS
        }
        if all(np.all(np.isfinite(v)) for v in estimate.values()):
            return estimate, method
        last = MethodUnavailable(method, "its derivative on the halved grid is not finite")
    raise last
