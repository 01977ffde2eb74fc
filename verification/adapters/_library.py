"""``LibraryGradient``: the gradient an outside library computes, as ``audit_gradient``
takes it, with what the audit needs to know about how it was computed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from numeric._checks import check_data, check_state, check_theta, check_times

__all__ = ["LibraryGradient"]

#: compute(z0 (B, n), theta (p,), times (N+1,), data (N, B, k) or None)
#: -> (dz0 (B, n), dtheta (p,), dtimes (N+1,) or None), all float64 NumPy arrays.
Compute = Callable[[NDArray, NDArray, NDArray, Any], tuple]


@dataclass(frozen=True, eq=False)
class LibraryGradient:
    """``grad_fn(z0, theta, times) -> (dz0, dtheta[, dtimes])`` computed by a library.

    Everything is the library's: its solver, step-size control, tolerances, dtype and its
    gradient mode (backpropagation through the solver, or its adjoint). Inputs are NumPy
    (``z0`` of shape ``(B, n)`` or ``(n,)``), outputs float64 NumPy arrays of the same
    shapes. A mode that gives no time gradient returns the 2-tuple ``(dz0, dtheta)``, so an
    audit lists the times block as not provided rather than as wrong.

    Attributes
    ----------
    library : str
        ``"torchdiffeq"`` or ``"diffrax"``.
    mode : str
        The gradient mode: ``"odeint"`` (backpropagation), ``"odeint_adjoint"``,
        ``"RecursiveCheckpointAdjoint"``, ``"BacksolveAdjoint"``, ``"DirectAdjoint"``.
    solver : str
        The library's name for its solver.
    dtype : str
        ``"float64"`` or ``"float32"``.
    rtol, atol : float or None
        The tolerances the library's step-size control ran at (None for fixed steps).
    steps : int or None
        Fixed steps: equal steps per observation interval, as ``numeric.gradient`` takes
        them; None where the library chooses its own grid (adaptive, or ``step_size``).
    step_size : float or None
        torchdiffeq's or diffrax's own constant step over the whole span, where used.
    matching_solver : str or None
        Our solver with the same Butcher tableau, for a fixed-step grid.
    no_times_reason : str
        Why the mode gives no time gradient ("" when it gives one).
    reconstruction : callable, optional
        For a mode that reconstructs ``z`` by integrating it backwards (torchdiffeq's
        ``odeint_adjoint``, diffrax's ``BacksolveAdjoint``): ``reconstruction(z0, theta,
        times, data)`` measures, with the library's own solver, how far ``z`` integrated
        backwards over each observation interval lands from the forward solution.
    remedy : str
        What to use instead when that reconstruction fails.
    """

    library: str
    mode: str
    solver: str
    dtype: str
    compute: Compute = field(repr=False)
    n: int
    p: int
    rtol: float | None = None
    atol: float | None = None
    steps: int | None = None
    step_size: float | None = None
    matching_solver: str | None = None
    no_times_reason: str = ""
    data: Any = field(default=None, repr=False)
    k: int = 0
    reconstruction: Callable[..., float] | None = field(default=None, repr=False)
    remedy: str = ""

    @property
    def provides_times(self) -> bool:
        return not self.no_times_reason

    @property
    def grid(self) -> str:
        """The step grid in words."""
        if self.steps is not None:
            return f"{self.steps} step{'s' if self.steps != 1 else ''}/interval"
        if self.step_size is not None:
            return f"step_size={self.step_size:g}"
        return f"rtol={self.rtol:g}, atol={self.atol:g}"

    @property
    def __name__(self) -> str:  # how audit_gradient names the implementation
        return f"{self.library} {self.mode} {self.solver} ({self.grid}) {self.dtype}"

    def _inputs(self, z0, theta, times) -> tuple[NDArray, bool, NDArray, NDArray, Any]:
        z0_2d, single = check_state(z0, self.n)
        theta = check_theta(theta, self.p)
        times = check_times(times)
        data = check_data(self.data, self.k, len(times) - 1, z0_2d.shape[0])
        return z0_2d, single, theta, times, data

    def diagnostics(self, z0, theta, times) -> dict[str, Any]:
        """What an audit's diagnosis may use: for a mode that integrates ``z`` backwards,
        ``reconstruction_error`` (the largest relative drift of ``z`` over one interval) and
        ``remedy``; empty otherwise."""
        if self.reconstruction is None:
            return {}
        z0_2d, _, theta, times, data = self._inputs(z0, theta, times)
        return {"reconstructs_backwards": True, "remedy": self.remedy,
                "reconstruction_error": float(self.reconstruction(z0_2d, theta, times, data))}

    def __call__(self, z0, theta, times) -> tuple[NDArray, ...]:
        z0_2d, single, theta, times, data = self._inputs(z0, theta, times)
        dz0, dtheta, dtimes = self.compute(z0_2d, theta, times, data)
        dz0 = np.asarray(dz0, dtype=np.float64)
        out = (dz0[0] if single else dz0, np.asarray(dtheta, dtype=np.float64).reshape(-1))
        if dtimes is None:
            return out
        return (*out, np.asarray(dtimes, dtype=np.float64).reshape(-1))
