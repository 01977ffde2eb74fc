"""Tolerances that follow from the numerics (shared/MATH.md), each with its reason.

An audit holds every comparison to one of these tiers; the tests use the same names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from numeric import InputError

__all__ = [
    "EPS",
    "FINITE_DIFFERENCE",
    "MEASURES",
    "ROUNDING",
    "SOLVER_ERROR_GROWTH",
    "BlockComparison",
    "block_error",
    "check_measure",
    "compare_block",
    "entry_scales",
    "finite_difference_tolerance",
    "rounding_tolerance",
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

#: The error measures a verdict can use (MATH.md, "Error measure"): ``componentwise``
#: holds every entry to the tolerance on its own scale (the default); ``normwise`` holds the
#: block's 2-norm, for comparison with tools that measure that way.
MEASURES = ("componentwise", "normwise")


def rounding_tolerance(dtype) -> float:
    """``ROUNDING`` for arithmetic in ``dtype``: the same number of decades above that
    dtype's machine epsilon (float32: 1e-12 * 1.2e-7 / 2.2e-16 = 5.4e-4)."""
    return ROUNDING * float(np.finfo(dtype).eps) / EPS


def solver_tolerance(rtol: float, atol: float = 0.0) -> float:
    """Tolerance for a continuous method against the exact gradient: ``O(rtol)``."""
    return SOLVER_ERROR_GROWTH * max(rtol, atol)


def finite_difference_tolerance() -> float:
    """Tolerance for central differences against the exact derivative of the same map."""
    return FINITE_DIFFERENCE


def check_measure(measure) -> str:
    """``measure`` if it names one of :data:`MEASURES`, else an ``InputError``."""
    if not isinstance(measure, str) or measure not in MEASURES:
        raise InputError(f"`measure` must be one of {', '.join(map(repr, MEASURES))}, got "
                         f"{measure!r}.")
    return measure


def entry_scales(reference: NDArray, terms: NDArray | None = None) -> NDArray:
    r"""The scale each entry of a block is measured on (MATH.md, "Error measure").

    .. math:: s_j = \max(|g_{ref,j}|,\ T_j,\ \mathrm{ROUNDING} \cdot \max_k
              \max(|g_{ref,k}|, T_k),\ \mathrm{tiny})

    ``T_j`` is the entry's own term scale (``info["term_scale"]`` of forward sensitivity:
    the sum of magnitudes the entry is computed from); near a fit the entry is a small
    difference of such terms, and every method is accurate relative to them. The third
    term is a floor on the block's *own* scale, never another block's: an entry that is
    structurally zero (its reference and terms vanish) still receives the rounding of the
    block's largest entries wherever a computation mixes them (the Padé solve of a matrix
    exponential, a backward solve of a coupled adjoint), about ``eps`` times the largest
    term; ``ROUNDING`` leaves the same room above that as the rounding tier does.

    Parameters
    ----------
    reference : ndarray, any shape
    terms : ndarray, same shape, optional
        Zero (the reference alone) when not given.

    Returns
    -------
    scales : ndarray, the shape of ``reference``
    """
    reference = np.abs(np.asarray(reference, dtype=float))
    own = reference if terms is None else np.maximum(
        reference, np.broadcast_to(np.asarray(terms, dtype=float), reference.shape))
    floor = ROUNDING * float(np.max(own)) if own.size else 0.0
    return np.maximum(own, max(floor, np.finfo(float).tiny))


@dataclass(frozen=True)
class BlockComparison:
    """The verdict on one block: its error and tolerance at the entry reported, and that
    entry (the one furthest past, or closest to, its tolerance).

    ``index`` is a flat index into the block (None for an empty block).
    """

    error: float
    tolerance: float
    passed: bool
    index: int | None


def compare_block(value: NDArray, reference: NDArray, terms: NDArray | None = None, *,
                  rtol: float | NDArray, atol: float = 0.0,
                  measure: str = "componentwise") -> BlockComparison:
    r"""Compare a block with its reference under ``measure`` (MATH.md, "Error measure").

    ``componentwise``: the block passes when every entry does,

    .. math:: |g_j - g_{ref,j}| \le \mathrm{rtol}_j\, s_j + \mathrm{atol},

    with ``s_j`` from :func:`~.entry_scales`; the entry reported is the one with the largest
    ratio of the two sides, its error ``|g_j - g_ref,j| / s_j`` and its tolerance
    ``rtol_j + atol / s_j``, so that ``error <= tolerance`` is the verdict. With a scalar
    ``rtol`` and ``atol = 0`` the error is :math:`\max_j e_j`. ``normwise``: the same in the
    2-norm of the block, :math:`\|g - g_{ref}\| \le \mathrm{rtol} \max(\|g_{ref}\|,
    \|T\|) + \mathrm{atol}` (``rtol`` a scalar), reporting the entry of largest deviation.

    Parameters
    ----------
    value, reference : ndarray, same shape
    terms : ndarray, same shape, optional
        The term scale of every entry.
    rtol : float or ndarray of the block's shape
    atol : float
    measure : {"componentwise", "normwise"}

    Returns
    -------
    BlockComparison
        ``error = inf`` and a failure where ``value`` is not finite.
    """
    value = np.asarray(value, dtype=float).ravel()
    reference = np.asarray(reference, dtype=float).ravel()
    terms = None if terms is None else np.asarray(terms, dtype=float).ravel()
    if value.size == 0:
        return BlockComparison(0.0, float(np.max(rtol, initial=0.0)), True, None)
    bad = np.flatnonzero(~np.isfinite(value))
    if bad.size:
        return BlockComparison(math.inf, float(np.max(rtol)), False, int(bad[0]))
    with np.errstate(over="ignore"):  # a difference beyond float64 is an infinite error
        deviation = np.abs(value - reference)
    if measure == "normwise":
        scale = max(float(np.linalg.norm(reference)),
                    0.0 if terms is None else float(np.linalg.norm(terms)),
                    np.finfo(float).tiny)
        rtol = float(np.max(rtol))
        error = float(np.linalg.norm(deviation)) / scale
        tolerance = rtol + atol / scale
        return BlockComparison(error, tolerance, error <= tolerance,
                               int(np.argmax(deviation)))
    check_measure(measure)
    scales = entry_scales(reference, terms)
    allowed = np.broadcast_to(np.asarray(rtol, dtype=float).ravel(), scales.shape) * scales
    allowed = allowed + atol
    k = int(np.argmax(deviation / allowed))
    error = float(deviation[k] / scales[k])
    tolerance = float(allowed[k] / scales[k])
    return BlockComparison(error, tolerance, bool(np.all(deviation <= allowed)), k)


def block_error(value: NDArray, reference: NDArray, terms: NDArray | None = None, *,
                measure: str = "componentwise") -> float:
    r"""The error of a block (MATH.md, "Error measure"): :math:`\max_j |g_j - g_{ref,j}| /
    s_j` with ``s_j`` from :func:`~.entry_scales` (``componentwise``), or
    ``|g - g_ref| / max(|g_ref|, |T|)`` in the 2-norm (``normwise``); ``inf`` when ``value``
    is not finite. ``terms`` are the entries' term scales (``info["term_scale"]`` of
    forward sensitivity), zero when not given.
    """
    return compare_block(value, reference, terms, rtol=1.0, measure=measure).error
