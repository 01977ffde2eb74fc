"""The false-alarm campaign: the library's own ``audit`` over many drawn problems.

Every method of the library is correct, so on a well-posed problem every row of its audit
must pass: a failed audit is a false alarm (the goal is none), and an audit that raises is
an error. The campaign runs on the sweep's machinery (the same pool or Dask cluster, the
same resumable results file) and keeps what is needed to replay each failure: the seed,
count and bounds it drew from, and each failing audit's report.
"""

from __future__ import annotations

import importlib.metadata
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from numeric import InputError

from ._audit import audit_problem
from ._executors import check_workers, open_backend, run_jobs
from ._problems import Problem
from ._progress import Progress, format_seconds
from ._report import Report
from ._suite_files import append_line, repair_lines, write_atomically
from ._suite_sources import drawn_problems, named_for_suite
from ._sweep import LIBRARY_ERRORS, JobClock, failure_reason

__all__ = ["CampaignResult", "audit_job", "campaign", "replay_campaign"]

RESULTS, MANIFEST, FAILURES = "results.jsonl", "campaign.json", "false_alarms"


def audit_job(problem: Problem) -> dict[str, Any]:
    """In a worker: ``audit_problem`` with its defaults; "pass", "false_alarm" (with the
    failing rows and the report) or "error" (the audit raised)."""
    result: dict[str, Any] = {}
    with JobClock() as clock:
        try:
            report = audit_problem(problem)
            failures = [{"method": r.method, "block": r.block, "diagnosis": r.diagnosis}
                        for r in report.failures]
            # a block the reference cannot certify is not compared: no alarm, false or true
            result.update(status="false_alarm" if failures else "pass", failures=failures)
            if failures:
                result["report"] = report.format()
        except LIBRARY_ERRORS as exc:
            result.update(status="error", reason=failure_reason(exc))
        except Exception as exc:  # a library bug on one problem must not stop the batch
            result.update(status="error", reason=f"unexpected {failure_reason(exc)}")
    result.update(clock.fields())
    return result


@dataclass
class CampaignResult:
    """The campaign's figures, over every problem of the campaign (earlier runs into the
    same folder included); times are this run's."""

    out: Path
    source: dict[str, Any]
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    ran: int = 0
    where: str = ""

    def named(self, status: str) -> list[str]:
        return [n for n, r in self.results.items() if r["status"] == status]

    @property
    def false_alarms(self) -> list[str]:
        return self.named("false_alarm")

    @property
    def errors(self) -> list[str]:
        return self.named("error")

    @property
    def passed(self) -> bool:
        """Every problem audited, and every audit passed."""
        return bool(self.results) and all(r["status"] == "pass" for r in self.results.values())

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "problems": len(self.results),
                "passed": len(self.named("pass")), "false_alarms": self.false_alarms,
                "errors": {n: self.results[n]["reason"] for n in self.errors},
                "lost": {n: self.results[n]["reason"] for n in self.named("lost")},
                "wall_seconds": self.wall_seconds, "cpu_seconds": self.cpu_seconds,
                "problems_run": self.ran, "where": self.where}

    def __str__(self) -> str:
        s = self.source
        lines = [f"campaign: audit of {len(self.results)} drawn problems (seed {s['seed']}), "
                 f"every method against the best reference",
                 f"  passed {len(self.named('pass'))}, false alarms {len(self.false_alarms)}, "
                 f"errors {len(self.errors)}"
                 + (f", lost {len(self.named('lost'))}" if self.named("lost") else "")]
        if self.ran:
            lines.append(f"  this run: {self.ran} problems in {format_seconds(self.wall_seconds)}"
                         f" wall on {self.where}, {format_seconds(self.cpu_seconds)} CPU in the "
                         f"workers, {self.ran / max(self.wall_seconds, 1e-9):.2f} problems/s")
        for name in self.false_alarms:
            rows = "; ".join(f"{f['method']} {f['block']}: {f['diagnosis']}"
                             for f in self.results[name]["failures"][:3])
            lines.append(f"  false alarm: {name}: {rows}")
        for name in [*self.errors, *self.named("lost")]:
            lines.append(f"  {self.results[name]['status']}: {name}: "
                         f"{self.results[name]['reason']}")
        if not self.passed:
            lines.append(f"  reports in {self.out / FAILURES}; replay: adjoint-verify "
                         f"campaign --replay {self.out}")
        lines.append(f"{'PASS' if self.passed else 'FAIL'}: {len(self.false_alarms)} false "
                     f"alarms in {len(self.results)} audits")
        return "\n".join(lines)


