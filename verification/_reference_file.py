"""Reference results as files: a problem and its gradient, to the digits they are good for.

A reference file is JSON with the dynamics (SymPy strings that ``sympy.sympify`` reads
back), the loss, the inputs, every gradient block as decimal strings, the reference method
and its error estimate, the versions that made it, and a sha256 of the content so that a
changed digit is detected.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import platform
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import sympy as sp

from numeric import Gradient, InputError, IntegrationError, MethodUnavailable
from numeric._checks import check_compiled, check_problem
from numeric._stiffness import is_stiff
from symbolic import Dynamics

from ._audit_gradient import (
    DEFAULT_GRADIENT_RTOL,
    AuditContext,
    call_implementation,
    compare_to_reference,
)
from ._problems import Problem
from ._references import REFERENCE_MARGIN, ReferenceGradient, best_reference, term_scale
from ._report import BLOCKS, ProblemSummary, Report
from ._tolerances import ROUNDING, check_measure

__all__ = [
    "FORMAT",
    "ReferenceFileError",
    "check_against_reference",
    "load_reference",
    "reference_document",
    "write_reference",
]

FORMAT = "adjoint-verify-reference"
FORMAT_VERSION = 1
#: Significant digits written for the inputs: float64 round-trips through 17.
INPUT_DIGITS = 17


class ReferenceFileError(InputError):
    """A reference file that is unreadable, truncated, tampered with or malformed."""


def _decimal(x: Any, digits: int) -> str:
    return f"{float(x):.{max(digits, 1) - 1}e}" if not isinstance(x, str) else x


def _decimals(array, digits: int):
    return np.vectorize(lambda x: _decimal(x, digits), otypes=[object])(
        np.asarray(array, dtype=object if np.asarray(array).dtype == object else float)
    ).tolist()


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("adjoint-verify", "sympy", "numpy", "scipy", "mpmath"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "unknown"
    return out


def _checksum(document: dict) -> str:
    body = {k: v for k, v in document.items() if k != "sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _good_digits(error: float) -> int:
    """Significant digits a relative error of ``error`` leaves."""
    return max(1, min(40, math.floor(-math.log10(max(error, 1e-40)))))


def reference_document(problem: Problem, *, digits: int = 30) -> dict[str, Any]:
    """The reference file's content for ``problem`` (see the module docstring)."""
    dyn = problem.dynamics
    checked = check_problem(dyn, problem.loss, problem.z0, problem.theta, problem.times,
                            targets=problem.targets, data=problem.data)
    compiled, z0, theta, times, data = (
        checked.compiled, checked.z0, checked.theta, checked.times, checked.data
    )
    stiff_linear = compiled.linear is not None and is_stiff(compiled, z0, theta, times)
    try:  # the most digits: high precision where it applies, even for linear dynamics
        if stiff_linear:  # ... but not where it is the slow, linearly implicit kind
            raise MethodUnavailable("high_precision", "stiff linear dynamics: use exact")
        reference = best_reference(compiled, z0, theta, times, digits=digits,
                                   reference="high_precision", data=data)
    except (MethodUnavailable, IntegrationError):
        reference = best_reference(compiled, z0, theta, times, digits=digits, data=data)
    g = reference.gradient
    decimal = g.info.get("decimal")
    if decimal:  # high precision: its own digits, not float64's
        error = float(g.info["error_estimate"])
        good = min(digits, _good_digits(error))
        gradient = {block: _decimals(decimal[block], digits) for block in BLOCKS}
        if checked.single:
            gradient["z0"] = gradient["z0"][0]
        gradient["loss"] = decimal["loss"]
    else:
        error = reference.error
        good = min(_good_digits(error), INPUT_DIGITS)
        gradient = {block: _decimals(getattr(g, block), good) for block in BLOCKS}
        if checked.single:
            gradient["z0"] = gradient["z0"][0]
        gradient["loss"] = _decimal(g.loss, good)
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "problem": problem.name,
        "description": problem.description,
        "dynamics": {
            "rhs": [str(e) for e in dyn.rhs],
            "state": [str(s) for s in dyn.state],
            "params": [str(s) for s in dyn.params],
            "time": None if dyn.time is None else str(dyn.time),
        },
        "loss": str(problem.loss),
        "targets": [str(s) for s in problem.targets],
        "data": None if data is None else _decimals(data, INPUT_DIGITS),
        "z0": _decimals(z0[0] if checked.single else z0, INPUT_DIGITS),
        "theta": _decimals(theta, INPUT_DIGITS),
        "times": _decimals(times, INPUT_DIGITS),
        "gradient": gradient,
        "reference": {
            "method": reference.label,
            "error_estimate": error,
            "digits": good,
        },
        "versions": _versions(),
    }
    document["sha256"] = _checksum(document)
    return document


def write_reference(problem: Problem, path: str | Path, *, digits: int = 30) -> dict:
    """Write the reference file of ``problem`` to ``path``; returns the document."""
    document = reference_document(problem, digits=digits)
    Path(path).write_text(json.dumps(document, indent=1) + "\n")
    return document


@dataclass(frozen=True)
class LoadedReference:
    """A verified reference file: the problem it describes and its gradient."""

    problem: Problem
    reference: ReferenceGradient
    document: dict


def _require(document: dict, key: str, kind: type, path: str):
    if key not in document or not isinstance(document[key], kind):
        raise ReferenceFileError(
            f"reference file {path} has no valid `{key}` entry; it is not an adjoint-verify "
            "reference file or was edited by hand. Write it again with "
            "`adjoint-verify reference`."
        )
    return document[key]


