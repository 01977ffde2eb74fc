"""Fuzzing every public entry point with numbers from the whole float range: nothing but
the library's own errors escapes, and what returns is finite.

Numbers are drawn from all of float64 (nan, inf, subnormals, 1e308), from tiny and huge
scales and from an ordinary range; shapes are right or wrong. The budgets are the
library's own (``max_steps``; the high-precision macro-step budget is lowered here so that
a stiff draw fails in milliseconds instead of minutes). The CI profile is derandomized
(conftest.py), and each test draws a bounded number of examples.
"""

import contextlib
import json
import math
import os
from unittest import mock

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, event, example, given, note, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from numeric import (
    METHODS,
    InputError,
    IntegrationError,
    MethodUnavailable,
    _high_precision,
    _switching,
    gradient,
    solve,
)
from symbolic import Dynamics, DynamicsError, compile_problem, derive_adjoint
from verification import Problem, _references, audit, audit_gradient, convergence_study
from verification._cli import main
from verification._reference_file import _checksum, load_reference, reference_document

#: Numerical warnings from the library are failures too: under ``-W error`` they would
#: escape as exceptions (the strategies here keep their own arithmetic quiet).
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")
LIBRARY_ERRORS = (InputError, IntegrationError, MethodUnavailable, DynamicsError)


def fuzz(examples: int) -> settings:
    """The loaded profile (CI: derandomized) with a bounded number of examples, times
    ``ADJOINT_VERIFY_FUZZ_SCALE`` for a longer hunt (e.g. with ``HYPOTHESIS_PROFILE=dev``)."""
    scale = int(os.environ.get("ADJOINT_VERIFY_FUZZ_SCALE", "1"))
    return settings(max_examples=examples * scale, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])




@contextlib.contextmanager
def small_budgets():
    """The library's step budgets lowered, so that a stiff draw ends in an IntegrationError
    after milliseconds rather than minutes: the high-precision macro steps, the tight
    float64 reference and the solve that looks for switches."""
    with mock.patch.object(_high_precision, "MAX_MACRO_STEPS", 200), \
            mock.patch.object(_references, "TIGHT_MAX_STEPS", 3000), \
            mock.patch.object(_switching, "_SCAN_MAX_STEPS", 3000):
        yield



X, V, T = sp.symbols("x v t")
K, C, Y = sp.symbols("k c y")
#: (dynamics, loss, targets): linear, nonlinear in two states, a switch, a kink, a loss
#: with a domain, explicit time with a branch point, data targets.
PROBLEMS = [
    (Dynamics(rhs=[K * X], state=[X], params=[K]), X**2 / 2, ()),
    (Dynamics(rhs=[V, -K * X - C * V * sp.Abs(V)], state=[X, V], params=[K, C]),
     (X**2 + V**2) / 2, ()),
    (Dynamics(rhs=[K - C * sp.Heaviside(X - 1)], state=[X], params=[K, C]), X, ()),
    (Dynamics(rhs=[K - sp.Max(0, X) * C], state=[X], params=[K, C]), sp.Abs(X - 1), ()),
    (Dynamics(rhs=[-K * X + sp.sqrt(T)], state=[X], params=[K], time=T), sp.log(X), ()),
    (Dynamics(rhs=[sp.tanh(K * X + C)], state=[X], params=[K, C]), (X - Y) ** 2, (Y,)),
]

SPECIAL = [0.0, 5e-324, 2.2e-308, 1e-300, 1e-30, 1e-8, 1.0, 1e8, 1e30, 1e200, 1e300,
           1.7976931348623157e308]
#: Finite numbers of every scale float64 holds, the special ones of them more often.
scaled_floats = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(SPECIAL + [-v for v in SPECIAL]),
)
ordinary_floats = st.floats(-2.0, 2.0)
#: Anything a float64 can be, nan and the infinities included.
wild_floats = st.one_of(scaled_floats, st.sampled_from([math.nan, math.inf, -math.inf]),
                        ordinary_floats)


def weighted(*choices):
    """One of the strategies, with the given integer weights (``one_of`` flattens nested
    alternatives into equal shares)."""
    table = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.integers(0, len(table) - 1).flatmap(lambda k: table[k])


def values(shape):
    """An array of the given shape: ordinary values with one entry of any scale, all of any
    scale, or anything at all (nan and inf included)."""
    ordinary = hnp.arrays(np.float64, shape, elements=ordinary_floats)

    def one_extreme(array):
        return st.tuples(st.just(array), st.integers(0, max(array.size - 1, 0)),
                         scaled_floats).map(_put)

    return weighted(
        (5, ordinary.flatmap(one_extreme)),
        (3, hnp.arrays(np.float64, shape, elements=scaled_floats)),
        (1, hnp.arrays(np.float64, shape, elements=wild_floats)),
    )


