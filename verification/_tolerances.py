"""Tolerances that follow from the numerics (shared/MATH.md), each with its reason.

An audit holds every comparison to one of these tiers; the tests use the same names.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "EPS",
    "FINITE_DIFFERENCE",
    "FLOOR_FRACTION",
    "ROUNDING",
    "SOLVER_ERROR_GROWTH",
    "block_error",
    "finite_difference_tolerance",
    "solver_tolerance",
]

EPS = float(np.finfo(float).eps)

#: Two computations of the same derivative that differ only in rounding: the discrete adjoint
#: and complex step on one frozen grid, exact vs high precision rounded to float64, symbolic
#: vs compiled. Each carries about ``eps * sqrt(#operations) * condition`` of error; 1e-12
#: leaves three to four decades of room above eps = 2.2e-16 (MATH.md: "about 1e-13").
ROUNDING = 1e-12

#: Central differences with h = eps^(1/3) max(1, |x|) have truncation error ~ |L'''| h^2 / 6
#: and rounding error ~ eps |L| / h, each ~ eps^(2/3) = 3.7e-11 times the problem's
#: derivative ratios; the factor 1e3 covers ratios up to 1e3 (MATH.md, "Finite
#: differences").
FINITE_DIFFERENCE = 1e3 * EPS ** (2.0 / 3.0)

#: An adaptive solver holds each step's local error below atol + rtol |y|; the global error
#: of the solution (and of a gradient built from it) is that bound amplified by the flow
#: over the span and summed over steps. 1e3 covers the amplification of well-posed problems
#: over spans of a few time units (Hairer, Nørsett & Wanner, "Solving ODEs I", II.3).
SOLVER_ERROR_GROWTH = 1e3

#: The error of a block is measured relative to max(|g_ref block|, FLOOR_FRACTION * |g_ref|)
#: where |g_ref| is the norm of the whole reference gradient: a block whose reference is
#: (nearly) zero is judged against the scale of the gradient as a whole, since every method's
#: error is relative to that scale (MATH.md, "Error measure").
FLOOR_FRACTION = 1e-3


def solver_tolerance(rtol: float, atol: float = 0.0) -> float:
    """Tolerance for a continuous method against the exact gradient: ``O(rtol)``."""
    return SOLVER_ERROR_GROWTH * max(rtol, atol)


def finite_difference_tolerance() -> float:
    """Tolerance for central differences against the exact derivative of the same map."""
    return FINITE_DIFFERENCE


def block_error(value: NDArray, reference: NDArray, scale: float, term: float = 0.0) -> float:
    """``|g - g_ref| / max(|g_ref|, FLOOR_FRACTION * scale, term)`` in the 2-norm (MATH.md).

    ``scale`` is the norm of the whole reference gradient; ``term`` the norm of the sums of
    magnitudes the block is computed from (``info["term_scale"]`` of forward sensitivity),
    where the gradient is a small difference of larger terms (near a fit) and every method's
    error is relative to them. The result is ``inf`` when ``value`` is not finite.
    """
    value = np.asarray(value, dtype=float)
    reference = np.asarray(reference, dtype=float)
    if not np.all(np.isfinite(value)):
        return float("inf")
    floor = max(FLOOR_FRACTION * scale, term, np.finfo(float).tiny)
    with np.errstate(over="ignore"):  # a difference beyond float64 is an infinite error
        return float(np.linalg.norm(value - reference) / max(np.linalg.norm(reference), floor))
