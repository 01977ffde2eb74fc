"""Reference results as files: a problem and its gradient, to the digits they are good for.

A reference file is JSON with the dynamics and loss (structural expression trees, see
``_reference_format``), the inputs, every gradient block as decimal strings, the reference
method and its error estimate, the versions that made it, and a sha256 of the content so
that a changed digit is detected. The sha256 detects accidents (a truncated copy, a changed
digit), not forgery: anyone can edit a file and recompute it. Reading a file never runs
anything from it: expressions are built from a whitelist of node types, and every entry is
validated after the checksum.
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

from numeric import InputError, IntegrationError, MethodUnavailable
from numeric._checks import check_compiled, check_problem
from numeric._stiffness import is_stiff

from ._audit_gradient import (
    DEFAULT_GRADIENT_RTOL,
    AuditContext,
    call_implementation,
    compare_to_reference,
)
from ._problems import Problem
from ._quiet import quiet_numerics
from ._reference_format import (
    FORMAT,
    FORMAT_VERSION,
    READABLE_VERSIONS,
    InvalidEntry,
    ReferenceFileError,
    decode_problem,
    decode_reference,
    encode_problem,
    invalid,
)
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

#: Significant digits written for the inputs: float64 round-trips through 17.
INPUT_DIGITS = 17


def _decimal(x: Any, digits: int) -> str:
    """``x`` with ``digits`` significant digits; all 17 where rounding would carry it past
    the largest float64 (1.7976931348623157e308 to 10 digits reads back as inf)."""
    if isinstance(x, str):
        return x
    text = f"{float(x):.{max(digits, 1) - 1}e}"
    return text if math.isfinite(float(text)) else f"{float(x):.16e}"


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


@quiet_numerics
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
    if reference.caveat or reference.uncertified:  # a file states an error for every entry
        why = reference.caveat or "; ".join(f"{b}: {w}" for b, w in
                                            reference.uncertified.items())
        raise MethodUnavailable("reference", f"{reference.label}, the best reference "
                                f"available, cannot certify its error: {why}")
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
        **encode_problem(problem),
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


def _layout(value: Any, depth: int = 0) -> str:
    """JSON with one key per line and every list that holds no mapping on one line (an
    expression tree, a row of numbers): readable, and parsed like any JSON."""
    if isinstance(value, dict) and value:
        pad = " " * (depth + 1)
        items = [f"{pad}{json.dumps(k)}: {_layout(v, depth + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * depth + "}"
    if isinstance(value, list) and any(isinstance(v, dict) for v in value):
        pad = " " * (depth + 1)
        return ("[\n" + ",\n".join(pad + _layout(v, depth + 1) for v in value) + "\n"
                + " " * depth + "]")
    return json.dumps(value)


def write_reference(problem: Problem, path: str | Path, *, digits: int = 30) -> dict:
    """Write the reference file of ``problem`` to ``path``; returns the document."""
    document = reference_document(problem, digits=digits)
    Path(path).write_text(_layout(document) + "\n")
    return document


@dataclass(frozen=True)
class LoadedReference:
    """A verified reference file: the problem it describes and its gradient."""

    problem: Problem
    reference: ReferenceGradient
    document: dict


def _read_json(path: str) -> Any:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ReferenceFileError(f"cannot read reference file {path}: {exc.strerror}.") from exc
    except UnicodeDecodeError:
        raise ReferenceFileError(f"reference file {path} is not text: it is not an "
                                 "adjoint-verify reference file.") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReferenceFileError(
            f"reference file {path} is not valid JSON ({exc.msg} at line {exc.lineno}); it "
            "is truncated or damaged. Write it again with `adjoint-verify reference`."
        ) from exc
    except RecursionError:
        raise ReferenceFileError(f"reference file {path} is nested too deeply to be an "
                                 "adjoint-verify reference file.") from None


def load_reference(path: str | Path) -> LoadedReference:
    """Read, verify (format, checksum) and rebuild a reference file, running nothing from it.

    Raises
    ------
    ReferenceFileError
        The file is missing, truncated, not JSON, of another format or an unknown
        ``format_version``, its content does not match its sha256 (a changed digit
        included), or, after the checksum, an entry is invalid: a missing key, a bad
        number, an expression outside the whitelist or that does not parse, shapes that do
        not fit the problem. The message is one line naming the entry.
    """
    path = str(path)
    document = _read_json(path)
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ReferenceFileError(f"{path} is not an adjoint-verify reference file "
                                 f"(no \"format\": \"{FORMAT}\").")
    stored = document.get("sha256")
    if not isinstance(stored, str):
        raise ReferenceFileError(f"reference file {path} has no `sha256` entry; write it "
                                 "again with `adjoint-verify reference`.")
    if _checksum(document) != stored:
        raise ReferenceFileError(
            f"reference file {path} fails its checksum: its content was changed after it was "
            "written (sha256 differs). Do not edit reference files; write them again."
        )
    version = document.get("format_version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise ReferenceFileError(
            f"reference file {path} has format_version {str(version)[:20]}, which this "
            f"version of adjoint-verify does not read (it reads "
            f"{', '.join(map(str, READABLE_VERSIONS))}); upgrade adjoint-verify or write the "
            "file again."
        )
    try:
        problem = decode_problem(document, version)
        gradient, method, error = decode_reference(document, problem)
    except InvalidEntry as exc:
        raise invalid(path, exc) from None
    # the gradient is compared in float64: it carries at least float64's rounding
    reference = ReferenceGradient(gradient, method, max(ROUNDING, error))
    return LoadedReference(problem, reference, document)


@quiet_numerics
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
