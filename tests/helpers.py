"""Named tolerance tiers and a blockwise comparison for the tests.

The tiers are the audit's own (verification/_tolerances.py), each with the reason it holds.
"""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest

from verification._tolerances import (
    FINITE_DIFFERENCE,
    ROUNDING,
    block_error,
    solver_tolerance,
)

__all__ = [
    "FINITE_DIFFERENCE",
    "ROUNDING",
    "assert_gradients_close",
    "gradient_errors",
    "import_extra",
    "relative_error",
    "solver_tolerance",
]

BLOCKS = ("z0", "theta", "times")


def relative_error(value, reference) -> float:
    """``|value - reference| / |reference|`` in the 2-norm (floored at the tiniest float)."""
    value, reference = np.asarray(value, float), np.asarray(reference, float)
    denom = max(np.linalg.norm(reference), np.finfo(float).tiny)
    return float(np.linalg.norm(value - reference) / denom)


def gradient_errors(g, ref) -> dict[str, float]:
    """The error measure of MATH.md for each block of two ``Gradient`` results: entry by
    entry, each on its own term scale where ``ref`` or ``g`` carries one (forward
    sensitivity's ``info["term_scale"]``), else relative to the reference's entries."""
    terms = ref.info.get("term_scale") or g.info.get("term_scale") or {}
    return {b: block_error(getattr(g, b), getattr(ref, b), terms.get(b)) for b in BLOCKS}


def assert_gradients_close(g, ref, tol: float, *, what: str = "") -> None:
    """Every block of ``g`` within ``tol`` of ``ref`` (MATH.md error measure)."""
    errors = gradient_errors(g, ref)
    bad = {b: e for b, e in errors.items() if not e <= tol}
    assert not bad, (
        f"{what or g.method}: blocks {', '.join(f'{b} error {e:.2e}' for b, e in bad.items())}"
        f" exceed tolerance {tol:.1e} against {ref.method}"
    )


def import_extra(module: str):
    """An optional library the adapter tests need (torch, torchdiffeq, jax, diffrax).

    Skipped where it is not installed, except in CI (``CI`` set): .ci/run installs every
    extra, so there a missing one is a broken install and fails, never a silent skip.
    """
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module)
