"""A gradient is returned only when its numbers mean something.

A loss that is nan (undefined on the path: ``log`` of a negative number) or infinite
(overflow), a gradient block that is not finite, or finite differences whose own error
estimate is larger than the whole gradient become the library's errors, with the cause and
where it was met, instead of numbers.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from symbolic import CompiledForm

from ._checks import SolverOptions, check_solver_options, observed
from ._errors import IntegrationError, MethodUnavailable
from ._solve import solve_trajectory

__all__ = ["FD_UNRESOLVED", "check_loss_on_path", "check_result"]

#: Finite differences are refused when a block's error estimate exceeds this fraction of
#: the whole gradient (2-norm over every block): no digit of that block could be trusted.
FD_UNRESOLVED = 1.0
#: The solve that locates a non-finite loss for methods without a solver of their own.
_LOCATE_RTOL, _LOCATE_ATOL, _LOCATE_MAX_STEPS = 1e-8, 1e-10, 10_000


def _loss_error(compiled: CompiledForm, z: NDArray, y, t: float, i: int) -> None:
    """Raise ``IntegrationError`` where the loss or its gradient at ``z(t_i)`` (``(B, n)``)
    is not finite."""
    with np.errstate(all="ignore"):
        values = np.asarray(compiled.loss(z, y), dtype=complex)
        grads = np.asarray(compiled.loss_grad(z, y), dtype=complex)
    bad_value = ~np.isfinite(values) | (values.imag != 0)
    bad_grad = ~np.all(np.isfinite(grads), axis=1)
    if not np.any(bad_value | bad_grad):
        return
    b = int(np.argmax(bad_value | bad_grad))
    if bad_value[b] and np.isinf(values[b].real) and values[b].imag == 0:
        what, cause, why = f"the value {values[b].real:g}", "loss overflow", (
            "it overflows float64 (|l| > 1.8e308): rescale the state, the inputs or the loss")
    else:
        what = "no real value" if bad_value[b] else "an infinite gradient"
        cause, why = "loss undefined", (
            "it is not defined there (e.g. log or sqrt of a negative number, or a derivative "
            "that is infinite): keep the trajectory inside the loss's domain")
    state = np.array2string(np.real(z[b]), precision=6, threshold=6)
    raise IntegrationError(
        f"the loss at t_{i} = {t:.6g} has {what} for sample {b} (z = {state}); {why}.",
        t=float(t),
        cause=cause,
    )


def check_loss_on_path(compiled: CompiledForm, z0: NDArray, theta: NDArray, times: NDArray,
                       data=None, options: SolverOptions | None = None) -> None:
    """Raise ``IntegrationError`` when the loss, or its gradient, is not finite at an
    observed state of the forward solution (``dopri5`` at rtol 1e-8 unless ``options``).

    A solve that fails is not reported here: the methods report their own failures.
    """
    if options is None:
        options = check_solver_options("dopri5", steps=None, rtol=_LOCATE_RTOL,
                                       atol=_LOCATE_ATOL, max_steps=_LOCATE_MAX_STEPS)
    try:
        with np.errstate(all="ignore"):
            traj = solve_trajectory(compiled, z0, theta, times, options)
    except IntegrationError:
        return
    for i in range(1, len(times)):
        _loss_error(compiled, traj.zs[i], observed(data, i), times[i], i)


def _block_message(block: str, values: NDArray) -> str:
    entries = np.flatnonzero(~np.isfinite(values))[:6].tolist()
    return (f"its {block} gradient is not finite at entries {entries} (flat index): the "
            "derivative does not exist there for this method, e.g. df/dt is infinite where a "
            "stage is evaluated (sqrt(t) at t = 0), or it is beyond float64's range (1.8e308) "
            "for these inputs. Use a continuous method, start the time span inside the "
            "domain, or rescale the inputs")


def check_result(compiled: CompiledForm, z0: NDArray, theta: NDArray, times: NDArray,
                 method: str, options: SolverOptions | None, loss: float,
                 blocks: Mapping[str, NDArray], info: Mapping, data=None) -> None:
    """Refuse a computed result whose numbers do not mean anything.

    Raises
    ------
    IntegrationError
        The loss is not finite (nan: undefined on the path; inf: overflow), located at the
        first observation where it is not.
    MethodUnavailable
        A gradient block is not finite, or (finite differences) a block's error estimate is
        larger than ``FD_UNRESOLVED`` times the whole gradient.
    """
    if not np.isfinite(loss):
        located = options if method not in ("exact", "high_precision") else None
        check_loss_on_path(compiled, z0, theta, times, data, located)
        raise IntegrationError(
            f"the loss computed by {method!r} is {loss}: it overflows float64 or is undefined "
            "on the path of this method's solution; rescale the inputs or keep the trajectory "
            "inside the loss's domain.",
            t=float(times[-1]),
            cause="non-finite loss",
        )
    for block, values in blocks.items():
        values = np.asarray(values, dtype=float)
        if not np.all(np.isfinite(values)):
            raise MethodUnavailable(method, _block_message(block, values) + ".")
    estimate = info.get("error_estimate")
    if method == "finite_difference" and estimate:
        scale = float(np.sqrt(sum(np.sum(np.asarray(v) ** 2) for v in blocks.values())))
        for block, entries in estimate.items():
            error = float(np.max(entries, initial=0.0))  # per entry: the largest
            if error > FD_UNRESOLVED * scale:
                raise MethodUnavailable(
                    method,
                    f"finite differences cannot resolve the {block} block here: their own "
                    f"error estimate {error:.1e} exceeds the whole gradient ({scale:.1e}), "
                    "e.g. the step in times, at most 1/20 of the smallest gap between times, "
                    "is too small for float64's rounding. Use 'discrete_adjoint' or "
                    "'complex_step'.",
                )
