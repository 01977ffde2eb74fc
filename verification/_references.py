"""The references a gradient is held to: which one, and the error it may carry."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from numeric import (
    Gradient,
    InputError,
    IntegrationError,
    MethodUnavailable,
    check_solver_options,
    compute_gradient,
)
from numeric._magnitudes import adjoint_term_scales
from numeric._multistep import ADAMS_BASHFORTH, adams_bashforth_reference
from numeric._stiffness import is_stiff

from ._report import BLOCKS, REFERENCE_KINDS, SKIP_KINDS, Skipped, entry_label
from ._scale import certified_adjoint, per_entry_affordable
from ._tolerances import ROUNDING, entry_scales, solver_tolerance

__all__ = [
    "REFERENCES",
    "REFERENCE_MARGIN",
    "TIGHT_LABEL",
    "TIGHT_MAX_STEPS",
    "ReferenceGradient",
    "best_reference",
    "term_scale",
]

#: The references an audit can be held to, by name.
REFERENCES = ("exact", "high_precision", "forward_sensitivity", "discrete")
#: A comparison's tolerance must exceed the reference's own error by this factor, or a
#: correct gradient could fail through the reference's error.
REFERENCE_MARGIN = 10.0
#: The float64 reference of last resort: forward sensitivity (no backward pass, stable
#: wherever the forward solve is) at the tightest tolerances float64 supports.
TIGHT_RTOL, TIGHT_ATOL = 1e-13, 1e-15
#: Step budget of that reference (and of the term-scale run): a stiff problem fails with
#: an IntegrationError after this many steps.
TIGHT_MAX_STEPS = 100_000
TIGHT_LABEL = "forward_sensitivity@1e-13"
#: On stiff dynamics the float64 reference is forward sensitivity on rodas4 (dopri5 would
#: take unbounded steps), at the rtol the verdict needs: ``accuracy / (REFERENCE_MARGIN *
#: SOLVER_ERROR_GROWTH)``, no tighter than STIFF_TIGHT_RTOL (a fourth-order method's step
#: count grows like rtol**(-1/4): 1e-12 is already tens of thousands of steps).
STIFF_TIGHT_RTOL = 1e-12


@dataclass(frozen=True)
class ReferenceGradient:
    """A reference gradient with its provenance: the method, the relative error it may
    carry, and which of MATH.md's kinds of reference it is.

    ``error`` bounds the error of every entry relative to its scale (MATH.md, "Error
    measure": the larger of the entry and its term scale): for ``exact`` and the discrete
    references the rounding tier, for ``high_precision`` its self-check, for forward
    sensitivity at rtol = 1e-13 an estimate from a second, looser solve.
    """

    gradient: Gradient
    label: str
    error: float
    kind: str = REFERENCE_KINDS["exact"]
    #: High precision's own estimate (which sums in mpmath), before the rounding of its
    #: float64 result; None for the other references.
    term_error: float | None = None
    #: Why ``error`` is ``inf``: the reference cannot certify any error ("" when it can).
    caveat: str = ""
    #: Blocks whose error the reference cannot estimate, with the reason; ``error`` bounds
    #: the other blocks, and a verdict compares those alone (a stiff ladder whose state and
    #: parameter entries converge while a time gradient, which amplifies the state's error
    #: by the stiff Jacobian, does not).
    uncertified: Mapping[str, str] = field(default_factory=dict)
    #: For a reference certified along random directions (network size): how
    #: (:class:`verification._scale.Certificate`), and the term scales it computed.
    certificate: Any = None
    terms: dict | None = None

    def not_compared(self, problem: str, blocks=BLOCKS) -> list[Skipped]:
        """The report's entries for the ``blocks`` this reference cannot certify (no
        comparison is made on them; the verdict is then NOT CERTIFIED, never PASS)."""
        return [Skipped(problem, block, f"not compared: {self.label}, the best reference "
                        f"available, cannot certify this block: {why}", kind=SKIP_KINDS[2])
                for block, why in self.uncertified.items() if block in blocks]

    def describe(self) -> str:
        """The reference with the error it certifies, for a report."""
        if self.caveat:
            return f"{self.label} (error not certified: {self.caveat})"
        if self.uncertified:
            return f"{self.label} (relative error <= {self.error:.0e}; not certified on " \
                   f"{', '.join(self.uncertified)}, which are not compared: see below)"
        if self.certificate is not None:
            return f"{self.label} (relative error <= {self.error:.0e}, " \
                   f"{self.certificate.describe()})"
        return f"{self.label} (relative error <= {self.error:.0e})"


#: The tight reference's error is estimated, not assumed. Three solves, at rtol = 1e-11,
#: 1e-12 and 1e-13, give per entry (on its own scale, MATH.md "Error measure") the
#: distances ``d1`` (1e-11 to 1e-12) and ``d2`` (1e-12 to 1e-13). A locally controlled
#: solve has a global error roughly proportional to its tolerance (on Lorenz to T = 20:
#: 6.7e-7, 6.5e-8, 6.4e-9), falling by a ratio r per decade; then ``e_tight <= d2 / (r - 1)``.
#: Where ``d1 >= MIN_DECADE_RATIO * d2`` (r >= 3, ``e_tight <= d2 / 2``) the entry's
#: error is taken as ESTIMATE_SAFETY times ``d2``, four times that bound.
MIN_DECADE_RATIO = 3.0
ESTIMATE_SAFETY = 2.0
#: Where both distances are below this, the solves differ by rounding (amplified along the
#: flow) rather than by truncation, which does not fall with the tolerance; each solve
#: carries it alike, and ESTIMATE_SAFETY times the larger distance bounds it. Above it, an
#: entry whose error does not fall with the tolerance (steps limited by stability rather
#: than accuracy, an entry far below ``atol``: the ``contracting`` problem observed at t = 10
#: and 20 stays 2e-8 off at every rtol) has no estimate, and the reference says so.
NOISE_FLOOR = 10 * ROUNDING
#: On the rodas4 ladder (stiff dynamics), the growth of the step count per decade of rtol
#: that shows the steps follow accuracy (a fourth-order controller: about 10^(1/4) = 1.78;
#: steps held by stability barely change). Then an entry whose distances do not fall but
#: stay below the middle rung's rtol differs by rounding amplified along the stiff flow (van
#: der Pol with mu = 1000 at rtol 1e-7 to 1e-9: 3.4e-11, then 4.3e-10; Robertson's k1 at
#: rtol 1e-7 to 1e-9: 1.9e-9, then 7.3e-10, and about 1e-9 at every decade down to 1e-11):
#: three solves on different step sequences, each following its tolerance, agree to within
#: it, and ESTIMATE_SAFETY times the larger distance bounds the error, like the noise above.
STEP_GROWTH = 1.3
#: The tolerances of the three solves, loosest first.
_LADDER_RTOLS = (100 * TIGHT_RTOL, 10 * TIGHT_RTOL, TIGHT_RTOL)


def _forward_sensitivity(compiled, z0, theta, times, data, rtol: float,
                         solver: str = "dopri5") -> Gradient:
    options = check_solver_options(solver, steps=None, rtol=rtol,
                                   atol=rtol * TIGHT_ATOL / TIGHT_RTOL,
                                   max_steps=TIGHT_MAX_STEPS)
    return compute_gradient(compiled, z0, theta, times, "forward_sensitivity", options,
                            data=data)


def _tight_forward_sensitivity(compiled, z0, theta, times, data,
                               accuracy: float | None = None,
                               certify: bool = True) -> ReferenceGradient:
    """Forward sensitivity at rtol = 1e-13 with an estimate of its error from the solves
    at 1e-11 and 1e-12 (see ``MIN_DECADE_RATIO``); the error is ``inf``, with the reason
    in ``caveat``, where the estimate cannot be trusted. On stiff dynamics (dopri5 would
    take unbounded steps) the same ladder on rodas4, from the rtol the verdict's
    ``accuracy`` needs (``STIFF_TIGHT_RTOL`` at the tightest); there ``certify=False`` (a
    diagnosis, which only fits relations to the numbers) takes the tightest solve alone,
    its error not estimated (``inf``)."""
    solver, rtols, label = "dopri5", _LADDER_RTOLS, TIGHT_LABEL
    if is_stiff(compiled, z0, theta, times):
        rtol = STIFF_TIGHT_RTOL if accuracy is None else max(
            STIFF_TIGHT_RTOL, accuracy / (REFERENCE_MARGIN * solver_tolerance(1.0)))
        solver, rtols, label = "rodas4", (100 * rtol, 10 * rtol, rtol), \
            f"forward_sensitivity@rodas4 {rtol:.0e}"
        if not certify:
            return ReferenceGradient(
                _forward_sensitivity(compiled, z0, theta, times, data, rtol, solver),
                f"{label} (one solve, not certified: for a diagnosis)", math.inf)
    loosest, loose, tight = (_forward_sensitivity(compiled, z0, theta, times, data, rtol,
                                                  solver) for rtol in rtols)
    terms = tight.info["term_scale"]
    worst, stuck_blocks = 0.0, {}
    steps = [g.info.get("forward_steps", 0) for g in (loosest, loose, tight)]
    # rodas4 is L-stable: where its step counts grow with every decade of rtol, its steps
    # follow accuracy, not stability, and an entry whose distances do not fall is held
    # back by rounding amplified along the stiff flow, whose size the distances show
    accuracy_limited = solver == "rodas4" and all(
        later >= STEP_GROWTH * earlier > 0 for earlier, later in itertools.pairwise(steps))
    for b in BLOCKS:
        scales = entry_scales(getattr(tight, b), terms[b])
        d1 = (np.abs(getattr(loosest, b) - getattr(loose, b)) / scales).ravel()
        d2 = (np.abs(getattr(loose, b) - getattr(tight, b)) / scales).ravel()
        falls = d1 >= MIN_DECADE_RATIO * d2
        noise = np.maximum(d1, d2) <= (max(NOISE_FLOOR, rtols[1]) if accuracy_limited
                                       else NOISE_FLOOR)
        claims = np.where(falls, d2, np.maximum(d1, d2))
        stuck = np.flatnonzero(~falls & ~noise)
        if not stuck.size:
            worst = max(worst, float(np.max(claims, initial=0.0)))
            continue
        k = int(stuck[np.argmax(d2[stuck])])
        where = entry_label(b, k, np.shape(scales), state_names=compiled.state_names,
                            param_names=compiled.param_names)
        stuck_blocks[b] = (
            f"its error does not fall with the tolerance at {where} (distances "
            f"{d1[k]:.1e} from rtol {rtols[0]:.0e} to {rtols[1]:.0e} and {d2[k]:.1e} "
            f"from {rtols[1]:.0e} to {rtols[2]:.0e}, relative), so no estimate of it can "
            "be trusted: the steps may be limited by stability rather than accuracy, the "
            "entry may lie far below atol, or rounding amplified by stiffness may exceed "
            "what the tolerance changes"
        )
    if all(b in stuck_blocks for b in BLOCKS if getattr(tight, b).size):  # nothing certified
        return ReferenceGradient(tight, label, math.inf, caveat=next(iter(stuck_blocks.values())))
    # every entry of a certified block converged on its own: its estimate holds whatever the
    # other blocks do
    return ReferenceGradient(tight, label, max(ROUNDING, ESTIMATE_SAFETY * worst),
                             uncertified=stuck_blocks)


def best_reference(compiled, z0: NDArray, theta: NDArray, times: NDArray,
                   *, digits: int = 30, reference: str | None = None,
                   solver: str = "rk4", steps: int | None = None,
                   data: NDArray | None = None,
                   accuracy: float | None = None,
                   known: dict[str, Gradient] | None = None,
                   strategy: str = "auto", seed: int | None = None,
                   certify: bool = True) -> ReferenceGradient:
    """A reference gradient with the error it may carry.

    ``reference=None`` takes the best the verdict needs: ``exact`` where it applies (linear
    autonomous ``f``); else, when the comparison's tolerance ``accuracy`` is at least
    ``REFERENCE_MARGIN`` times what float64 forward sensitivity at rtol = 1e-13 certifies,
    that (seconds cheaper than mpmath); else ``high_precision`` (small smooth systems); else
    forward sensitivity at rtol = 1e-13. On stiff dynamics (numeric/_stiffness.py) forward
    sensitivity runs on rodas4, at the rtol ``accuracy`` needs, and is preferred to the
    (linearly implicit, much slower) high precision whenever ``accuracy`` is given.
    ``accuracy=None`` asks for the most accurate available. A name from
    :data:`REFERENCES` asks for one: ``"discrete"`` is the exact
    derivative of the fixed-step ``solver`` with ``steps`` per interval (complex step, or
    the discrete adjoint where ``f`` is not complex-analytic), for implementations that
    backpropagate through that solver (the discrete adjoint also where complex step refuses).
    ``known`` holds gradients already computed, by
    method name, so that none is computed twice.

    ``strategy``: ``"per-entry"`` takes the references above; ``"directional"`` (and
    ``"auto"`` where ``B n (n + p)`` exceeds ``PER_ENTRY_LIMIT``, a network) takes the
    library's interpolated adjoint at rtol 1e-12, certified along random directions with
    the given ``seed`` (:mod:`verification._scale`); ``certify=False`` skips the
    certificate (for diagnoses, which only fit relations to the numbers).
    """
    known = known or {}
    strategy = check_strategy(strategy)
    if reference is None and strategy != "per-entry" and (
            strategy == "directional" or not per_entry_affordable(compiled, z0)):
        return _scale_reference(compiled, z0, theta, times, data, seed, certify, accuracy)
    if reference is not None and reference not in REFERENCES:
        raise InputError(f"`reference` must be one of {', '.join(map(repr, REFERENCES))} or "
                         f"None (the best available), got {reference!r}.")
    if reference == "discrete" and solver == ADAMS_BASHFORTH:
        return _adams_bashforth_reference(compiled, z0, theta, times, steps, data)
    if reference == "discrete":
        options = check_solver_options(solver, steps=steps, rtol=None, atol=None,
                                       max_steps=1_000_000)
        method = "complex_step" if not compiled.non_analytic else "discrete_adjoint"
        try:
            g = compute_gradient(compiled, z0, theta, times, method, options, data=data)
        except MethodUnavailable:  # e.g. complex step's analyticity check on a huge state
            method = "discrete_adjoint"
            g = compute_gradient(compiled, z0, theta, times, method, options, data=data)
        return ReferenceGradient(g, f"{method} on {options.describe()}", ROUNDING,
                                 REFERENCE_KINDS["discrete"])
    if reference == "forward_sensitivity":
        return _tight_forward_sensitivity(compiled, z0, theta, times, data, accuracy)
    ladder = ["exact", "high_precision"] if reference is None else [reference]
    tight = None
    for method in ladder:
        if (method == "high_precision" and reference is None and accuracy is not None
                and accuracy >= REFERENCE_MARGIN * ROUNDING):
            # float64 forward sensitivity is seconds cheaper than mpmath: take it when its
            # estimated error leaves the verdict REFERENCE_MARGIN of room
            try:
                tight = _tight_forward_sensitivity(compiled, z0, theta, times, data, accuracy,
                                                   certify)
            except IntegrationError:
                pass  # e.g. too stiff for dopri5 at 1e-13: try high precision
            else:
                if accuracy >= REFERENCE_MARGIN * tight.error:
                    return tight
                if tight.label != TIGHT_LABEL and method not in known:
                    # stiff: the stable high precision (linearly implicit extrapolation in
                    # mpmath) takes minutes to hours; it is there on request
                    # (reference="high_precision"), and without it the float64 reference
                    # stands with the reason it cannot certify a verdict
                    return tight
        try:
            g = known.get(method) or compute_gradient(compiled, z0, theta, times, method, None,
                                                      digits=digits, data=data)
        except (MethodUnavailable, IntegrationError):
            if reference is not None:
                raise
            continue
        if method == "exact":
            return ReferenceGradient(g, method, ROUNDING)
        estimate = float(g.info.get("error_estimate", ROUNDING))
        return ReferenceGradient(g, method, max(ROUNDING, estimate), term_error=estimate)
    # no mpmath reference: the float64 one, whose error the caller weighs (and refuses a
    # verdict it cannot certify)
    return tight or _tight_forward_sensitivity(compiled, z0, theta, times, data)


def _adams_bashforth_reference(compiled, z0, theta, times, steps, data) -> ReferenceGradient:
    """The exact derivative of torchdiffeq's explicit Adams–Bashforth map with ``steps``
    per interval (:mod:`numeric._multistep`), by complex step, with the error its
    rounding amplification allows (two orders of summation compared)."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise InputError(f"`steps` must be a positive integer with solver="
                         f"{ADAMS_BASHFORTH!r} (steps per observation interval), got "
                         f"{steps!r}.")
    (loss, g_z0, g_theta, g_times), amplified = adams_bashforth_reference(
        compiled, z0, theta, times, int(steps), data=data)
    label = f"complex_step on {ADAMS_BASHFORTH} ({int(steps)} steps/interval)"
    gradient = Gradient(loss, g_z0, g_theta, g_times, "complex_step", label)
    return ReferenceGradient(gradient, label, max(ROUNDING, amplified),
                             REFERENCE_KINDS["discrete"])


