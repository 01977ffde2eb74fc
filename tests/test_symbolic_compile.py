"""`symbolic.compile_problem`: the compiled NumPy callables equal the symbolic expressions
of `derive_adjoint` evaluated by SymPy, with the documented shapes and dtypes always (also
for constant and state-independent expressions, the classic ``lambdify`` trap), and the
structure it reports (``linear``, ``non_analytic``) is right."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from helpers import ROUNDING, relative_error
from hypothesis import given, note
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from symbolic import Dynamics, compile_problem, derive_adjoint

t = sp.Symbol("t")
z0, z1 = z = sp.symbols("z0:2")
th = sp.symbols("th0:4")
x = sp.Symbol("x")

# name -> (dynamics, loss); every pair is compiled and compared with SymPy.
PROBLEMS = {
    "nonlinear time-dependent": (
        Dynamics(
            rhs=[
                sp.tanh(th[0] * z0 + th[1] * z1) + sp.sin(t) * z1,
                th[2] * z0 * z1 - sp.exp(-t) * z0**2 + sp.cos(th[0] * t),
            ],
            state=z,
            params=th[:3],
            time=t,
        ),
        sp.log(1 + z0**2) + z1**4 / 4 + z0 * z1,
    ),
    "constant rhs [1, theta0]": (
        Dynamics(rhs=[1, th[0]], state=z, params=th[:1], time=t),
        sp.Integer(3),
    ),
    "rhs [t, 0]": (Dynamics(rhs=[t, 0], state=z, time=t), z0),
    "rhs of theta only": (
        Dynamics(rhs=[th[0] * th[1], th[1] ** 2], state=z, params=th[:2]),
        z0 * z1,
    ),
    "zero rhs, unused param": (Dynamics(rhs=[0, 0], state=z, params=th[:1]), z0**2),
    "p = 0": (Dynamics(rhs=[z1, -sp.sin(z0)], state=z), (z0**2 + z1**2) / 2),
    "n = 1": (Dynamics(rhs=[-th[0] * x**3 + t], state=[x], params=th[:1], time=t), x**2),
}

CALLABLES = [
    "rhs",
    "vjp_state",
    "vjp_params",
    "time_partial",
    "jac_state",
    "jac_params",
    "loss",
    "loss_grad",
]


def _symbolic(adj, name: str) -> tuple[list, tuple[int, ...]]:
    """The expressions a compiled callable must reproduce, and its per-sample shape."""
    dyn = adj.dynamics
    n, p = dyn.n, dyn.p
    if name == "rhs":
        return list(dyn.rhs), (n,)
    if name == "vjp_state":  # (df/dz)^T a = -adjoint_rhs
        return [-e for e in adj.adjoint_rhs], (n,)
    if name == "vjp_params":
        return list(adj.param_integrand), (p,)
    if name == "time_partial":
        return [e.diff(dyn.time) if dyn.time is not None else 0 for e in dyn.rhs], (n,)
    if name == "jac_state":
        return list(adj.jacobian_state), (n, n)
    if name == "jac_params":
        return list(adj.jacobian_params), (n, p)
    if name == "loss":
        return [adj.loss], ()
    if name == "loss_grad":
        return list(adj.loss_gradient), (n,)
    raise AssertionError(name)


def _compiled(compiled, name: str, z_, theta, t_, a):
    if name in ("loss", "loss_grad"):
        return getattr(compiled, name)(z_)
    if name.startswith("vjp"):
        return getattr(compiled, name)(z_, theta, t_, a)
    return getattr(compiled, name)(z_, theta, t_)


def _scalar(value) -> float | complex:
    return complex(value) if np.iscomplexobj(value) else float(value)


def _evaluate(adj, exprs, tail, z_, theta, t_, a) -> np.ndarray:
    """SymPy's value of ``exprs`` for every sample, by substitution and ``evalf``."""
    dyn = adj.dynamics
    out = np.empty((z_.shape[0], *tail), dtype=complex)
    for b in range(z_.shape[0]):
        point = {s: _scalar(v) for s, v in zip(dyn.state, z_[b], strict=True)}
        point.update({s: _scalar(v) for s, v in zip(dyn.params, theta, strict=True)})
        point.update({s: _scalar(v) for s, v in zip(adj.adjoint, a[b], strict=True)})
        if dyn.time is not None:
            point[dyn.time] = _scalar(t_)
        values = [complex(sp.sympify(e).evalf(30, subs=point)) for e in exprs]
        out[b] = np.reshape(np.array(values, dtype=complex), tail)
    return out


