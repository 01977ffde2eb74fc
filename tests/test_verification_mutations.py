"""The mutation suite: audit_gradient fails every buggy implementation with the expected
diagnosis, and passes every correct one (including noise at the level its tolerance allows)."""

import dataclasses

import numpy as np
import pytest
from mutants import BUGS, linear_gradient

from numeric import gradient
from verification import DEFAULT_GRADIENT_RTOL, audit_gradient, builtin_problem


@pytest.fixture(scope="module")
def seed():
    # four observation times so that missing jumps and off-by-one errors matter
    problem = builtin_problem("linear")
    return dataclasses.replace(problem, times=np.array([0.0, 0.4, 0.9, 1.5]))


@pytest.fixture(scope="module")
def contracting():
    problem = builtin_problem("contracting")
    return dataclasses.replace(problem, times=np.array([0.0, 0.25, 0.5, 0.75, 1.0]))


#: bug -> (the problem it is run on, a phrase the diagnosis must contain, or None when the
#: bug has no specific signature and any failure will do)
EXPECTED = {
    "adjoint_sign": ("seed", "the adjoint equation has the wrong sign"),
    "transposed": ("seed", "transposed"),
    "mean": ("seed", "1/B with batch size B = 2"),
    "no_jumps": ("seed", "jumps are missing"),
    "jump_sign": ("seed", "the observation-time jumps have the wrong sign"),
    "t0_sign": ("seed", "t_0 entry has the wrong sign"),
    "zero_times": ("seed", "dL/dt_1 .. dL/dt_N are all zero where the reference is not"),
    "time_off_by_one": ("seed", None),
    "missing_entry": ("seed", "entries theta[2] (w2) are zero where the reference is not"),
    "sign": ("seed", "opposite sign"),
    "rows_swapped": ("seed", "the samples are permuted"),
    "backsolve": ("contracting", "error grows with the time span"),
    "coarse": ("seed", None),
}


def test_every_bug_has_an_expectation():
    assert set(EXPECTED) == set(BUGS)
    assert len(BUGS) >= 10


@pytest.mark.parametrize("bug", BUGS)
def test_mutant_fails_with_its_diagnosis(bug, seed, contracting):
    problem = {"seed": seed, "contracting": contracting}[EXPECTED[bug][0]]

    def mutant(z0, theta, times):
        return linear_gradient(z0, theta, times, bugs=[bug])

    report = audit_gradient(problem.dynamics, mutant, problem.z0, problem.theta,
                            problem.times, loss=problem.loss, name=bug)
    assert not report.passed, f"mutant {bug!r} survived:\n{report}"
    phrase = EXPECTED[bug][1]
    if phrase is not None:
        diagnoses = " | ".join(row.diagnosis for row in report.failures)
        assert phrase in diagnoses, f"{bug}: {diagnoses}"


def _noisy(fn, level, seed_value=0):
    rng = np.random.default_rng(seed_value)

    def noisy(z0, theta, times):
        blocks = fn(z0, theta, times)
        return tuple(x * (1 + level * rng.standard_normal(np.shape(x))) for x in blocks)

    return noisy


def _library(problem, method, **options):
    def fn(z0, theta, times):
        g = gradient(problem.dynamics, z0, theta, times, loss=problem.loss, method=method,
                     **options)
        return g.z0, g.theta, g.times

    return fn


@pytest.mark.parametrize(
    ("name", "build", "rtol"),
    [
        pytest.param("hand-written", lambda p: linear_gradient, DEFAULT_GRADIENT_RTOL,
                     id="hand-written"),
        pytest.param("noise-1e-8", lambda p: _noisy(linear_gradient, 1e-8),
                     DEFAULT_GRADIENT_RTOL, id="noise-at-1e-8"),
        pytest.param("float32", lambda p: lambda *a: tuple(
            np.asarray(x, np.float32) for x in linear_gradient(*a)), 1e-4, id="float32"),
        pytest.param("noise-1e-5", lambda p: _noisy(linear_gradient, 1e-5, 1), 1e-4,
                     id="noise-at-1e-5-loose-rtol"),
        pytest.param("interpolated", lambda p: _library(p, "interpolated_adjoint", rtol=1e-9,
                                                        atol=1e-11), DEFAULT_GRADIENT_RTOL,
                     id="library-interpolated-adjoint"),
        pytest.param("rk4-discrete", lambda p: _library(p, "discrete_adjoint", solver="rk4",
                                                        steps=50), DEFAULT_GRADIENT_RTOL,
                     id="library-rk4-discrete-adjoint"),
        pytest.param("two-blocks", lambda p: lambda *a: linear_gradient(*a)[:2],
                     DEFAULT_GRADIENT_RTOL, id="times-omitted"),
    ],
)
def test_correct_implementations_pass(name, build, rtol, seed):
    report = audit_gradient(seed.dynamics, build(seed), seed.z0, seed.theta, seed.times,
                            loss=seed.loss, rtol=rtol, name=name)
    assert report.passed, str(report)


def test_noise_above_tolerance_fails(seed):
    report = audit_gradient(seed.dynamics, _noisy(linear_gradient, 1e-4, 2), seed.z0,
                            seed.theta, seed.times, loss=seed.loss)
    assert not report.passed


def test_single_sample_shapes_round_trip(seed):
    report = audit_gradient(seed.dynamics, linear_gradient, seed.z0[0], seed.theta,
                            seed.times, loss=seed.loss)
    assert report.passed
