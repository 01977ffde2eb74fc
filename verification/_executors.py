"""Where suite jobs run: a local process pool, or a Dask cluster, behind one executor.

Both are ``concurrent.futures`` executors: :class:`~concurrent.futures.ProcessPoolExecutor`
sized to the machine by default, or the executor of a ``distributed.Client``
(``Client.get_executor``) connected to an existing scheduler or to a ``LocalCluster`` it
starts. :func:`run_jobs` drives either the same way and recovers a job whose worker died:
Dask reschedules it on its own (and retries a failed task ``retries`` times); a process
pool breaks (``BrokenProcessPool``), so a new pool is made and the unfinished jobs are
submitted again.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from numeric import InputError

__all__ = ["Backend", "JobsOutcome", "check_workers", "default_workers", "open_backend",
           "run_jobs"]

#: Further attempts of a job whose worker died (Dask: also of a task that raised): a job
#: is given up as lost after 1 + RETRIES worker deaths.
RETRIES = 2
#: Jobs submitted ahead, per worker: enough to keep every worker busy, few enough that a
#: worker's death touches only the jobs near it.
AHEAD = 2


def default_workers() -> int:
    """The processors this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def check_workers(workers) -> int | None:
    """``workers`` if it is None or a positive integer."""
    if workers is None:
        return None
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise InputError(f"`workers` must be a positive integer or None (one per processor), "
                         f"got {workers!r}.")
    return workers


@dataclass
class Backend:
    """An executor and what :func:`run_jobs` needs to know about it.

    Attributes
    ----------
    description : str
        Where the jobs run, for reports ("2 local processes", "Dask at tcp://...").
    workers : int
        How many jobs run at once.
    lost : tuple of exception types
        The errors that mean a worker died under a job (not that the job failed).
    """

    description: str
    workers: int
    lost: tuple[type[BaseException], ...]
    _make: Callable[[], Executor]
    _executor: Executor | None = field(default=None, repr=False)
    renewals: int = 0

    def executor(self) -> Executor:
        if self._executor is None:
            self._executor = self._make()
        return self._executor

    def renew(self) -> None:
        """Replace a broken executor (a process pool whose worker died) by a new one."""
        self.close(wait=False)
        self.renewals += 1

    def close(self, *, wait: bool = True) -> None:
        """Shut the executor down; ``wait=False`` cancels what has not started."""
        executor, self._executor = self._executor, None
        if isinstance(executor, ProcessPoolExecutor):
            executor.shutdown(wait=wait, cancel_futures=True)
        elif executor is not None:  # Dask's executor cancels when it does not wait
            executor.shutdown(wait=wait)


#: Seconds between a pool worker's checks that the process that made the pool is alive.
PARENT_CHECK_INTERVAL = 1.0


def _exit_with(parent: int) -> None:
    """In a pool worker: leave as soon as ``parent`` is gone. A worker outlives a parent
    that was killed (no cleanup ran) otherwise, waiting forever on its job queue, and keeps
    the forkserver alive with it. POSIX only (``os.kill(pid, 0)`` probes there; on Windows
    it would signal)."""
    if os.name != "posix":
        return

    def watch() -> None:
        while True:
            time.sleep(PARENT_CHECK_INTERVAL)
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:  # alive, under another user: keep working
                pass

    threading.Thread(target=watch, name="adjoint-verify-parent-watch", daemon=True).start()


def _process_pool(workers: int) -> Backend:
    # forkserver: workers start from a clean process that imported the library once, safe
    # where the parent has threads (a Dask client, a test runner); spawn elsewhere
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if context.get_start_method() == "forkserver":
        context.set_forkserver_preload(["verification"])
    return Backend(
        description=f"{workers} local process{'es' if workers != 1 else ''}",
        workers=workers,
        lost=(BrokenProcessPool,),
        _make=lambda: ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                          initializer=_exit_with, initargs=(os.getpid(),)),
    )


def _import_distributed():
    try:
        import distributed
    except ModuleNotFoundError:
        raise InputError(
            "`scheduler` needs Dask distributed, which is not installed; install the extra: "
            "pip install 'adjoint-verify[dask]'."
        ) from None
    return distributed