def _inputs(dyn, batch: int, seed: int):
    rng = np.random.default_rng(seed)
    return (
        rng.uniform(-1.5, 1.5, (batch, dyn.n)),
        rng.uniform(-1.5, 1.5, dyn.p),
        float(rng.uniform(0.0, 2.0)),
        rng.uniform(-1.5, 1.5, (batch, dyn.n)),
    )


def _complex_relative_error(value, reference) -> float:
    value, reference = np.asarray(value), np.asarray(reference)
    return float(
        np.linalg.norm(value - reference) / max(np.linalg.norm(reference), np.finfo(float).tiny)
    )


@pytest.mark.parametrize("name", CALLABLES)
@pytest.mark.parametrize("problem", list(PROBLEMS))
@pytest.mark.parametrize(("batch", "seed"), [(1, 0), (4, 1), (5, 2)], ids=["B=1", "B=4", "B=5"])
def test_compiled_equals_symbolic(problem, name, batch, seed):
    dyn, loss = PROBLEMS[problem]
    adj = derive_adjoint(dyn, loss)
    compiled = compile_problem(dyn, loss)
    z_, theta, t_, a = _inputs(dyn, batch, seed)
    exprs, tail = _symbolic(adj, name)

    value = _compiled(compiled, name, z_, theta, t_, a)

    assert isinstance(value, np.ndarray)
    assert value.shape == (batch, *tail)
    assert value.dtype == np.float64
    reference = _evaluate(adj, exprs, tail, z_, theta, t_, a)
    assert np.all(reference.imag == 0)
    assert relative_error(value, reference.real) <= ROUNDING


@pytest.mark.parametrize("name", CALLABLES)
def test_complex_input_gives_complex_output(name):
    """Complex z, theta, t and a flow through (the complex-step check needs it) and give
    the analytic continuation SymPy gives."""
    dyn, loss = PROBLEMS["nonlinear time-dependent"]
    adj = derive_adjoint(dyn, loss)
    compiled = compile_problem(dyn, loss)
    rng = np.random.default_rng(3)
    z_, theta, t_, a = _inputs(dyn, 3, 4)
    z_ = z_ + 0.1j * rng.standard_normal(z_.shape)
    theta = theta + 0.1j * rng.standard_normal(theta.shape)
    t_ = t_ + 0.1j
    a = a + 0.1j * rng.standard_normal(a.shape)
    exprs, tail = _symbolic(adj, name)

    value = _compiled(compiled, name, z_, theta, t_, a)

    assert value.dtype == np.complex128
    assert value.shape == (3, *tail)
    assert _complex_relative_error(value, _evaluate(adj, exprs, tail, z_, theta, t_, a)) <= (
        ROUNDING
    )


@pytest.mark.parametrize("which", ["z", "theta", "t"])
@pytest.mark.parametrize("name", ["rhs", "time_partial", "jac_state", "jac_params"])
@pytest.mark.parametrize("problem", ["nonlinear time-dependent", "constant rhs [1, theta0]"])
def test_one_complex_argument_makes_the_output_complex(problem, name, which):
    dyn, loss = PROBLEMS[problem]
    compiled = compile_problem(dyn, loss)
    z_, theta, t_, a = _inputs(dyn, 2, 5)
    real = _compiled(compiled, name, z_, theta, t_, a)
    if which == "z":
        z_ = z_.astype(complex)
    elif which == "theta":
        theta = theta.astype(complex)
    else:
        t_ = complex(t_)

    value = _compiled(compiled, name, z_, theta, t_, a)

    assert value.dtype == np.complex128
    assert relative_error(value.real, real) <= ROUNDING
    assert np.linalg.norm(value.imag) <= ROUNDING * np.linalg.norm(real)


