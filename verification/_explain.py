"""Keeping the library's own lines out of hypothesis's explain phase.

Hypothesis explains a failure by tracing every line outside hypothesis and reporting the
first lines that only failing examples ran ("These lines were always and only run by
failing examples"). A wrong gradient makes the library run its failure path (diagnoses,
alternative answers, the report) and the numpy calls it makes; passing examples never
reach it, so the explanation pointed into the library instead of at the code under test.
While an audit runs, hypothesis's tracer is paused, and resumed whenever the
implementation under audit runs, so that its lines, and only they, can explain the failure.
Any other tracer (coverage, a debugger) is left alone; where hypothesis is not running
or its internals differ, nothing happens.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["library_untraced", "traced"]

#: The name hypothesis registers its line monitor under (Python 3.12+, sys.monitoring).
_MONITOR_NAME = "scrutineer"


def _hypothesis_tracer() -> tuple[str, Any] | None:
    """How hypothesis's explain-phase tracer is attached right now, if it is."""
    scrutineer = sys.modules.get("hypothesis.internal.scrutineer")
    if scrutineer is None:
        return None
    monitoring = getattr(sys, "monitoring", None)
    tool = getattr(scrutineer, "MONITORING_TOOL_ID", None)
    if monitoring is not None and isinstance(tool, int):
        if monitoring.get_tool(tool) == _MONITOR_NAME:
            return "monitoring", (tool, monitoring.get_events(tool))
        return None
    trace = sys.gettrace()
    tracer_class = getattr(scrutineer, "Tracer", None)
    if tracer_class is not None and isinstance(getattr(trace, "__self__", None), tracer_class):
        return "settrace", trace
    return None


def _attach(how: str, state: Any, on: bool) -> None:
    if how == "monitoring":
        tool, events = state
        sys.monitoring.set_events(tool, events if on else 0)
    else:
        sys.settrace(state if on else None)


_PAUSED: list[tuple[str, Any]] = []


@contextmanager
def library_untraced() -> Iterator[None]:
    """Pause hypothesis's tracer (only it) for the duration of the block."""
    found = _hypothesis_tracer()
    if found is None:
        yield
        return
    _attach(*found, on=False)
    _PAUSED.append(found)
    try:
        yield
    finally:
        _PAUSED.pop()
        _attach(*found, on=True)


def traced(fn: Callable) -> Callable:
    """``fn`` with hypothesis's tracer resumed while it runs, inside
    :func:`library_untraced` (the code under audit must stay visible)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not _PAUSED:
            return fn(*args, **kwargs)
        found = _PAUSED[-1]
        _attach(*found, on=True)
        try:
            return fn(*args, **kwargs)
        finally:
            _attach(*found, on=False)

    # what an implementation says about itself (its name, the time gradient it does not
    # provide, a probe of its backward reconstruction) stays readable through the wrapper
    for name in ("diagnostics", "no_times_reason"):
        if hasattr(fn, name) and not hasattr(wrapper, name):
            setattr(wrapper, name, getattr(fn, name))
    return wrapper
