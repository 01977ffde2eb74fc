"""Strategies: bad arguments fail at once; every drawn problem is well posed and audits
clean."""

import numpy as np
import pytest
from hypothesis import given, note, settings
from hypothesis.errors import InvalidArgument

from numeric import solve
from verification import audit_problem
from verification import strategies as vst


@pytest.mark.parametrize(
    ("build", "message"),
    [
        pytest.param(lambda: vst.linear_dynamics(min_n=0), "min_n=0", id="min_n"),
        pytest.param(lambda: vst.linear_dynamics(min_n=3, max_n=2), "must not exceed",
                     id="n-range"),
        pytest.param(lambda: vst.linear_dynamics(time_dependent="yes"), "time_dependent",
                     id="time_dependent"),
        pytest.param(lambda: vst.mlp_dynamics(activations=("relu",)), "activations",
                     id="activation"),
        pytest.param(lambda: vst.mlp_dynamics(min_hidden=4, max_hidden=2), "must not exceed",
                     id="hidden-range"),
        pytest.param(lambda: vst.states(0), "n=0", id="states-n"),
        pytest.param(lambda: vst.states(2, max_abs=-1.0), "max_abs", id="states-max_abs"),
        pytest.param(lambda: vst.states(2, min_batch=3, max_batch=1), "must not exceed",
                     id="batch-range"),
        pytest.param(lambda: vst.parameters(-1), "p=-1", id="parameters-p"),
        pytest.param(lambda: vst.observation_times(min_observations=5, max_observations=6,
                                                   min_gap=1.0,
                                                   max_span=2.0),
                     "do not fit", id="times-do-not-fit"),
        pytest.param(lambda: vst.observation_times(max_span=0.0), "max_span", id="span"),
        pytest.param(lambda: vst.problems(families=("linear", "cubic")), "families",
                     id="family"),
        pytest.param(lambda: vst.problems(families=()), "families", id="no-family"),
        pytest.param(lambda: vst.problems(losses=("hinge",)), "losses", id="loss"),
        pytest.param(lambda: vst.problems(families=("mlp",), max_params=2),
                     "max_params=2", id="params-too-few"),
        pytest.param(lambda: vst.problems(max_rate=0.0), "max_rate", id="rate"),
        pytest.param(lambda: vst.problems(max_batch=0), "max_batch", id="batch"),
    ],
)
def test_bad_arguments_raise_at_once(build, message):
    with pytest.raises(InvalidArgument, match=message):
        build()


@settings(max_examples=10)
@given(vst.problems())
def test_drawn_problems_are_well_posed_and_audit_clean(problem):
    note(repr(problem))
    zs = solve(problem.dynamics, problem.z0, problem.theta, problem.times)
    assert np.all(np.isfinite(zs))
    assert np.max(np.abs(zs)) < 1e3
    report = audit_problem(problem)
    assert report.passed, str(report)


@settings(max_examples=20)
@given(vst.problems(max_n=2, max_params=6, max_batch=2, max_observations=2))
def test_bounds_are_respected(problem):
    assert problem.dynamics.n <= 2
    assert problem.dynamics.p <= 6
    assert problem.z0.shape[0] <= 2
    assert 2 <= len(problem.times) <= 3
    assert problem.times[-1] - problem.times[0] <= 2.0 + 1e-12
    assert np.all(np.diff(problem.times) > 0)


@settings(max_examples=20)
@given(vst.problems(families=("mlp",), time_dependent=True))
def test_families_and_time_dependence_are_respected(problem):
    assert problem.name.startswith("mlp[")
    assert not problem.dynamics.autonomous


def test_shrinking_leads_to_a_small_readable_problem():
    from hypothesis import find

    found = find(vst.problems(), lambda p: p.dynamics.p >= 2 and p.z0.shape[0] >= 2,
                 settings=settings(database=None, derandomize=True))
    # one state, zeros everywhere, one observation: the smallest problem that satisfies it
    assert found.dynamics.n == 1
    assert found.dynamics.p <= 6
    assert found.z0.shape == (2, 1)
    assert np.all(found.theta == 0) and np.all(found.z0 == 0)
    assert len(found.times) == 2
    assert "Problem(name=" in repr(found)
