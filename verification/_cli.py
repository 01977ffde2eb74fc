"""The ``adjoint-verify`` command line: demo, list, audit."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from numeric import TABLEAUS, InputError
from symbolic import DynamicsError

from ._audit import audit_problem
from ._convergence import convergence_study
from ._problems import BUILTIN_PROBLEMS, DEMO_PROBLEMS, builtin_problem
from ._report import Report

__all__ = ["main"]

EXIT_PASS, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
#: Step sequences of the demo's convergence studies (solver, steps per interval).
DEMO_CONVERGENCE = (("euler", (8, 16, 32, 64)), ("midpoint", (4, 8, 16, 32)),
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


def _build_parser() -> _Parser:
    parser = _Parser(
        prog="adjoint-verify",
        description="Establish the true gradient of a Neural-ODE loss and check every way "
        "of computing it.",
    )
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    demo = sub.add_parser("demo", help="audit the built-in problems and print the report")
    demo.add_argument("--json", action="store_true", help="print the report as JSON")
    sub.add_parser("list", help="name the built-in problems")
    one = sub.add_parser("audit", help="audit one built-in problem")
    one.add_argument("--problem", required=True, help="a name from `adjoint-verify list`")
    one.add_argument("--json", action="store_true", help="print the report as JSON")
    one.add_argument("--solver", default="dopri5", choices=list(TABLEAUS),
                     help="solver under audit (default dopri5)")
    one.add_argument("--rtol", type=_positive_float, help="dopri5 rtol (default 1e-10)")
    one.add_argument("--atol", type=_positive_float, help="dopri5 atol (default 1e-12)")
    one.add_argument("--steps", type=int, help="steps per interval for fixed-step solvers")
    return parser


def _print_report(report: Report, as_json: bool) -> int:
    print(report.to_json() if as_json else report.format())
    return EXIT_PASS if report.passed else EXIT_FAIL


def _run(args: argparse.Namespace) -> int:
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
        if args.json:
            data = report.to_dict()
            data["convergence"] = [study.to_dict() for study in studies]
            data["passed"] = passed
            print(json.dumps(data, indent=2))
        else:
            print(report.format())
            print("\nObserved order of the discrete adjoint toward the exact gradient "
                  "(seed problem):")
            for study in studies:
                print(study)
            print("\nSee a wrong gradient caught: adjoint-verify audit --problem contracting")
        return EXIT_PASS if passed else EXIT_FAIL
    if args.command == "audit":
        if args.problem not in BUILTIN_PROBLEMS:
            raise UsageError(
                f"unknown problem {args.problem!r}; choose one of {', '.join(BUILTIN_PROBLEMS)}"
            )
        if args.steps is not None and args.steps < 1:
            raise UsageError(f"--steps must be a positive integer, got {args.steps}")
        report = audit_problem(
            builtin_problem(args.problem), solver=args.solver, rtol=args.rtol, atol=args.atol,
            steps=args.steps,
        )
        return _print_report(report, args.json)
    raise UsageError("give a command: demo, list or audit (see adjoint-verify --help)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``adjoint-verify`` console script; returns the exit code."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        return _run(args)
    except UsageError as exc:
        print(f"adjoint-verify: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (InputError, DynamicsError) as exc:
        print(f"adjoint-verify: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
