"""The ``adjoint-verify`` command line: demo, list, audit, reference, check, peers,
convergence, and the suite commands sweep, check-suite and campaign (``_cli_suites``)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from numeric import METHODS, InputError, IntegrationError, MethodUnavailable
from numeric._checks import SOLVERS
from symbolic import DynamicsError

from ._audit import audit_problem
from ._audit_gradient import DEFAULT_GRADIENT_RTOL
from ._cli_suites import SUITE_COMMANDS, add_suite_commands, run_suite_command
from ._convergence import convergence_study
from ._implementation import bind_problem, load_implementation
from ._peers import LIBRARIES, PEER_PROBLEMS, peers
from ._problems import BUILTIN_PROBLEMS, DEMO_PROBLEMS, STIFF_PROBLEMS, builtin_problem
from ._reference_file import check_against_reference, load_reference, write_reference
from ._report import Report

__all__ = ["main"]

EXIT_PASS, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
#: The reader of the output closed the pipe early: the code a shell reports for a process
#: ended by SIGPIPE (128 + 13).
EXIT_BROKEN_PIPE = 141
#: Step sequences of the demo's convergence studies (solver, steps per interval).
DEMO_CONVERGENCE = (("euler", (16, 32, 64, 128)), ("midpoint", (4, 8, 16, 32)),
                    ("rk4", (4, 8, 16, 32)))


class UsageError(Exception):
    """A mistake on the command line: reported in one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        raise UsageError(message)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _add_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--format", choices=("table", "markdown", "json"), default=None,
                        help="report format (default table; markdown for issue trackers)")


def _output_format(args: argparse.Namespace) -> str:
    if args.json and args.format not in (None, "json"):
        raise UsageError(f"--json and --format {args.format} contradict each other; give one")
    return "json" if args.json else (args.format or "table")


def _build_parser() -> _Parser:
    parser = _Parser(
        prog="adjoint-verify",
        description="Establish the true gradient of a Neural-ODE loss and check every way "
        "of computing it.",
    )
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    demo = sub.add_parser("demo", help="audit the built-in problems and print the report")
    _add_output(demo)
    sub.add_parser("list", help="name the built-in problems")
    one = sub.add_parser("audit", help="audit one built-in problem")
    one.add_argument("--problem", required=True, help="a name from `adjoint-verify list`")
    _add_output(one)
    one.add_argument("--solver", default="dopri5", choices=list(SOLVERS),
                     help="solver under audit (default dopri5; rodas4 for stiff problems)")
    one.add_argument("--rtol", type=_positive_float,
                     help="dopri5/rodas4 rtol (default 1e-10, or the problem's own)")
    one.add_argument("--atol", type=_positive_float,
                     help="dopri5/rodas4 atol (default 1e-12, or the problem's own)")
    one.add_argument("--steps", type=int, help="steps per interval for fixed-step solvers")
    ref = sub.add_parser("reference", help="write a built-in problem's reference gradient "
                         "to a JSON file")
    ref.add_argument("--problem", required=True, help="a name from `adjoint-verify list`")
    ref.add_argument("--out", required=True, help="the file to write")
    ref.add_argument("--digits", type=int, default=30,
                     help="digits of the high-precision reference (default 30)")
    check = sub.add_parser("check", help="audit a gradient implementation against a "
                           "reference file")
    check.add_argument("file", help="a file written by `adjoint-verify reference`")
    check.add_argument("--impl", required=True, metavar="MODULE:FUNCTION",
                       help="the implementation: an importable module or a .py file, and the "
                       "function grad(z0, theta, times) -> (dz0, dtheta[, dtimes])")
    check.add_argument("--rtol", type=_positive_float, default=DEFAULT_GRADIENT_RTOL,
                       help=f"tolerance per block, relative (default {DEFAULT_GRADIENT_RTOL:g})")
    check.add_argument("--atol", type=float, default=0.0,
                       help="absolute tolerance per block (default 0)")
    _add_output(check)
    peer = sub.add_parser("peers", help="audit every gradient mode of torchdiffeq and diffrax "
                          "(those installed) on the built-in problems")
    peer.add_argument("--library", action="append", choices=list(LIBRARIES),
                      help="audit this library only (repeatable; default: every installed)")
    peer.add_argument("--problem", action="append",
                      help="a name from `adjoint-verify list` (repeatable; default: every "
                           "one but the stiff problems)")
    _add_output(peer)
    conv = sub.add_parser("convergence", help="observed order of a method on a built-in "
                          "problem, optionally plotted")
    conv.add_argument("--problem", required=True, help="a name from `adjoint-verify list`")
    conv.add_argument("--method", default="discrete_adjoint", choices=list(METHODS))
    conv.add_argument("--solver", default="rk4", choices=list(SOLVERS),
                      help="a fixed-step solver, or rodas4 in its fixed-step mode")
    conv.add_argument("--plot", metavar="PNG", help="write an error-vs-step log-log plot "
                      "(needs the plot extra: pip install 'adjoint-verify[plot]')")
    conv.add_argument("--json", action="store_true", help="print the study as JSON")
    add_suite_commands(sub)
    return parser