@pytest.mark.parametrize("name", ["vjp_state", "vjp_params"])
def test_complex_adjoint_makes_the_vjp_complex(name):
    dyn, loss = PROBLEMS["nonlinear time-dependent"]
    compiled = compile_problem(dyn, loss)
    z_, theta, t_, a = _inputs(dyn, 2, 6)
    value = _compiled(compiled, name, z_, theta, t_, a + 1j * a)
    real = _compiled(compiled, name, z_, theta, t_, a)
    assert value.dtype == np.complex128
    assert relative_error(value.real, real) <= ROUNDING
    assert relative_error(value.imag, real) <= ROUNDING


@given(
    z_=arrays(np.float64, (3, 2), elements=st.floats(-2, 2)),
    theta=arrays(np.float64, (3,), elements=st.floats(-2, 2)),
    t_=st.floats(0, 3),
)
def test_complex_step_of_rhs_reproduces_the_jacobians(z_, theta, t_):
    """Im f(x + i h e_j) / h = df/dx_j to rounding: the compiled rhs is analytic."""
    dyn, loss = PROBLEMS["nonlinear time-dependent"]
    compiled = compile_problem(dyn, loss)
    h = 1e-30
    jac_z = compiled.jac_state(z_, theta, t_)
    jac_theta = compiled.jac_params(z_, theta, t_)
    by_z = np.stack(
        [compiled.rhs(z_ + 1j * h * np.eye(2)[j], theta, t_).imag / h for j in range(2)], -1
    )
    by_theta = np.stack(
        [compiled.rhs(z_, theta + 1j * h * np.eye(3)[j], t_).imag / h for j in range(3)], -1
    )
    by_t = compiled.rhs(z_, theta, t_ + 1j * h).imag / h
    note(f"jac_state={jac_z!r}, complex step={by_z!r}")
    assert relative_error(by_z, jac_z) <= ROUNDING
    assert relative_error(by_theta, jac_theta) <= ROUNDING
    assert relative_error(by_t, compiled.time_partial(z_, theta, t_)) <= ROUNDING


# -- caching -------------------------------------------------------------------------------


def test_compile_problem_caches_one_object_per_pair():
    dyn, loss = PROBLEMS["nonlinear time-dependent"]
    first = compile_problem(dyn, loss)
    assert compile_problem(dyn, loss) is first
    rebuilt = Dynamics(rhs=list(dyn.rhs), state=dyn.state, params=dyn.params, time=dyn.time)
    assert compile_problem(rebuilt, loss) is first
    assert compile_problem(dyn, loss + 1) is not first


# -- linear structure ----------------------------------------------------------------------


def _seed_compiled():
    w = sp.symbols("w0:4")
    dyn = Dynamics(rhs=sp.Matrix(2, 2, w) * sp.Matrix(z), state=z, params=w, time=t)
    return compile_problem(dyn, (z0**2 + z1**2) / 2)


def test_linear_detects_the_seed():
    lin = _seed_compiled().linear
    assert lin is not None
    theta = np.array([-0.5, 1.0, -1.0, -0.2])
    assert not lin.affine
    assert lin.matrix(theta).shape == (2, 2)
    assert relative_error(lin.matrix(theta), theta.reshape(2, 2)) <= ROUNDING
    expected_grad = np.eye(4).reshape(2, 2, 4)  # dW_ij / dtheta_k = [k == 2 i + j]
    assert lin.matrix_grad(theta).shape == (2, 2, 4)
    assert relative_error(lin.matrix_grad(theta), expected_grad) <= ROUNDING
    assert np.array_equal(lin.offset(theta), np.zeros(2))
    assert np.array_equal(lin.offset_grad(theta), np.zeros((2, 4)))