def _put(case):
    array, index, value = case
    array = array.copy()
    if array.size:
        array.flat[index] = value
    return array


def wild_arrays(shape):
    """Arrays of the right shape most of the time, of another shape sometimes."""
    wrong = hnp.array_shapes(min_dims=0, max_dims=3, max_side=3).flatmap(values)
    return weighted((8, values(shape)), (1, wrong))


def _increasing(case):
    start, gaps = case
    with np.errstate(over="ignore"):  # an overflowing sum is one more wild input
        return start + np.cumsum([0.0, *gaps])


def wild_times():
    """Increasing times from any start with gaps of any size (their sum may overflow), or an
    array of anything."""
    gaps = st.lists(st.one_of(st.floats(0.01, 1.0), st.floats(0.01, 1.0),
                              st.sampled_from([5e-324, 1e-300, 1e-12, 1e12, 1e300])),
                    min_size=1, max_size=3)
    start = weighted((1, st.just(0.0)), (2, ordinary_floats), (1, scaled_floats))
    increasing = st.tuples(start, gaps).map(_increasing)
    return weighted((8, increasing), (1, wild_arrays((3,))))


@st.composite
def inputs(draw):
    """A problem, its inputs (often wild) and, for targets, the data."""
    dynamics, loss, targets = draw(st.sampled_from(PROBLEMS))
    n, p = dynamics.n, dynamics.p
    z0 = draw(weighted((1, wild_arrays((2, n))), (1, wild_arrays((n,)))))
    theta = draw(wild_arrays((p,)))
    times = draw(wild_times())
    data = None
    if targets:
        N = max(len(np.atleast_1d(times)) - 1, 1)
        data = draw(st.one_of(wild_arrays((N, 1)), st.none()))
    note(f"dynamics={dynamics!r}, loss={loss}, z0={z0!r}, theta={theta!r}, times={times!r}, "
         f"data={data!r}")
    return dynamics, loss, targets, z0, theta, times, data


def _solver_options(draw):
    solver = draw(st.sampled_from(["euler", "rk4", "dopri5"]))
    if solver == "dopri5":
        return {"solver": solver, "rtol": draw(st.sampled_from([1e-6, 1e-9])),
                "atol": draw(st.sampled_from([1e-8, 1e-11])), "max_steps": 2000}
    return {"solver": solver, "steps": draw(st.sampled_from([1, 4, 20])), "max_steps": 2000}


def _outcome(exc: Exception) -> None:
    """Record which error ended an example (``--hypothesis-show-statistics``)."""
    note(f"{type(exc).__name__}: {exc}")
    event(f"{type(exc).__name__}: {' '.join(str(exc).split()[:6])}")


def _assert_finite_gradient(g):
    assert math.isfinite(g.loss)
    for block in ("z0", "theta", "times"):
        assert np.all(np.isfinite(getattr(g, block))), block


def _assert_honest_report(report):
    for row in report.rows:
        if row.passed:
            assert math.isfinite(row.error) and row.error <= row.tolerance, row


@fuzz(60)
@given(inputs(), st.data())
def test_solve(case, data):
    dynamics, _, _, z0, theta, times, _ = case
    options = _solver_options(data.draw)
    options.pop("max_steps")
    try:
        zs = solve(dynamics, z0, theta, times, **options)
    except LIBRARY_ERRORS as exc:
        _outcome(exc)
        return
    assert np.all(np.isfinite(zs))


@fuzz(120)
@given(inputs(), st.sampled_from(METHODS), st.data())
def test_gradient_every_method(case, method, data):
    dynamics, loss, targets, z0, theta, times, values = case
    options = {} if method in ("exact", "high_precision") else _solver_options(data.draw)
    try:
        with small_budgets():
            g = gradient(dynamics, z0, theta, times, loss=loss, method=method, targets=targets,
                         data=values, **options)
    except LIBRARY_ERRORS as exc:
        _outcome(exc)
        return
    event("returned a gradient")
    _assert_finite_gradient(g)


@fuzz(12)
@given(inputs(), st.sampled_from(["dopri5", "rk4"]))
@example(case=(*PROBLEMS[4], np.zeros((2, 1)), np.zeros(1), np.array([0.0, 5e-324]), None),
         solver="dopri5")  # log(0) in mpmath: ZeroDivisionError from the high-precision loss
