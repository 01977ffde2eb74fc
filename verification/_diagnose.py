"""Diagnoses for a failed block, computed from the numbers, not guessed."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from numeric import METHODS as LIBRARY_METHODS

__all__ = ["diagnose"]

#: A fitted relation (sign flip, scaling) counts when it explains the value to this
#: relative residual: far below any failing error, far above rounding.
EXPLAINED = 1e-6
#: Machine epsilon of float32: single precision leaves relative errors of a few of these
#: per operation, 1e-7 to 1e-5 in a gradient.
FLOAT32_EPS = float(np.finfo(np.float32).eps)
#: Errors up to this size are within what float32 arithmetic can leave in a gradient where
#: every entry proves single precision (exactly float32 numbers); without that evidence,
#: errors up to FLOAT32_TYPICAL (about 100 float32 epsilons) get the float32 hint.
FLOAT32_LIMIT = 1e-3
FLOAT32_TYPICAL = 1e-5
#: Most parameter segments (from the parameters' names) whose orders are all tried.
MAX_NAMED_SEGMENTS = 6
#: Most contiguous segments a reordering is searched for where names give no structure.
MAX_SEGMENTS = 3
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


def _named_segments(names: Sequence[str]) -> list[tuple[int, int]]:
    """Contiguous runs of parameters whose names share a stem (``w0..w8``, ``b0..b2``)."""
    stems = [re.sub(r"[\d_\[\],]+$", "", name) or name for name in names]
    segments, start = [], 0
    for k in range(1, len(stems) + 1):
        if k == len(stems) or stems[k] != stems[start]:
            segments.append((start, k))
            start = k
    return segments


def _runs(value: NDArray, reference: NDArray) -> list[tuple[int, int]] | None:
    """``value`` as at most MAX_SEGMENTS runs, each a contiguous piece ``(start, stop)`` of
    ``reference`` (longest match first), or None."""
    tol = EXPLAINED * max(float(np.max(np.abs(reference))), np.finfo(float).tiny)
    p, pos, pieces = value.size, 0, []
    while pos < p:
        best = None
        for k in np.flatnonzero(np.abs(reference - value[pos]) <= tol):
            length = min(p - pos, p - k)
            mismatch = np.abs(reference[k : k + length] - value[pos : pos + length]) > tol
            run = int(np.argmax(mismatch)) if mismatch.any() else length
            if best is None or run > best[1] - best[0]:
                best = (int(k), int(k) + run)
        if best is None or len(pieces) == MAX_SEGMENTS:
            return None
        pieces.append(best)
        pos += best[1] - best[0]
    return pieces


def _reordered(value: NDArray, reference: NDArray, names: Sequence[str]) -> str | None:
    """The parameter segments in the order the value has them, where the value is the
    reference with contiguous segments permuted (parameter matrices concatenated in
    another order than ``params``)."""
    if value.size < 2 or _close(value, reference):
        return None
    order = None
    segments = _named_segments(names) if len(names) == value.size else []
    if 1 < len(segments) <= MAX_NAMED_SEGMENTS:
        for perm in itertools.permutations(segments):
            candidate = np.concatenate([reference[a:b] for a, b in perm])
            if _close(value, candidate):
                order = list(perm)
                break
    if order is None:
        pieces = _runs(value, reference)
        if pieces is None or len(pieces) < 2:
            return None
        tiled = sorted(pieces)
        if tiled[0][0] != 0 or tiled[-1][1] != value.size or any(
            a[1] != b[0] for a, b in itertools.pairwise(tiled)
        ):
            return None
        order = pieces

    def show(a: int, b: int) -> str:
        label = f"theta[{a}:{b}]"
        if len(names) == value.size:
            label += f" ({names[a]}..{names[b - 1]})" if b - a > 1 else f" ({names[a]})"
        return label

    return (
        "the parameter gradients are concatenated in another order: the gradient is the "
        f"reference's {', '.join(show(a, b) for a, b in order)}, in that order; concatenate "
        "them in the order of `params` (theta's layout)"
    )


def _scale_hint(c: float, batch: int, observations: int | None) -> str:
    """Which count a constant scale is: a mean over the batch, the times, or both."""
    counts = {"B": batch}
    if observations:
        counts["N"] = observations
        counts["B·N"] = batch * observations
    means = [k for k, m in counts.items() if m > 1 and abs(c * m - 1.0) <= 1e-6]
    multiples = [k for k, m in counts.items() if m > 1 and abs(c / m - 1.0) <= 1e-6]
    sizes = f"batch size B = {batch}" + (
        f" and N = {observations} observation times" if observations else "")
    if means:
        over = {"B": "the batch", "N": "the observation times", "B·N": "batch and time"}
        shown = " = ".join(f"1/({k})" if "·" in k else f"1/{k}" for k in means)
        return (f" = {shown} with {sizes}: a mean over "
                f"{' or '.join(over[k] for k in means)} instead of a sum")
    if multiples:
        return f" = {' = '.join(multiples)} with {sizes}"
    return ""


def _matrices(names: Sequence[str]) -> list[tuple[str, int, int]]:
    """The parameter matrices of matrix-form dynamics, ``(name, start, stop)``, from entry
    names like ``W1[3, 5]`` (none for elementwise dynamics)."""
    if not names or "[" not in names[0]:
        return []
    out, start = [], 0
    stems = [name.split("[", 1)[0] for name in names]
    for k in range(1, len(stems) + 1):
        if k == len(stems) or stems[k] != stems[start]:
            out.append((stems[start], start, k))
            start = k
    return out


def _per_matrix(value: NDArray, reference: NDArray, names: Sequence[str], batch: int,
                observations: int | None) -> str | None:
    """Which parameter matrices are wrong and how, where only some are (a sign flipped in
    ``b1``, ``W2`` divided by the batch size), each named."""
    matrices = _matrices(names)
    if len(matrices) < 2:
        return None
    wrong = [(name, a, b) for name, a, b in matrices if not _close(value[a:b], reference[a:b])]
    if not wrong or len(wrong) == len(matrices):
        return None
    findings = []
    for name, a, b in wrong:
        part, ref = value[a:b], reference[a:b]
        c, residual = _relation(part, ref)
        if np.all(part == 0) and np.any(ref != 0):
            findings.append(f"{name}: all zeros, missing or not propagated")
        elif residual <= EXPLAINED and abs(c + 1.0) <= EXPLAINED:
            findings.append(f"{name}: opposite sign")
        elif residual <= EXPLAINED:
            findings.append(f"{name}: scaled by a constant {c:.6g}"
                            f"{_scale_hint(c, batch, observations)}")
        else:
            k = int(np.argmax(np.abs(part - ref)))
            findings.append(f"{name}: largest deviation at {names[a + k]}: got "
                            f"{part[k]:.10g}, reference {ref[k]:.10g}")
    wrong_names = {name for name, _, _ in wrong}
    right = ", ".join(name for name, _, _ in matrices if name not in wrong_names)
    return "; ".join(findings) + (f" (the other parameters, {right}, are right)" if right
                                  else "")


def _permuted_samples(value: NDArray, reference: NDArray) -> str | None:
    """``dL/dz0`` whose rows are the reference's rows in another order."""
    if value.ndim != 2 or value.shape[0] < 2:
        return None
    order = []
    for row in value:
        match = [b for b in range(reference.shape[0]) if _close(row, reference[b])]
        if not match:
            return None
        order.append(match[0])
    if sorted(order) != list(range(value.shape[0])) or order == sorted(order):
        return None
    return (f"the samples are permuted: row b of dL/dz0 is the reference's row {order}[b]; "
            "keep the batch in the order of z0")


