r"""The parameter gradient of the quadrature adjoint: adaptive Gauss–Kronrod quadrature.

.. math:: \frac{dL}{d\theta} = \int_{t_0}^{t_N} \Big(\frac{\partial f}{\partial\theta}
          \Big)^{T} a \, dt

is integrated piece by piece over the steps of the backward solve, with ``z(t)`` and
``a(t)`` from dense output. Each piece gets the 15-point Kronrod rule and, from the same
nodes, the 7-point Gauss rule; their difference bounds the Gauss rule's error and is taken
as the (pessimistic) error of the Kronrod value. Until the estimates sum to less than the
tolerance, the pieces with the largest estimates are halved, so an integrand that is not
smooth somewhere (``sqrt(t - t_0)`` at the start, a kink) gets small pieces there and
nowhere else. All pieces of a round are evaluated together: one batched VJP over (piece,
node, sample) rows.

References
----------
R. Piessens, E. de Doncker-Kapenga, C. Überhuber, D. Kahaner, *QUADPACK*, Springer 1983
(the 7–15 Gauss–Kronrod pair, ``qk15``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ._errors import IntegrationError

__all__ = ["KRONROD_NODES", "adaptive_parameter_integral"]

#: Kronrod nodes on [-1, 1] (the Gauss nodes are those at odd positions) and weights.
KRONROD_NODES = np.array([
    -0.991455371120812639206854697526329, -0.949107912342758524526189684047851,
    -0.864864423359769072789712788640926, -0.741531185599394439863864773280788,
    -0.586087235467691130294144845693013, -0.405845151377397166906606412076961,
    -0.207784955007898467600689403773245, 0.0,
    0.207784955007898467600689403773245, 0.405845151377397166906606412076961,
    0.586087235467691130294144845693013, 0.741531185599394439863864773280788,
    0.864864423359769072789712788640926, 0.949107912342758524526189684047851,
    0.991455371120812639206854697526329,
])
KRONROD_WEIGHTS = np.array([
    0.022935322010529224963732008058970, 0.063092092629978553290700663189204,
    0.104790010322250183839876322541518, 0.140653259715525918745189590510238,
    0.169004726639267902826583426598550, 0.190350578064785409913256402421014,
    0.204432940075298892414161999234649, 0.209482141084727828012999174891714,
    0.204432940075298892414161999234649, 0.190350578064785409913256402421014,
    0.169004726639267902826583426598550, 0.140653259715525918745189590510238,
    0.104790010322250183839876322541518, 0.063092092629978553290700663189204,
    0.022935322010529224963732008058970,
])
GAUSS_WEIGHTS = np.zeros(15)
GAUSS_WEIGHTS[1::2] = [
    0.129484966168869693270611432679082, 0.279705391489276667901467771423780,
    0.381830050505118944950369775488975, 0.417959183673469387755102040816327,
    0.381830050505118944950369775488975, 0.279705391489276667901467771423780,
    0.129484966168869693270611432679082,
]
#: Halvings allowed below a backward step before the quadrature gives up.
MAX_LEVELS = 40
#: Rows of one batched evaluation (piece x node x sample) times the wider of n and p.
CHUNK_ELEMENTS = 2**23


@dataclass(frozen=True)
class QuadratureResult:
    """The integral, its estimated error per entry (a bound on the Kronrod value's error
    in practice) and how many pieces and integrand rows it took."""

    value: NDArray
    error: NDArray
    pieces: int
    levels: int


def adaptive_parameter_integral(
    integrand: Callable[[NDArray, NDArray], NDArray],
    pieces: list[tuple[int, float, float]],
    p: int,
    rows_per_time: int,
    *,
    rtol: float,
    atol: float,
) -> QuadratureResult:
    r""":math:`\sum_{\text{pieces}} \int_{lo}^{hi} I(t)\,dt`, each entry to ``atol + rtol S_j``
    in total: the pieces with the largest error estimates are halved until the estimates
    sum to less than that.

    Parameters
    ----------
    integrand : callable ``integrand(tag, ts) -> (len(ts), p)``
        :math:`I(t)` at the times ``ts`` of the piece family ``tag`` (the observation
        interval, which tells the caller which dense outputs to use).
    pieces : list of (tag, lo, hi)
    p : int
    rows_per_time : int
        Rows one time costs the integrand (the batch size), for chunking.
    rtol, atol : float
        ``S_j = sum over pieces of |Kronrod value|``: the size of what is summed.

    Raises
    ------
    IntegrationError
        When a piece is halved ``MAX_LEVELS`` times and still misses its tolerance (the
        integrand is singular there).
    """
    kronrod, gauss = _rules(integrand, pieces, p, rows_per_time)
    current = list(pieces)
    estimate = np.abs(kronrod - gauss)  # (pieces, p)
    tolerance = atol + rtol * np.abs(kronrod).sum(axis=0)  # (p,)
    tiny = np.finfo(float).tiny
    evaluated, level = len(pieces), 0
    while np.any(estimate.sum(axis=0) > tolerance):
        if level == MAX_LEVELS:
            worst = current[int(np.argmax(np.max(estimate / np.maximum(tolerance, tiny),
                                                 axis=1)))]
            raise IntegrationError(
                f"the quadrature of dL/dtheta did not converge near t={worst[1]:.6g}: after "
                f"{MAX_LEVELS} halvings the integrand (df/dtheta)^T a is still not resolved "
                "(it is singular there); use interpolated_adjoint.",
                t=float(worst[1]), cause="quadrature did not converge",
            )
        # halve every piece above an even share of half the tolerance: the others then
        # sum to at most half of it
        share = np.max(estimate / np.maximum(tolerance, tiny), axis=1)
        split = share > 0.5 / len(current)
        halves = [half for piece, s in zip(current, split, strict=True) if s
                  for half in _halves(piece)]
        new_k, new_g = _rules(integrand, halves, p, rows_per_time)
        evaluated += len(halves)
        keep = ~split
        current = [piece for piece, k in zip(current, keep, strict=True) if k] + halves
        kronrod = np.concatenate([kronrod[keep], new_k])
        estimate = np.concatenate([estimate[keep], np.abs(new_k - new_g)])
        level += 1
    return QuadratureResult(kronrod.sum(axis=0), estimate.sum(axis=0), evaluated, level)


def _halves(piece: tuple[int, float, float]) -> list[tuple[int, float, float]]:
    tag, lo, hi = piece
    mid = lo + (hi - lo) / 2
    return [(tag, lo, mid), (tag, mid, hi)]


def _rules(integrand, pieces, p: int, rows_per_time: int) -> tuple[NDArray, NDArray]:
    """Kronrod and Gauss values of every piece, evaluated in chunks, shape (pieces, p)."""
    kronrod = np.empty((len(pieces), p))
    gauss = np.empty((len(pieces), p))
    per_piece = len(KRONROD_NODES) * rows_per_time * max(p, 1)
    chunk = max(1, CHUNK_ELEMENTS // per_piece)
    tags = sorted({tag for tag, _, _ in pieces})
    for tag in tags:
        index = [i for i, piece in enumerate(pieces) if piece[0] == tag]
        for start in range(0, len(index), chunk):
            batch = index[start : start + chunk]
            lo = np.array([pieces[i][1] for i in batch])
            hi = np.array([pieces[i][2] for i in batch])
            half = (hi - lo) / 2
            ts = ((lo + hi) / 2)[:, None] + half[:, None] * KRONROD_NODES  # (m, 15)
            values = integrand(tag, ts.ravel()).reshape(len(batch), len(KRONROD_NODES), p)
            kronrod[batch] = half[:, None] * np.einsum("k,mkp->mp", KRONROD_WEIGHTS, values)
            gauss[batch] = half[:, None] * np.einsum("k,mkp->mp", GAUSS_WEIGHTS, values)
    return kronrod, gauss
