"""Diagnoses for a failed block, computed from the numbers, not guessed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["diagnose"]

#: A fitted relation (sign flip, scaling) counts when it explains the value to this
#: relative residual: far below any failing error, far above rounding.
EXPLAINED = 1e-6
#: An outside implementation's backward reconstruction of z is named as the cause when its
#: relative drift is at least this share of the block's relative error: a gradient computed
#: along a wrong z is wrong by about the drift times the problem's sensitivity.
RECONSTRUCTION_SHARE = 0.1


def _relation(value: NDArray, reference: NDArray) -> tuple[float, float]:
    """Best scalar ``c`` with ``value ~ c * reference`` and the relative residual."""
    ref_sq = float(np.sum(reference * reference))
    if ref_sq == 0.0:
        return float("nan"), float("inf")
    c = float(np.sum(value * reference)) / ref_sq
    residual = float(np.linalg.norm(value - c * reference) / np.sqrt(ref_sq))
    return c, residual


def _close(value: NDArray, candidate: NDArray) -> bool:
    scale = max(float(np.linalg.norm(candidate)), np.finfo(float).tiny)
    return float(np.linalg.norm(value - candidate)) <= EXPLAINED * scale


def _transposed(value: NDArray, reference: NDArray) -> int | None:
    """Size m of a leading m x m parameter matrix whose gradient came back transposed."""
    p = value.size
    for m in range(int(np.sqrt(p)), 1, -1):
        candidate = reference.copy()
        candidate[: m * m] = reference[: m * m].reshape(m, m).T.reshape(-1)
        if not _close(reference, candidate) and _close(value, candidate):
            return m
    return None


def diagnose(
    block: str,
    value: NDArray,
    reference: NDArray,
    *,
    method: str,
    info: Mapping[str, Any] | None = None,
    batch: int = 1,
    alternatives: Sequence[tuple[str, NDArray]] = (),
    span_note: str = "",
) -> str:
    """One sentence on how ``value`` differs from ``reference``.

    Recognised: non-finite values; an all-zero block; some entries zero; an opposite
    sign; the ``t_0`` entry alone with the wrong sign; a transposed square parameter
    matrix; a constant scale (naming the batch size when it is ``1/B`` or ``B``: a mean
    instead of a sum); agreement with a known wrong answer in ``alternatives`` ((sentence,
    array) pairs, e.g. the gradient of a loss on the last observation only); otherwise the entry
    that differs most, with ``span_note`` (how the error grows with the time span) when
    nothing more specific explains the difference. For the backsolve adjoint, and for an
    outside implementation whose ``info`` says it ``reconstructs_backwards``, the
    reconstruction error of ``z`` (``info["reconstruction_error"]``) is added, with
    ``info["remedy"]`` when given.
    """
    shape = np.shape(value)
    value = np.asarray(value, dtype=float).ravel()
    reference = np.asarray(reference, dtype=float).ravel()
    parts: list[str] = []
    generic = False

    def where(k: int) -> str:
        index = np.unravel_index(k, shape) if len(shape) > 1 else (k,)
        return f"{block}[{', '.join(str(int(i)) for i in index)}]"
    flipped_t0 = reference.copy()
    if flipped_t0.size:
        flipped_t0[0] = -flipped_t0[0]
    zero_entries = np.flatnonzero((value == 0) & (reference != 0))
    matched = [
        sentence for sentence, candidate in alternatives
        if _close(value, np.asarray(candidate, dtype=float).ravel())
    ]
    transposed = _transposed(value, reference) if block == "theta" else None
    if not np.all(np.isfinite(value)):
        parts.append("the gradient has inf or nan entries")
    elif np.all(value == 0) and np.any(reference != 0):
        parts.append("the block is all zeros: it is missing or not propagated")
    elif zero_entries.size:
        shown = ", ".join(where(int(k)) for k in zero_entries[:6])
        parts.append(f"entries {shown} are zero where the reference is not: missing")
        live = np.flatnonzero(value != 0)
        if live.size and not _close(value[live], reference[live]):
            k = int(live[np.argmax(np.abs(value[live] - reference[live]))])
            parts.append(f"the other entries differ too, most at {where(k)}: got "
                         f"{value[k]:.10g}, reference {reference[k]:.10g}")
    elif matched:
        parts.append(matched[0])
    elif block == "times" and reference[0] != 0 and _close(value, flipped_t0):
        parts.append(
            "the t_0 entry has the wrong sign: dL/dt_0 = -a(t_0)^T f(z_0, t_0), while the "
            "observation times are right"
        )
    elif transposed is not None:
        parts.append(
            f"transposed: the gradient of the leading {transposed} x {transposed} parameter "
            "matrix is the transpose of the reference (a z^T written as z a^T?)"
        )
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
                f"largest deviation at {where(k)}: got {value[k]:.10g}, "
                f"reference {reference[k]:.10g}"
            )
            generic = True
    if generic and span_note:
        parts.append(span_note)
    info = info or {}
    drift = info.get("reconstruction_error")
    outside = info.get("reconstructs_backwards", False)
    error = float(np.linalg.norm(value - reference)) / max(float(np.linalg.norm(reference)),
                                                           np.finfo(float).tiny)
    if outside and drift is not None and drift < RECONSTRUCTION_SHARE * error:
        parts.append(f"the backward reconstruction of z stayed within {drift:.1e} (relative) "
                     "of the forward solution, too little to explain this")
    elif (method == "backsolve_adjoint" or outside) and drift is not None:
        remedy = info.get("remedy", "use interpolated_adjoint or quadrature_adjoint")
        parts.append(
            f"the backward reconstruction of z drifted from the forward solution by "
            f"{drift:.1e} (relative): the forward flow contracts, so integrating z backwards "
            f"amplifies errors; {remedy}"
        )
    return "; ".join(parts)
