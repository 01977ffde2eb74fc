"""The suite commands of ``adjoint-verify``: sweep, check-suite and campaign."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from numeric import InputError

from ._audit_gradient import DEFAULT_GRADIENT_RTOL
from ._campaign import campaign, replay_campaign
from ._check_suite import check_suite
from ._suite_contents import SuiteError
from ._suite_sources import drawn_problems, grid_problems, module_problems
from ._sweep import sweep

__all__ = ["SUITE_COMMANDS", "add_suite_commands", "parse_grid", "run_suite_command"]

SUITE_COMMANDS = ("sweep", "check-suite", "campaign")
EXIT_PASS, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
#: The shell's code for a command stopped by Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130
_TIME_DEPENDENT = {"yes": True, "no": False, "both": None}


def _add_where(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scheduler", metavar="ADDRESS|local",
                        help="run on the Dask cluster at ADDRESS (tcp://host:8786), or on a "
                        "Dask LocalCluster started here with 'local' (needs the dask extra); "
                        "default: a local process pool")
    parser.add_argument("--workers", type=int, metavar="K",
                        help="processes of the local pool or LocalCluster (default: one per "
                        "processor)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_bounds(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("drawn problems (verification.strategies.problems)")
    group.add_argument("--count", type=int, metavar="N", help="draw N problems")
    group.add_argument("--seed", type=int, default=0, help="seed of the draw (default 0)")
    group.add_argument("--families", help="comma-separated: linear, affine, mlp, polynomial")
    group.add_argument("--losses", help="comma-separated: half_squared_norm, "
                       "squared_distance, linear, log_cosh")
    for option in ("max-n", "max-params", "max-batch", "max-observations"):
        group.add_argument(f"--{option}", type=int)
    for option in ("max-span", "max-rate"):
        group.add_argument(f"--{option}", type=float)
    group.add_argument("--time-dependent", choices=list(_TIME_DEPENDENT),
                       help="time-dependent dynamics: yes, no or both (default both)")


def add_suite_commands(sub) -> None:
    """Add sweep, check-suite and campaign to the subparsers ``sub``."""
    sw = sub.add_parser("sweep", help="write a suite of reference files: drawn problems, "
                        "a grid over a built-in problem, or a module's problems")
    sw.add_argument("--out", required=True, metavar="DIR", help="the suite folder")
    _add_bounds(sw)
    sw.add_argument("--grid", action="append", default=[], metavar="PROBLEM:PARAM=VALUES",
                    help="a built-in problem over a grid of parameters, e.g. "
                    "van_der_pol:mu=0.5,1,2 or lotka_volterra:alpha=0.8..1.2/5:beta=0.5,0.6 "
                    "(LO..HI/K: K values from LO to HI); repeatable")
    sw.add_argument("--problems", metavar="MODULE", help="a module or .py file with PROBLEMS "
                    "(a list of verification.Problem) or a function problems()")
    sw.add_argument("--digits", type=int, default=30,
                    help="digits of the high-precision references (default 30)")
    sw.add_argument("--retry-failed", action="store_true",
                    help="compute again the problems an earlier run recorded as failed")
    _add_where(sw)
    cs = sub.add_parser("check-suite", help="audit an implementation against every "
                        "reference file of a suite")
    cs.add_argument("suite", help="a folder written by `adjoint-verify sweep`")
    cs.add_argument("--impl", required=True, metavar="MODULE:FUNCTION",
                    help="FUNCTION(z0, theta, times) -> (dz0, dtheta[, dtimes]); given "
                    "problem=verification.Problem when it takes a `problem` keyword")
    cs.add_argument("--rtol", type=float, default=DEFAULT_GRADIENT_RTOL,
                    help=f"tolerance per block, relative (default {DEFAULT_GRADIENT_RTOL:g})")
    cs.add_argument("--atol", type=float, default=0.0,
                    help="absolute tolerance per block (default 0)")
    cs.add_argument("--json", action="store_true", help="print the summary as JSON")
    _add_where(cs)
    cp = sub.add_parser("campaign", help="the library's own audit over drawn problems: count "
                        "the false alarms")
    _add_bounds(cp)
    cp.add_argument("--out", metavar="DIR", help="results folder (default "
                    "campaign-seedS-countN)")
    cp.add_argument("--replay", metavar="DIR", help="audit again the false alarms and errors "
                    "of the campaign in DIR, and print their reports")
    cp.add_argument("--json", action="store_true", help="print the figures as JSON")
    _add_where(cp)


def _split_list(text: str | None) -> list[str] | None:
    return None if text is None else [item.strip() for item in text.split(",") if item.strip()]


def _bounds(args: argparse.Namespace) -> dict[str, Any]:
    bounds = {"families": _split_list(args.families), "losses": _split_list(args.losses),
              "max_n": args.max_n, "max_params": args.max_params,
              "max_batch": args.max_batch, "max_observations": args.max_observations,
              "max_span": args.max_span, "max_rate": args.max_rate}
    bounds = {key: value for key, value in bounds.items() if value is not None}
    if args.time_dependent is not None:
        bounds["time_dependent"] = _TIME_DEPENDENT[args.time_dependent]
    return bounds


def _grid_values(param: str, text: str) -> list[float]:
    try:
        if ".." in text:
            low, rest = text.split("..", 1)
            high, _, count = rest.partition("/")
            count = int(count) if count else 5
            if count < 1:
                raise ValueError
            return np.linspace(float(low), float(high), count).tolist()
        return [float(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise InputError(f"--grid: values of {param!r} must be numbers separated by commas "
                         f"(0.5,1,2) or LO..HI/K, got {text!r}.") from None


def parse_grid(spec: str) -> tuple[str, dict[str, list[float]]]:
    """``PROBLEM:PARAM=VALUES[:PARAM=VALUES...]`` -> (problem, {param: values})."""
    problem, *assignments = spec.split(":")
    if not problem or not assignments:
        raise InputError(f"--grid must be PROBLEM:PARAM=VALUES[:PARAM=VALUES...], e.g. "
                         f"van_der_pol:mu=0.5,1,2; got {spec!r}.")
    grid = {}
    for assignment in assignments:
        param, sep, values = assignment.partition("=")
        if not sep or not param.strip():
            raise InputError(f"--grid: {assignment!r} in {spec!r} is not PARAM=VALUES.")
        grid[param.strip()] = _grid_values(param.strip(), values)
    return problem.strip(), grid


def _sweep_problems(args: argparse.Namespace) -> list:
    problems = []
    if args.count is not None:
        problems += drawn_problems(args.count, args.seed, **_bounds(args))
    elif _bounds(args):
        raise InputError("strategy bounds were given without --count; add --count N to draw "
                         "problems.")
    for spec in args.grid:
        problems += grid_problems(*parse_grid(spec))
    if args.problems:
        problems += module_problems(args.problems)
    if not problems:
        raise InputError("sweep needs problems: --count N (drawn), --grid PROBLEM:PARAM=VALUES "
                         "or --problems MODULE.")
    return problems


def _run_sweep(args: argparse.Namespace) -> int:
    result = sweep(_sweep_problems(args), args.out, digits=args.digits,
                   scheduler=args.scheduler, workers=args.workers,
                   retry_failed=args.retry_failed, progress=not args.quiet)
    print(result)
    return EXIT_PASS if result.complete else EXIT_FAIL


def _print_suite_error(exc: SuiteError, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"passed": False, "error": exc.headline,
                          "issues": [vars(issue) for issue in exc.issues]}, indent=2))
    print(f"adjoint-verify: error: {exc.headline}" + (":" if exc.issues else ""),
          file=sys.stderr)
    for issue in exc.issues:
        print(f"  {issue}", file=sys.stderr)
    if exc.issues:
        print("The suite is not audited: run the sweep that wrote it again (it repairs what "
              "is missing or changed), and remove files that do not belong.", file=sys.stderr)
    return EXIT_USAGE


def _run_check_suite(args: argparse.Namespace) -> int:
    try:
        check = check_suite(args.suite, args.impl, rtol=args.rtol, atol=args.atol,
                            scheduler=args.scheduler, workers=args.workers,
                            progress=not args.quiet)
    except SuiteError as exc:
        return _print_suite_error(exc, args.json)
    print(check.to_json() if args.json else check.format())
    if check.unreadable:
        return EXIT_USAGE
    return EXIT_PASS if check.passed else EXIT_FAIL


def _run_campaign(args: argparse.Namespace) -> int:
    if args.replay:
        reports = replay_campaign(args.replay)
        if not reports:
            print(f"the campaign in {args.replay} has no false alarms or errors to replay")
            return EXIT_PASS
        for report in reports.values():
            print(report.to_json() if args.json else report.format())
        return EXIT_PASS if all(r.passed for r in reports.values()) else EXIT_FAIL
    if args.count is None:
        raise InputError("campaign needs --count N (or --replay DIR).")
    out = args.out or f"campaign-seed{args.seed}-count{args.count}"
    result = campaign(args.count, args.seed, out=out, bounds=_bounds(args),
                      scheduler=args.scheduler, workers=args.workers, progress=not args.quiet)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result)
    return EXIT_PASS if result.passed else EXIT_FAIL


def run_suite_command(args: argparse.Namespace) -> int:
    """Run one of :data:`SUITE_COMMANDS`; returns the exit code."""
    if getattr(args, "workers", None) is not None and args.workers < 1:
        raise InputError(f"--workers must be a positive integer, got {args.workers}.")
    runner = {"sweep": _run_sweep, "check-suite": _run_check_suite,
              "campaign": _run_campaign}[args.command]
    try:
        return runner(args)
    except KeyboardInterrupt:
        resumes = ("; what was written is kept, and the same command resumes where it "
                   "stopped" if args.command != "check-suite" else "")
        print(f"adjoint-verify: {args.command} interrupted{resumes}", file=sys.stderr)
        return EXIT_INTERRUPTED