def test_audit(case, solver):
    dynamics, loss, targets, z0, theta, times, values = case
    try:
        with small_budgets():
            report = audit(dynamics, z0, theta, times, loss=loss, targets=targets, data=values,
                           solver=solver)
    except LIBRARY_ERRORS as exc:
        _outcome(exc)
        return
    _assert_honest_report(report)


@fuzz(15)
@given(inputs(), st.data())
def test_audit_gradient_of_a_wild_implementation(case, data):
    dynamics, loss, targets, z0, theta, times, values = case
    shapes = (np.shape(z0), np.shape(theta), np.shape(times))
    returned = data.draw(st.tuples(*(wild_arrays(s) for s in shapes)))
    rtol = data.draw(st.one_of(st.just(1e-6), wild_floats))

    def grad_fn(z0, theta, times):
        return returned

    try:
        with small_budgets():
            report = audit_gradient(dynamics, grad_fn, z0, theta, times, loss=loss, rtol=rtol,
                                    targets=targets, data=values)
    except LIBRARY_ERRORS as exc:
        _outcome(exc)
        return
    _assert_honest_report(report)


@fuzz(10)
@given(inputs(), st.sampled_from(["discrete_adjoint", "interpolated_adjoint"]))
def test_convergence_study(case, method):
    dynamics, loss, targets, z0, theta, times, values = case
    try:
        with small_budgets():
            study = convergence_study(dynamics, z0, theta, times, loss=loss, method=method,
                                      solver="rk4", steps=(2, 4), targets=targets, data=values)
    except LIBRARY_ERRORS as exc:
        _outcome(exc)
        return
    assert isinstance(study.passed, bool)


def _leaves():
    numbers = st.one_of(
        st.integers(-10**6, 10**6).map(sp.Integer),
        wild_floats.map(sp.Float),
        st.sampled_from([sp.pi, sp.E, sp.Rational(1, 3), sp.S.Half]),
    )
    return st.one_of(st.sampled_from([X, V, K, T]), numbers)


def _in_range(expr) -> bool:
    return all(abs(n) <= 1e308 for n in expr.atoms(sp.Float, sp.Rational) if n.is_finite)


def _expressions():
    unary = [sp.exp, sp.log, sp.sqrt, sp.tanh, sp.sin, sp.Abs, sp.sign, sp.Heaviside,
             sp.floor, sp.frac, sp.re, sp.atan, lambda a: 1 / a]
    # powers with small exponents only: Float**Float with exponents near 1e308 makes SymPy
    # itself compute pi or log to millions of digits while the user builds the expression
    binary = [sp.Add, sp.Mul, lambda a, b: a / b, lambda a, b: a**2 * b**-1, sp.Max, sp.Mod,
              lambda a, b: sp.Piecewise((a, a > b), (b, True))]

    def apply(call):
        """SymPy's value of ``f(*args)``; where SymPy itself refuses to build it (``Max`` of
        nan), no user could pass it on: the first argument stands in. So it does where an
        argument holds a number beyond float64 (``exp(2e18)``): SymPy's own arithmetic on
        it (``Mod``, ``floor``) can take minutes, and the library refuses such numbers."""
        f, *args = call
        if any(not _in_range(a) for a in args):
            return args[0]
        try:
            return f(*args)
        except (ValueError, TypeError, ZeroDivisionError):
            return args[0]

    return st.recursive(
        _leaves(),
        lambda inner: st.one_of(
            st.tuples(st.sampled_from(unary), inner).map(apply),
            st.tuples(st.sampled_from(binary), inner, inner).map(apply),
        ),
        max_leaves=6,
    )


