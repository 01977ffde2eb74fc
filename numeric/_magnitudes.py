r"""Term scales at network size: the size of what every gradient entry is summed from.

MATH.md's error measure holds entry ``j`` to its term scale :math:`T_j`: the sum of the
magnitudes of the terms the entry is a sum of. Forward sensitivity gives them for every
block, but it carries ``n p`` unknowns per sample. Here:

- ``z0`` and ``times``: from the state's own sensitivity :math:`S_z = \partial z/\partial
  z_0` (``n n`` unknowns per sample, whatever ``p``), exactly as forward sensitivity:
  :math:`T_{z_0} = \sum_i |S_z(t_i)|^T \max(|g_i|, |g_i^0|)`,
  :math:`T_{t_i} = \sum_b \max(|g_i|, |g_i^0|)^T |f(z(t_i))|`,
  :math:`T_{t_0} = \sum_b T_{z_0}^T |f(z_0)|`;
- ``theta``: from the adjoint, whose parameter gradient is the integral
  :math:`\int \sum_b (\partial f/\partial\theta)^T a_b\,dt`: the integral of the same sum
  with every factor of every term in absolute value (for ``W z`` inside ``f``,
  :math:`\int |\bar Y|^T |Z|\,dt`), for the loss as given and, with data, for the loss with
  zero targets (:math:`g^0`): near a fit the gradient is a small difference of such terms.

The two are the same idea, written for the formulation that computes the entry; both
bound the entry (:math:`|g_j| \le T_j`) and are known to a digit or two, which is all a
scale needs.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from symbolic import CompiledForm

from ._checks import check_solver_options, observed
from ._quadrature import adaptive_parameter_integral
from ._rk import StepBudget
from ._solve import integrate_intervals, solve_trajectory

__all__ = ["adjoint_term_scales"]

#: Tolerances of the solves behind a scale: a magnitude, needed to a digit or two.
SCALE_RTOL, SCALE_ATOL = 1e-8, 1e-10
#: The quadrature of the magnitudes: relative accuracy a scale needs.
SCALE_QUADRATURE_RTOL = 1e-3


def adjoint_term_scales(compiled: CompiledForm, z0: NDArray, theta: NDArray, times: NDArray,
                        *, data=None) -> dict[str, NDArray]:
    """The term scale of every entry of every block (module docstring), arrays of the
    blocks' shapes, without the ``n p`` sensitivities."""
    options = check_solver_options("dopri5", steps=None, rtol=SCALE_RTOL, atol=SCALE_ATOL,
                                   max_steps=100_000)
    traj = solve_trajectory(compiled, z0, theta, times, options)
    N = len(times) - 1
    kernel = compiled.kernel(theta)
    jumps = [compiled.loss_grad(traj.zs[i], observed(data, i)) for i in range(1, N + 1)]
    zero = None if data is None else [compiled.loss_grad(traj.zs[i], 0 * data[i - 1])
                                      for i in range(1, N + 1)]
    uncancelled = [np.abs(g) if zero is None else np.maximum(np.abs(g), np.abs(g0))
                   for g, g0 in zip(jumps, zero or jumps, strict=True)]
    t_z0 = _state_sensitivity_scale(kernel, z0, times, uncancelled, options)
    f_end = [kernel.rhs(traj.zs[i], times[i]) for i in range(1, N + 1)]
    t_times = np.zeros(N + 1)
    t_times[1:] = [float(np.sum(u * np.abs(f))) for u, f in zip(uncancelled, f_end,
                                                                 strict=True)]
    t_times[0] = float(np.sum(t_z0 * np.abs(kernel.rhs(z0, times[0]))))
    t_theta = np.zeros(compiled.p)
    for gradients in ([jumps] if zero is None else [jumps, zero]):
        t_theta = np.maximum(t_theta, _parameter_magnitudes(kernel, traj, times, gradients,
                                                            options, compiled.p))
    return {"z0": t_z0, "theta": t_theta, "times": t_times}


def _state_sensitivity_scale(kernel, z0, times, uncancelled, options) -> NDArray:
    r""":math:`\sum_i |S_z(t_i)|^T u_i` with :math:`\dot S_z = J S_z`, :math:`S_z(t_0) = I`:
    the state and its ``n`` tangent columns integrated together, the columns as extra rows
    of the batch."""
    B, n = z0.shape
    rows = B * n

    def rhs(t, y):
        z = y[:rows].reshape(B, n)
        columns = y[rows:].reshape(B * n, n)  # sample b, column k at row b n + k
        f = kernel.rhs(z, t)
        d = kernel.tangent(np.repeat(z, n, axis=0), t, columns)
        return np.concatenate([f.ravel(), d.ravel()])

    identity = np.tile(np.eye(n), (B, 1))
    segments = integrate_intervals(rhs, np.concatenate([z0.ravel(), identity.ravel()]),
                                   times, options, StepBudget(options.max_steps),
                                   what="sensitivity", dense=False)
    total = np.zeros((B, n))
    for segment, u in zip(segments, uncancelled, strict=True):
        # columns[b, k, :] = dz_b/dz0_{b,k}: row k of S_z^T
        columns = segment.ys[-1][rows:].reshape(B, n, n)
        total += np.einsum("bki,bi->bk", np.abs(columns), u)
    return total


def _parameter_magnitudes(kernel, traj, times, gradients, options, p: int) -> NDArray:
    """The integral over the span of the magnitudes of the parameter integrand's terms, for
    the adjoint with the given jumps."""
    B, n = traj.zs.shape[1:]
    N = len(times) - 1

    def z_at(t):
        j = min(max(int(np.searchsorted(times, t, side="right")) - 1, 0), N - 1)
        return traj.evaluate(t, j)

    def rhs(t, y):
        return -kernel.vjp_state(z_at(t), t, y.reshape(B, n)).ravel()

    def at_node(i, y):
        return y + gradients[N - i - 1].ravel() if N - i >= 1 else y

    segments = integrate_intervals(rhs, gradients[-1].ravel(), times[::-1], options,
                                   StepBudget(options.max_steps), at_node=at_node,
                                   what="adjoint", dense=True)
    pieces = []
    for index, segment in enumerate(segments):
        for k in range(segment.steps):
            lo, hi = sorted((float(segment.ts[k]), float(segment.ts[k + 1])))
            pieces.append((N - 1 - index, lo, hi))

    def integrand(interval, ts):
        a = segments[N - 1 - interval].evaluate_many(ts).reshape(len(ts) * B, n)
        z = traj.segments[interval].evaluate_many(ts).reshape(len(ts) * B, n)
        return kernel.parameter_integrand(z, np.repeat(ts, B), a, len(ts), magnitude=True)

    return adaptive_parameter_integral(integrand, pieces, p, B, rtol=SCALE_QUADRATURE_RTOL,
                                       atol=0.0).value
