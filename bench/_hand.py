"""Hand-written NumPy baselines: classical RK4 forward pass plus reverse sweep.

What a competent person writes by hand for the benchmark problems of ``bench/`` (loss
``½|z(T)|²`` summed over the batch, one observation at ``T``): store the stages on the way
forward, walk them back once (MATH.md's discrete adjoint, term by term), accumulate the
parameter gradient stage by stage. Batch as rows: ``z`` is ``(B, n)``, ``W z`` is
``z @ W.T``. No tricks beyond that, so that a ratio against it says how close a general
library comes to code written for one ``f``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["linear_rk4_gradient", "mlp_rk4_gradient"]

#: Classical RK4: stage coefficients a[i, i-1] (the only nonzero ones), weights, nodes.
_A = (0.0, 0.5, 0.5, 1.0)
_B = (1 / 6, 1 / 3, 1 / 3, 1 / 6)


def linear_rk4_gradient(W: NDArray, z0: NDArray, steps: int, t1: float = 1.0):
    """``f = W z``: loss, ``dL/dz0`` ``(B, n)`` and ``dL/dW`` ``(n, n)``."""
    h = t1 / steps
    z = z0
    stages = []  # per step: the four stage inputs
    for _ in range(steps):
        Z = [z]
        k = z @ W.T
        ks = [k]
        for i in range(1, 4):
            Zi = z + (h * _A[i]) * ks[-1]
            Z.append(Zi)
            ks.append(Zi @ W.T)
        z = z + h * (_B[0] * ks[0] + _B[1] * ks[1] + _B[2] * ks[2] + _B[3] * ks[3])
        stages.append(Z)
    loss = 0.5 * float(np.sum(z * z))
    lam = z.copy()
    gW = np.zeros_like(W)
    for Z in reversed(stages):
        zbar_next = None
        total = lam.copy()
        for i in range(3, -1, -1):
            kbar = (h * _B[i]) * lam
            if zbar_next is not None:
                kbar = kbar + (h * _A[i + 1]) * zbar_next
            gW += kbar.T @ Z[i]
            zbar = kbar @ W
            total += zbar
            zbar_next = zbar
        lam = total
    return loss, lam, gW


def mlp_rk4_gradient(W1, b1, W2, b2, z0: NDArray, steps: int, t1: float = 1.0):
    """``f = W2 tanh(W1 z + b1) + b2``: loss, ``dL/dz0`` and the four parameter gradients.

    The forward pass keeps each stage's input and hidden activation, so the reverse sweep
    evaluates no ``tanh``: ``tanh' = 1 - tanh²``.
    """
    h = t1 / steps

    def f(Z):
        H = np.tanh(Z @ W1.T + b1)
        return H @ W2.T + b2, H

    z = z0
    tape = []
    for _ in range(steps):
        Zs, Hs, ks = [z], [], []
        k, H = f(z)
        Hs.append(H)
        ks.append(k)
        for i in range(1, 4):
            Zi = z + (h * _A[i]) * ks[-1]
            k, H = f(Zi)
            Zs.append(Zi)
            Hs.append(H)
            ks.append(k)
        z = z + h * (_B[0] * ks[0] + _B[1] * ks[1] + _B[2] * ks[2] + _B[3] * ks[3])
        tape.append((Zs, Hs))
    loss = 0.5 * float(np.sum(z * z))
    lam = z.copy()
    gW1, gb1 = np.zeros_like(W1), np.zeros_like(b1)
    gW2, gb2 = np.zeros_like(W2), np.zeros_like(b2)
    for Zs, Hs in reversed(tape):
        zbar_next = None
        total = lam.copy()
        for i in range(3, -1, -1):
            kbar = (h * _B[i]) * lam
            if zbar_next is not None:
                kbar = kbar + (h * _A[i + 1]) * zbar_next
            H = Hs[i]
            gW2 += kbar.T @ H
            gb2 += kbar.sum(axis=0)
            U = (kbar @ W2) * (1.0 - H * H)
            gW1 += U.T @ Zs[i]
            gb1 += U.sum(axis=0)
            zbar = U @ W1
            total += zbar
            zbar_next = zbar
        lam = total
    return loss, lam, (gW1, gb1, gW2, gb2)
