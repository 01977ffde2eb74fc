"""Shared pieces of the suite tests: small problem bounds, the implementations' specs, and
a way to kill a worker in the middle of a sweep."""

import os
import pathlib
import signal
import time

from verification._suite_files import read_lines

IMPLEMENTATIONS = pathlib.Path(__file__).with_name("suite_implementations.py")
GRAD, FLIPPED = f"{IMPLEMENTATIONS}:grad", f"{IMPLEMENTATIONS}:flipped"
#: Small drawn problems: each reference takes well under a second.
SMALL = {"max_n": 2, "max_params": 6, "max_observations": 2}


def kill_first_worker(index: pathlib.Path, killed: list, deadline: float) -> None:
    """Kill (SIGKILL: no cleanup) the worker process that wrote the first line of the
    suite's ``index``; workers serve many problems, so it is still at work."""
    while time.monotonic() < deadline:
        entries = read_lines(index).entries
        if entries:
            pid = int(next(iter(entries.values()))["worker"].rsplit(":", 1)[1])
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return
        time.sleep(0.02)
