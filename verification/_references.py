"""The references a gradient is held to: which one, and the error it may carry."""

from __future__ import annotations

from dataclasses import dataclass

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

from ._report import BLOCKS, REFERENCE_KINDS
from ._tolerances import ROUNDING, solver_tolerance

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


@dataclass(frozen=True)
class ReferenceGradient:
    """A reference gradient with its provenance: the method, the relative error it may
    carry, and which of MATH.md's kinds of reference it is."""

    gradient: Gradient
    label: str
    error: float
    kind: str = REFERENCE_KINDS["exact"]
    #: Its error relative to the terms a block is summed from (``term_scale``): float64
    #: references are accurate to ``error`` on that scale, high precision (which sums in
    #: mpmath) to its own estimate, plus the rounding of its float64 result.
    term_error: float | None = None

    def absolute_error(self, block: str, terms: dict[str, float]) -> float:
        """Absolute error bound of one block of the reference."""
        own = float(np.linalg.norm(getattr(self.gradient, block)))
        if self.term_error is None:
            return self.error * max(terms[block], own)
        return self.term_error * terms[block] + ROUNDING * own


def _tight_forward_sensitivity(compiled, z0, theta, times, data) -> ReferenceGradient:
    options = check_solver_options("dopri5", steps=None, rtol=TIGHT_RTOL, atol=TIGHT_ATOL,
                                   max_steps=TIGHT_MAX_STEPS)
    g = compute_gradient(compiled, z0, theta, times, "forward_sensitivity", options, data=data)
    return ReferenceGradient(g, TIGHT_LABEL, solver_tolerance(TIGHT_RTOL, TIGHT_ATOL))


def best_reference(compiled, z0: NDArray, theta: NDArray, times: NDArray,
                   *, digits: int = 30, reference: str | None = None,
                   solver: str = "rk4", steps: int | None = None,
                   data: NDArray | None = None,
                   accuracy: float | None = None,
                   known: dict[str, Gradient] | None = None) -> ReferenceGradient:
    """A reference gradient with the error it may carry.

    ``reference=None`` takes the best the verdict needs: ``exact`` where it applies (linear
    autonomous ``f``); else, when the comparison's tolerance ``accuracy`` is at least
    ``REFERENCE_MARGIN`` times what float64 forward sensitivity at rtol = 1e-13 certifies,
    that (seconds cheaper than mpmath); else ``high_precision`` (small smooth systems); else
    forward sensitivity at rtol = 1e-13. ``accuracy=None`` asks for the most accurate
    available. A name from :data:`REFERENCES` asks for one: ``"discrete"`` is the exact
    derivative of the fixed-step ``solver`` with ``steps`` per interval (complex step, or
    the discrete adjoint where ``f`` is not complex-analytic), for implementations that
    backpropagate through that solver. ``known`` holds gradients already computed, by
    method name, so that none is computed twice.
    """
    known = known or {}
    if reference is not None and reference not in REFERENCES:
        raise InputError(f"`reference` must be one of {', '.join(map(repr, REFERENCES))} or "
                         f"None (the best available), got {reference!r}.")
    if reference == "discrete":
        options = check_solver_options(solver, steps=steps, rtol=None, atol=None,
                                       max_steps=1_000_000)
        method = "complex_step" if not compiled.non_analytic else "discrete_adjoint"
        g = compute_gradient(compiled, z0, theta, times, method, options, data=data)
        return ReferenceGradient(g, f"{method} on {options.describe()}", ROUNDING,
                                 REFERENCE_KINDS["discrete"])
    if reference == "forward_sensitivity":
        return _tight_forward_sensitivity(compiled, z0, theta, times, data)
    tight_suffices = accuracy is not None and accuracy >= REFERENCE_MARGIN * solver_tolerance(
        TIGHT_RTOL, TIGHT_ATOL)
    ladder = ["exact", "high_precision"] if reference is None else [reference]
    for method in ladder:
        if method == "high_precision" and reference is None and tight_suffices:
            try:
                return _tight_forward_sensitivity(compiled, z0, theta, times, data)
            except IntegrationError:
                pass  # e.g. too stiff for dopri5 at 1e-13: try high precision
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
    return _tight_forward_sensitivity(compiled, z0, theta, times, data)


#: Tolerances of the forward-sensitivity run that measures the term scale: a magnitude,
#: needed to a digit or two.
TERM_RTOL, TERM_ATOL = 1e-8, 1e-10


def term_scale(compiled, z0: NDArray, theta: NDArray, times: NDArray, data: NDArray | None,
               known: dict[str, Gradient] | None = None) -> dict[str, float]:
    """Per block, the norm of the sums of magnitudes the gradient is computed from (see
    ``forward_sensitivity``'s ``info["term_scale"]``); zeros when it cannot be computed."""
    g = (known or {}).get("forward_sensitivity")
    if g is None or "term_scale" not in g.info:
        options = check_solver_options("dopri5", steps=None, rtol=TERM_RTOL, atol=TERM_ATOL,
                                       max_steps=TIGHT_MAX_STEPS)
        try:
            g = compute_gradient(compiled, z0, theta, times, "forward_sensitivity", options,
                                 data=data)
        except (IntegrationError, MethodUnavailable):
            return {block: 0.0 for block in BLOCKS}
    return {block: float(g.info["term_scale"][block]) for block in BLOCKS}