def test_linear_detects_affine_dynamics():
    A = sp.Matrix([[sp.sin(th[0]), th[1] ** 2], [0, th[0] * th[2]]])
    c = sp.Matrix([th[3] * th[0], 1])
    dyn = Dynamics(rhs=A * sp.Matrix(z) + c, state=z, params=th)
    lin = compile_problem(dyn, z0**2).linear
    assert lin is not None
    assert lin.affine
    v = np.array([0.3, -0.7, 1.1, 2.0])
    assert relative_error(
        lin.matrix(v), [[np.sin(v[0]), v[1] ** 2], [0.0, v[0] * v[2]]]
    ) <= ROUNDING
    matrix_grad = np.zeros((2, 2, 4))
    matrix_grad[0, 0, 0] = np.cos(v[0])
    matrix_grad[0, 1, 1] = 2 * v[1]
    matrix_grad[1, 1, 0] = v[2]
    matrix_grad[1, 1, 2] = v[0]
    assert relative_error(lin.matrix_grad(v), matrix_grad) <= ROUNDING
    assert relative_error(lin.offset(v), [v[3] * v[0], 1.0]) <= ROUNDING
    assert relative_error(
        lin.offset_grad(v), [[v[3], 0.0, 0.0, v[0]], [0.0, 0.0, 0.0, 0.0]]
    ) <= ROUNDING


def test_linear_with_no_parameters():
    lin = compile_problem(Dynamics(rhs=[z1, -2 * z0], state=z), z0**2).linear
    assert lin is not None
    assert relative_error(lin.matrix(np.zeros(0)), [[0.0, 1.0], [-2.0, 0.0]]) <= ROUNDING
    assert lin.matrix_grad(np.zeros(0)).shape == (2, 2, 0)
    assert lin.offset_grad(np.zeros(0)).shape == (2, 0)


@pytest.mark.parametrize(
    "dyn",
    [
        pytest.param(Dynamics(rhs=[z0 * z1, -z0], state=z), id="product z0*z1"),
        pytest.param(
            Dynamics(rhs=[sp.tanh(th[0] * z0), z1], state=z, params=th[:1]), id="tanh(w z)"
        ),
        pytest.param(Dynamics(rhs=[t * z1, -z0], state=z, time=t), id="time-dependent t*z1"),
        pytest.param(Dynamics(rhs=[z1, -z0 + t], state=z, time=t), id="time-dependent offset"),
    ],
)
def test_linear_is_none_for_nonlinear_or_time_dependent(dyn):
    assert compile_problem(dyn, z0**2).linear is None


# -- non-analytic functions ----------------------------------------------------------------




@pytest.mark.parametrize(
    ("rhs", "loss", "expected"),
    [
        pytest.param(
            [sp.Abs(z0) * th[0], -z1], z0**2, ("Abs",), id="Abs in rhs"
        ),
        pytest.param([sp.tanh(th[0] * z0), -z1], z0**2, (), id="tanh"),
        pytest.param([z1, -z0], sp.Abs(z0), ("Abs",), id="Abs in loss"),
        pytest.param([sp.Max(z0, 0) * th[0], -z1], z0**2, ("Max",), id="Max (relu) in rhs"),
    ],
)
def test_non_analytic(rhs, loss, expected):
    dyn = Dynamics(rhs=rhs, state=z, params=th[:1])
    assert compile_problem(dyn, loss).non_analytic == expected


def test_abs_compiles_with_sign_as_its_derivative():
    dyn = Dynamics(rhs=[sp.Abs(z0) * th[0], -z1], state=z, params=th[:1])
    compiled = compile_problem(dyn, sp.Abs(z1))
    z_ = np.array([[-1.5, 0.5], [2.0, -0.25]])
    theta = np.array([0.7])
    jac = compiled.jac_state(z_, theta, 0.0)
    assert relative_error(jac[:, 0, 0], 0.7 * np.sign(z_[:, 0])) <= ROUNDING
    assert relative_error(compiled.loss_grad(z_)[:, 1], np.sign(z_[:, 1])) <= ROUNDING
