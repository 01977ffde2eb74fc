"""Properties every gradient must have, checked on generated problems."""

import numpy as np
import sympy as sp
from helpers import ROUNDING, assert_gradients_close, relative_error, solver_tolerance
from hypothesis import given, note, settings

from numeric import gradient, solve
from symbolic import Dynamics, compile_problem
from verification import strategies as vst

TIGHT = {"rtol": 1e-10, "atol": 1e-12}


def _grad(problem, method, **options):
    return gradient(problem.dynamics, problem.z0, problem.theta, problem.times,
                    loss=problem.loss, method=method, **options)


@settings(max_examples=10)
@given(vst.problems(max_batch=3))
def test_batched_equals_per_sample(problem):
    note(repr(problem))
    whole = _grad(problem, "discrete_adjoint", solver="rk4", steps=8)
    parts = [gradient(problem.dynamics, z, problem.theta, problem.times, loss=problem.loss,
                      method="discrete_adjoint", solver="rk4", steps=8)
             for z in problem.z0]
    assert relative_error(whole.z0, np.stack([p.z0 for p in parts])) <= ROUNDING
    scale = max(np.linalg.norm(whole.theta), np.linalg.norm(whole.z0))
    assert np.linalg.norm(whole.theta - sum(p.theta for p in parts)) <= ROUNDING * scale
    assert np.linalg.norm(whole.times - sum(p.times for p in parts)) <= ROUNDING * max(
        scale, np.linalg.norm(whole.times))


@settings(max_examples=10)
@given(vst.problems(time_dependent=False))
def test_autonomous_time_gradients_sum_to_zero(problem):
    # shifting every time by c changes nothing when f does not depend on t
    note(repr(problem))
    g = _grad(problem, "discrete_adjoint", solver="rk4", steps=6)
    scale = np.linalg.norm(g.times) + np.linalg.norm(g.z0) + np.linalg.norm(g.theta)
    assert abs(g.times.sum()) <= ROUNDING * max(scale, 1e-300) * len(g.times)


@settings(max_examples=10)
@given(vst.problems())
def test_start_time_gradient_is_minus_adjoint_dot_f(problem):
    # dL/dt_0 = -a(t_0)^T f(z_0, t_0), checked on the complex-step derivative of the
    # discrete map, which does not use the formula
    note(repr(problem))
    g = _grad(problem, "complex_step", **TIGHT)
    f0 = compile_problem(problem.dynamics, problem.loss).rhs(problem.z0, problem.theta,
                                                             problem.times[0])
    expected = -np.sum(g.z0 * f0)
    scale = max(np.linalg.norm(g.z0) * np.linalg.norm(f0), abs(expected), 1e-300)
    assert abs(g.times[0] - expected) <= solver_tolerance(**TIGHT) * scale


@settings(max_examples=10)
@given(vst.problems(max_n=2, max_observations=1))
def test_time_reversal_inverts_the_sensitivity(problem):
    """Integrating g(z, s) = -f(z, -s) from z(t_N) at s = -t_N to s = -t_0 returns z0, so
    the reversed problem's Jacobian is the inverse of the forward one: J_rev(z(t_N)) J(z0)
    = I, each Jacobian taken row by row as the gradient of the loss z_k."""
    dyn = problem.dynamics
    note(repr(problem))
    t = dyn.time or sp.Symbol("t")
    reversed_rhs = [-e.subs(t, -t) for e in dyn.rhs] if dyn.time else [-e for e in dyn.rhs]
    reversed_dyn = Dynamics(rhs=reversed_rhs, state=dyn.state, params=dyn.params,
                            time=dyn.time)
    span = np.array([problem.times[0], problem.times[-1]])
    end = solve(dyn, problem.z0, problem.theta, span, **TIGHT)[-1]

    def jacobian(d, z0, times):
        rows = [gradient(d, z0, problem.theta, times, loss=zk, method="forward_sensitivity",
                         **TIGHT).z0 for zk in dyn.state]
        return np.stack(rows, axis=1)  # (B, n, n): row k is d z_k(end) / d z0

    forward = jacobian(dyn, problem.z0, span)
    backward = jacobian(reversed_dyn, end, -span[::-1])
    product = np.einsum("bij,bjk->bik", backward, forward)
    identity = np.broadcast_to(np.eye(dyn.n), product.shape)
    conditioning = np.linalg.norm(forward) * np.linalg.norm(backward)
    assert np.max(np.abs(product - identity)) <= solver_tolerance(**TIGHT) * conditioning


@settings(max_examples=10)
@given(vst.problems(max_observations=2))
def test_discrete_adjoint_equals_complex_step(problem):
    note(repr(problem))
    da = _grad(problem, "discrete_adjoint", solver="rk4", steps=5)
    cs = _grad(problem, "complex_step", solver="rk4", steps=5)
    assert_gradients_close(da, cs, ROUNDING)
