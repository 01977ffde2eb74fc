"""``peers``: every gradient mode of torchdiffeq and diffrax audited on the built-in problems.

Each mode is a ``LibraryGradient`` (:mod:`verification.adapters`) audited by
:func:`verification.audit_gradient`, held to the reference and tolerance its numerics call for:

- backpropagation through a fixed-step solver on our grid (``steps`` per observation
  interval) is the exact derivative of that solver's discrete map: it is held to the
  complex-step derivative of our solver with the same Butcher tableau on the same grid, at
  rounding (``REFERENCE_MARGIN * ROUNDING`` = 1e-11 in float64, the most the complex-step
  reference certifies; ``rounding_tolerance(float32)`` = 5.4e-4 in float32);
- an adaptive solve, by backpropagation or an adjoint, approximates the continuous gradient
  to ``O(rtol)``: it is held to the best continuous reference at ``solver_tolerance(rtol,
  atol)``, and in float32 at no less than float32's rounding tier.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from numeric import IntegrationError, MethodUnavailable
from numeric._checks import check_problem
from numeric._multistep import ADAMS_BASHFORTH, adams_bashforth_reference

from ._audit_gradient import ImplementationError, audit_gradient
from ._problems import BUILTIN_PROBLEMS, STIFF_PROBLEMS, Problem, builtin_problem
from ._references import REFERENCE_MARGIN
from ._report import SKIP_KINDS, ProblemSummary, Report, Row, Skipped
from ._tolerances import ROUNDING, rounding_tolerance, solver_tolerance
from .adapters import (
    EXTRAS,
    LibraryGradient,
    diffrax_gradient,
    installed,
    torchdiffeq_gradient,
)
from .adapters._extras import INSTALL, require

__all__ = ["LIBRARIES", "PEER_PROBLEMS", "PEER_STEPS", "PeerMode", "peer_modes", "peer_tolerance",
           "peers"]

#: The libraries ``peers`` audits, with the extra that installs each.
LIBRARIES = {"torchdiffeq": "torch", "diffrax": "jax"}
#: The built-in problems ``peers`` audits unless told otherwise: every one but the stiff
#: problems, on which explicit solvers need impractically small steps.
PEER_PROBLEMS = tuple(name for name in BUILTIN_PROBLEMS if name not in STIFF_PROBLEMS)
#: Steps per observation interval of the fixed-step modes: any count gives an exact
#: comparison with our discrete map; 32 keeps every solver stable on every built-in problem
#: (the stiffest, `contracting`, has an eigenvalue -40 over unit intervals: Euler needs
#: h < 1/20), as a user would choose it.
PEER_STEPS = 32


_FLOAT32 = rounding_tolerance(np.float32)
#: What a reader of each library's sections needs to know about the tolerances.
NOTES = {
    "torchdiffeq": (
        f"float32 rows (torch's default dtype) are held to float32's rounding tier "
        f"({_FLOAT32:.1e}), not to rtol: torchdiffeq's default rtol = 1e-7 is below float32's "
        f"resolution (eps = {np.finfo(np.float32).eps:.1e})",
        "fixed steps: backpropagation through the solver equals the derivative of our solver "
        "with the same tableau (torchdiffeq's rk4 is Kutta's 3/8 rule, rk4_38) to rounding",
        "explicit_adams is our adams_bashforth map (a 3/8-rule start, then Adams–Bashforth of "
        "order 3 to 11), differentiated by complex step; the map amplifies rounding, so its "
        "rows are held, normwise, to ten times what two roundings of it differ by",
    ),
    "diffrax": (
        f"float32 rows are held to float32's rounding tier ({_FLOAT32:.1e}), not to rtol",
        "fixed steps: backpropagation through the solver equals the derivative of our solver "
        "with the same tableau (diffrax's Ralston is the c2 = 2/3 method) to rounding",
    ),
}


@dataclass(frozen=True)
class PeerMode:
    """One way a library computes the gradient: ``build(problem)`` makes its ``grad_fn``."""

    library: str
    build: Callable[[Problem], LibraryGradient]


def _torchdiffeq_modes() -> list[PeerMode]:
    def mode(**options) -> PeerMode:
        return PeerMode("torchdiffeq", lambda pr: torchdiffeq_gradient(
            pr.dynamics, pr.loss, targets=pr.targets, data=pr.data, **options))

    fixed = [mode(method=m, steps=PEER_STEPS) for m in ("euler", "midpoint", "rk4", "heun2",
                                                           "heun3", "explicit_adams")]
    own_grid = PeerMode("torchdiffeq", _torchdiffeq_step_size)
    adaptive = [mode(method="dopri5", adjoint=adjoint, dtype=dtype)
                for dtype in ("float64", "float32") for adjoint in (False, True)]
    return [*fixed, own_grid, mode(method="rk4", steps=PEER_STEPS, dtype="float32"),
            *adaptive]


def _torchdiffeq_step_size(problem: Problem) -> LibraryGradient:
    """``odeint(method="rk4", options={"step_size": h})``, torchdiffeq's own uniform grid
    from ``times[0]``, with ``h`` putting ``PEER_STEPS`` steps in every interval when the
    observation times are equally spaced (else the mode is not comparable: see
    :func:`_audit_mode`)."""
    gap = float(np.min(np.diff(problem.times)))
    return torchdiffeq_gradient(problem.dynamics, problem.loss, method="rk4",
                                step_size=gap / PEER_STEPS, targets=problem.targets,
                                data=problem.data)


def _diffrax_modes() -> list[PeerMode]:
    def mode(**options) -> PeerMode:
        return PeerMode("diffrax", lambda pr: diffrax_gradient(
            pr.dynamics, pr.loss, targets=pr.targets, data=pr.data, **options))

    fixed = [mode(solver=s, steps=PEER_STEPS)
             for s in ("Euler", "Midpoint", "Heun", "Ralston", "Bosh3", "Tsit5")]
    adaptive = [mode(solver="Dopri5", adjoint=a)
                for a in ("recursive_checkpoint", "direct", "backsolve")]
    return [*fixed, *adaptive, mode(solver="Dopri5", dtype="float32")]


def peer_modes(library: str) -> list[PeerMode]:
    """The gradient modes ``peers`` audits for ``library`` (``"torchdiffeq"`` or
    ``"diffrax"``)."""
    return {"torchdiffeq": _torchdiffeq_modes, "diffrax": _diffrax_modes}[library]()


def peer_tolerance(grad_fn: LibraryGradient) -> tuple[float, str | None]:
    """The tolerance a mode is held to, and the reference (``"discrete"`` or None for the
    best continuous one); see the module docstring."""
    floor = rounding_tolerance(np.float32) if grad_fn.dtype == "float32" else 0.0
    if grad_fn.rtol is None:  # fixed steps: the exact derivative of a discrete map
        return max(REFERENCE_MARGIN * ROUNDING, floor), "discrete"
    return max(solver_tolerance(grad_fn.rtol, grad_fn.atol), floor), None


def _short_label(grad_fn: LibraryGradient) -> str:
    if grad_fn.steps is not None:
        grid = f"{grad_fn.steps}/interval"
    elif grad_fn.step_size is not None:
        grid = f"step_size={grad_fn.step_size:g}"
    else:
        grid = f"rtol={grad_fn.rtol:g}"
    return f"{grad_fn.mode} {grad_fn.solver} {grid} {grad_fn.dtype}"


def _own_grid_steps(problem: Problem, grad_fn: LibraryGradient) -> int | None:
    """Steps per interval of a library's own uniform grid, where it puts a whole number of
    equal steps in every observation interval (else None: no discrete map of ours)."""
    counts = np.diff(problem.times) / grad_fn.step_size
    steps = round(float(counts[0]))
    if steps >= 1 and np.allclose(counts, steps, rtol=0, atol=1e-9):
        return steps
    return None


def _failed(section: str, label: str, reason: str, blocks: Sequence[str]) -> Report:
    report = Report()
    for block in blocks:
        report.rows.append(Row(block=block, method=label, reference="-", error=math.inf,
                               tolerance=math.nan, passed=False, problem=section,
                               diagnosis=reason))
    return report


def _audit_mode(problem: Problem, mode: PeerMode, section: str) -> Report:
    """One mode on one problem: ``audit_gradient`` with the mode's reference and tolerance,
    its rows renamed to the section and the mode's short label."""
    grad_fn = mode.build(problem)
    label = _short_label(grad_fn)
    rtol, reference = peer_tolerance(grad_fn)
    solver, steps = grad_fn.matching_solver, grad_fn.steps
    if reference == "discrete" and solver is None:
        report = Report()
        report.skipped.append(Skipped(section, label, f"no solver of ours has the tableau of "
                                      f"{grad_fn.library}'s {grad_fn.solver}"))
        return report
    if grad_fn.step_size is not None:
        steps = _own_grid_steps(problem, grad_fn)
        if steps is None:
            report = Report()
            report.skipped.append(Skipped(
                section, label, "the observation times are not equally spaced, so the "
                "library's uniform grid reads them by linear interpolation between steps, "
                "which is no Runge–Kutta map of ours"))
            return report
    blocks = ("z0", "theta", "times") if grad_fn.provides_times else ("z0", "theta")
    measure = "componentwise"
    try:
        if solver == ADAMS_BASHFORTH:
            # a multistep map amplifies rounding: held to what two of its roundings differ
            # by, block by block (the measure that estimate is on)
            rtol = max(rtol, REFERENCE_MARGIN * _adams_rounding(problem, steps))
            measure = "normwise"
        report = audit_gradient(
            problem.dynamics, grad_fn, problem.z0, problem.theta, problem.times,
            loss=problem.loss, rtol=rtol, name=label, reference=reference,
            solver=solver or "rk4", steps=steps,  # solver and steps: for the discrete only
            targets=problem.targets, data=problem.data, measure=measure,
        )
    except ImplementationError as exc:
        cause = exc.__cause__ or exc
        text = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        return _failed(section, label, f"the library raised {type(cause).__name__}: "
                       f"{text[:300]}; no gradient", blocks)
    except (IntegrationError, MethodUnavailable) as exc:
        # no reference for this mode here (e.g. an explicit multistep map that diverges at
        # this step): say why, without a verdict either way
        report = Report()
        report.skipped.append(Skipped(section, label, f"no exact reference: "
                                      f"{str(exc).splitlines()[0]}"))
        return report
    out = Report()
    for row in report.rows:
        reference_text = (f"ours: {solver} on the same grid" if reference == "discrete"
                          else row.reference)
        out.rows.append(dataclasses.replace(row, problem=section, reference=reference_text))
    for skip in report.skipped:
        kind = skip.kind
        reason = skip.reason
        if kind == SKIP_KINDS[1]:
            reason = f"dL/d{skip.method}: {reason}"
        out.skipped.append(Skipped(section, label, reason, kind=kind))
    return out