def load_reference(path: str | Path) -> LoadedReference:
    """Read, verify (format, checksum) and rebuild a reference file.

    Raises
    ------
    ReferenceFileError
        The file is missing, truncated, not JSON, of another format, or its content does
        not match its sha256 (a changed digit included).
    """
    path = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ReferenceFileError(f"cannot read reference file {path}: {exc.strerror}.") from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReferenceFileError(
            f"reference file {path} is not valid JSON ({exc.msg} at line {exc.lineno}); it "
            "is truncated or damaged. Write it again with `adjoint-verify reference`."
        ) from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ReferenceFileError(f"{path} is not an adjoint-verify reference file "
                                 f"(no \"format\": \"{FORMAT}\").")
    stored = _require(document, "sha256", str, path)
    if _checksum(document) != stored:
        raise ReferenceFileError(
            f"reference file {path} fails its checksum: its content was changed after it was "
            "written (sha256 differs). Do not edit reference files; write them again."
        )
    dyn_doc = _require(document, "dynamics", dict, path)
    names = [*dyn_doc["state"], *dyn_doc["params"], *document.get("targets", [])]
    if dyn_doc.get("time"):
        names.append(dyn_doc["time"])
    symbols = {name: sp.Symbol(name) for name in names}
    rhs = [sp.sympify(e, locals=symbols) for e in dyn_doc["rhs"]]
    dynamics = Dynamics(
        rhs=rhs,
        state=[symbols[s] for s in dyn_doc["state"]],
        params=[symbols[s] for s in dyn_doc["params"]],
        time=symbols[dyn_doc["time"]] if dyn_doc.get("time") else None,
    )
    loss = sp.sympify(_require(document, "loss", str, path), locals=symbols)
    targets = tuple(symbols[s] for s in document.get("targets", []))
    data = document.get("data")
    problem = Problem(
        dynamics=dynamics,
        loss=loss,
        z0=np.array(document["z0"], dtype=float),
        theta=np.array(document["theta"], dtype=float),
        times=np.array(document["times"], dtype=float),
        name=str(document.get("problem", "reference")),
        description=str(document.get("description", "")),
        targets=targets,
        data=None if data is None else np.array(data, dtype=float),
    )
    grad_doc = _require(document, "gradient", dict, path)
    ref_doc = _require(document, "reference", dict, path)
    gradient = Gradient(
        loss=float(grad_doc["loss"]),
        z0=np.array(grad_doc["z0"], dtype=float),
        theta=np.array(grad_doc["theta"], dtype=float),
        times=np.array(grad_doc["times"], dtype=float),
        method=str(ref_doc["method"]),
    )
    # the gradient is compared in float64: it carries at least float64's rounding
    reference = ReferenceGradient(gradient, str(ref_doc["method"]),
                                  max(ROUNDING, float(ref_doc["error_estimate"])))
    return LoadedReference(problem, reference, document)


def check_against_reference(
    loaded: LoadedReference, grad_fn, *, rtol: float = DEFAULT_GRADIENT_RTOL,
    atol: float = 0.0, name: str | None = None, measure: str = "componentwise",
) -> Report:
    """Audit ``grad_fn`` against a loaded reference file, entry by entry (like
    :func:`verification.audit_gradient`, with the file's gradient as the reference; the
    term scale of every entry is computed from the file's problem)."""
    measure = check_measure(measure)
    problem, reference = loaded.problem, loaded.reference
    if rtol < REFERENCE_MARGIN * reference.error:
        raise InputError(f"`rtol` = {rtol:g} is below what the reference file can certify "
                         f"(error {reference.error:.0e}).")
    label = name or getattr(grad_fn, "__name__", "implementation")
    expected = {"z0": problem.z0.shape, "theta": problem.theta.shape,
                "times": problem.times.shape}
    blocks = call_implementation(grad_fn, problem.z0, problem.theta, problem.times, expected)
    blocks["z0"] = np.atleast_2d(blocks["z0"])  # a single sample is compared as a batch of 1
    reference = ReferenceGradient(
        replace(reference.gradient, z0=np.atleast_2d(reference.gradient.z0)), reference.label,
        reference.error, reference.kind, reference.term_error)
    report = Report()
    compiled = check_compiled(problem.dynamics, problem.loss, targets=problem.targets)
    checked = check_problem(problem.dynamics, problem.loss, problem.z0, problem.theta,
                            problem.times, targets=problem.targets, data=problem.data)
    context = AuditContext(compiled, grad_fn, checked.z0, checked.theta, checked.times,
                           single=checked.single, digits=30, data=checked.data)
    terms = term_scale(compiled, checked.z0, checked.theta, checked.times, checked.data)
    compare_to_reference(report, blocks, reference, rtol, label, atol=atol, terms=terms,
                         measure=measure, context=context)
    report.problems.append(ProblemSummary(
        name=label,
        description=f"checked against the reference file of {problem.name!r}",
        shape=f"n={problem.dynamics.n} states, p={problem.dynamics.p} parameters, "
              f"batch B={problem.z0.shape[0]}, N={len(problem.times) - 1} observations",
        solver="(the implementation's own)",
        reference=f"{reference.label} from file (relative error <= {reference.error:.0e})",
        measure=measure,
    ))
    return report
