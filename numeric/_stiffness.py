"""Stiffness: when an explicit solver's step is limited by stability, not accuracy.

An explicit Runge–Kutta method is stable for a step ``h`` only while ``h |lambda|`` stays
inside its stability region (about 3.3 along the negative real axis for Dormand–Prince)
for every eigenvalue ``lambda`` of the Jacobian. A probe solve with the implicit Rodas4,
whose steps follow the accuracy alone, gives the trajectory; along it the spectral
radius of the symbolic Jacobian gives the steps an explicit solver needs for stability,
:math:`\\int \\rho(J(t))\\, dt / 3.3`. Dynamics are stiff when that is far more than the
steps the implicit solver needed: then the explicit solver works hard for nothing, and an
explicit high-precision reference would take unbounded steps.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ._checks import SolverOptions, check_solver_options
from ._errors import IntegrationError
from ._rosenbrock_tableau import RODAS4, is_rosenbrock

__all__ = [
    "STIFF_RATIO",
    "STIFF_STEPS",
    "StiffnessEstimate",
    "estimate_stiffness",
    "explain_stiff_failure",
    "is_stiff",
]

#: Dormand–Prince's stability boundary on the negative real axis (Hairer, Nørsett &
#: Wanner I, IV.2, Fig. 2.1): the largest stable ``h |lambda|``.
EXPLICIT_STABILITY = 3.3
#: Dynamics are stiff when an explicit solver needs more than STIFF_STEPS steps for
#: stability alone, and more than STIFF_RATIO times the steps Rodas4 needs for accuracy.
STIFF_STEPS = 1000.0
STIFF_RATIO = 10.0
#: Tolerances and budget of the probe solve: a trajectory accurate to a few digits is all
#: a spectral radius needs.
PROBE_RTOL, PROBE_ATOL, PROBE_STEPS = 1e-6, 1e-9, 20_000
#: Failures of an explicit solver that stiffness explains.
_STEP_CAUSES = ("max_steps reached", "step size underflow")


@dataclass(frozen=True)
class StiffnessEstimate:
    """How stiff a problem is along its trajectory.

    Attributes
    ----------
    stability_steps : float
        Steps an explicit solver (Dormand–Prince) needs for stability alone,
        :math:`\\int \\rho(J)\\,dt / 3.3` summed over the samples' worst.
    implicit_steps : int
        Steps Rodas4 took at rtol = 1e-6.
    spectral_radius : float
        The largest :math:`|\\lambda(J)|` met along the trajectory.
    """

    stability_steps: float
    implicit_steps: int
    spectral_radius: float

    @property
    def stiff(self) -> bool:
        return (self.stability_steps > STIFF_STEPS
                and self.stability_steps > STIFF_RATIO * self.implicit_steps)

    def describe(self) -> str:
        return (f"|lambda(J)| reaches {self.spectral_radius:.1e}, so an explicit solver "
                f"needs about {self.stability_steps:.1e} steps for stability alone, where "
                f"rodas4 takes {self.implicit_steps} at rtol={PROBE_RTOL:g}")


_CACHE: OrderedDict = OrderedDict()


def estimate_stiffness(compiled, z0: NDArray, theta: NDArray,
                       times: NDArray) -> StiffnessEstimate | None:
    """The stiffness along the trajectory from a Rodas4 probe solve, or None when the probe
    fails (the dynamics blow up: then nothing can be said). Cached per problem."""
    key = (id(compiled), z0.tobytes(), theta.tobytes(), times.tobytes())
    if key in _CACHE:
        return _CACHE[key]
    from ._solve import solve_trajectory  # the probe is a forward solve like any other

    options = check_solver_options(RODAS4.name, steps=None, rtol=PROBE_RTOL, atol=PROBE_ATOL,
                                   max_steps=PROBE_STEPS)
    try:
        with np.errstate(all="ignore"):
            traj = solve_trajectory(compiled, z0, theta, times, options)
            radius = [_spectral_radius(compiled, segment.ys, theta, segment.ts)
                      for segment in traj.segments]
    except (IntegrationError, ArithmeticError, ValueError, TypeError, NameError):
        # the probe is advisory: dynamics it cannot integrate (blow-up), or whose Jacobian
        # does not compile (the DiracDelta of a switch), are not called stiff
        estimate = None
    else:
        steps = 0.0
        for segment, rho in zip(traj.segments, radius, strict=True):
            worst = np.maximum(rho[:-1], rho[1:])  # (K, B): per step, per sample
            steps += float(np.max(np.sum(worst * np.abs(np.diff(segment.ts))[:, None],
                                         axis=0)))
        estimate = StiffnessEstimate(
            stability_steps=steps / EXPLICIT_STABILITY,
            implicit_steps=traj.budget.used,
            spectral_radius=float(max(np.max(r) for r in radius)),
        )
    _CACHE[key] = estimate
    while len(_CACHE) > 32:
        _CACHE.popitem(last=False)
    return estimate


def _spectral_radius(compiled, ys: NDArray, theta: NDArray, ts: NDArray) -> NDArray:
    """``max |lambda(J(z, t))|`` at every step boundary and sample, shape ``(K+1, B)``."""
    out = np.empty(ys.shape[:2])
    for k, (z, t) in enumerate(zip(ys, ts, strict=True)):
        jac = compiled.jac_state(z, theta, t)
        eigenvalues = np.linalg.eigvals(jac) if np.all(np.isfinite(jac)) else np.inf
        out[k] = np.max(np.abs(eigenvalues), axis=-1)
    return out


def is_stiff(compiled, z0: NDArray, theta: NDArray, times: NDArray) -> bool:
    """Whether the problem is stiff (False when the probe cannot tell)."""
    estimate = estimate_stiffness(compiled, z0, theta, times)
    return estimate is not None and estimate.stiff


def explain_stiff_failure(compiled, z0: NDArray, theta: NDArray, times: NDArray,
                          options: SolverOptions | None,
                          error: IntegrationError) -> IntegrationError:
    """The error to raise for a failed solve: ``error`` itself, or, when an explicit solver
    ran out of steps on stiff dynamics, an error that says so ("stiff: use rodas4")."""
    if options is None or is_rosenbrock(options.tableau) or error.cause not in _STEP_CAUSES:
        return error
    estimate = estimate_stiffness(compiled, z0, theta, times)
    if estimate is None or not estimate.stiff:
        return error
    return IntegrationError(
        f"{options.name} failed on stiff dynamics, stiff: use rodas4 (solver='rodas4'). "
        f"{estimate.describe()}. The failure: {error}",
        t=error.t, cause="stiff",
    )
