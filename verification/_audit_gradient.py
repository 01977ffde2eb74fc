"""``audit_gradient``: an outside gradient implementation against the best reference."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from numeric import (
    Gradient,
    InputError,
    IntegrationError,
    MethodUnavailable,
)
from numeric._checks import check_problem
from numeric._finite import check_loss_on_path

from ._diagnose import EXPLAINED, diagnose
from ._nonsmooth import annotate_failures, nonsmooth_notes
from ._quiet import callers_errstate, quiet_numerics
from ._references import REFERENCE_MARGIN, ReferenceGradient, best_reference, term_scale
from ._report import BLOCKS, ProblemSummary, Report, Row, Skipped
from ._tolerances import FLOOR_FRACTION, block_error

__all__ = [
    "DEFAULT_GRADIENT_RTOL",
    "GradientShapeError",
    "ImplementationError",
    "audit_gradient",
]

#: Default tolerance of `audit_gradient`, relative per block: what a float64 adjoint at a
#: sensible solver tolerance (rtol ~ 1e-9) delivers with room to spare. Loosen it for a
#: float32 implementation (~1e-4), tighten it for a reference implementation.
DEFAULT_GRADIENT_RTOL = 1e-6
#: A block counts as nearly cancelled when the terms it is summed from are this many times
#: larger than the block: then the reference's error on the terms' scale is what matters.
CANCELLATION = 10.0
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
) -> Report:
    """Audit an outside gradient implementation, blockwise, against the best reference.

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
        Tolerance per block, relative (default 1e-6). Loosen it for float32 code.
    atol : float
        Absolute tolerance per block (default 0): a block passes when
        ``|g - g_ref| <= rtol |g_ref| + atol``. Set it to the error the implementation makes
        on the gradient's natural scale where the gradient itself is small, e.g. near a
        minimum during training, where its terms cancel and relative accuracy is lost.
    name : str, optional
        How the report names the implementation (default: the function's name).
    digits : int
        Digits of the high-precision reference, where it is the one used.
    reference : str, optional
        The reference to hold the implementation to (see :func:`best_reference`): None for
        the most accurate available, or ``"exact"``, ``"high_precision"``,
        ``"forward_sensitivity"``, ``"discrete"`` (with ``solver`` and ``steps``).
    targets, data
        Data symbols of the loss and their values at ``times[1:]`` (see
        :func:`numeric.gradient`); ``grad_fn`` holds its own copy of the data.

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
        ``rtol`` is below what the reference can certify.
    numeric.IntegrationError
        The loss (or its gradient) is not finite at an observed state, or no reference can
        be computed.
    """
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
    label = name or getattr(grad_fn, "__name__", "implementation")
    reference_name = reference
    reference = best_reference(compiled, z0_2d, theta, times, digits=digits,
                               reference=reference, solver=solver, steps=steps, data=data,
                               accuracy=rtol)
    reference = _adequate_reference(compiled, z0_2d, theta, times, data, reference, rtol, atol,
                                    digits, explicit=reference_name is not None)
    if rtol < REFERENCE_MARGIN * reference.error:
        raise InputError(
            f"`rtol` = {rtol:g} is below what the reference ({reference.label}, error "
            f"<= {reference.error:.0e}) can certify; use rtol >= "
            f"{REFERENCE_MARGIN * reference.error:.0e}."
        )
    z0_given = z0_2d[0] if single else z0_2d
    expected = {"z0": z0_given.shape, "theta": theta.shape, "times": times.shape}
    blocks = call_implementation(grad_fn, z0_given, theta, times, expected)
    if single:
        blocks["z0"] = blocks["z0"][None, :]
    report = Report()
    compare_to_reference(
        report, blocks, reference, rtol, label, atol=atol,
        context=AuditContext(compiled, grad_fn, z0_2d, theta, times, single, digits, data),
    )
    annotate_failures(report, reference)
    report.problems.append(ProblemSummary(
        name=label,
        notes=nonsmooth_notes({}, reference),
        description="outside gradient implementation under audit",
        shape=f"n={compiled.n} states, p={compiled.p} parameters, batch B={z0_2d.shape[0]}, "
              f"N={len(times) - 1} observations",
        solver="(the implementation's own)",
        reference=f"{reference.label} (relative error <= {reference.error:.0e})",
    ))
    if "times" not in blocks:
        report.skipped.append(Skipped(label, "times", "grad_fn returned no time gradient"))
    return report


def _adequate_reference(compiled, z0, theta, times, data, reference, rtol, atol, digits, *,
                        explicit: bool):
    """The reference, or a more accurate one where a block is nearly cancelled.

    A reference's error is relative to the terms a block is summed from (``term_scale``);
    where the block is much smaller than its terms (near a fit), ``rtol |g_ref| + atol``
    must still exceed ``REFERENCE_MARGIN`` times that absolute error. If it does not, high
    precision is tried; if that does not serve either, the caller is told which ``atol``
    the verdict needs.
    """
    terms = term_scale(compiled, z0, theta, times, data)

    def short_blocks(ref):
        short = []
        for b in BLOCKS:
            own = float(np.linalg.norm(getattr(ref.gradient, b)))
            if terms[b] <= CANCELLATION * own:
                continue  # not cancelled: the relative check on `rtol` covers it
            needed = REFERENCE_MARGIN * ref.absolute_error(b, terms)
            if rtol * own + atol < needed:
                short.append((b, needed))
        return short

    if not short_blocks(reference):
        return reference
    if not explicit and reference.label != "high_precision":
        try:
            better = best_reference(compiled, z0, theta, times, digits=digits, data=data,
                                    reference="high_precision")
        except (MethodUnavailable, IntegrationError):
            better = None
        if better is not None and not short_blocks(better):
            return better
    block, needed = short_blocks(reference)[0]
    raise InputError(
        f"the {block} block is nearly cancelled (|g_ref| = "
        f"{np.linalg.norm(getattr(reference.gradient, block)):.1e}, summed from terms of size "
        f"{terms[block]:.1e}) and the reference ({reference.label}) is accurate only to about "
        f"{needed / REFERENCE_MARGIN:.1e} there; give atol >= {needed:.0e} (absolute "
        "tolerance per block), or reference='high_precision' where it applies."
    )


@dataclass
class AuditContext:
    """What the diagnoses need to build alternative answers and rerun the implementation."""

    compiled: Any
    grad_fn: Callable | None
    z0: NDArray
    theta: NDArray
    times: NDArray
    single: bool
    digits: int
    data: NDArray | None = None


def _last_observation_only(ctx: AuditContext) -> dict[str, NDArray] | None:
    """Gradient of the loss applied at t_N only, on the same trajectory."""
    short = np.array([ctx.times[0], ctx.times[-1]])
    try:
        last = None if ctx.data is None else ctx.data[-1:]
        ref = best_reference(ctx.compiled, ctx.z0, ctx.theta, short, digits=ctx.digits,
                             data=last, accuracy=EXPLAINED)
    except (IntegrationError, MethodUnavailable):
        return None
    times_grad = np.zeros_like(ctx.times)
    times_grad[0], times_grad[-1] = ref.gradient.times
    return {"z0": ref.gradient.z0, "theta": ref.gradient.theta, "times": times_grad}


def _span_errors(ctx: AuditContext, blocks_failed: list[str]) -> list[float] | None:
    """The implementation's largest failing-block error on the spans [t_0, t_k]."""
    if ctx.grad_fn is None or len(ctx.times) < 3:
        return None
    errors = []
    for k in range(1, len(ctx.times)):
        times = ctx.times[: k + 1]
        try:
            ref = best_reference(ctx.compiled, ctx.z0, ctx.theta, times, digits=ctx.digits,
                                 data=None if ctx.data is None else ctx.data[:k],
                                 accuracy=EXPLAINED)
            z0 = ctx.z0[0] if ctx.single else ctx.z0
            expected = {"z0": z0.shape, "theta": ctx.theta.shape, "times": times.shape}
            blocks = call_implementation(ctx.grad_fn, z0, ctx.theta, times, expected)
        except Exception:  # the diagnosis is best effort: any failure means "no finding"
            return None
        if ctx.single:
            blocks["z0"] = blocks["z0"][None, :]
        scale = _scale(ref.gradient)
        errors.append(max(
            block_error(blocks[b], getattr(ref.gradient, b), scale)
            for b in blocks_failed if b in blocks
        ))
    return errors


def _scale(g: Gradient) -> float:
    return float(np.sqrt(sum(np.linalg.norm(getattr(g, b)) ** 2 for b in BLOCKS)))


def compare_to_reference(
    report: Report,
    blocks: Mapping[str, NDArray],
    reference: ReferenceGradient,
    rtol: float,
    label: str,
    *,
    atol: float = 0.0,
    context: AuditContext | None = None,
) -> None:
    """Append one row per given block to ``report``; diagnose the failures.

    A row's tolerance is relative: ``rtol + atol / max(|g_ref block|, floor)``, the floor
    as in the error measure, so that ``error <= tolerance`` is ``|g - g_ref| <= rtol |g_ref|
    + atol`` for a block above the floor.
    """
    ref = reference.gradient
    scale = _scale(ref)
    errors = {b: block_error(v, getattr(ref, b), scale) for b, v in blocks.items()}
    tolerances = {
        b: rtol + atol / max(float(np.linalg.norm(getattr(ref, b))), FLOOR_FRACTION * scale,
                             np.finfo(float).tiny)
        for b in blocks
    }
    failed = [b for b, e in errors.items() if not e <= tolerances[b]]
    alternatives: dict[str, list[tuple[str, NDArray]]] = {b: [] for b in BLOCKS}
    span_note = ""
    if failed and context is not None:
        last_only = _last_observation_only(context)
        if last_only is not None and len(context.times) > 2:
            sentence = ("the observation-time jumps are missing: the gradient matches a loss "
                        "on the last observation only")
            for b in BLOCKS:
                alternatives[b].append((sentence, last_only[b]))
            # an implementation may get dL/dt_i (i >= 1) right from the forward states and
            # only dL/dt_0 = -a(t_0)^T f wrong, through the same missing jumps
            mixed = np.array(ref.times, dtype=float)
            mixed[0] = last_only["times"][0]
            alternatives["times"].append((sentence, mixed))
        spans = _span_errors(context, failed)
        if spans and np.all(np.isfinite(spans)) and spans[0] > 0 and all(np.diff(spans) > 0) and (
            spans[-1] >= SPAN_GROWTH * spans[0]
        ):
            shown = ", ".join(f"{e:.1e}" for e in spans)
            span_note = (f"the error grows with the time span ({shown} on [t_0, t_1] ... "
                         "[t_0, t_N]): a backward reconstruction that diverges?")
    batch = blocks["z0"].shape[0] if "z0" in blocks else 1
    for block, value in blocks.items():
        passed = errors[block] <= tolerances[block]
        text = ""
        if not passed:
            text = diagnose(block, value, getattr(ref, block), method=label, batch=batch,
                            alternatives=alternatives[block], span_note=span_note)
        report.rows.append(Row(
            block=block, method=label, reference=reference.label, error=errors[block],
            tolerance=tolerances[block], passed=passed, diagnosis=text,
            reference_kind=reference.kind, problem=label,
        ))
