"""``sweep``: a reference file for each of many problems, in parallel, into a suite folder.

A suite folder holds one reference file per problem (``NAME.json``, the format of
``adjoint-verify reference``, with its checksum) and ``index.jsonl``, one line per problem:
its name, sizes, reference method, certified error, the sha256 of its file and the
seconds it took, or the reason it has no file. Only this process writes to the folder;
workers compute and return the file's bytes. A file is renamed into place before its
index line is appended, so an interrupted sweep loses nothing it had written, and running
it again does only what is missing.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from numeric import InputError, IntegrationError, MethodUnavailable
from symbolic import DynamicsError

from ._executors import check_workers, open_backend, run_jobs
from ._problems import Problem
from ._progress import Progress, format_seconds
from ._reference_file import load_reference, write_reference
from ._report import BLOCKS
from ._suite_files import (
    TEMP_SUFFIX,
    append_line,
    read_lines,
    repair_lines,
    rewrite_lines,
    sha256_of,
    write_atomically,
)
from ._suite_sources import named_for_suite

__all__ = ["INDEX", "LIBRARY_ERRORS", "JobClock", "SweepResult", "sweep"]

INDEX = "index.jsonl"
#: Why a problem whose gradient is zero in every entry gets no reference file: it cannot
#: tell a wrong gradient from a right one (zeros, or the negative, would pass).
DEGENERATE = ("degenerate: every entry of the reference gradient is 0, so it cannot tell a "
              "wrong gradient from a right one (zeros or the negative would pass); not kept "
              "as a reference")
#: The library's own errors: a problem that raises one is recorded with the reason.
LIBRARY_ERRORS = (InputError, DynamicsError, IntegrationError, MethodUnavailable)


class JobClock:
    """Wall and CPU seconds of a job, and where it ran, for its result."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc_info):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu
        return False

    def fields(self) -> dict[str, Any]:
        return {"seconds": round(self.wall, 4), "cpu_seconds": round(self.cpu, 4),
                "worker": f"{socket.gethostname()}:{os.getpid()}"}


def failure_reason(exc: BaseException) -> str:
    """One line naming an exception and its message."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _all_zero(gradient) -> bool:
    return all(not np.any(np.asarray(getattr(gradient, block))) for block in BLOCKS)


def _sizes(problem: Problem) -> dict[str, int]:
    z0_shape = getattr(problem.z0, "shape", ())
    return {"n": problem.dynamics.n, "p": problem.dynamics.p,
            "B": int(z0_shape[0]) if len(z0_shape) == 2 else 1,
            "N": len(problem.times) - 1}


def _written_reference(problem: Problem, digits: int) -> dict[str, Any]:
    """The reference file of ``problem`` (bytes), read back and verified, and what the
    index says of it; or the reason it is not kept."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "reference.json"
        document = write_reference(problem, path, digits=digits)
        loaded = load_reference(path)  # the file must read back and verify
        data = path.read_bytes()
    if _all_zero(loaded.reference.gradient):
        return {"status": "failed", "reason": DEGENERATE}
    stated = document.get("reference", {}) if isinstance(document, dict) else {}
    return {"status": "ok", "data": data, "reference": loaded.reference.label,
            "error": float(stated.get("error_estimate", loaded.reference.error)),
            "digits": digits}


def reference_job(problem: Problem, digits: int) -> dict[str, Any]:
    """In a worker: the reference file of ``problem`` as bytes, or the reason there is
    none, with the problem's sizes and the job's times."""
    result: dict[str, Any] = _sizes(problem)
    with JobClock() as clock:
        try:
            result.update(_written_reference(problem, digits))
        except LIBRARY_ERRORS as exc:
            result.update(status="failed", reason=failure_reason(exc))
        except Exception as exc:  # a library bug on one problem must not stop the batch
            result.update(status="failed", reason=f"unexpected {failure_reason(exc)}")
    result.update(clock.fields())
    return result


@dataclass
class SweepResult:
    """What a sweep did.

    Attributes
    ----------
    out : Path
        The suite folder.
    problems : int
        Problems asked for.
    already_done : int
        Of them, found in the index with a valid file (or a recorded failure) and skipped.
    written : int
        Reference files written by this run (repairs included).
    repaired : int
        Of them, problems whose indexed file was missing or changed.
    failed : dict
        Name -> reason, for problems of this run without a reference.
    lost : dict
        Name -> reason, for problems whose worker kept dying (run the sweep again).
    wall_seconds, cpu_seconds : float
        This run's wall time, and the CPU time its jobs took in the workers.
    where : str
        Where the jobs ran.
    resubmitted : int
        Jobs sent again after their worker died.
    """

    out: Path
    problems: int
    already_done: int = 0
    written: int = 0
    repaired: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    lost: dict[str, str] = field(default_factory=dict)
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    where: str = ""
    resubmitted: int = 0

    @property
    def complete(self) -> bool:
        """Every problem asked for has its reference file or a recorded failure."""
        return not self.lost

    def __str__(self) -> str:
        ran = self.written + len(self.failed)
        degenerate = [n for n, reason in self.failed.items() if reason == DEGENERATE]
        failed = {n: r for n, r in self.failed.items() if r != DEGENERATE}
        lines = [f"sweep into {self.out}: {self.problems} problems, {self.already_done} "
                 f"already done, {self.written} reference files written"
                 + (f" ({self.repaired} repaired)" if self.repaired else "")
                 + f", {len(self.failed)} failed, {len(self.lost)} lost"]
        if ran:
            lines.append(f"  {format_seconds(self.wall_seconds)} wall on {self.where}, "
                         f"{format_seconds(self.cpu_seconds)} CPU in the workers, "
                         f"{ran / max(self.wall_seconds, 1e-9):.2f} problems/s")
        if self.resubmitted:
            lines.append(f"  {self.resubmitted} job(s) sent again after a worker died")
        if degenerate:
            lines.append(f"  {len(degenerate)} of the failed have a gradient that is 0 in "
                         "every entry: not kept, since it cannot tell a wrong gradient from "
                         f"a right one ({', '.join(degenerate[:3])}"
                         + (", ..." if len(degenerate) > 3 else "") + ")")
        for name, reason in list(failed.items())[:20]:
            lines.append(f"  failed: {name}: {reason}")
        if len(failed) > 20:
            lines.append(f"  ... and {len(failed) - 20} more failures (see {INDEX})")
        for name, reason in self.lost.items():
            lines.append(f"  lost: {name}: {reason}; run the sweep again")
        return "\n".join(lines)


