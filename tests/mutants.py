"""Gradient implementations with deliberate bugs (and correct ones) for the mutation suite.

Every implementation computes the gradient of L = sum_b sum_i |z_b(t_i)|^2 / 2 for linear
dynamics f = W z (W = theta reshaped n x n, row-major), the way a person would write it:
exact propagation with the matrix exponential, the parameter gradient by Gauss–Legendre
quadrature of a z^T. `linear_gradient(bugs=...)` switches on one bug at a time.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import expm

NODES, WEIGHTS = np.polynomial.legendre.leggauss(16)

BUGS = (
    "adjoint_sign",      # da/dt = +W^T a instead of -W^T a
    "transposed",        # dL/dW accumulates z a^T instead of a z^T
    "mean",              # dL/dtheta divided by the batch size (mean instead of sum)
    "no_jumps",          # the loss gradient is added at t_N only
    "jump_sign",         # a(t_i-) = a(t_i+) - grad l
    "t0_sign",           # dL/dt_0 = +a^T f
    "zero_times",        # time gradients left at zero
    "time_off_by_one",   # dL/dt_i uses f(z(t_{i-1}))
    "missing_entry",     # forgets dL/dW[1, 0]
    "sign",              # every block negated (gradient ascent convention leaking out)
    "rows_swapped",      # dL/dz0 rows of the batch permuted
    "backsolve",         # z reconstructed backwards from z(t_N) by exp(-W t): diverges
    "coarse",            # a 4-node quadrature where 16 are needed: inaccurate dL/dW
)


def linear_gradient(z0, theta, times, *, bugs=()):
    bugs = set(bugs)
    n = np.shape(z0)[-1]
    W = np.asarray(theta, dtype=float).reshape(n, n)
    shape = np.shape(z0)
    z0 = np.atleast_2d(np.asarray(z0, dtype=float))
    times = np.asarray(times, dtype=float)
    nodes, weights = (np.polynomial.legendre.leggauss(2) if "coarse" in bugs
                      else (NODES, WEIGHTS))
    z_end = z0 @ expm(W * (times[-1] - times[0])).T

    def z_at(t):
        if "backsolve" in bugs:  # backwards from the final state: unstable when W contracts
            return z_end @ expm(-W * (times[-1] - t)).T
        return z0 @ expm(W * (t - times[0])).T

    adjoint = W.T if "adjoint_sign" not in bugs else -W.T
    a = np.zeros_like(z0)
    d_w = np.zeros((n, n))
    d_times = np.zeros_like(times)
    for i in range(len(times) - 1, 0, -1):
        g = z_at(times[i])
        if "no_jumps" not in bugs or i == len(times) - 1:
            a = a - g if ("jump_sign" in bugs and i < len(times) - 1) else a + g
        f_at = z_at(times[i - 1 if "time_off_by_one" in bugs else i]) @ W.T
        d_times[i] = np.sum(g * f_at)
        t_lo, t_hi = times[i - 1], times[i]
        for x, w in zip(nodes, weights, strict=False):
            t = t_lo + (x + 1) / 2 * (t_hi - t_lo)
            a_t = a @ expm(adjoint * (t_hi - t)).T
            outer = z_at(t).T @ a_t if "transposed" in bugs else a_t.T @ z_at(t)
            d_w += w * (t_hi - t_lo) / 2 * outer
        a = a @ expm(adjoint * (t_hi - t_lo)).T
    d_times[0] = -np.sum(a * (z_at(times[0]) @ W.T))
    if "t0_sign" in bugs:
        d_times[0] = -d_times[0]
    if "zero_times" in bugs:
        d_times[:] = 0.0
    if "missing_entry" in bugs:
        d_w[1, 0] = 0.0
    if "mean" in bugs:
        d_w /= len(z0)
    if "rows_swapped" in bugs:
        a = a[::-1]
    d_z0, d_theta = a.reshape(shape), d_w.reshape(-1)
    if "sign" in bugs:
        return -d_z0, -d_theta, -d_times
    return d_z0, d_theta, d_times
