"""torchdiffeq from the SymPy dynamics: the module computes f, backpropagation through its
fixed-grid solvers is our discrete adjoint with the same tableau to rounding, its adaptive
adjoint passes on smooth problems and fails with the reconstruction diagnosis where the
forward flow contracts."""

from __future__ import annotations

import numpy as np
import problems
import pytest
from helpers import ROUNDING, import_extra, relative_error

import numeric
from verification import audit_gradient, builtin_problem
from verification._peers import peer_tolerance
from verification.adapters import torch_module, torchdiffeq_gradient

torch = import_extra("torch")
import_extra("torchdiffeq")

BLOCKS = ("z0", "theta", "times")


def _ours(problem, method, **options):
    return numeric.gradient(problem.dynamics, problem.z0, problem.theta, problem.times,
                            loss=problem.loss, method=method, **options)


def _blockwise(blocks, g) -> dict[str, float]:
    return {b: relative_error(v, getattr(g, b)) for b, v in zip(BLOCKS, blocks, strict=True)}


# -- the module ----------------------------------------------------------------------------


def test_module_parameters_are_theta_in_order_and_float64():
    problem = builtin_problem("tanh")
    module = torch_module(problem.dynamics, problem.theta)
    flat = torch.cat([q.reshape(-1) for q in module.parameters()])
    assert flat.dtype == torch.float64
    assert np.array_equal(flat.detach().numpy(), problem.theta)
    assert np.array_equal(module.theta().detach().numpy(), problem.theta)
    assert [name for name, _ in module.named_parameters()] == [
        str(s) for s in problem.dynamics.params]


def test_module_computes_f_with_its_time_argument():
    problem = problems.time_dependent_nonlinear()
    module = torch_module(problem.dynamics, problem.theta)
    compiled = numeric._checks.check_compiled(problem.dynamics, problem.loss)
    for t in (0.2, 1.3):
        got = module(torch.tensor(t, dtype=torch.float64), torch.tensor(problem.z0))
        expected = compiled.rhs(problem.z0, problem.theta, t)
        assert relative_error(got.detach().numpy(), expected) <= ROUNDING


def test_matrix_form_module_has_one_parameter_per_matrix_and_computes_f():
    problem = problems.matrix_network()
    module = torch_module(problem.dynamics, problem.theta)
    shapes = [(name, tuple(q.shape)) for name, q in module.named_parameters()]
    assert shapes == [("W1", (6, 3)), ("b1", (6, 1)), ("W2", (3, 6)), ("b2", (3, 1)),
                      ("c", ())]
    assert np.array_equal(module.theta().detach().numpy(), problem.theta)
    compiled = numeric._checks.check_compiled(problem.dynamics, problem.loss)
    for t in (0.2, 1.3):
        got = module(torch.tensor(t, dtype=torch.float64), torch.tensor(problem.z0))
        expected = compiled.rhs(problem.z0, problem.theta, t)
        assert relative_error(got.detach().numpy(), expected) <= ROUNDING


def test_matrix_form_backprop_equals_our_discrete_adjoint():
    problem = problems.matrix_network()
    grad_fn = torchdiffeq_gradient(problem.dynamics, problem.loss, method="rk4", steps=3)
    errors = _blockwise(grad_fn(problem.z0, problem.theta, problem.times),
                        _ours(problem, "discrete_adjoint", solver="rk4_38", steps=3))
    assert max(errors.values()) <= ROUNDING, errors


def test_module_in_float32():
    problem = builtin_problem("lotka_volterra")
    module = torch_module(problem.dynamics, problem.theta, dtype=torch.float32)
    out = module(torch.tensor(0.0), torch.tensor(problem.z0, dtype=torch.float32))
    assert out.dtype == torch.float32 and out.shape == problem.z0.shape


# -- fixed grids: backpropagation is the discrete adjoint of the same tableau -------------


