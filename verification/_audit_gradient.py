"""``audit_gradient``: an outside gradient implementation against the best reference."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from numeric import (
    InputError,
)
from numeric._checks import check_problem
from numeric._finite import check_loss_on_path

from ._alternatives import AuditContext, alternatives
from ._diagnose import EXPLAINED, diagnose
from ._explain import library_untraced, traced
from ._nonsmooth import annotate_failures, nonsmooth_notes
from ._quiet import callers_errstate, quiet_numerics
from ._references import REFERENCE_MARGIN, ReferenceGradient, best_reference, term_scale
from ._report import BLOCKS, SKIP_KINDS, ProblemSummary, Report, Row, Skipped, entry_label
from ._tolerances import block_error, check_measure, compare_block

__all__ = [
    "DEFAULT_GRADIENT_RTOL",
    "AuditContext",
    "GradientShapeError",
    "ImplementationError",
    "audit_gradient",
]

#: Default tolerance of `audit_gradient`, relative per entry: what a float64 adjoint at a
#: sensible solver tolerance (rtol ~ 1e-9) delivers with room to spare. Loosen it for a
#: float32 implementation (~1e-4), tighten it for a reference implementation.
DEFAULT_GRADIENT_RTOL = 1e-6
#: A relative error that grows by this factor from the shortest to the longest time span is
#: reported as growing with the span.
SPAN_GROWTH = 10.0


class GradientShapeError(InputError):
    """The implementation under audit returned something of the wrong form or shape."""


class ImplementationError(InputError):
    """The implementation under audit raised an exception (chained as ``__cause__``)."""


def call_implementation(grad_fn, z0, theta, times, expected: Mapping[str, tuple]):
    """Call ``grad_fn`` on copies of the inputs and check the form of what it returns."""
    try:
        with callers_errstate():  # the caller's code, under the caller's settings
            out = grad_fn(np.array(z0, copy=True), np.array(theta, copy=True),
                          np.array(times, copy=True))
    except Exception as exc:
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        raise ImplementationError(
            f"the implementation under audit raised {type(exc).__name__}: {exc} (at "
            f"{Path(frame.filename).name}:{frame.lineno}); it was called as grad_fn(z0, theta, "
            f"times) with z0 of shape {np.shape(z0)}, theta {np.shape(theta)}, times "
            f"{np.shape(times)}."
        ) from exc
    if not isinstance(out, (tuple, list)) or len(out) not in (2, 3):
        raise GradientShapeError(
            "`grad_fn` must return a tuple (dz0, dtheta) or (dz0, dtheta, dtimes), got "
            f"{type(out).__name__}"
            + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else "")
            + "; return the gradient blocks in that order."
        )
    blocks = {}
    for block, value in zip(BLOCKS, out, strict=False):
        try:
            array = np.asarray(value)
        except Exception as exc:  # ragged output
            raise GradientShapeError(f"block `{block}` returned by grad_fn is not an array: "
                                     f"{exc}") from exc
        if np.iscomplexobj(array) or array.dtype == object:
            raise GradientShapeError(
                f"block `{block}` returned by grad_fn has dtype {array.dtype}; expected real "
                "numbers (take .real only if the imaginary part is meant to be zero)."
            )
        if array.shape != expected[block]:
            raise GradientShapeError(
                f"block `{block}` returned by grad_fn has shape {array.shape}, expected "
                f"{expected[block]} (the shape of `{block}`); return one gradient entry per "
                "input entry, summed over the batch for theta and times."
            )
        blocks[block] = array.astype(float)
    return blocks


@quiet_numerics
def audit_gradient(
    dynamics,
    grad_fn: Callable[..., Any],
    z0,
    theta,
    times,
    *,
    loss,
    rtol: float = DEFAULT_GRADIENT_RTOL,
    atol: float = 0.0,
    name: str | None = None,
    digits: int = 30,
    reference: str | None = None,
    solver: str = "rk4",
    steps: int | None = None,
    targets=(),
    data=None,
    measure: str = "componentwise",
    strategy: str = "auto",
    seed: int | None = None,
) -> Report:
    """Audit an outside gradient implementation, entry by entry, against the best reference.

    Parameters
    ----------
    dynamics : symbolic.Dynamics
    grad_fn : callable ``grad_fn(z0, theta, times) -> (dz0, dtheta[, dtimes])``
        The implementation under audit. It receives copies of the inputs as given here
        (``z0`` of shape (B, n) or (n,)) and returns gradients of the same shapes; ``dtheta``
        is summed over the batch. ``dtimes`` may be omitted.
    z0, theta, times
        As for :func:`numeric.gradient`.
    loss : sympy.Expr
        Per-observation loss, summed over observation times and batch.
    rtol : float
        Tolerance per entry, relative (default 1e-6). Loosen it for float32 code.
    atol : float
        Absolute tolerance per entry (default 0): entry ``j`` passes when
        ``|g_j - g_ref,j| <= rtol max(|g_ref,j|, T_j) + atol``, ``T_j`` the size of the
        terms the entry is summed from (MATH.md, "Error measure"), which keeps a correct
        gradient passing near a fit, where its terms cancel.
    name : str, optional
        How the report names the implementation (default: the function's name).
    digits : int
        Digits of the high-precision reference, where it is the one used.
    reference : str, optional
        The reference to hold the implementation to (see :func:`~.best_reference`): None for
        the most accurate available, or ``"exact"``, ``"high_precision"``,
        ``"forward_sensitivity"``, ``"discrete"`` (with ``solver`` and ``steps``).
    targets, data
        Data symbols of the loss and their values at ``times[1:]`` (see
        :func:`numeric.gradient`); ``grad_fn`` holds its own copy of the data.
    measure : {"componentwise", "normwise"}
        ``componentwise`` (default) holds every entry to ``rtol`` on its own scale;
        ``normwise`` holds each block's 2-norm instead (a wrong entry can hide under a
        large block). The report names the measure.
    strategy : {"auto", "per-entry", "directional"}
        How the reference is built: per entry (forward sensitivity, 30-digit mpmath,
        exact) where ``B n (n + p)`` is small, else (``auto``; or ``directional`` asked)
        the library's interpolated adjoint at rtol 1e-12 certified along random
        directions, 4 per block (``z0``, each parameter matrix, ``times``); the report
        says which, the directions' ``seed``, the certified error and what it cost.
    seed : int, optional
        The seed of those directions (reported; a fixed default otherwise).

    Returns
    -------
    Report
        A failed block is a failed row with a diagnosis computed from the numbers; the
        audit fails, it does not raise.

    Raises
    ------
    GradientShapeError
        ``grad_fn`` returned the wrong form or shapes (the message names the block, the
        expected and the given shape).
    InputError
        ``rtol`` is below what the reference can certify, or ``measure`` is unknown.
    numeric.IntegrationError
        The loss (or its gradient) is not finite at an observed state, or no reference can
        be computed.
    """
    with library_untraced():  # hypothesis explains failures by the lines under audit
        return _audit_gradient(dynamics, traced(grad_fn) if callable(grad_fn) else grad_fn,
                               z0, theta, times, loss=loss, rtol=rtol, atol=atol, name=name,
                               digits=digits, reference=reference, solver=solver, steps=steps,
                               targets=targets, data=data, measure=measure,
                               strategy=strategy, seed=seed)


def _audit_gradient(dynamics, grad_fn, z0, theta, times, *, loss, rtol, atol, name, digits,
                    reference, solver, steps, targets, data, measure, strategy,
                    seed) -> Report:
    started = time.perf_counter()
    checked = check_problem(dynamics, loss, z0, theta, times, targets=targets, data=data)
    compiled, z0_2d, single, theta, times, data = (
        checked.compiled, checked.z0, checked.single, checked.theta, checked.times,
        checked.data,
    )
    check_loss_on_path(compiled, z0_2d, theta, times, data)
    ok = isinstance(rtol, (int, float)) and not isinstance(rtol, bool) and rtol > 0
    if not ok or not np.isfinite(rtol):
        raise InputError(f"`rtol` must be a finite number > 0, got {rtol!r}.")
    ok = isinstance(atol, (int, float)) and not isinstance(atol, bool) and atol >= 0
    if not ok or not np.isfinite(atol):
        raise InputError(f"`atol` must be a finite number >= 0, got {atol!r}.")
    if not callable(grad_fn):
        raise InputError(f"`grad_fn` must be callable, got {type(grad_fn).__name__}.")
    measure = check_measure(measure)
    label = name or getattr(grad_fn, "__name__", "implementation")
    reference = best_reference(compiled, z0_2d, theta, times, digits=digits,
                               reference=reference, solver=solver, steps=steps, data=data,
                               accuracy=rtol, strategy=strategy, seed=seed)
    # the reference is accurate to `error` on every entry's scale, the larger of the entry
    # and its term scale, which is the scale the verdict measures on: near a fit, where an
    # entry is a small difference of its terms, neither loses accuracy relative to the other
    terms = term_scale(compiled, z0_2d, theta, times, data, reference=reference)
    _check_certifies(reference, rtol)
    z0_given = z0_2d[0] if single else z0_2d
    expected = {"z0": z0_given.shape, "theta": theta.shape, "times": times.shape}
    blocks = call_implementation(grad_fn, z0_given, theta, times, expected)
    if single:
        blocks["z0"] = blocks["z0"][None, :]
    report = Report()
    compare_to_reference(
        report, blocks, reference, rtol, label, atol=atol, terms=terms, measure=measure,
        context=AuditContext(compiled, grad_fn, z0_2d, theta, times, single, digits, data),
    )
    annotate_failures(report, reference)
    report.problems.append(ProblemSummary(
        name=label,
        description="outside gradient implementation under audit",
        shape=f"n={compiled.n} states, p={compiled.p} parameters, batch B={z0_2d.shape[0]}, "
              f"N={len(times) - 1} observations",
        solver="(the implementation's own)",
        reference=reference.describe(),
        measure=measure,
        notes=(*_cost_notes(reference, time.perf_counter() - started),
               *nonsmooth_notes({}, reference)),
    ))
    if "times" not in blocks:
        reason = getattr(grad_fn, "no_times_reason", "") or "grad_fn returned no time gradient"
        report.skipped.append(Skipped(label, "times", reason, kind=SKIP_KINDS[1]))
    return report


def _cost_notes(reference: ReferenceGradient, seconds: float) -> tuple[str, ...]:
    """What the audit chose and spent, for the report."""
    certificate = reference.certificate
    if certificate is None:
        return (f"strategy: per-entry reference ({reference.label}); {seconds:.1f} s",)
    return (f"strategy: directional (network size): {certificate.label} certified along "
            f"{certificate.directions} random directions, {certificate.per_block} per block, "
            f"seed {certificate.seed}",
            f"cost: {certificate.solves} solves of the state and its tangents or adjoint, "
            f"{seconds:.1f} s in all ({certificate.seconds:.1f} s for the reference)")


def _check_certifies(reference: ReferenceGradient, rtol: float) -> None:
    """Refuse a verdict the reference's error leaves no room for (``REFERENCE_MARGIN``)."""
    alternative = ("" if reference.label == "high_precision" or reference.certificate
                   is not None else ", or reference='high_precision' where it applies")
    if reference.caveat:
        raise InputError(
            f"the reference ({reference.label}) cannot certify a verdict here: "
            f"{reference.caveat}. No more accurate reference applies; shorten the time span"
            f"{alternative}."
        )
    if rtol < REFERENCE_MARGIN * reference.error:
        raise InputError(
            f"`rtol` = {rtol:g} is below what the reference ({reference.label}, error "
            f"<= {reference.error:.1e}) can certify; use rtol >= "
            f"{REFERENCE_MARGIN * reference.error:.1e}{alternative}."
        )