def _print_report(report: Report, fmt: str) -> int:
    text = {"json": report.to_json, "markdown": report.to_markdown, "table": report.format}
    print(text[fmt]())
    return EXIT_PASS if report.passed else EXIT_FAIL


def _problem(name: str):
    if name not in BUILTIN_PROBLEMS:
        raise UsageError(
            f"unknown problem {name!r}; choose one of {', '.join(BUILTIN_PROBLEMS)}"
        )
    return builtin_problem(name)


def _load_implementation(spec: str):
    """``MODULE:FUNCTION`` where MODULE is importable (the current folder included) or a
    path to a .py file."""
    try:
        return load_implementation(spec)
    except InputError as exc:
        raise UsageError(str(exc)) from None


def _check_plot_path(path: str) -> None:
    """``--plot PNG`` can be written: matplotlib is installed and the folder exists."""
    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plot needs matplotlib: pip install 'adjoint-verify[plot]'")
    folder = Path(path).resolve().parent
    if not folder.is_dir():
        raise UsageError(f"--plot {path}: the folder {folder} does not exist")


def _run(args: argparse.Namespace) -> int:
    if args.command in SUITE_COMMANDS:
        return run_suite_command(args)
    if args.command == "list":
        width = max(len(name) for name in BUILTIN_PROBLEMS)
        for name, factory in BUILTIN_PROBLEMS.items():
            problem = factory()
            marker = "" if name in DEMO_PROBLEMS else "  (not in demo)"
            print(f"{name:<{width}}  {problem.description}{marker}")
        return EXIT_PASS
    if args.command == "demo":
        report = Report()
        for name in DEMO_PROBLEMS:
            report.extend(audit_problem(builtin_problem(name)))
        seed = builtin_problem("linear")
        studies = [
            convergence_study(seed.dynamics, seed.z0, seed.theta, seed.times, loss=seed.loss,
                              method="discrete_adjoint", solver=solver, steps=steps)
            for solver, steps in DEMO_CONVERGENCE
        ]
        passed = report.passed and all(study.passed for study in studies)
        fmt = _output_format(args)
        if fmt == "json":
            data = report.to_dict()
            data["convergence"] = [study.to_dict() for study in studies]
            data["passed"] = passed
            print(json.dumps(data, indent=2))
        else:
            print(report.format() if fmt == "table" else report.to_markdown())
            print("\nObserved order of the discrete adjoint toward the exact gradient "
                  "(seed problem):")
            for study in studies:
                print(study)
            print("\nSee a wrong gradient caught: adjoint-verify audit --problem contracting")
        return EXIT_PASS if passed else EXIT_FAIL
    if args.command == "audit":
        fmt = _output_format(args)
        problem = _problem(args.problem)
        if args.steps is not None and args.steps < 1:
            raise UsageError(f"--steps must be a positive integer, got {args.steps}")
        report = audit_problem(problem, solver=args.solver, rtol=args.rtol, atol=args.atol,
                               steps=args.steps)
        return _print_report(report, fmt)
    if args.command == "reference":
        problem = _problem(args.problem)
        if args.digits < 16:
            raise UsageError(f"--digits must be at least 16, got {args.digits}")
        document = write_reference(problem, args.out, digits=args.digits)
        ref = document["reference"]
        print(f"wrote {args.out}: {problem.name}, reference {ref['method']} "
              f"(error <= {ref['error_estimate']:.0e}, {ref['digits']} digits), "
              f"sha256 {document['sha256'][:16]}...")
        return EXIT_PASS
    if args.command == "check":
        fmt = _output_format(args)
        loaded = load_reference(args.file)
        fn = _load_implementation(args.impl)
        if not args.atol >= 0:
            raise UsageError(f"--atol must be >= 0, got {args.atol}")
        report = check_against_reference(loaded, bind_problem(fn, loaded.problem),
                                         rtol=args.rtol, atol=args.atol,
                                         name=args.impl)
        return _print_report(report, fmt)
    if args.command == "peers":
        fmt = _output_format(args)
        for name in args.problem or ():
            _problem(name)  # a usage error before anything runs
            if name in STIFF_PROBLEMS:
                raise UsageError(f"{name!r} is stiff: the modes peers audits are explicit "
                                 "solvers, unstable on it at any affordable step; choose one "
                                 f"of {', '.join(PEER_PROBLEMS)}")
        report = peers(args.library, args.problem)
        missing = [s for s in report.skipped if s.problem == s.method]  # not installed
        if not report.rows:
            reasons = "; ".join(f"{s.method}: {s.reason}" for s in missing)
            raise UsageError(f"no library to audit: {reasons or 'nothing selected'}")
        code = _print_report(report, fmt)
        if fmt != "json":
            for skip in missing:
                print(f"{skip.method}: {skip.reason}")
        return code
    if args.command == "convergence":
        problem = _problem(args.problem)
        if args.method in ("exact", "high_precision"):
            raise UsageError(f"--method {args.method} has no step size or tolerance to vary; "
                             "choose a solver-based method, e.g. discrete_adjoint")
        if args.plot:
            _check_plot_path(args.plot)  # before the study, not after it
        study = convergence_study(problem.dynamics, problem.z0, problem.theta, problem.times,
                                  loss=problem.loss, method=args.method, solver=args.solver)
        print(json.dumps(study.to_dict(), indent=2) if args.json else study)
        if args.plot:
            study.plot(args.plot)
            if not args.json:
                print(f"wrote {args.plot}")
        return EXIT_PASS if study.passed else EXIT_FAIL
    raise UsageError("give a command: demo, list, audit, reference, check, peers, convergence, "
                     "sweep, check-suite or campaign (see adjoint-verify --help)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``adjoint-verify`` console script; returns the exit code."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        code = _run(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return code
    except BrokenPipeError:
        # the reader stopped reading (`adjoint-verify list | head -1`): stop quietly, and
        # point stdout at devnull so that the flush at exit cannot fail again (the recipe
        # of the Python documentation, "Note on SIGPIPE")
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except UsageError as exc:
        print(f"adjoint-verify: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (InputError, DynamicsError, IntegrationError, MethodUnavailable) as exc:
        # a problem (from a file) the methods cannot serve: one line, like a bad input
        print(f"adjoint-verify: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # e.g. --out in a folder that does not exist
        where = f" {exc.filename}" if exc.filename else ""
        print(f"adjoint-verify: error: cannot write or read{where}: {exc.strerror}; check the "
              "path (--out, FILE) and its folder", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