STRATEGIES = ("auto", "per-entry", "directional")


def check_strategy(strategy) -> str:
    if strategy not in STRATEGIES:
        raise InputError(f"`strategy` must be one of {', '.join(map(repr, STRATEGIES))}, got "
                         f"{strategy!r}.")
    return strategy


def _scale_reference(compiled, z0, theta, times, data, seed, certify,
                     accuracy=None) -> ReferenceGradient:
    """The network-size reference: certified, or (``certify=False``) an interpolated
    adjoint at rtol 1e-10 claiming no error, for diagnoses only."""
    if not certify:
        options = check_solver_options("dopri5", steps=None, rtol=1e-10, atol=1e-12,
                                       max_steps=1_000_000)
        g = compute_gradient(compiled, z0, theta, times, "interpolated_adjoint", options,
                             data=data)
        return ReferenceGradient(g, "interpolated_adjoint@1e-10 (uncertified)",
                                 solver_tolerance(1e-10, 1e-12))
    gradient, terms, error, certificate = certified_adjoint(compiled, z0, theta, times,
                                                            data=data, seed=seed,
                                                            accuracy=accuracy)
    return ReferenceGradient(gradient, certificate.label,
                             math.inf if certificate.caveat else error,
                             caveat=certificate.caveat, certificate=certificate, terms=terms)


