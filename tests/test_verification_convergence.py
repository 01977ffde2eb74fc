"""Convergence studies: observed orders of the discrete adjoint and adaptive solves."""

import json

import numpy as np
import pytest

from verification import builtin_problem, convergence_study
from verification._convergence import ORDER_TOLERANCE


@pytest.fixture(scope="module")
def seed():
    return builtin_problem("linear")


@pytest.mark.parametrize(
    ("solver", "steps", "order"),
    [
        pytest.param("euler", (16, 32, 64, 128), 1, id="euler"),
        pytest.param("midpoint", (4, 8, 16, 32), 2, id="midpoint"),
        pytest.param("rk4", (4, 8, 16, 32), 4, id="rk4"),
    ],
)
def test_discrete_adjoint_order_toward_exact(seed, solver, steps, order):
    study = convergence_study(seed.dynamics, seed.z0, seed.theta, seed.times, loss=seed.loss,
                              solver=solver, steps=steps)
    assert study.reference == "exact"
    assert abs(study.observed_order - order) <= ORDER_TOLERANCE, str(study)
    assert study.passed


def test_nonlinear_problem_uses_a_continuous_reference_and_converges():
    problem = builtin_problem("van_der_pol")
    study = convergence_study(problem.dynamics, problem.z0, problem.theta, problem.times,
                              loss=problem.loss, method="interpolated_adjoint", solver="rk4",
                              steps=(8, 16, 32, 64))
    assert study.reference in ("high_precision", "forward_sensitivity@1e-13")
    assert study.passed, str(study)


def test_adaptive_error_falls_with_rtol(seed):
    study = convergence_study(seed.dynamics, seed.z0, seed.theta, seed.times, loss=seed.loss,
                              method="interpolated_adjoint", solver="dopri5",
                              rtols=(1e-4, 1e-6, 1e-8))
    worst = study.max_errors()
    assert np.all(np.diff(worst) < 0)
    assert study.passed, str(study)


def test_rounding_floor_is_left_out_of_the_fit(seed):
    study = convergence_study(seed.dynamics, seed.z0, seed.theta, seed.times, loss=seed.loss,
                              solver="rk4", steps=(16, 32, 64, 2048))
    assert not study.used[-1]
    assert "(rounding floor)" in str(study)
    assert study.passed


def test_a_wrong_order_fails(seed):
    # euler's discrete adjoint judged as if it were a 4th-order method
    study = convergence_study(seed.dynamics, seed.z0, seed.theta, seed.times, loss=seed.loss,
                              solver="euler", steps=(16, 32, 64))
    forged = type(study)(**{**study.__dict__, "expected_order": 4.0})
    assert not forged.passed
    assert json.loads(json.dumps(study.to_dict()))["passed"] is True