@contextlib.contextmanager
def _dask(scheduler: str, workers: int | None) -> Iterator[Backend]:
    distributed = _import_distributed()
    with contextlib.ExitStack() as stack:
        if scheduler == "local":
            cluster = stack.enter_context(distributed.LocalCluster(
                n_workers=workers or default_workers(), threads_per_worker=1, processes=True,
                dashboard_address=":0",  # no fixed port: other clusters may run here
            ))
            client = stack.enter_context(distributed.Client(cluster))
            where = f"a Dask LocalCluster of {len(cluster.workers)} processes"
        else:
            try:
                client = stack.enter_context(distributed.Client(scheduler, timeout="20s"))
            except (OSError, TimeoutError, ValueError) as exc:
                raise InputError(
                    f"cannot reach the Dask scheduler at `scheduler`={scheduler!r}: {exc}; give "
                    "its address as tcp://HOST:PORT, or 'local' to start a cluster here."
                ) from None
            where = f"Dask at {scheduler}"
        threads = sum(client.nthreads().values()) or 1
        backend = Backend(
            description=f"{where} ({threads} worker thread{'s' if threads != 1 else ''})",
            workers=threads,
            lost=(distributed.KilledWorker,),
            _make=lambda: client.get_executor(retries=RETRIES, pure=False),
        )
        with _closing(backend):
            yield backend


@contextlib.contextmanager
def _closing(backend: Backend) -> Iterator[Backend]:
    """Close ``backend`` on the way out; cancel what is pending if an error leaves."""
    try:
        yield backend
    except BaseException:
        backend.close(wait=False)
        raise
    backend.close()


@contextlib.contextmanager
def open_backend(scheduler: str | None = None, workers: int | None = None
                 ) -> Iterator[Backend]:
    """The executor the jobs run on.

    Parameters
    ----------
    scheduler : str, optional
        None: a local process pool (the default). ``"local"``: a Dask ``LocalCluster``
        started here. Otherwise the address of a running Dask scheduler
        (``tcp://host:8786``); the cluster's size is its own.
    workers : int, optional
        Processes of the local pool or the LocalCluster (default: one per processor).
    """
    workers = check_workers(workers)
    if scheduler is None:
        with _closing(_process_pool(workers or default_workers())) as backend:
            yield backend
        return
    if not isinstance(scheduler, str) or not scheduler:
        raise InputError(f"`scheduler` must be None, 'local' or a Dask scheduler address, "
                         f"got {scheduler!r}.")
    with _dask(scheduler, workers) as backend:
        yield backend


@dataclass
class JobsOutcome:
    """What :func:`run_jobs` could not finish, and what workers' deaths cost.

    Attributes
    ----------
    lost : dict
        Job name -> why it was given up.
    resubmitted : int
        Jobs submitted again because their worker died (a broken process pool takes every
        job it held with it).
    """

    lost: dict[str, str] = field(default_factory=dict)
    resubmitted: int = 0
    finished: int = 0


#: Said of lost jobs when no job ever finished: the workers likely die as they start.
_NEVER_STARTED = ("; no job finished at all, so the workers probably die as they start: a "
                  "script that calls sweep or check_suite must guard its work with "
                  "`if __name__ == '__main__':`, since each worker imports the main module")


def run_jobs(backend: Backend, task: Callable[..., Any], jobs: Mapping[str, tuple],
             on_result: Callable[[str, Any], None]) -> JobsOutcome:
    """Run ``task(*jobs[name])`` for every name on ``backend``; ``on_result(name, result)``
    is called here, in this process, as each finishes (in completion order).

    A job whose worker died is submitted again, up to ``RETRIES`` more times; a process
    pool broken by the death is replaced first. A job given up is in the outcome's
    ``lost`` with the reason. An exception the task raises is not caught: tasks report
    their own failures in their result.
    """
    queue = deque(jobs)
    deaths: Counter[str] = Counter()
    outcome = JobsOutcome()
    while queue:
        broken = _run_until_broken(backend, task, jobs, queue, deaths, outcome, on_result)
        if broken:
            backend.renew()
    return outcome


def _run_until_broken(backend, task, jobs, queue, deaths, outcome, on_result) -> bool:
    """Submit from ``queue`` and collect until it is empty or the executor broke."""
    executor = backend.executor()
    in_flight: dict[Future, str] = {}
    broken = False
    while queue or in_flight:
        while queue and not broken and len(in_flight) < AHEAD * backend.workers:
            name = queue.popleft()
            try:
                in_flight[executor.submit(task, *jobs[name])] = name
            except BrokenProcessPool:
                queue.appendleft(name)
                broken = True
        if not in_flight:
            break
        done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
        for future in done:
            name = in_flight.pop(future)
            try:
                result = future.result()
            except backend.lost as exc:
                broken = broken or isinstance(exc, BrokenProcessPool)
                deaths[name] += 1
                if deaths[name] > RETRIES:
                    outcome.lost[name] = (f"its worker died {deaths[name]} times "
                                          f"({type(exc).__name__}: {exc})"
                                          + (_NEVER_STARTED if not outcome.finished else ""))
                else:
                    outcome.resubmitted += 1
                    queue.append(name)
                continue
            outcome.finished += 1
            on_result(name, result)
    return broken
