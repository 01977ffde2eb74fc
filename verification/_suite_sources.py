"""Where a suite's problems come from: hypothesis strategies drawn from a seed, a grid over
a built-in problem's parameters, or a user's module; and the name each problem is filed
under.

Drawing outside of a test uses hypothesis the way its maintainers advise for generating
data in a script: a ``@given`` function called directly, under ``@seed`` and settings that
generate only (no database, no shrinking, no health checks), which collects what it is
given. The same seed, count, bounds and hypothesis version give the same problems in the
same order; hypothesis's own distribution (small and edge-case problems first, variations
of earlier ones) is kept, duplicates are dropped.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import itertools
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from numeric import InputError

from ._problems import BUILTIN_PROBLEMS, Problem, builtin_problem

__all__ = [
    "drawn_problems",
    "fingerprint",
    "grid_problems",
    "module_problems",
    "named_for_suite",
    "suite_name",
]

#: How many more examples hypothesis is asked for, each time, when duplicates left fewer
#: distinct problems than the count; and how many such rounds before giving up.
_GROWTH, _ROUNDS = 1.5, 6


def _numbers(array) -> list:
    return None if array is None else np.asarray(array, dtype=float).ravel().tolist()


def fingerprint(problem: Problem) -> str:
    """Hex sha256 of what defines ``problem`` (dynamics, loss, targets and inputs; not its
    name): two problems with the same fingerprint have the same gradient."""
    dyn = problem.dynamics
    content = {
        "rhs": [str(e) for e in dyn.rhs],
        "state": [str(s) for s in dyn.state],
        "params": [str(s) for s in dyn.params],
        "time": None if dyn.time is None else str(dyn.time),
        "loss": str(problem.loss),
        "targets": [str(s) for s in problem.targets],
        "z0": [list(np.shape(problem.z0)), _numbers(problem.z0)],
        "theta": _numbers(problem.theta),
        "times": _numbers(problem.times),
        "data": None if problem.data is None else [list(np.shape(problem.data)),
                                                    _numbers(problem.data)],
    }
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def suite_name(problem: Problem) -> str:
    """The name a problem is filed under: its own name made safe for a file name, and the
    start of its fingerprint, so that different problems never share a name and the same
    problem always gets the same one."""
    tag = fingerprint(problem)[:10]
    label = re.sub(r"[^A-Za-z0-9_.=+-]+", "_", problem.name)
    label = re.sub(r"_*-_*", "-", label).strip("_.-") or "problem"
    if label.endswith(f"-{tag}"):  # already named for a suite
        return label
    return f"{label[:80]}-{tag}"


def named_for_suite(problems: Iterable[Problem]) -> dict[str, Problem]:
    """Suite name -> problem (renamed to it), duplicates dropped, order kept."""
    out: dict[str, Problem] = {}
    for position, problem in enumerate(problems):
        if not isinstance(problem, Problem):
            raise InputError(f"problem {position} is a {type(problem).__name__}, expected a "
                             "verification.Problem; build one with Problem(dynamics=..., "
                             "loss=..., z0=..., theta=..., times=...).")
        name = suite_name(problem)
        if name not in out:
            out[name] = replace(problem, name=name)
    return out


@contextlib.contextmanager
def _without_local_constants():
    """Hypothesis mixes into its draws numbers it finds in the source of the *local* modules
    loaded in the process (a user's own code, an editable install: ``providers.
    _get_local_constants``), so the same seed drew different problems in a plain Python
    process and under the CLI (74 of 300), and would differ between two users' projects.
    Inside this block that pool is empty, and a seed gives the same problems wherever it is
    drawn. (A private hook of hypothesis: where a version lacks it, nothing is changed, and
    the hypothesis version is part of what makes a draw reproducible anyway.)"""
    try:
        from hypothesis.internal.conjecture import providers

        original, cache = providers._get_local_constants, providers.CONSTANTS_CACHE
        empty = providers.Constants()
    except (ImportError, AttributeError):  # pragma: no cover - another hypothesis layout
        yield
        return
    cache.cache.clear()  # filled with the local pool's values
    providers._get_local_constants = lambda: empty
    try:
        yield
    finally:
        providers._get_local_constants = original
        cache.cache.clear()


def _draw(strategy, count: int, seed: int, examples: int) -> list[Problem]:
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis import seed as seed_decorator

    drawn: list[Problem] = []

    @seed_decorator(seed)
    @settings(max_examples=examples, database=None, phases=[Phase.generate],
              derandomize=False, deadline=None, suppress_health_check=list(HealthCheck),
              verbosity=Verbosity.quiet, print_blob=False)
    @given(strategy)
    def collect(problem):
        drawn.append(problem)

    with _without_local_constants():
        collect()
    return drawn


def drawn_problems(count: int, seed: int = 0, **bounds: Any) -> list[Problem]:
    """``count`` distinct problems drawn from :func:`verification.strategies.problems`.

    Parameters
    ----------
    count : int
    seed : int
        The same seed, count, bounds and hypothesis version give the same problems, in any
        process (whatever modules it has imported).
    **bounds
        Options of :func:`verification.strategies.problems` (``families``, ``max_n``,
        ``max_params``, ``max_batch``, ``max_observations``, ``max_span``, ``max_rate``,
        ``time_dependent``, ``losses``).

    Raises
    ------
    InputError
        A bad count or seed, a bound the strategy rejects, or bounds that leave fewer
        than ``count`` distinct problems; or hypothesis is not installed.
    """
    for name, value, low in (("count", count, 1), ("seed", seed, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise InputError(f"`{name}` must be an integer >= {low}, got {value!r}.")
    try:
        from hypothesis.errors import InvalidArgument

        from . import strategies
    except ModuleNotFoundError:
        raise InputError("drawing problems needs hypothesis: pip install "
                         "'adjoint-verify[test]' (or give problems from a grid or a module)."
                         ) from None
    try:
        strategy = strategies.problems(**bounds)
    except (InvalidArgument, TypeError) as exc:
        raise InputError(f"bad strategy bounds: {exc}.") from None
    examples = count
    for _ in range(_ROUNDS):
        distinct: dict[str, Problem] = {}
        for problem in _draw(strategy, count, seed, examples):
            distinct.setdefault(fingerprint(problem), problem)
        if len(distinct) >= count:
            return list(distinct.values())[:count]
        examples = int(examples * _GROWTH) + 1
    raise InputError(f"the bounds {bounds} give only {len(distinct)} distinct problems, fewer "
                     f"than `count`={count}; widen the bounds or lower the count.")


def _values(param: str, values) -> list[float]:
    try:
        array = np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError):
        raise InputError(f"grid values of {param!r} must be numbers, got {values!r}.") from None
    if array.size == 0 or not np.all(np.isfinite(array)):
        raise InputError(f"grid values of {param!r} must be a non-empty list of finite "
                         f"numbers, got {values!r}.")
    return array.tolist()


def grid_problems(problem: str | Problem, grid: Mapping[str, Sequence[float]]
                  ) -> list[Problem]:
    """A problem at every point of a grid over some of its parameters.

    Parameters
    ----------
    problem : str or Problem
        A built-in problem's name (``adjoint-verify list``) or a problem.
    grid : mapping of str to sequence of float
        Parameter name (a symbol of ``dynamics.params``) -> its values; the problems are
        the Cartesian product, the other parameters as in ``problem``.
    """
    base = _base_problem(problem)
    names = [str(s) for s in base.dynamics.params]
    if not grid:
        raise InputError("`grid` is empty; give at least one parameter and its values, "
                         f"e.g. {{{names[0]!r}: [0.5, 1.0]}}." if names else
                         "`grid` is empty, and the problem has no parameters.")
    unknown = [p for p in grid if p not in names]
    if unknown:
        raise InputError(f"{base.name} has no parameter {unknown[0]!r}; its parameters are "
                         f"{', '.join(names) or '(none)'}.")
    axes = {param: _values(param, values) for param, values in grid.items()}
    out = []
    for point in itertools.product(*axes.values()):
        theta = np.array(base.theta, dtype=float, copy=True)
        label = []
        for param, value in zip(axes, point, strict=True):
            theta[names.index(param)] = value
            label.append(f"{param}={value:g}")
        out.append(replace(base, theta=theta, name=f"{base.name}-{'-'.join(label)}",
                           description=f"{base.description}; {', '.join(label)}"))
    return out


def _base_problem(problem) -> Problem:
    if isinstance(problem, Problem):
        return problem
    if problem not in BUILTIN_PROBLEMS:
        raise InputError(f"unknown problem {problem!r}; the built-in problems are "
                         f"{', '.join(BUILTIN_PROBLEMS)}.")
    return builtin_problem(problem)


def _import(spec: str):
    if spec.endswith(".py") or "/" in spec:
        path = Path(spec)
        if not path.is_file():
            raise InputError(f"no such problems module file {spec!r}.")
        loader = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(module)
        return module
    if str(Path.cwd()) not in sys.path and "" not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    return importlib.import_module(spec)


def module_problems(spec: str) -> list[Problem]:
    """The problems a user's module lists: ``PROBLEMS``, a sequence of
    :class:`verification.Problem`, or a function ``problems()`` that returns one.

    ``spec`` is an importable module name or a path to a ``.py`` file.
    """
    try:
        module = _import(spec)
    except InputError:
        raise
    except Exception as exc:  # a SyntaxError or an error at import time, one line
        raise InputError(f"cannot import the problems module {spec!r}: "
                         f"{type(exc).__name__}: {exc}") from None
    listed = getattr(module, "PROBLEMS", None)
    if listed is None and callable(getattr(module, "problems", None)):
        listed = module.problems()
    if listed is None or isinstance(listed, (str, bytes, Problem)):
        raise InputError(f"module {spec!r} lists no problems: give it PROBLEMS = [Problem(...), "
                         "...] or a function problems() returning such a list.")
    problems = list(listed)
    for position, problem in enumerate(problems):
        if not isinstance(problem, Problem):
            raise InputError(f"{spec}: problem {position} is a {type(problem).__name__}, "
                             "expected a verification.Problem.")
    if not problems:
        raise InputError(f"module {spec!r} lists no problems (the list is empty).")
    return problems
