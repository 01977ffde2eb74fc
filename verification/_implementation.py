"""Gradient implementations named on the command line: ``MODULE:FUNCTION``, loaded here or
in a worker, and called with the problem when they ask for it."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path

from numeric import InputError

from ._problems import Problem

__all__ = ["absolute_spec", "bind_problem", "load_implementation"]


def _split(spec: str) -> tuple[str, str]:
    module_name, sep, function = str(spec).rpartition(":")
    if not sep or not module_name or not function:
        raise InputError(f"--impl must be MODULE:FUNCTION, got {spec!r}")
    return module_name, function


def _is_path(module_name: str) -> bool:
    return module_name.endswith(".py") or "/" in module_name


def absolute_spec(spec: str) -> str:
    """``spec`` with a relative ``.py`` path made absolute, so that a worker started in
    another folder finds the same file."""
    module_name, function = _split(spec)
    if _is_path(module_name):
        return f"{Path(module_name).resolve()}:{function}"
    return spec


def load_implementation(spec: str) -> Callable:
    """The function named by ``MODULE:FUNCTION``, where MODULE is importable (the current
    folder included) or a path to a ``.py`` file.

    Raises
    ------
    InputError
        A malformed spec, a missing file or module, an error while importing it, or no
        such function.
    """
    module_name, function = _split(spec)
    try:
        if _is_path(module_name):
            path = Path(module_name)
            if not path.is_file():
                raise InputError(f"--impl: no such file {module_name!r}")
            loader_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))
            module = importlib.import_module(module_name)
    except InputError:
        raise
    except Exception as exc:  # a SyntaxError or an error at import time, one line
        raise InputError(
            f"--impl: cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        ) from None
    fn = getattr(module, function, None)
    if not callable(fn):
        raise InputError(f"--impl: module {module_name!r} has no function {function!r}")
    return fn


@functools.lru_cache(maxsize=8)
def cached_implementation(spec: str) -> Callable:
    """:func:`load_implementation`, once per process (a worker serves many problems)."""
    return load_implementation(spec)


def bind_problem(fn: Callable, problem: Problem) -> Callable:
    """``fn`` itself, or ``fn`` with ``problem=problem`` bound when it takes a ``problem``
    keyword: one function can then serve problems of different dynamics."""
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin or a C function: no keywords to offer
        return fn
    accepts = parameters.get("problem")
    if accepts is None or accepts.kind not in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                               inspect.Parameter.KEYWORD_ONLY):
        return fn
    bound = functools.partial(fn, problem=problem)
    functools.update_wrapper(bound, fn)
    return bound
