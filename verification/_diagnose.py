"""Diagnoses for a failed block, computed from the numbers, not guessed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["diagnose"]

#: A fitted relation (sign flip, scaling) counts when it explains the value to this
#: relative residual: far below any failing error, far above rounding.
EXPLAINED = 1e-6


def _relation(value: NDArray, reference: NDArray) -> tuple[float, float]:
    """Best scalar ``c`` with ``value ~ c * reference`` and the relative residual."""
    ref_sq = float(np.sum(reference * reference))
    if ref_sq == 0.0:
        return float("nan"), float("inf")
    c = float(np.sum(value * reference)) / ref_sq
    residual = float(np.linalg.norm(value - c * reference) / np.sqrt(ref_sq))
    return c, residual


def diagnose(
    block: str,
    value: NDArray,
    reference: NDArray,
    *,
    method: str,
    info: Mapping[str, Any] | None = None,
    batch: int = 1,
) -> str:
    """One sentence on how ``value`` differs from ``reference``.

    Recognised: non-finite values, an all-zero block, an opposite sign, a constant scale
    (naming the batch size when it is ``1/B`` or ``B``: mean instead of sum), and otherwise
    the entry that differs most. For the backsolve adjoint the reconstruction error of
    ``z`` it saw is added.
    """
    value = np.asarray(value, dtype=float).ravel()
    reference = np.asarray(reference, dtype=float).ravel()
    parts: list[str] = []
    if not np.all(np.isfinite(value)):
        parts.append("the gradient has inf or nan entries")
    elif np.all(value == 0) and np.any(reference != 0):
        parts.append("the block is all zeros: it is missing or not propagated")
    else:
        c, residual = _relation(value, reference)
        if residual <= EXPLAINED and abs(c + 1.0) <= EXPLAINED:
            parts.append("opposite sign: the gradient is the negative of the reference")
        elif residual <= EXPLAINED and abs(c - 1.0) > EXPLAINED:
            hint = ""
            if batch > 1 and abs(c * batch - 1.0) <= 1e-6:
                hint = f" = 1/B with batch size B = {batch}: a mean instead of a sum"
            elif batch > 1 and abs(c / batch - 1.0) <= 1e-6:
                hint = f" = B with batch size B = {batch}"
            parts.append(f"scaled by a constant {c:.6g}{hint}")
        else:
            k = int(np.argmax(np.abs(value - reference)))
            parts.append(
                f"largest deviation at {block}[{k}]: got {value[k]:.6g}, "
                f"reference {reference[k]:.6g}"
            )
    info = info or {}
    drift = info.get("reconstruction_error")
    if method == "backsolve_adjoint" and drift is not None:
        parts.append(
            f"the backward reconstruction of z drifted from the forward solution by "
            f"{drift:.1e} (relative): the forward flow contracts, so integrating z backwards "
            "amplifies errors; use interpolated_adjoint or quadrature_adjoint"
        )
    return "; ".join(parts)