def _observation_times_zero(value: NDArray, reference: NDArray) -> str | None:
    """The time gradient with dL/dt_1 .. dL/dt_N all zero where the reference is not."""
    if value.size < 2 or np.any(value[1:] != 0) or np.all(reference[1:] == 0):
        return None
    if value[0] == 0 and reference[0] != 0:
        start = "dL/dt_0 is zero as well"
    elif _close(value[:1], reference[:1]):
        start = "dL/dt_0 is right"
    else:
        start = f"dL/dt_0 is wrong too (got {value[0]:.10g}, reference {reference[0]:.10g})"
    return (
        "the observation-time gradients dL/dt_1 .. dL/dt_N are all zero where the reference "
        "is not: they were not propagated, which is what backpropagation through a "
        "fixed-grid solver returns (e.g. torchdiffeq with method='rk4' or 'euler', where the "
        f"times only place the grid); {start}. dL/dt_i = grad l(z(t_i))^T f(z(t_i)) for "
        "i >= 1: compute it from the forward states, or return no time gradient"
    )


def _float32(value: NDArray, reference: NDArray, error: float | None) -> tuple[str, bool]:
    """A sentence on errors at the level single precision leaves ("" if they are not), and
    whether the entries prove it: all of them exactly float32 numbers, which a float64
    computation gives with probability about 2^-29 per entry."""
    if error is None or not 0 < error <= FLOAT32_LIMIT:
        return "", False
    fits = max(10.0 ** math.ceil(math.log10(10 * error)), 1e-5)
    representable = np.all(value.astype(np.float32).astype(float) == value)
    if representable and not np.all(reference.astype(np.float32).astype(float) == reference):
        return (
            "every entry is exactly a float32 number: the gradient was computed in single "
            f"precision (epsilon {FLOAT32_EPS:.1e}), whose rounding leaves errors like this "
            f"{error:.1e}; audit it with rtol={fits:.0e}, or compute in float64"
        ), True
    deviating = np.abs(value - reference) > FLOAT32_EPS / 8 * np.max(np.abs(reference))
    if FLOAT32_EPS / 2 <= error <= FLOAT32_TYPICAL and np.mean(deviating) >= 0.5:
        # single precision leaves errors in most entries, not in a few
        return (
            f"an error of {error:.1e} relative is the size float32 arithmetic leaves: if the "
            f"implementation computes in float32, rtol={fits:.0e} fits it"
        ), False
    return "", False


