"""Strategies: bad arguments fail at once; every drawn problem is well posed and audits
clean."""

import numpy as np
import pytest
from helpers import ROUNDING
from hypothesis import given, note, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from numeric import gradient, solve
from verification import audit_problem
from verification import strategies as vst
from verification.strategies import mlp_dynamics, problems


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


@settings(max_examples=6, deadline=None)
@given(data=st.data())
def test_matrix_form_mlps_up_to_width_256_are_well_posed_networks(data):
    """mlp_dynamics(form='matrix') draws networks as wide as 256: matrix form, compiled in
    moments, with a finite gradient of the right shapes."""
    dyn = data.draw(mlp_dynamics(form="matrix", min_n=2, max_n=8, min_hidden=64,
                                 max_hidden=256, time_dependent=None))
    assert dyn.form == "matrix" and 64 <= dyn.param_shapes["A"][1] <= 256
    rng = np.random.default_rng(0)
    z0 = rng.uniform(-1, 1, (16, dyn.n))
    theta = 0.1 * rng.standard_normal(dyn.p)
    z = dyn.state
    g = gradient(dyn, z0, theta, [0.0, 0.5], loss=sum(zi**2 for zi in z) / 2,
                 method="discrete_adjoint", solver="rk4", steps=10)
    assert g.theta.shape == (dyn.p,) and np.all(np.isfinite(g.theta))


@settings(max_examples=8, deadline=None)
@given(problem=problems(families=["mlp"], form="matrix", max_hidden=4, max_params=40))
def test_matrix_form_problems_equal_their_elementwise_twins(problem):
    """Drawn matrix-form problems give the elementwise form's gradient (same theta order)."""
    dyn = problem.dynamics
    assert dyn.form == "matrix"
    options = {"method": "discrete_adjoint", "solver": "rk4", "steps": 6}
    got = gradient(dyn, problem.z0, problem.theta, problem.times, loss=problem.loss,
                   **options)
    twin = gradient(dyn.as_elementwise(), problem.z0, problem.theta, problem.times,
                    loss=dyn.explicit(problem.loss), **options)
    for block in ("z0", "theta", "times"):
        assert np.allclose(getattr(got, block), getattr(twin, block), rtol=ROUNDING,
                           atol=ROUNDING * np.abs(getattr(twin, block)).max())


@pytest.mark.parametrize(
    ("build", "match"),
    [
        pytest.param(lambda: mlp_dynamics(form="tensor"), "form='tensor'", id="form"),
        pytest.param(lambda: mlp_dynamics(max_hidden=64), "use form='matrix'",
                     id="wide-elementwise"),
        pytest.param(lambda: mlp_dynamics(form="matrix", max_hidden=300), "exceeds 256",
                     id="too-wide"),
        pytest.param(lambda: problems(form="matrix", max_hidden=257), "exceeds 256",
                     id="problems-too-wide"),
    ],
)
def test_bad_matrix_form_bounds_are_invalid(build, match):
    with pytest.raises(InvalidArgument, match=match):
        build()