@pytest.mark.parametrize(("method", "ours"), [
    pytest.param("euler", "euler", id="euler"),
    pytest.param("midpoint", "midpoint", id="midpoint"),
    pytest.param("rk4", "rk4_38", id="rk4-is-3/8-rule"),
    pytest.param("heun2", "heun", id="heun2"),
    pytest.param("heun3", "heun3", id="heun3"),
])
def test_fixed_grid_backprop_equals_our_discrete_adjoint(method, ours):
    """Nonlinear, time-dependent f, t_0 != 0, uneven intervals, a batch of 3: every block
    to rounding, against our discrete adjoint and against complex step."""
    problem = problems.time_dependent_nonlinear()
    grad_fn = torchdiffeq_gradient(problem.dynamics, problem.loss, method=method, steps=3)
    assert grad_fn.matching_solver == ours
    blocks = grad_fn(problem.z0, problem.theta, problem.times)
    for reference in ("discrete_adjoint", "complex_step"):
        errors = _blockwise(blocks, _ours(problem, reference, solver=ours, steps=3))
        assert max(errors.values()) <= ROUNDING, f"{method} vs {reference}: {errors}"


def test_adams_bashforth_coefficients_are_exact_and_torchdiffeqs():
    from torchdiffeq._impl.fixed_adams import _BASHFORTH_DIVISOR

    from numeric._multistep import MAX_HISTORY, bashforth_coefficients

    assert bashforth_coefficients(2) == (1.5, -0.5)
    assert np.allclose(np.array(bashforth_coefficients(4)) * 24, [55, -59, 37, -9],
                       rtol=0, atol=1e-13)
    for order in range(1, MAX_HISTORY + 1):
        assert bashforth_coefficients(order) == tuple(_BASHFORTH_DIVISOR[order].tolist())


@pytest.mark.parametrize("make", [problems.time_dependent_nonlinear, problems.matrix_network],
                         ids=["nonlinear", "matrix-form"])
@pytest.mark.parametrize("steps", [1, 3])
def test_explicit_adams_backprop_is_the_derivative_of_our_adams_bashforth_map(make, steps):
    """The Runge–Kutta start (steps 1, 2) and the Adams–Bashforth steps that follow, time
    gradients included: torchdiffeq's backpropagation equals our map's complex-step
    derivative to rounding, and not classical RK4's derivative."""
    problem = make()
    grad_fn = torchdiffeq_gradient(problem.dynamics, problem.loss, method="explicit_adams",
                                   steps=steps)
    assert grad_fn.matching_solver == "adams_bashforth"
    options = {"loss": problem.loss, "reference": "discrete", "steps": steps}
    report = audit_gradient(problem.dynamics, grad_fn, problem.z0, problem.theta,
                            problem.times, rtol=1e-11, solver="adams_bashforth", **options)
    assert report.passed, str(report)
    other = audit_gradient(problem.dynamics, grad_fn, problem.z0, problem.theta,
                           problem.times, rtol=1e-11, solver="rk4_38", **options)
    assert not other.passed


def test_default_grid_is_one_step_per_interval():
    problem = problems.time_dependent_nonlinear()
    grad_fn = torchdiffeq_gradient(problem.dynamics, problem.loss, method="rk4")
    errors = _blockwise(grad_fn(problem.z0, problem.theta, problem.times),
                        _ours(problem, "discrete_adjoint", solver="rk4_38", steps=1))
    assert grad_fn.steps == 1 and max(errors.values()) <= ROUNDING, errors


def test_torchdiffeq_rk4_is_not_classical_rk4():
    """On nonlinear f the 3/8 rule and classical RK4 differ far above rounding."""
    problem = problems.time_dependent_nonlinear()
    grad_fn = torchdiffeq_gradient(problem.dynamics, problem.loss, method="rk4", steps=3)
    errors = _blockwise(grad_fn(problem.z0, problem.theta, problem.times),
                        _ours(problem, "discrete_adjoint", solver="rk4", steps=3))
    assert min(errors.values()) > 1e3 * ROUNDING, errors


def test_float32_backprop_is_the_discrete_adjoint_to_float32_rounding():
    problem = problems.time_dependent_nonlinear()
    grad_fn = torchdiffeq_gradient(problem.dynamics, problem.loss, method="rk4", steps=3,
                                   dtype="float32")
    tolerance, reference = peer_tolerance(grad_fn)
    assert reference == "discrete" and tolerance == pytest.approx(5.4e-4, rel=0.01)
    errors = _blockwise(grad_fn(problem.z0, problem.theta, problem.times),
                        _ours(problem, "discrete_adjoint", solver="rk4_38", steps=3))
    assert 10 * ROUNDING < max(errors.values()) <= tolerance, errors


