"""What a verdict says where the trajectory meets a kink of ``f`` (or a switch in time).

There the gradient exists and needs no jump term, but every solver converges only at first
order across the kink (MATH.md, "Non-smooth and discontinuous dynamics"). Measured on
``z' = p - |z|`` crossing ``z = 0``: the adaptive continuous methods still meet
``solver_tolerance(rtol)`` (their error control sees the kink and shortens the steps around
it: 2e-8 against 1e-7 at rtol = 1e-10), but the derivative of the discrete map on the frozen
grid, which no error control watches, is off by the size of the step that straddles the
kink (1.4e-5), and on a fixed grid every method is (7e-3 with 100 rk4 steps, 1e-3 with
1000: first order). Those rows are not applicable at a tolerance from smooth theory; a
looser tolerance would pass wrong gradients, so the audit lists them as not applicable,
with the kink and the time it was met, instead of blaming the method.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from numeric import CONTINUOUS_METHODS, Gradient, SolverOptions

from ._report import Report

__all__ = ["annotate_failures", "nonsmooth_notes", "nonsmooth_reason", "unique_kinks"]


#: What a report says after each kink the trajectory meets.
_CONSEQUENCE = ": the gradient exists there, but solvers converge only at first order across it"


def unique_kinks(notes) -> list[str]:
    """``info["nonsmooth"]`` notes once per kink: solves on different grids locate the same
    kink at slightly different times, and the first (most accurate) is kept."""
    seen: dict[str, str] = {}
    for note in notes:
        seen.setdefault(note.split(" at t = ")[0], note)
    return list(seen.values())


def _met(results: Mapping[str, Gradient], reference=None) -> list[str]:
    """Every kink (or switch in time) the gradients report meeting, the reference's first."""
    gradients = list(results.values())
    if reference is not None:
        gradients.insert(0, reference.gradient)
    return unique_kinks(note for g in gradients for note in g.info.get("nonsmooth", ()))


def nonsmooth_notes(results: Mapping[str, Gradient], reference=None) -> tuple[str, ...]:
    """The kinks met, as notes for the report."""
    return tuple(note + _CONSEQUENCE for note in _met(results, reference))


def nonsmooth_reason(method: str, options: SolverOptions, results: Mapping[str, Gradient],
                     reference=None) -> str:
    """Why ``method``'s row against the continuous reference is not applicable at the
    smooth-theory tolerance ("" when it is applicable)."""
    met = _met(results, reference)
    if not met or (options.tableau.adaptive and method in CONTINUOUS_METHODS):
        return ""  # error-controlled: the kink shortens the steps, the tolerance holds
    if options.tableau.adaptive:
        why = ("the derivative of the discrete map on the frozen grid is not error-"
               "controlled and converges to the gradient only at first order in the step "
               "that straddles it")
    else:
        why = (f"on a fixed grid every method converges only at first order across it, not "
               f"at {options.name}'s order {options.tableau.order}")
    return (f"a tolerance from smooth theory does not apply: {met[0]}; {why}, so a "
            "correct method would fail (and a looser tolerance would pass wrong gradients)")


def annotate_failures(report: Report, reference) -> None:
    """Put the kink first in the diagnosis of every failed row, as a possible cause."""
    met = _met({}, reference)
    if not met:
        return
    cause = (f"{met[0]}; solvers converge only at first order across a kink, so a solver's "
             "error there can exceed its tolerance (tighten it)")
    report.rows[:] = [
        row if row.passed else replace(row, diagnosis=f"{cause}; {row.diagnosis}")
        for row in report.rows
    ]