def _span_errors(ctx: AuditContext, blocks_failed: list[str]) -> list[float] | None:
    """The implementation's largest failing-block error on the spans [t_0, t_k]."""
    if ctx.grad_fn is None or len(ctx.times) < 3:
        return None
    errors = []
    for k in range(1, len(ctx.times)):
        times = ctx.times[: k + 1]
        try:
            ref = best_reference(ctx.compiled, ctx.z0, ctx.theta, times, digits=ctx.digits,
                                 certify=False,
                                 data=None if ctx.data is None else ctx.data[:k],
                                 accuracy=EXPLAINED)
            z0 = ctx.z0[0] if ctx.single else ctx.z0
            expected = {"z0": z0.shape, "theta": ctx.theta.shape, "times": times.shape}
            blocks = call_implementation(ctx.grad_fn, z0, ctx.theta, times, expected)
        except Exception:  # the diagnosis is best effort: any failure means "no finding"
            return None
        if ctx.single:
            blocks["z0"] = blocks["z0"][None, :]
        errors.append(max(
            block_error(blocks[b], getattr(ref.gradient, b), measure="normwise")
            for b in blocks_failed if b in blocks
        ))
    return errors


def _implementation_info(ctx: AuditContext) -> Mapping[str, Any]:
    """What the implementation under audit reports about how it computed the gradient:
    ``grad_fn.diagnostics(z0, theta, times)`` where it has one (the library adapters
    measure their backward reconstruction of ``z``), else nothing."""
    probe = getattr(ctx.grad_fn, "diagnostics", None)
    if not callable(probe):
        return {}
    try:
        z0 = ctx.z0[0] if ctx.single else ctx.z0
        return dict(probe(z0, ctx.theta, ctx.times))
    except Exception:  # the diagnosis is best effort: any failure means "no finding"
        return {}


