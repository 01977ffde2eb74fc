"""``check_suite``: an implementation audited against every reference of a suite, in
parallel, with a summary grouped by diagnosis."""

from __future__ import annotations

import json
import math
import pickle
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from numeric import InputError

from ._audit_gradient import DEFAULT_GRADIENT_RTOL, GradientShapeError, ImplementationError
from ._executors import check_workers, open_backend, run_jobs
from ._implementation import absolute_spec, bind_problem, cached_implementation
from ._progress import Progress, format_seconds
from ._reference_file import ReferenceFileError, check_against_reference, load_reference
from ._suite_contents import read_suite
from ._sweep import LIBRARY_ERRORS, JobClock, failure_reason

__all__ = ["SuiteCheck", "check_job", "check_suite"]

#: What a problem's check can end in: passed; failed (the implementation's fault); refused
#: (the reference cannot certify the tolerance, or the check could not be made);
#: unreadable (the file does not load); lost (its worker kept dying).
STATUSES = ("pass", "fail", "refused", "unreadable", "lost")
#: Problems named under "slowest".
SLOWEST = 5


def _kind(diagnosis: str) -> str:
    """The kind of a diagnosis, for grouping: its first clause, numbers as #."""
    head = re.split(r"[:;=(]", diagnosis, maxsplit=1)[0].strip()
    return re.sub(r"\d+(\.\d+)?(e[+-]?\d+)?", "#", head) or "no diagnosis"


def check_job(name: str, data: bytes, impl: str | Callable, rtol: float, atol: float
              ) -> dict[str, Any]:
    """In a worker: audit ``impl`` against the reference file ``data``.

    ``status`` is one of :data:`~verification._check_suite.STATUSES`; a failure carries the
    failing blocks and their diagnoses, or the implementation's crash.
    """
    result: dict[str, Any] = {}
    with JobClock() as clock:
        try:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / f"{name}.json"
                path.write_bytes(data)
                loaded = load_reference(path)
            fn = cached_implementation(impl) if isinstance(impl, str) else impl
            label = impl if isinstance(impl, str) else getattr(impl, "__name__", "grad")
            report = check_against_reference(loaded, bind_problem(fn, loaded.problem),
                                             rtol=rtol, atol=atol, name=label)
            failures = [{"block": r.block, "error": r.error if math.isfinite(r.error)
                         else "inf", "tolerance": r.tolerance, "diagnosis": r.diagnosis}
                        for r in report.failures]
            result.update(status="pass" if report.passed else "fail", failures=failures,
                          reference=loaded.reference.label)
            if not report.passed:
                kinds = sorted({_kind(f["diagnosis"]) for f in failures})
                result["kind"] = " + ".join(kinds) or "no comparison could be made"
        except ReferenceFileError as exc:
            result.update(status="unreadable", reason=failure_reason(exc))
        except (ImplementationError, GradientShapeError) as exc:
            result.update(status="fail", failures=[], reason=str(exc), kind=_kind(str(exc)))
        except LIBRARY_ERRORS as exc:
            result.update(status="refused", reason=failure_reason(exc))
        except Exception as exc:  # a library bug on one problem must not stop the batch
            result.update(status="refused", reason=f"unexpected {failure_reason(exc)}")
    result.update(clock.fields())
    return result


