"""Audit reports: rows of comparisons, a table for people and JSON for machines."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "BLOCKS",
    "MEASURE_TEXT",
    "REFERENCE_KINDS",
    "SKIP_KINDS",
    "ProblemSummary",
    "Report",
    "Row",
    "Skipped",
    "entry_label",
]

BLOCKS = ("z0", "theta", "times")

#: The three kinds of reference of shared/MATH.md a row can be held to.
REFERENCE_KINDS = {
    "exact": "exact continuous gradient",
    "discrete": "derivative of the discrete map (frozen grid)",
    "finite_difference": "finite-difference estimate",
}
#: Short names of the kinds for the table's last column.
_KIND_SHORT = {
    REFERENCE_KINDS["exact"]: "continuous",
    REFERENCE_KINDS["discrete"]: "discrete",
    REFERENCE_KINDS["finite_difference"]: "fin.diff.",
}


#: How the report explains each error measure (verification/_tolerances.py).
MEASURE_TEXT = {
    "componentwise": "componentwise: the largest over a block's entries of |g_j - g_ref,j| / "
                     "max(|g_ref,j|, T_j),\nT_j the size of the terms entry j is summed from",
    "normwise": "normwise: |g - g_ref| / max(|g_ref|, |T|) in the 2-norm of each block,\nT "
                "the sizes of the terms its entries are summed from",
}


def entry_label(block: str, index: int | None, shape: tuple[int, ...], *,
                state_names: tuple[str, ...] = (), param_names: tuple[str, ...] = ()) -> str:
    """A person's name for entry ``index`` (flat) of a block: ``z0[1, 0]``, ``times[0]``,
    ``theta[3] (w3)``; the symbol's name is added where it says more than the index."""
    if index is None:
        return ""
    position = np.unravel_index(index, shape) if len(shape) > 1 else (index,)
    label = f"{block}[{', '.join(str(int(i)) for i in position)}]"
    names, column = {"z0": (state_names, "z"), "theta": (param_names, "theta")}.get(
        block, ((), ""))
    k = int(position[-1])
    if k < len(names) and names[k] not in (f"{column}{k}", f"{column}_{k}", f"{column}[{k}]"):
        label += f" ({names[k]})"
    return label


@dataclass(frozen=True)
class Row:
    """One comparison: a block of one method's gradient against a reference.

    ``error`` follows shared/MATH.md, "Error measure", and is the error at ``entry``, the
    entry of the block furthest past (or closest to) its tolerance; ``reference_kind`` is
    one of the values of :data:`~.REFERENCE_KINDS`.
    """

    block: str
    method: str
    reference: str
    error: float
    tolerance: float
    passed: bool
    diagnosis: str = ""
    reference_kind: str = REFERENCE_KINDS["exact"]
    problem: str = "problem"
    entry: str = ""

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["error"] = _json_number(self.error)
        return out


#: How a skipped entry reads: a method of ours that cannot serve the problem, a block an
#: outside implementation does not compute (not a failure of either), or a block no
#: comparison was made on because the reference cannot certify its error there.
SKIP_KINDS = ("not applicable", "not provided", "not certified")


@dataclass(frozen=True)
class Skipped:
    """A method that could not serve a problem, or a block an implementation does not
    provide, and why."""

    problem: str
    method: str
    reason: str
    kind: str = SKIP_KINDS[0]


@dataclass(frozen=True)
class ProblemSummary:
    """What a reader needs to know about an audited problem."""

    name: str
    description: str
    shape: str
    solver: str
    reference: str
    notes: tuple[str, ...] = ()
    measure: str = "componentwise"


def _json_number(x: float) -> float | str:
    return x if math.isfinite(x) else ("inf" if x > 0 else "nan" if x != x else "-inf")


def _format_tolerance(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.0e}"


def _format_error(x: float) -> str:
    if not math.isfinite(x):
        return "failed"
    return f"{x:.1e}"


def _worst(rows: list[Row]) -> Row:
    """The row of a group furthest past (or closest to) its tolerance."""
    def ratio(row: Row) -> float:
        if not math.isfinite(row.error):
            return math.inf
        return row.error / row.tolerance if row.tolerance > 0 else math.inf

    return max(rows, key=ratio)


