"""JAX and diffrax from the SymPy dynamics: the vector field as a JAX function, and
diffrax's own gradient of the loss as a ``grad_fn`` for ``audit_gradient``.

Imported only when an adapter is called: ``import verification`` never needs JAX. JAX
computes in float32 unless 64-bit mode is on; the adapter turns it on for the duration of
each call (``jax.enable_x64``) when asked for float64, and leaves the global setting alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from numeric import InputError
from numeric._checks import DEFAULT_ATOL, DEFAULT_RTOL
from symbolic import Dynamics, DynamicsError, backend_form

from ._library import LibraryGradient

__all__ = ["ADJOINTS", "DIFFRAX_MATCHING", "diffrax_gradient", "jax_function"]

#: Our names of diffrax's gradient modes -> its adjoint classes.
ADJOINTS = {
    "recursive_checkpoint": "RecursiveCheckpointAdjoint",
    "direct": "DirectAdjoint",
    "backsolve": "BacksolveAdjoint",
}
#: diffrax's explicit Runge–Kutta solvers whose tableau is a solver of ours, read from
#: diffrax/_solver/*.py (its Ralston is the c2 = 2/3 method; Bosh3 and Tsit5 propagate
#: their higher-order solution; their FSAL stage only feeds the error estimate).
DIFFRAX_MATCHING = {"Euler": "euler", "Midpoint": "midpoint", "Heun": "heun",
                    "Ralston": "ralston", "Bosh3": "bosh3", "Tsit5": "tsit5"}
#: Why a mode gives no time gradient: BacksolveAdjoint differentiates only y0 and args
#: (differentiating t0, t1 or SaveAt(ts) through it raises "Unexpected tangent").
NO_TIMES = {"backsolve": "diffrax's BacksolveAdjoint differentiates y0 and args only, not "
                         "t0, t1 or the save times"}
DEFAULT_MAX_STEPS = 4096
_DTYPES = ("float64", "float32")


def jax_function(dynamics: Dynamics) -> Callable[..., Any]:
    """Build what :func:`verification.adapters.jax_function` documents."""
    if not isinstance(dynamics, Dynamics):
        raise DynamicsError(f"`dynamics` must be a symbolic.Dynamics, got "
                            f"{type(dynamics).__name__}.")
    form = backend_form(dynamics, 0, "jax")

    def vector_field(t, z, theta):
        return form.rhs(z, form.unflatten(theta), t)

    return vector_field


def _check_solver(solver: Any, adjoint: Any, steps: Any, dt0: Any, rtol: Any,
                  atol: Any) -> diffrax.AbstractSolver:
    if adjoint not in ADJOINTS:
        raise InputError(f"`adjoint` must be one of {', '.join(map(repr, ADJOINTS))}, got "
                         f"{adjoint!r}.")
    cls = getattr(diffrax, solver, None) if isinstance(solver, str) else None
    if not (isinstance(cls, type) and issubclass(cls, diffrax.AbstractSolver)):
        raise InputError(f"`solver` must name one of diffrax's ODE solvers (e.g. 'Dopri5', "
                         f"'Tsit5', 'Heun', 'Euler'), got {solver!r}.")
    fixed = steps is not None or dt0 is not None
    if steps is not None and dt0 is not None:
        raise InputError("give `steps` (equal steps per observation interval) or `dt0` "
                         "(diffrax's constant step), not both.")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)
                              or steps < 1):
        raise InputError(f"`steps` must be a positive integer, got {steps!r}.")
    if fixed and (rtol is not None or atol is not None):
        raise InputError("`rtol`/`atol` apply to adaptive steps; with `steps` or `dt0` the "
                         "step is fixed.")
    if not fixed and not issubclass(cls, diffrax.AbstractAdaptiveSolver):
        raise InputError(f"diffrax's {solver} has no error estimate, so it cannot adapt its "
                         "step; give `steps` (per observation interval) or `dt0`.")
    return cls()


def _controller(times, steps: int | None, dt0: float | None, rtol: float, atol: float):
    """diffrax's step-size controller and ``dt0``: ``steps`` equal steps per interval
    (``StepTo`` on ``t_j + s_k (t_{j+1} - t_j)``, differentiable in the times, the grid
    ``numeric`` replays), a constant ``dt0``, or PID control at ``rtol``, ``atol``."""
    if steps is not None:
        fractions = jnp.linspace(0.0, 1.0, steps + 1, dtype=times.dtype)
        inner = times[:-1, None] + fractions[None, :-1] * (times[1:] - times[:-1])[:, None]
        return diffrax.StepTo(ts=jnp.concatenate([inner.reshape(-1), times[-1:]])), None
    if dt0 is not None:
        return diffrax.ConstantStepSize(), dt0
    return diffrax.PIDController(rtol=rtol, atol=atol), None


def diffrax_gradient(
    dynamics: Dynamics,
    loss,
    *,
    adjoint: str = "recursive_checkpoint",
    solver: str = "Dopri5",
    rtol: float | None = None,
    atol: float | None = None,
    steps: int | None = None,
    dt0: float | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
    dtype: str = "float64",
    targets=(),
    data=None,
) -> LibraryGradient:
    """Build what :func:`verification.adapters.diffrax_gradient` documents."""
    solver_obj = _check_solver(solver, adjoint, steps, dt0, rtol, atol)
    if dtype not in _DTYPES:
        raise InputError(f"`dtype` must be 'float64' or 'float32', got {dtype!r}.")
    fixed = steps is not None or dt0 is not None
    rtol = None if fixed else (DEFAULT_RTOL if rtol is None else float(rtol))
    atol = None if fixed else (DEFAULT_ATOL if atol is None else float(atol))
    vector_field = jax_function(dynamics)
    form = backend_form(dynamics, loss, "jax", targets)
    adjoint_obj = getattr(diffrax, ADJOINTS[adjoint])()
    with_times = adjoint not in NO_TIMES

    def total_loss(z0, theta, times, data):
        controller, first_step = _controller(times, steps, dt0, rtol, atol)
        solution = diffrax.diffeqsolve(
            diffrax.ODETerm(vector_field), solver_obj, t0=times[0], t1=times[-1],
            dt0=first_step, y0=z0, args=theta, saveat=diffrax.SaveAt(ts=times[1:]),
            stepsize_controller=controller, adjoint=adjoint_obj, max_steps=max_steps,
        )
        values = [form.loss(solution.ys[i], None if data is None else data[i])
                  for i in range(len(times) - 1)]
        return jnp.sum(jnp.stack(values))

    derivative = jax.jit(jax.grad(total_loss, argnums=(0, 1, 2) if with_times else (0, 1)))

    def compute(z0, theta, times, data):
        with jax.enable_x64(dtype == "float64"):
            cast = {"dtype": jnp.float64 if dtype == "float64" else jnp.float32}
            grads = derivative(jnp.asarray(z0, **cast), jnp.asarray(theta, **cast),
                               jnp.asarray(times, **cast),
                               None if data is None else jnp.asarray(data, **cast))
            grads = [np.asarray(g, dtype=np.float64) for g in grads]
        return grads[0], grads[1], grads[2] if with_times else None

    @jax.jit
    def integrate_between(z_start, theta, t_start, t_end):
        controller, first_step = _controller(jnp.stack([t_start, t_end]), steps, dt0, rtol,
                                             atol)
        if first_step is not None:
            first_step = jnp.sign(t_end - t_start) * first_step
        return diffrax.diffeqsolve(
            diffrax.ODETerm(vector_field), solver_obj, t0=t_start, t1=t_end, dt0=first_step,
            y0=z_start, args=theta, stepsize_controller=controller, max_steps=max_steps,
        ).ys[-1]

    def reconstruction(z0, theta, times, data):
        """Largest relative drift of z integrated backwards over one interval, from the
        forward solution at its end (diffrax's own solve both ways)."""
        with jax.enable_x64(dtype == "float64"):
            cast = {"dtype": jnp.float64 if dtype == "float64" else jnp.float32}
            theta, times = jnp.asarray(theta, **cast), jnp.asarray(times, **cast)
            zs = [jnp.asarray(z0, **cast)]
            for i in range(1, len(times)):
                zs.append(integrate_between(zs[-1], theta, times[i - 1], times[i]))
            drift = 0.0
            for i in range(1, len(times)):
                back = integrate_between(zs[i], theta, times[i], times[i - 1])
                size = max(float(jnp.linalg.norm(zs[i - 1])), np.finfo(float).tiny)
                drift = max(drift, float(jnp.linalg.norm(back - zs[i - 1])) / size)
        return drift

    return LibraryGradient(
        library="diffrax", mode=ADJOINTS[adjoint], solver=solver, dtype=dtype,
        compute=compute, n=dynamics.n, p=dynamics.p, rtol=rtol, atol=atol, steps=steps,
        step_size=dt0, matching_solver=DIFFRAX_MATCHING.get(solver) if steps else None,
        no_times_reason=NO_TIMES.get(adjoint, ""), data=data, k=form.k,
        reconstruction=reconstruction if adjoint == "backsolve" else None,
        remedy="use RecursiveCheckpointAdjoint (diffrax's default) instead of "
               "BacksolveAdjoint",
    )