@dataclass
class SuiteCheck:
    """The outcome of :func:`check_suite`.

    Attributes
    ----------
    suite : Path
    implementation : str
    results : dict
        Problem name -> its result: ``status`` (one of
        :data:`~verification._check_suite.STATUSES`), ``failures`` (block, error, tolerance,
        diagnosis), ``kind`` (the diagnoses' kinds), ``reason``, ``seconds``.
    without_reference : dict
        Problems the sweep recorded without a reference (name -> reason): not checked.
    """

    suite: Path
    implementation: str
    rtol: float
    atol: float
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    without_reference: dict[str, str] = field(default_factory=dict)
    wall_seconds: float = 0.0
    where: str = ""

    def named(self, status: str) -> list[str]:
        return [name for name, r in self.results.items() if r["status"] == status]

    @property
    def passed(self) -> bool:
        """True when there is at least one reference and every one passed."""
        return bool(self.results) and all(r["status"] == "pass"
                                          for r in self.results.values())

    @property
    def unreadable(self) -> list[str]:
        return self.named("unreadable")

    def by_diagnosis(self) -> dict[str, list[str]]:
        """Kind of diagnosis -> the failing problems, largest group first."""
        groups: dict[str, list[str]] = {}
        for name in self.named("fail"):
            groups.setdefault(self.results[name]["kind"], []).append(name)
        return dict(sorted(groups.items(), key=lambda item: -len(item[1])))

    def slowest(self, count: int = SLOWEST) -> list[tuple[str, float]]:
        ranked = sorted(self.results.items(), key=lambda item: -item[1]["seconds"])
        return [(name, r["seconds"]) for name, r in ranked[:count]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": str(self.suite), "implementation": self.implementation,
            "rtol": self.rtol, "atol": self.atol, "passed": self.passed,
            "counts": {status: len(self.named(status))
                       for status in STATUSES},
            "by_diagnosis": self.by_diagnosis(),
            "slowest": [{"name": n, "seconds": s} for n, s in self.slowest()],
            "problems": self.results, "without_reference": self.without_reference,
            "wall_seconds": self.wall_seconds, "where": self.where,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def __str__(self) -> str:
        return self.format()

    def format(self) -> str:
        """Counts, failures grouped by diagnosis, the slowest problems, every problem that
        did not pass with its diagnoses, and the verdict line."""
        total, failed = len(self.results), self.named("fail")
        lines = [f"check-suite {self.suite} with {self.implementation} (rtol {self.rtol:g}, "
                 f"atol {self.atol:g}): {total} problems, {format_seconds(self.wall_seconds)} "
                 f"on {self.where}",
                 f"  passed {len(self.named('pass'))}, failed {len(failed)}"
                 + "".join(f", {status} {len(self.named(status))}"
                           for status in STATUSES[2:] if self.named(status))]
        if self.without_reference:
            lines.append(f"  not checked: {len(self.without_reference)} problems the sweep "
                         "recorded without a reference")
        groups = self.by_diagnosis()
        if groups:
            lines.append("Failed, by diagnosis:")
            lines += [f"  {len(names):5d}  {kind}" for kind, names in groups.items()]
        lines.append("Slowest:")
        lines += [f"  {format_seconds(seconds):>7}  {name}" for name, seconds in self.slowest()]
        not_passed = [n for n, r in self.results.items() if r["status"] != "pass"]
        if not_passed:
            lines.append("Problems that did not pass:")
            lines += [f"  {name}: {self._explain(self.results[name])}" for name in not_passed]
        verdict = "PASS" if self.passed else "FAIL"
        lines.append(f"{verdict}: {len(self.named('pass'))} of {total} problems passed")
        return "\n".join(lines)

    @staticmethod
    def _explain(result: dict[str, Any]) -> str:
        if result.get("failures"):
            by_text: dict[str, list[str]] = {}
            for failure in result["failures"]:
                by_text.setdefault(failure["diagnosis"], []).append(failure["block"])
            return "; ".join(f"{', '.join(blocks)}: {text}" for text, blocks in by_text.items())
        return f"{result['status']}: {result.get('reason', '')}"


def _check_tolerances(rtol, atol) -> None:
    for name, value, low_ok in (("rtol", rtol, False), ("atol", atol, True)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
            value) and (value >= 0 if low_ok else value > 0)
        if not ok:
            raise InputError(f"`{name}` must be a finite number {'>=' if low_ok else '>'} 0, "
                             f"got {value!r}.")


def _check_picklable(impl: Callable) -> None:
    """Pool workers receive the implementation pickled, by its module and name."""
    try:
        pickle.dumps(impl)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise InputError(
            f"`impl` {getattr(impl, '__name__', impl)!r} cannot be sent to worker processes "
            f"({exc}); define it at the top level of a module, or give 'MODULE:FUNCTION'."
        ) from None


def check_suite(suite: str | Path, impl: str | Callable, *,
                rtol: float = DEFAULT_GRADIENT_RTOL, atol: float = 0.0,
                scheduler: str | None = None, workers: int | None = None,
                progress: bool = False) -> SuiteCheck:
    """Audit a gradient implementation against every reference file of a suite.

    Parameters
    ----------
    suite : path
        A folder written by :func:`verification.sweep`.
    impl : str or callable
        ``"MODULE:FUNCTION"`` (loaded in each worker; MODULE importable or a ``.py`` path)
        or a picklable function ``FUNCTION(z0, theta, times)``, or ``FUNCTION(z0, theta,
        times, problem=...)`` when it takes a ``problem`` keyword (the
        :class:`verification.Problem` of the file), returning ``(dz0, dtheta[, dtimes])``.
    rtol, atol : float
        Tolerance per block, as for :func:`verification.audit_gradient`.
    scheduler, workers
        Where to run, as for :func:`verification.sweep`.
    progress : bool
        Show a progress bar on stderr.

    Returns
    -------
    SuiteCheck
        ``passed`` only when every reference passed.

    Raises
    ------
    SuiteError
        The folder is not a suite, or its files and index disagree (missing, changed or
        extra files, damaged index lines); nothing is audited then.
    """
    _check_tolerances(rtol, atol)
    check_workers(workers)
    if isinstance(impl, str):
        impl = absolute_spec(impl)
        cached_implementation(impl)  # a bad spec fails here, once, not in every worker
        label = impl
    elif callable(impl):
        label = getattr(impl, "__name__", "implementation")
        if scheduler is None:
            _check_picklable(impl)
    else:
        raise InputError(f"`impl` must be 'MODULE:FUNCTION' or a function, got "
                         f"{type(impl).__name__}.")
    contents = read_suite(suite)
    check = SuiteCheck(Path(suite), label, rtol, atol, without_reference={
        name: str(entry.get("reason", entry.get("status")))
        for name, entry in contents.without_reference.items()})
    jobs = {name: (name, data, impl, rtol, atol) for name, data in contents.references.items()}
    bar = Progress(len(jobs), "check-suite", enabled=progress)
    start = time.perf_counter()

    def record(name: str, result: dict[str, Any]) -> None:
        check.results[name] = result
        bar.update(failed=result["status"] != "pass")

    try:
        with open_backend(scheduler, workers) as backend:
            check.where = backend.description
            outcome = run_jobs(backend, check_job, jobs, record)
    finally:
        bar.close()
    for name, reason in outcome.lost.items():
        check.results[name] = {"status": "lost", "reason": reason, "seconds": 0.0}
    check.results = {name: check.results[name] for name in jobs}  # the suite's order
    check.wall_seconds = time.perf_counter() - start
    return check