@fuzz(60)
@given(st.lists(_expressions(), min_size=1, max_size=2), _expressions())
@example(rhs=[sp.AccumBounds(-sp.sin(1), sp.sin(1))], loss=X)  # sin(oo): an interval
@example(rhs=[X], loss=sp.exp(sp.Float(2.30258509299405e18)))  # beyond float64: str() fails
@example(rhs=[X], loss=sp.exp(sp.Float(-4.60517018598809e18)))  # below float64: likewise
@example(rhs=[sp.Max(1284, T, X + 92284)], loss=X)  # conditions on an array and a scalar
@example(rhs=[X], loss=sp.exp(sp.exp(1000000)))  # complex() of it took minutes in compile
def test_dynamics_derive_adjoint_and_compile(rhs, loss):
    state = [X, V][: len(rhs)]
    try:
        dynamics = Dynamics(rhs=rhs, state=state, params=[K], time=T)
        printed = str(derive_adjoint(dynamics, loss))
        compiled = compile_problem(dynamics, loss)
    except LIBRARY_ERRORS as exc:
        _outcome(exc)
        return
    # the derivation prints an adjoint equation and a parameter integrand per unknown
    for name in state:
        assert f"da_{name}/dt" in printed, printed
    assert "dL/dk integrand" in printed, printed
    n = len(state)
    z = np.full((1, n), 0.5)
    with np.errstate(all="ignore"):  # the values may be anything; the calls must work
        f = compiled.rhs(z, np.array([0.3]), 0.7)
        zbar = compiled.vjp_state(z, np.array([0.3]), 0.7, z)
        switches = compiled.switching.rhs_values(z, np.array([0.3]), 0.7)
    # batch as rows, whatever the expressions: one row per sample, one column per entry
    assert np.shape(f) == (1, n) and np.shape(zbar) == (1, n)
    assert np.shape(switches) == (1, len(compiled.switching.rhs_switches))


@fuzz(15)
@given(inputs())
@example(case=(*PROBLEMS[0], np.zeros((2, 1)), np.zeros(1), np.array([0.0, 1e300]), None))
@example(case=(*PROBLEMS[2], np.array([[1.7976931348623157e308], [0.0]]), np.zeros(2),
               np.array([0.0, 1.0]), None))  # the loss rounded to 10 digits read back as inf
def test_reference_file_write_and_load(tmp_path_factory, case):
    dynamics, loss, targets, z0, theta, times, values = case
    problem = Problem(dynamics=dynamics, loss=loss, z0=np.asarray(z0), theta=np.asarray(theta),
                      times=np.asarray(times), targets=targets, data=values)
    path = tmp_path_factory.mktemp("fuzz") / "ref.json"
    try:
        with small_budgets():
            document = reference_document(problem, digits=16)
    except LIBRARY_ERRORS as exc:
        _outcome(exc)
        return
    path.write_text(json.dumps(document))
    loaded = load_reference(path)
    assert loaded.problem.dynamics == dynamics


def _mutations():
    """A path into a reference document and a wild JSON value to put there."""
    json_values = st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), wild_floats.map(str),
                  st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8)),
        lambda inner: st.one_of(st.lists(inner, max_size=3),
                                st.dictionaries(st.text(max_size=5), inner, max_size=3)),
        max_leaves=6,
    )
    keys = st.sampled_from(["z0", "theta", "times", "data", "loss", "targets", "gradient",
                            "reference", "format_version", "dynamics"])
    sub = st.sampled_from([None, "rhs", "state", "params", "time", "symbols", "form", "z0",
                           "theta", "times", "loss", "method", "error_estimate", 0])
    return st.tuples(keys, sub, json_values)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from verification import builtin_problem

    return reference_document(builtin_problem("linear"), digits=16)


@fuzz(60)
@given(mutation=_mutations())
@example(mutation=("gradient", 0, None))
def test_load_of_a_mutated_file_with_a_valid_checksum(tmp_path_factory, reference, mutation):
    key, sub, value = mutation
    document = json.loads(json.dumps(reference))
    target = document
    if sub is not None and isinstance(document.get(key), (dict, list)):
        target = document[key]
        if isinstance(target, dict):  # JSON keys are strings
            key = str(sub)
        else:
            key = 0 if target else None
    if key is not None:
        target[key] = value
    document["sha256"] = _checksum(document)
    path = tmp_path_factory.mktemp("mutated") / "ref.json"
    path.write_text(json.dumps(document))
    try:
        load_reference(path)
    except LIBRARY_ERRORS as exc:
        assert "\n" not in str(exc)


@fuzz(30)
@given(st.lists(st.one_of(
    st.sampled_from(["list", "audit", "reference", "check", "convergence", "--problem",
                     "linear", "contracting", "--steps", "--rtol", "--atol", "--solver",
                     "euler", "--json", "--format", "markdown", "--digits", "--method",
                     "--impl", "--out", "/nonexistent/x.json", "-h"]),
    wild_floats.map(str), st.integers(-5, 5).map(str), st.text(max_size=6)),
    max_size=6))
def test_cli_main(capsys, argv):
    try:
        with small_budgets():
            code = main(argv)
    except SystemExit as exc:  # --help prints and exits 0, like every argparse program
        code = exc.code
    assert code in (0, 1, 2)
    if code == 2:
        assert len(capsys.readouterr().err.strip().splitlines()) <= 1
