"""diffrax from the SymPy dynamics: the vector field computes f, and backpropagation through
its fixed-step solvers is our discrete adjoint with the same tableau to rounding. (Its
adaptive adjoints are audited on a smooth problem by the ``peers`` command's test.)
JAX compiles every solve: the cases here are the few the claims need."""

from __future__ import annotations

import numpy as np
import problems
import pytest
from helpers import ROUNDING, import_extra, relative_error

import numeric
from verification import builtin_problem
from verification.adapters import diffrax_gradient, jax_function

jax = import_extra("jax")
import_extra("diffrax")

BLOCKS = ("z0", "theta", "times")


def test_vector_field_computes_f_with_its_time_argument():
    problem = problems.time_dependent_nonlinear()
    field = jax_function(problem.dynamics)
    compiled = numeric._checks.check_compiled(problem.dynamics, problem.loss)
    with jax.enable_x64(True):
        for t in (0.2, 1.3):
            got = np.asarray(field(t, jax.numpy.asarray(problem.z0),
                                   jax.numpy.asarray(problem.theta)))
            assert relative_error(got, compiled.rhs(problem.z0, problem.theta, t)) <= ROUNDING


def test_matrix_form_vector_field_and_backprop():
    """Matrix form: the field computes f from the flat theta, and backpropagation through
    Tsit5 is our discrete adjoint to rounding."""
    problem = problems.matrix_network()
    field = jax_function(problem.dynamics)
    compiled = numeric._checks.check_compiled(problem.dynamics, problem.loss)
    with jax.enable_x64(True):
        got = np.asarray(field(0.7, jax.numpy.asarray(problem.z0),
                               jax.numpy.asarray(problem.theta)))
    assert relative_error(got, compiled.rhs(problem.z0, problem.theta, 0.7)) <= ROUNDING
    grad_fn = diffrax_gradient(problem.dynamics, problem.loss, solver="Tsit5", steps=2)
    blocks = grad_fn(problem.z0, problem.theta, problem.times)
    g = numeric.gradient(problem.dynamics, problem.z0, problem.theta, problem.times,
                         loss=problem.loss, method="discrete_adjoint", solver="tsit5", steps=2)
    errors = {b: relative_error(v, getattr(g, b)) for b, v in zip(BLOCKS, blocks, strict=True)}
    assert max(errors.values()) <= ROUNDING, errors


@pytest.mark.parametrize(("solver", "ours"), [
    pytest.param("Euler", "euler", id="Euler"),
    pytest.param("Midpoint", "midpoint", id="Midpoint"),
    pytest.param("Heun", "heun", id="Heun"),
    pytest.param("Ralston", "ralston", id="Ralston-2/3"),
    pytest.param("Bosh3", "bosh3", id="Bosh3"),
    pytest.param("Tsit5", "tsit5", id="Tsit5"),
])
def test_fixed_step_backprop_equals_our_discrete_adjoint(solver, ours):
    """Nonlinear, time-dependent f, t_0 != 0, uneven intervals, a batch of 3: every block
    to rounding (RecursiveCheckpointAdjoint, float64)."""
    problem = problems.time_dependent_nonlinear()
    grad_fn = diffrax_gradient(problem.dynamics, problem.loss, solver=solver, steps=2)
    assert grad_fn.matching_solver == ours
    blocks = grad_fn(problem.z0, problem.theta, problem.times)
    g = numeric.gradient(problem.dynamics, problem.z0, problem.theta, problem.times,
                         loss=problem.loss, method="discrete_adjoint", solver=ours, steps=2)
    errors = {b: relative_error(v, getattr(g, b)) for b, v in zip(BLOCKS, blocks, strict=True)}
    assert max(errors.values()) <= ROUNDING, errors


def test_backsolve_gives_no_time_gradient():
    problem = builtin_problem("linear")
    grad_fn = diffrax_gradient(problem.dynamics, problem.loss, adjoint="backsolve")
    assert not grad_fn.provides_times and "BacksolveAdjoint" in grad_fn.no_times_reason
    out = grad_fn(problem.z0, problem.theta, problem.times)
    assert len(out) == 2 and out[0].shape == problem.z0.shape


@pytest.mark.parametrize(("options", "match"), [
    pytest.param({"solver": "RK45"}, r"`solver` must name one of diffrax's", id="solver"),
    pytest.param({"adjoint": "checkpoint"}, r"`adjoint` must be one of", id="adjoint"),
    pytest.param({"solver": "Euler"}, r"has no error estimate", id="euler-adaptive"),
    pytest.param({"steps": 4, "dt0": 0.1}, r"not both", id="both"),
    pytest.param({"steps": 4, "rtol": 1e-6}, r"apply to adaptive steps", id="rtol-fixed"),
    pytest.param({"dtype": "float16"}, r"`dtype` must be 'float64' or 'float32'", id="dtype"),
])
def test_bad_options_are_input_errors(options, match):
    problem = builtin_problem("linear")
    with pytest.raises(numeric.InputError, match=match):
        diffrax_gradient(problem.dynamics, problem.loss, **options)