#: Tolerances of the forward-sensitivity run that measures the term scale: a magnitude,
#: needed to a digit or two.
TERM_RTOL, TERM_ATOL = 1e-8, 1e-10


def term_scale(compiled, z0: NDArray, theta: NDArray, times: NDArray, data: NDArray | None,
               known: dict[str, Gradient] | None = None,
               reference: ReferenceGradient | None = None) -> dict[str, NDArray]:
    """Per block, the term scale of every entry: the sum of magnitudes it is computed from
    (see ``forward_sensitivity``'s ``info["term_scale"]``), arrays of the blocks' shapes
    (``z0`` as ``(B, n)``); zeros when it cannot be computed. At network size (and for a
    reference that brought its own) the adjoint's form of the same sums
    (:func:`numeric._magnitudes.adjoint_term_scales`)."""
    if reference is not None and reference.terms is not None:
        return reference.terms
    if not per_entry_affordable(compiled, z0):
        try:
            return adjoint_term_scales(compiled, z0, theta, times, data=data)
        except (IntegrationError, MethodUnavailable):
            return {"z0": np.zeros(np.shape(z0)), "theta": np.zeros(np.shape(theta)),
                    "times": np.zeros(np.shape(times))}
    g = (known or {}).get("forward_sensitivity")
    if g is None or "term_scale" not in g.info:
        solver = "rodas4" if is_stiff(compiled, z0, theta, times) else "dopri5"
        options = check_solver_options(solver, steps=None, rtol=TERM_RTOL, atol=TERM_ATOL,
                                       max_steps=TIGHT_MAX_STEPS)
        try:
            g = compute_gradient(compiled, z0, theta, times, "forward_sensitivity", options,
                                 data=data)
        except (IntegrationError, MethodUnavailable):
            return {"z0": np.zeros(np.shape(z0)), "theta": np.zeros(np.shape(theta)),
                    "times": np.zeros(np.shape(times))}
    return {block: np.array(g.info["term_scale"][block], dtype=float) for block in BLOCKS}