@dataclass
class Report:
    """The outcome of an audit.

    Attributes
    ----------
    rows : list of Row
        One per block and comparison.
    skipped : list of Skipped
        Methods that do not apply, with the reason.
    problems : list of ProblemSummary
    """

    rows: list[Row] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    problems: list[ProblemSummary] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when there is at least one comparison, every one passed, and no block was
        left uncompared because the reference cannot certify it (then the verdict is
        "NOT CERTIFIED": nothing failed, but a block was not checked)."""
        return (bool(self.rows) and all(row.passed for row in self.rows)
                and not self.uncertified)

    @property
    def uncertified(self) -> list[Skipped]:
        """Blocks given no comparison because the reference cannot certify its error there."""
        return [s for s in self.skipped if s.kind == SKIP_KINDS[2]]

    @property
    def failures(self) -> list[Row]:
        return [row for row in self.rows if not row.passed]

    def extend(self, other: Report) -> None:
        self.rows.extend(other.rows)
        self.skipped.extend(other.skipped)
        self.problems.extend(other.problems)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "verdict": self._verdict(),
            "problems": [asdict(p) for p in self.problems],
            "rows": [row.as_dict() for row in self.rows],
            "skipped": [asdict(s) for s in self.skipped],
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON (``inf`` errors, from failed solves, as the string "inf")."""
        return json.dumps(self.to_dict(), indent=indent)

    def __str__(self) -> str:
        return self.format()

    def format(self) -> str:
        """A table per problem: one line per comparison with the three block errors side by
        side, failures first with their diagnosis."""
        lines: list[str] = []
        names = [p.name for p in self.problems] or sorted({r.problem for r in self.rows})
        by_name = {p.name: p for p in self.problems}
        for name in names:
            lines.extend(self._format_problem(name, by_name.get(name)))
            lines.append("")
        lines.append(self._footnote())
        total = len(self.rows)
        failed = len(self.failures)
        methods_skipped = sum(1 for s in self.skipped
                              if s.method != "reference" and s.kind == SKIP_KINDS[0])
        not_provided = sum(1 for s in self.skipped if s.kind == SKIP_KINDS[1])
        uncertified = list(dict.fromkeys(s.method for s in self.uncertified))
        verdict = self._verdict()
        lines.append(
            f"{verdict}: {total - failed} of {total} checks passed"
            + (f", {failed} failed" if failed else "")
            + (f"; {methods_skipped} method(s) not applicable" if methods_skipped else "")
            + (f"; {not_provided} block(s) not provided by the implementation"
               if not_provided else "")
            + (f"; not compared (the reference cannot certify them): {', '.join(uncertified)}"
               if uncertified else "")
        )
        return "\n".join(lines)

    def _verdict(self) -> str:
        return "PASS" if self.passed else "FAIL" if self.failures or not self.rows \
            else "NOT CERTIFIED"

    def measures(self) -> list[str]:
        """The error measures the report's verdicts use, in order of appearance."""
        found = [p.measure for p in self.problems] or ["componentwise"]
        return list(dict.fromkeys(found))

    def _footnote(self) -> str:
        measures = "; ".join(MEASURE_TEXT.get(m, m) for m in self.measures())
        return (
            f"Errors are {measures} (docs: math/error-measure); the worst entry is the one "
            "furthest\npast (or closest to) its tolerance. Kinds of reference: continuous = "
            "exact continuous gradient;\ndiscrete = derivative of the discrete map on the "
            "same frozen step grid; fin.diff. =\nfinite-difference estimate."
        )

    def to_markdown(self) -> str:
        """The report as GitHub-flavoured Markdown, for pasting into an issue tracker."""
        verdict = self._verdict()
        lines = [f"**adjoint-verify: {verdict}** ({len(self.rows) - len(self.failures)} of "
                 f"{len(self.rows)} checks passed)", ""]
        names = [p.name for p in self.problems] or sorted({r.problem for r in self.rows})
        by_name = {p.name: p for p in self.problems}
        for name in names:
            summary = by_name.get(name)
            lines.append(f"### {name}")
            if summary is not None:
                lines.append(f"{summary.description}  ")
                lines.append(f"{summary.shape}; solver {summary.solver}; reference: "
                             f"{summary.reference}; error measure: {summary.measure}")
            lines.append("")
            lines.append("| method | block | vs reference | error | tolerance | verdict | "
                         "worst entry | diagnosis |")
            lines.append("| --- | --- | --- | ---: | ---: | --- | --- | --- |")
            rows = sorted((r for r in self.rows if r.problem == name), key=lambda r: r.passed)
            for r in rows:
                diagnosis = r.diagnosis.replace("|", "\\|")
                lines.append(
                    f"| {r.method} | {r.block} | {r.reference} | {_format_error(r.error)} | "
                    f"{_format_tolerance(r.tolerance)} | {'pass' if r.passed else '**FAIL**'} | "
                    f"{r.entry} | {diagnosis} |"
                )
            skipped = [s for s in self.skipped if s.problem == name]
            if skipped:
                lines.append("")
                for skip in skipped:
                    lines.append(f"- {skip.kind}: `{skip.method}`: {skip.reason}")
            lines.append("")
        lines.append(self._footnote().replace("\n", " "))
        return "\n".join(lines)

    def _format_problem(self, name: str, summary: ProblemSummary | None) -> list[str]:
        rows = [r for r in self.rows if r.problem == name]
        lines = []
        ok = all(r.passed for r in rows) and bool(rows)
        uncertified = any(s.problem == name for s in self.uncertified)
        title = f"== {name} " + ("[FAIL]" if not ok else "[not certified]" if uncertified
                                 else "[pass]")
        lines.append(title)
        if summary is not None:
            if summary.description:
                lines.append(f"   {summary.description}")
            lines.append(f"   {summary.shape}; solver {summary.solver}")
            lines.append(f"   reference: {summary.reference}; error measure: {summary.measure}")
            for note in summary.notes:
                lines.append(f"   note: {note}")
        groups: dict[tuple[str, str], list[Row]] = {}
        for row in rows:
            groups.setdefault((row.method, row.reference), []).append(row)
        ordered = sorted(
            groups.items(), key=lambda item: all(r.passed for r in item[1])
        )  # failures first, stable otherwise
        method_width = max([21, *(len(m) for m, _ in groups)])
        ref_width = max([26, *(len(r) for _, r in groups)])
        header = (
            f"   {'method':<{method_width}} {'vs reference':<{ref_width}} {'z0':>7} "
            f"{'theta':>7} {'times':>7} {'tol':>7}  {'verdict':<7} {'kind':<10} worst entry"
        )
        lines.append(header)
        lines.append("   " + "-" * (len(header) - 3))
        for (method, reference), group in ordered:
            errors = {r.block: r for r in group}
            cells = []
            for block in BLOCKS:
                row = errors.get(block)
                cells.append(
                    f"{'-':>7}" if row is None else f"{_format_error(row.error):>7}"
                )
            tolerances = [r.tolerance for r in group if not math.isnan(r.tolerance)]
            tolerance = f"{max(tolerances):>7.0e}" if tolerances else f"{'-':>7}"
            passed = all(r.passed for r in group)
            kind = _KIND_SHORT.get(group[0].reference_kind, group[0].reference_kind)
            lines.append(
                f"   {method:<{method_width}} {reference:<{ref_width}} {' '.join(cells)} "
                f"{tolerance}  {'pass' if passed else 'FAIL':<7} {kind:<10} "
                f"{_worst(group).entry}"
            )
            by_diagnosis: dict[str, list[str]] = {}
            for row in group:
                if not row.passed and row.diagnosis:
                    where = f"{row.block} [worst {row.entry}]" if row.entry else row.block
                    by_diagnosis.setdefault(row.diagnosis, []).append(where)
            for diagnosis, blocks in by_diagnosis.items():
                lines.append(f"      ! {', '.join(blocks)}: {diagnosis}")
        for skip in self.skipped:
            if skip.problem == name:
                lines.append(f"   ({skip.kind}: {skip.method}: {skip.reason})")
        return lines