def _source(count: int, seed: int, bounds: dict[str, Any]) -> dict[str, Any]:
    return {"count": count, "seed": seed, "bounds": bounds,
            "hypothesis": importlib.metadata.version("hypothesis")}


def _check_same_source(out: Path, source: dict[str, Any]) -> None:
    try:
        earlier = json.loads((out / MANIFEST).read_text())["source"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    if earlier != json.loads(json.dumps(source)):
        raise InputError(f"{out} holds a campaign drawn with {earlier}, not {source}; give the "
                         "same options to resume it, or another folder.")


def campaign(count: int, seed: int = 0, *, out: str | Path, bounds: dict | None = None,
             scheduler: str | None = None, workers: int | None = None,
             progress: bool = False) -> CampaignResult:
    """Audit ``count`` drawn problems with :func:`verification.audit_problem` and count the
    false alarms.

    Parameters
    ----------
    count, seed, bounds
        As for :func:`verification.drawn_problems`.
    out : path
        Folder of the results (``results.jsonl``, ``campaign.json``, and a report per
        false alarm in ``false_alarms/``); a campaign into it resumes.
    scheduler, workers, progress
        As for :func:`verification.sweep`.
    """
    bounds = dict(bounds or {})
    check_workers(workers)
    out = Path(out)
    source = _source(count, seed, bounds)
    problems = named_for_suite(drawn_problems(count, seed, **bounds))
    out.mkdir(parents=True, exist_ok=True)
    _check_same_source(out, source)
    result = CampaignResult(out, source)
    _write_manifest(result)
    done = {name: entry for name, entry in repair_lines(out / RESULTS).entries.items()
            if name in problems and entry.get("status") != "lost"}
    todo = {name: (problem,) for name, problem in problems.items() if name not in done}
    bar = Progress(len(todo), "campaign", enabled=progress)
    start = time.perf_counter()

    def record(name: str, outcome: dict[str, Any]) -> None:
        report = outcome.pop("report", None)
        if report is not None:
            (out / FAILURES).mkdir(exist_ok=True)
            text = f"{report}\n\nproblem: {problems[name]!r}\n"
            write_atomically(out / FAILURES / f"{name}.txt", text.encode())
        append_line(out / RESULTS, {"name": name, **outcome})
        done[name] = outcome
        result.cpu_seconds += outcome["cpu_seconds"]
        result.ran += 1
        bar.update(failed=outcome["status"] != "pass")

    if todo:
        try:
            with open_backend(scheduler, workers) as backend:
                result.where = backend.description
                lost = run_jobs(backend, audit_job, todo, record).lost
        finally:
            bar.close()
        for name, reason in lost.items():
            done[name] = {"status": "lost", "reason": reason}
            append_line(out / RESULTS, {"name": name, **done[name]})
    result.wall_seconds = time.perf_counter() - start
    result.results = {name: done[name] for name in problems}
    _write_manifest(result)
    return result


def _write_manifest(result: CampaignResult) -> None:
    document = {"format": "adjoint-verify-campaign", **result.to_dict()}
    write_atomically(result.out / MANIFEST, (json.dumps(document, indent=1) + "\n").encode())


def replay_campaign(out: str | Path) -> dict[str, Report]:
    """Audit again, here, the false alarms and errors of the campaign in ``out``: the
    problems are drawn again from the campaign's seed, count and bounds.

    Returns
    -------
    dict
        Problem name -> its audit report now.

    Raises
    ------
    InputError
        ``out`` holds no campaign, or a problem cannot be drawn again (another hypothesis
        version draws other problems).
    """
    out = Path(out)
    try:
        manifest = json.loads((out / MANIFEST).read_text())
        source = manifest["source"]
        failing = [*manifest["false_alarms"], *manifest["errors"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{out} holds no campaign to replay ({MANIFEST} is missing or "
                         f"damaged: {exc}).") from None
    problems = named_for_suite(drawn_problems(source["count"], source["seed"],
                                              **source["bounds"]))
    missing = [name for name in failing if name not in problems]
    if missing:
        now = importlib.metadata.version("hypothesis")
        raise InputError(f"{missing[0]} is not among the problems drawn again (hypothesis "
                         f"{now}; the campaign used {source['hypothesis']}); its report is in "
                         f"{out / FAILURES}.")
    return {name: audit_problem(problems[name]) for name in failing}