def test_step_size_grid_gives_zero_observation_time_gradients():
    """torchdiffeq's own step_size grid reads interior observations off grid points: the
    states and parameters are still the discrete adjoint's, dL/dt_i (0 < i < N) is 0."""
    problem = builtin_problem("lotka_volterra")  # observation times 1 apart
    grad_fn = torchdiffeq_gradient(problem.dynamics, problem.loss, method="rk4",
                                   step_size=0.25)
    report = audit_gradient(problem.dynamics, grad_fn, problem.z0, problem.theta,
                            problem.times, loss=problem.loss, rtol=1e-11,
                            reference="discrete", solver="rk4_38", steps=4)
    verdicts = {row.block: row for row in report.rows}
    assert verdicts["z0"].passed and verdicts["theta"].passed
    assert not verdicts["times"].passed
    assert "entries times[1], times[2] are zero where the reference is not" in (
        verdicts["times"].diagnosis)


# -- adaptive: the continuous reference at the library's tolerance --------------------------


@pytest.mark.parametrize("adjoint", [False, True], ids=["odeint", "odeint_adjoint"])
@pytest.mark.parametrize("name", ["linear", "lotka_volterra"])
def test_adaptive_gradients_pass_on_smooth_problems(name, adjoint):
    problem = builtin_problem(name)
    grad_fn = torchdiffeq_gradient(problem.dynamics, problem.loss, adjoint=adjoint)
    tolerance, reference = peer_tolerance(grad_fn)
    assert reference is None and tolerance == pytest.approx(1e-4)  # 1e3 * rtol = 1e-7
    report = audit_gradient(problem.dynamics, grad_fn, problem.z0, problem.theta,
                            problem.times, loss=problem.loss, rtol=tolerance)
    assert report.passed, report.format()


def test_odeint_adjoint_fails_on_contracting_with_the_reconstruction_diagnosis():
    problem = builtin_problem("contracting")
    grad_fn = torchdiffeq_gradient(problem.dynamics, problem.loss, adjoint=True)
    report = audit_gradient(problem.dynamics, grad_fn, problem.z0, problem.theta,
                            problem.times, loss=problem.loss, rtol=peer_tolerance(grad_fn)[0])
    theta = next(row for row in report.rows if row.block == "theta")
    assert not theta.passed and theta.error > 1e3
    assert "backward reconstruction of z drifted" in theta.diagnosis
    assert "backpropagate through odeint instead of odeint_adjoint" in theta.diagnosis
    # backpropagation through the same adaptive solve is fine
    backprop = torchdiffeq_gradient(problem.dynamics, problem.loss, adjoint=False)
    assert audit_gradient(problem.dynamics, backprop, problem.z0, problem.theta,
                          problem.times, loss=problem.loss,
                          rtol=peer_tolerance(backprop)[0]).passed


# -- inputs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "match"), [
    pytest.param({"method": "rk45"}, r"`method` must be one of torchdiffeq's", id="method"),
    pytest.param({"method": "rk4", "rtol": 1e-6}, r"do not apply to torchdiffeq's fixed-grid",
                 id="rtol-fixed"),
    pytest.param({"method": "dopri5", "steps": 4}, r"apply to fixed-grid methods",
                 id="steps-adaptive"),
    pytest.param({"method": "rk4", "steps": 4, "step_size": 0.1}, r"not both", id="both"),
    pytest.param({"method": "rk4", "steps": 0}, r"`steps` must be a positive integer",
                 id="steps-zero"),
    pytest.param({"dtype": "float16"}, r"`dtype` must be torch.float64", id="dtype"),
])
def test_bad_options_are_input_errors(options, match):
    problem = builtin_problem("linear")
    with pytest.raises(numeric.InputError, match=match):
        torchdiffeq_gradient(problem.dynamics, problem.loss, **options)


def test_single_sample_keeps_its_shape():
    problem = builtin_problem("linear")
    grad_fn = torchdiffeq_gradient(problem.dynamics, problem.loss, method="euler", steps=2)
    dz0, dtheta, dtimes = grad_fn(problem.z0[0], problem.theta, problem.times)
    assert dz0.shape == (2,) and dtheta.shape == (4,) and dtimes.shape == (3,)
