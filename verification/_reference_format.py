"""The content of a reference file: a problem and its gradient as JSON, and back.

Format 2 stores every expression as a structural tree over a whitelist of SymPy node
types (``symbolic._tree``) with its symbols declared, so that reading a file builds
SymPy objects and never evaluates text; a ``readable`` copy of the expressions is kept for
people and never read. Format 1 stored expression strings, which are read with a
whitelist parser (``symbolic._parse``), never with ``sympify``. Every entry is validated
after the checksum: a missing key, a bad number, an expression that does not parse, an
unknown ``format_version`` or shapes that do not fit the problem are a
:class:`ReferenceFileError` naming the entry.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import sympy as sp

from numeric import Gradient, InputError
from numeric._checks import check_problem
from symbolic import Dynamics, DynamicsError
from symbolic._parse import parse_expression
from symbolic._tree import (
    TreeError,
    declarations_from_tree,
    declarations_to_tree,
    from_tree,
    to_tree,
)

from ._problems import Problem

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "READABLE_VERSIONS",
    "InvalidEntry",
    "ReferenceFileError",
    "decode_problem",
    "decode_reference",
    "encode_problem",
    "invalid",
]

FORMAT = "adjoint-verify-reference"
#: The version written: expressions as trees.
FORMAT_VERSION = 2
#: The versions read: 1 (expression strings) and 2.
READABLE_VERSIONS = (1, 2)
_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")


class ReferenceFileError(InputError):
    """A reference file that is unreadable, truncated, tampered with or malformed."""


class InvalidEntry(Exception):
    """One entry of the document is invalid; the message names it."""


def _entry(document: Any, *keys: str, kind: type | tuple = object) -> Any:
    """``document[keys[0]][keys[1]]...``, of type ``kind``."""
    value = document
    for depth, key in enumerate(keys):
        if not isinstance(value, dict) or key not in value:
            raise InvalidEntry(f"`{'.'.join(keys[: depth + 1])}` is missing")
        value = value[key]
    if not isinstance(value, kind):
        raise InvalidEntry(f"`{'.'.join(keys)}` is not a {getattr(kind, '__name__', kind)}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise InvalidEntry(f"`{where}` is not a number: {value!r}")
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)
    try:
        finite = isinstance(value, (int, float)) and math.isfinite(float(value))
    except OverflowError:  # an integer beyond float64
        finite = False
    if not finite:
        raise InvalidEntry(f"`{where}` is not a finite number: {str(value)[:40]!r}")
    return float(value)


def _array(value: Any, where: str) -> np.ndarray:
    """A nested list of numbers (decimal strings or JSON numbers) as a float array."""
    def walk(item, path):
        if isinstance(item, list):
            return [walk(x, f"{path}[{k}]") for k, x in enumerate(item)]
        return _number(item, path)

    nested = walk(value, where)
    try:
        array = np.array(nested, dtype=float)
    except ValueError:
        raise InvalidEntry(f"`{where}` is not a rectangular array") from None
    return array


def _names(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidEntry(f"`{where}` is not a list of symbol names")
    return value


def encode_problem(problem: Problem) -> dict[str, Any]:
    """The dynamics, loss and targets of ``problem`` in format 2."""
    dyn = problem.dynamics
    if dyn.form == "matrix":
        return _encode_matrix_problem(problem)
    symbols = [*dyn.state, *dyn.params, *problem.targets]
    if dyn.time is not None:
        symbols.append(dyn.time)
    return {
        "dynamics": {
            "form": "scalar",
            "symbols": declarations_to_tree(symbols),
            "state": [s.name for s in dyn.state],
            "params": [s.name for s in dyn.params],
            "time": None if dyn.time is None else dyn.time.name,
            "rhs": [to_tree(e) for e in dyn.rhs],
        },
        "loss": to_tree(problem.loss),
        "targets": [s.name for s in problem.targets],
        "readable": {"rhs": [str(e) for e in dyn.rhs], "loss": str(problem.loss)},
    }


def _encode_matrix_problem(problem: Problem) -> dict[str, Any]:
    """Matrix-form dynamics: the state and parameter matrices declared with their shapes,
    ``rhs`` one matrix-expression tree, the loss a tree in the entries ``z[i, 0]``."""
    dyn, spec = problem.dynamics, problem.dynamics.matrix
    symbols = [spec.state, *spec.leaves, *problem.targets]
    if spec.time is not None:
        symbols.append(spec.time)
    return {
        "dynamics": {
            "form": "matrix",
            "symbols": declarations_to_tree(symbols),
            "state": spec.state.name,
            "params": [leaf.name for leaf in spec.leaves],
            "time": None if spec.time is None else spec.time.name,
            "rhs": to_tree(spec.rhs),
        },
        "loss": to_tree(problem.loss),
        "targets": [s.name for s in problem.targets],
        "readable": {"rhs": str(dyn.rhs), "loss": str(problem.loss)},
    }


def _matrix_dynamics(document: dict, symbols: dict) -> Dynamics:
    state = _lookup(symbols, [_entry(document, "dynamics", "state", kind=str)],
                    "dynamics.state")[0]
    params = _lookup(symbols, _names(_entry(document, "dynamics", "params"),
                                     "dynamics.params"), "dynamics.params")
    time = document["dynamics"].get("time")
    if time is not None and not isinstance(time, str):
        raise InvalidEntry("`dynamics.time` is not a symbol name or null")
    rhs = _expression(_entry(document, "dynamics", "rhs"), symbols, 2, "dynamics.rhs")
    return Dynamics(rhs=rhs, state=state, params=params,
                    time=None if time is None else _lookup(symbols, [time],
                                                           "dynamics.time")[0])


def _symbols(document: dict, version: int) -> dict[str, Any]:
    dyn = _entry(document, "dynamics", kind=dict)
    if version >= 2:
        try:
            return declarations_from_tree(_entry(document, "dynamics", "symbols", kind=list))
        except TreeError as exc:
            raise InvalidEntry(f"`dynamics.symbols`: {exc}") from None
    names = [*_names(_entry(document, "dynamics", "state"), "dynamics.state"),
             *_names(_entry(document, "dynamics", "params"), "dynamics.params"),
             *_names(document.get("targets", []), "targets")]
    time = dyn.get("time")
    if time is not None:
        names.append(_entry(document, "dynamics", "time", kind=str))
    return {name: sp.Symbol(name) for name in names}


def _expression(value: Any, symbols: dict, version: int, where: str):
    try:
        return from_tree(value, symbols) if version >= 2 else parse_expression(value, symbols)
    except TreeError as exc:
        raise InvalidEntry(f"the expression `{where}` does not parse: {exc}") from None


def _lookup(symbols: dict, names: list[str], where: str) -> list:
    missing = [name for name in names if name not in symbols]
    if missing:
        raise InvalidEntry(f"`{where}` names the undeclared symbol {missing[0]!r}")
    return [symbols[name] for name in names]


def decode_problem(document: dict, version: int) -> Problem:
    """The problem a document describes (dynamics, loss, inputs), checked as every entry
    point checks its inputs."""
    dyn = _entry(document, "dynamics", kind=dict)
    form = dyn.get("form", "scalar") if version >= 2 else "scalar"
    if form not in ("scalar", "matrix"):
        raise InvalidEntry(f"`dynamics.form` {str(form)[:20]!r} is not one this version of "
                           "adjoint-verify reads (scalar, matrix)")
    symbols = _symbols(document, version)
    try:
        if form == "matrix":
            dynamics = _matrix_dynamics(document, symbols)
        else:
            rhs = [_expression(e, symbols, version, f"dynamics.rhs[{k}]")
                   for k, e in enumerate(_entry(document, "dynamics", "rhs", kind=list))]
            time = dyn.get("time")
            if time is not None and not isinstance(time, str):
                raise InvalidEntry("`dynamics.time` is not a symbol name or null")
            dynamics = Dynamics(
                rhs=rhs,
                state=_lookup(symbols, _names(_entry(document, "dynamics", "state"),
                                              "dynamics.state"), "dynamics.state"),
                params=_lookup(symbols, _names(_entry(document, "dynamics", "params"),
                                               "dynamics.params"), "dynamics.params"),
                time=None if time is None else _lookup(symbols, [time], "dynamics.time")[0],
            )
    except DynamicsError as exc:
        raise InvalidEntry(f"the dynamics are malformed: {exc}") from None
    targets = tuple(_lookup(symbols, _names(document.get("targets", []), "targets"),
                            "targets"))
    data = document.get("data")
    problem = Problem(
        dynamics=dynamics,
        loss=_expression(_entry(document, "loss"), symbols, version, "loss"),
        z0=_array(_entry(document, "z0"), "z0"),
        theta=_array(_entry(document, "theta"), "theta"),
        times=_array(_entry(document, "times"), "times"),
        name=str(document.get("problem", "reference")),
        description=str(document.get("description", "")),
        targets=targets,
        data=None if data is None else _array(data, "data"),
    )
    try:
        check_problem(problem.dynamics, problem.loss, problem.z0, problem.theta,
                      problem.times, targets=problem.targets, data=problem.data)
    except (InputError, DynamicsError) as exc:
        raise InvalidEntry(f"its problem does not fit together: {exc}") from None
    return problem


def decode_reference(document: dict, problem: Problem) -> tuple[Gradient, str, float]:
    """The stored gradient (shapes checked against ``problem``), the reference method and
    its error estimate."""
    expected = {"z0": np.shape(problem.z0), "theta": np.shape(problem.theta),
                "times": np.shape(problem.times)}
    blocks = {}
    for block, shape in expected.items():
        array = _array(_entry(document, "gradient", block), f"gradient.{block}")
        if array.shape != shape:
            raise InvalidEntry(f"`gradient.{block}` has shape {array.shape}, but the problem's "
                           f"{block} has shape {shape}")
        blocks[block] = array
    loss = _number(_entry(document, "gradient", "loss"), "gradient.loss")
    method = _entry(document, "reference", "method", kind=str)
    error = _number(_entry(document, "reference", "error_estimate"),
                    "reference.error_estimate")
    if error < 0:
        raise InvalidEntry(f"`reference.error_estimate` is negative ({error:g})")
    return Gradient(loss=loss, method=method, **blocks), method, error


def invalid(path: str, exc: InvalidEntry) -> ReferenceFileError:
    """The one-line error for an invalid entry of the file at ``path``."""
    text = " ".join(str(exc).split())
    return ReferenceFileError(
        f"reference file {path} is invalid: {text}; the file was damaged or not written by "
        "adjoint-verify, write it again with `adjoint-verify reference`."
    )