def compare_to_reference(
    report: Report,
    blocks: Mapping[str, NDArray],
    reference: ReferenceGradient,
    rtol: float,
    label: str,
    *,
    terms: Mapping[str, NDArray],
    atol: float = 0.0,
    measure: str = "componentwise",
    context: AuditContext | None = None,
) -> None:
    """Append one row per given block to ``report``; diagnose the failures.

    Entry ``j`` passes when ``|g_j - g_ref,j| <= rtol s_j + atol`` with ``s_j`` its scale
    (the larger of ``|g_ref,j|`` and its term scale ``terms``; MATH.md, "Error measure");
    a row reports the entry furthest past (or closest to) that bound, its error and its
    tolerance ``rtol + atol / s_j``. A block the reference cannot certify
    (``reference.uncertified``) gets no row but a skipped entry that says why.
    """
    ref = reference.gradient
    report.skipped.extend(reference.not_compared(label, blocks))
    blocks = {b: v for b, v in blocks.items() if b not in reference.uncertified}
    verdicts = {b: compare_block(v, getattr(ref, b), terms[b], rtol=rtol, atol=atol,
                                 measure=measure) for b, v in blocks.items()}
    failed = [b for b, v in verdicts.items() if not v.passed]
    candidates: dict[str, list[tuple[str, NDArray]]] = {b: [] for b in BLOCKS}
    span_note = ""
    if failed and context is not None:
        candidates = alternatives(context, ref.blocks())
        spans = _span_errors(context, failed)
        if spans and np.all(np.isfinite(spans)) and spans[0] > 0 and all(np.diff(spans) > 0) and (
            spans[-1] >= SPAN_GROWTH * spans[0]
        ):
            shown = ", ".join(f"{e:.1e}" for e in spans)
            span_note = (f"the error grows with the time span ({shown} on [t_0, t_1] ... "
                         "[t_0, t_N]): a backward reconstruction that diverges?")
    batch = blocks["z0"].shape[0] if "z0" in blocks else 1
    names = {} if context is None else {
        "state_names": tuple(context.compiled.state_names),
        "param_names": tuple(context.compiled.param_names),
    }
    info = _implementation_info(context) if failed and context is not None else {}
    for block, value in blocks.items():
        verdict = verdicts[block]
        text = ""
        if not verdict.passed:
            text = diagnose(block, value, getattr(ref, block), method=label, batch=batch,
                            observations=len(ref.times) - 1, alternatives=candidates[block],
                            span_note=span_note, error=verdict.error, worst=verdict.index,
                            **names, info=info)
        report.rows.append(Row(
            block=block, method=label, reference=reference.label, error=verdict.error,
            tolerance=verdict.tolerance, passed=verdict.passed, diagnosis=text,
            reference_kind=reference.kind, problem=label,
            entry=entry_label(block, verdict.index, np.shape(value), **names),
        ))