def diagnose(
    block: str,
    value: NDArray,
    reference: NDArray,
    *,
    method: str,
    info: Mapping[str, Any] | None = None,
    batch: int = 1,
    observations: int | None = None,
    alternatives: Sequence[tuple[str, NDArray]] = (),
    span_note: str = "",
    error: float | None = None,
    worst: int | None = None,
    state_names: Sequence[str] = (),
    param_names: Sequence[str] = (),
) -> str:
    """One sentence on how ``value`` differs from ``reference``.

    Recognised: non-finite values; observation-time gradients all zero (backpropagation
    through a fixed-grid solver); an all-zero block; agreement with a known wrong answer in
    ``alternatives`` ((sentence, array) pairs, e.g. a loss on the last observation only, the
    adjoint equation with the wrong sign); the ``t_0`` entry alone with the wrong sign; a
    transposed square parameter matrix; parameter segments concatenated in another order;
    some entries zero; an opposite sign; a constant scale (naming the batch size ``B`` and
    the number of observations ``N`` when it is ``1/B``, ``1/N`` or ``1/(B·N)``: a mean
    instead of a sum); the samples of the batch permuted; errors at float32's level
    (``error``, the row's relative error); otherwise the entry that differs most (``worst``,
    the row's worst entry on its own scale, as a flat index; else the largest absolute
    deviation), with ``span_note`` (how the error grows with the
    time span) when nothing more specific explains the difference. For the backsolve adjoint
    the reconstruction error of ``z`` it saw is added.
    An outside implementation whose ``info`` says it ``reconstructs_backwards`` gets its
    reconstruction error of ``z`` (``info["reconstruction_error"]``) added, with
    ``info["remedy"]`` when given.
    """
    shape = np.shape(value)
    value = np.asarray(value, dtype=float).ravel()
    reference = np.asarray(reference, dtype=float).ravel()
    parts: list[str] = []
    generic = False
    if observations is None and block == "times":
        observations = value.size - 1

    def where(k: int) -> str:
        index = np.unravel_index(k, shape) if len(shape) > 1 else (k,)
        label = f"{block}[{', '.join(str(int(i)) for i in index)}]"
        names = {"theta": param_names, "z0": state_names}.get(block, ())
        column = int(index[-1])
        return label + (f" ({names[column]})" if column < len(names) else "")

    flipped_t0 = reference.copy()
    if flipped_t0.size:
        flipped_t0[0] = -flipped_t0[0]
    zero_entries = np.flatnonzero((value == 0) & (reference != 0))
    matched = [
        sentence for sentence, candidate in alternatives
        if _close(value, np.asarray(candidate, dtype=float).ravel())
    ]
    transposed = _transposed(value, reference) if block == "theta" else None
    times_zero = _observation_times_zero(value, reference) if block == "times" else None
    if not np.all(np.isfinite(value)):
        parts.append("the gradient has inf or nan entries")
    elif times_zero:
        parts.append(times_zero)
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
    elif block == "theta" and (reordered := _reordered(value, reference, param_names)):
        parts.append(reordered)
    elif block == "theta" and (by_matrix := _per_matrix(value, reference, param_names, batch,
                                                        observations)):
        parts.append(by_matrix)
    elif block == "z0" and (permuted := _permuted_samples(value.reshape(shape),
                                                            reference.reshape(shape))):
        parts.append(permuted)
    else:
        c, residual = _relation(value, reference)
        # single precision is a question for outside code: the library computes in float64
        single, evident = ("", False) if method in LIBRARY_METHODS else _float32(
            value, reference, error)
        if residual <= EXPLAINED and abs(c + 1.0) <= EXPLAINED:
            parts.append("opposite sign: the gradient is the negative of the reference")
        elif residual <= EXPLAINED and abs(c - 1.0) > EXPLAINED:
            parts.append(f"scaled by a constant {c:.6g}{_scale_hint(c, batch, observations)}")
        elif single and evident:
            parts.append(single)
        else:
            k = int(np.argmax(np.abs(value - reference))) if worst is None else worst
            parts.append(
                f"largest deviation at {where(k)}: got {value[k]:.10g}, "
                f"reference {reference[k]:.10g}"
            )
            generic = True
            if single:
                parts.append(single)
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