def _check_digits(digits) -> int:
    if not isinstance(digits, int) or isinstance(digits, bool) or digits < 16:
        raise InputError(f"`digits` must be an integer >= 16 (the reference files' "
                         f"precision), got {digits!r}.")
    return digits


def _prepare_folder(out: Path) -> dict[str, dict[str, Any]]:
    """Create the folder, drop temporary files a crash left and repair the index."""
    out.mkdir(parents=True, exist_ok=True)
    for temp in out.glob(f".*{TEMP_SUFFIX}"):
        temp.unlink(missing_ok=True)
    return repair_lines(out / INDEX).entries


def _is_done(out: Path, entry: dict[str, Any] | None, retry_failed: bool) -> str:
    """"done", "redo" (nothing valid), or "repair" (the indexed file is missing or changed)."""
    if entry is None or entry.get("status") == "lost":
        return "redo"
    if entry.get("status") == "failed":
        return "redo" if retry_failed else "done"
    try:
        data = (out / str(entry.get("file"))).read_bytes()
    except OSError:
        return "repair"
    return "done" if sha256_of(data) == entry.get("sha256") else "repair"


def _check_same_digits(entries: dict[str, dict[str, Any]], digits: int, out: Path) -> None:
    other = {e.get("digits") for e in entries.values() if e.get("status") == "ok"} - {digits}
    if other:
        raise InputError(f"the suite in {out} was swept with digits={sorted(other)[0]}, not "
                         f"{digits}; use the same --digits, or another folder.")


def sweep(problems: Iterable[Problem], out: str | Path, *, digits: int = 30,
          scheduler: str | None = None, workers: int | None = None,
          retry_failed: bool = False, progress: bool = False) -> SweepResult:
    """Write a reference file for every problem into the suite folder ``out``.

    Parameters
    ----------
    problems : iterable of Problem
        E.g. :func:`verification.drawn_problems`, :func:`verification.grid_problems`.
        Each is filed under :func:`~verification._suite_sources.suite_name` (its name and
        fingerprint); duplicates are written once.
    out : path
        The suite folder (created if missing). A sweep into a folder that has an index
        resumes: problems with a valid file are skipped, files that are missing or changed
        are written again.
    digits : int
        Digits of the high-precision references (default 30).
    scheduler : str, optional
        None: a local process pool. ``"local"``: a Dask LocalCluster; otherwise the
        address of a Dask scheduler (needs the ``dask`` extra).
    workers : int, optional
        Processes of the local pool or LocalCluster (default: one per processor).
    retry_failed : bool
        Compute again the problems an earlier run recorded as failed.
    progress : bool
        Show a progress bar on stderr.

    Returns
    -------
    SweepResult
    """
    digits = _check_digits(digits)
    check_workers(workers)
    named = named_for_suite(problems)
    out = Path(out)
    entries = _prepare_folder(out)
    _check_same_digits(entries, digits, out)
    result = SweepResult(out=out, problems=len(named))
    todo: dict[str, tuple] = {}
    for name, problem in named.items():
        state = _is_done(out, entries.get(name), retry_failed)
        if state == "done":
            result.already_done += 1
        else:
            todo[name] = (problem, digits)
            result.repaired += state == "repair"
    if not todo:
        return result
    bar = Progress(len(todo), "sweep", enabled=progress)
    start = time.perf_counter()

    def record(name: str, outcome: dict[str, Any]) -> None:
        data = outcome.pop("data", None)
        entry = {"name": name, **outcome}
        if outcome["status"] == "ok":
            entry.update(file=f"{name}.json", sha256=sha256_of(data))
            write_atomically(out / entry["file"], data)  # the file first, then its line
            result.written += 1
        else:
            result.failed[name] = outcome["reason"]
        result.cpu_seconds += outcome["cpu_seconds"]
        append_line(out / INDEX, entry)
        bar.update(failed=outcome["status"] != "ok")

    try:
        with open_backend(scheduler, workers) as backend:
            result.where = backend.description
            jobs = run_jobs(backend, reference_job, todo, record)
    finally:
        bar.close()
    result.wall_seconds = time.perf_counter() - start
    result.resubmitted, result.lost = jobs.resubmitted, jobs.lost
    for name, reason in jobs.lost.items():
        append_line(out / INDEX, {"name": name, "status": "lost", "reason": reason,
                                  **_sizes(named[name])})
    index = read_lines(out / INDEX)
    if index.lines != len(index.entries):  # a resumed run re-did some: one line each
        rewrite_lines(out / INDEX, index.entries)
    return result