def _adams_rounding(problem: Problem, steps: int) -> float:
    """The error the Adams–Bashforth reference allows on ``problem`` (at least
    ``ROUNDING``; see :func:`numeric._multistep.adams_bashforth_reference`)."""
    checked = check_problem(problem.dynamics, problem.loss, problem.z0, problem.theta,
                            problem.times, targets=problem.targets, data=problem.data)
    _, amplified = adams_bashforth_reference(checked.compiled, checked.z0, checked.theta,
                                             checked.times, steps, data=checked.data)
    return max(ROUNDING, amplified)


def _versions(library: str) -> str:
    modules = {"torchdiffeq": ("torchdiffeq", "torch"), "diffrax": ("diffrax", "jax")}
    parts = []
    for name in modules[library]:
        try:
            parts.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{name} (version unknown)")
    return ", ".join(parts)


def peers(libraries: Sequence[str] | None = None,
          problems: Sequence[str] | None = None) -> Report:
    """Audit every gradient mode of the installed libraries on the built-in problems.

    Parameters
    ----------
    libraries : sequence of str, optional
        Some of ``"torchdiffeq"``, ``"diffrax"`` (default: every installed one; a library
        asked for by name must be installed).
    problems : sequence of str, optional
        Built-in problem names (default: every one but the stiff ones,
        :data:`~verification._peers.PEER_PROBLEMS`).

    Returns
    -------
    Report
        One section per library and problem, one line per mode; a library that is not
        installed is listed as not applicable with the command that installs it.

    Raises
    ------
    verification.adapters.MissingExtra
        A library asked for by name is not installed.
    KeyError
        An unknown library or problem name, or a stiff problem (see
        :data:`~verification._peers.PEER_PROBLEMS`).
    """
    names = list(LIBRARIES) if libraries is None else list(libraries)
    for name in names:
        if name not in LIBRARIES:
            raise KeyError(f"unknown library {name!r}; choose one of {', '.join(LIBRARIES)}")
    problem_names = list(PEER_PROBLEMS) if problems is None else list(problems)
    for name in problem_names:
        if name in STIFF_PROBLEMS:
            raise KeyError(
                f"{name!r} is stiff: the modes peers audits are explicit solvers, unstable on "
                "it at any affordable step; audit an implicit solver's gradient with "
                "audit_gradient (our references use rodas4 there). Choose one of "
                f"{', '.join(PEER_PROBLEMS)}")
    report = Report()
    for library in names:
        extra = LIBRARIES[library]
        if not installed(extra):
            if libraries is not None:  # asked for by name: say how to install it
                require(extra, f"adjoint-verify peers --library {library}")
            missing = " and ".join(EXTRAS[extra])
            report.skipped.append(Skipped(library, library,
                                          f"not installed ({missing}): {INSTALL[extra]}"))
            continue
        modes = peer_modes(library)
        for name in problem_names:
            problem = builtin_problem(name)
            section = f"{library} / {problem.name}"
            for mode in modes:
                report.extend(_audit_mode(problem, mode, section))
            report.problems.append(ProblemSummary(
                name=section, description=problem.description,
                shape=f"n={problem.dynamics.n} states, p={problem.dynamics.p} parameters, "
                      f"batch B={problem.z0.shape[0]}, N={len(problem.times) - 1} observations",
                solver=f"each mode's own ({_versions(library)})",
                reference="fixed steps: our solver with the same tableau on the same grid "
                          "(discrete); adaptive: the best continuous reference",
                notes=NOTES[library],
            ))
    return report
