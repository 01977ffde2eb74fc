"""A deliberately BROKEN copy of seed_gradient.py: the observation-time jumps are missing.

Dynamics f = W z (z in R^2, W = theta reshaped row-major), loss l(z) = |z|^2 / 2 at every
observation time t_1..t_N, summed over the batch. The adjoint is propagated exactly with
the matrix exponential and dL/dW = sum_b integral a z^T dt is computed by Gauss–Legendre
quadrature on every observation interval:

    adjoint-verify reference --problem linear --out linear.json
    adjoint-verify check linear.json --impl examples/seed_gradient_broken.py:grad
"""

import numpy as np
from scipy.linalg import expm

NODES, WEIGHTS = np.polynomial.legendre.leggauss(16)


def grad(z0, theta, times):
    """Return (dL/dz0, dL/dtheta, dL/dtimes) for z0 of shape (B, 2) or (2,)."""
    W = np.asarray(theta, dtype=float).reshape(2, 2)
    shape = np.shape(z0)
    z0 = np.atleast_2d(z0)
    times = np.asarray(times, dtype=float)
    zs = [z0 @ expm(W * (t - times[0])).T for t in times]  # z(t_i), (B, 2) each
    a = np.zeros_like(z0)  # a(t_N+) = 0
    d_w = np.zeros((2, 2))
    d_times = np.zeros_like(times)
    for i in range(len(times) - 1, 0, -1):
        g = zs[i]  # gradient of |z|^2 / 2
        if i == len(times) - 1:  # BUG: the jump is added at t_N only
            a = a + g
        d_times[i] = np.sum(g * (zs[i] @ W.T))
        t_lo, t_hi = times[i - 1], times[i]
        for x, w in zip(NODES, WEIGHTS, strict=False):
            t = t_lo + (x + 1) / 2 * (t_hi - t_lo)
            a_t = a @ expm(W.T * (t_hi - t)).T
            z_t = z0 @ expm(W * (t - times[0])).T
            d_w += w * (t_hi - t_lo) / 2 * a_t.T @ z_t
        a = a @ expm(W.T * (t_hi - t_lo)).T  # a(t_{i-1}+)
    d_times[0] = -np.sum(a * (z0 @ W.T))
    return a.reshape(shape), d_w.reshape(-1), d_times
