"""Matrix-form dynamics: checks, the derived matrix formulas, and the compiled kernels
against the elementwise path of the same dynamics."""

import numpy as np
import pytest
import sympy as sp
from helpers import ROUNDING, relative_error

from symbolic import Dynamics, DynamicsError, compile_problem, derive_adjoint

T = sp.Symbol("t")


def mlp(n=3, h=4, *, activation=sp.tanh, time=False):
    z = sp.MatrixSymbol("z", n, 1)
    W1, b1 = sp.MatrixSymbol("W1", h, n), sp.MatrixSymbol("b1", h, 1)
    W2, b2 = sp.MatrixSymbol("W2", n, h), sp.MatrixSymbol("b2", n, 1)
    if time:
        w_t, omega = sp.MatrixSymbol("w_t", h, 1), sp.Symbol("omega")
        rhs = (1 + sp.sin(omega * T) / 2) * (
            W2 * (W1 * z + w_t * T + b1).applyfunc(activation) + b2)
        return Dynamics(rhs=rhs, state=z, params=[W1, b1, W2, b2, w_t, omega], time=T), z
    rhs = W2 * (W1 * z + b1).applyfunc(activation) + b2
    return Dynamics(rhs=rhs, state=z, params=[W1, b1, W2, b2]), z


def hadamard_cube():
    """A gated, cubic right-hand side with a transposed (tied) weight and a constant."""
    z = sp.MatrixSymbol("z", 2, 1)
    W, g = sp.MatrixSymbol("W", 2, 2), sp.MatrixSymbol("g", 2, 1)
    c = sp.Symbol("c")
    A = sp.ImmutableMatrix([[0, 1], [-1, 0]])
    rhs = sp.HadamardProduct(g, (W.T * z.applyfunc(lambda u: u**3))) + c * (A * z)
    return Dynamics(rhs=rhs, state=z, params=[W, g, c]), z


CASES = {
    "tanh": lambda: mlp(),
    "sigmoid": lambda: mlp(activation=lambda u: 1 / (1 + sp.exp(-u))),
    "softplus": lambda: mlp(activation=lambda u: sp.log(1 + sp.exp(u))),
    "sin": lambda: mlp(activation=sp.sin),
    "time-dependent": lambda: mlp(time=True),
    "hadamard-cube-tied": hadamard_cube,
}


def compiled_pair(case):
    dyn, z = CASES[case]()
    loss = sum((z[i, 0] - sp.Rational(1, 3)) ** 2 for i in range(dyn.n)) / 2
    return compile_problem(dyn, loss), compile_problem(dyn.as_elementwise(),
                                                        dyn.explicit(loss)), dyn


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", ["rhs", "vjp_state", "vjp_params", "time_partial",
                                  "jac_state", "jac_params", "loss", "loss_grad"])
def test_matrix_path_equals_elementwise_path(case, name):
    matrix, elementwise, dyn = compiled_pair(case)
    rng = np.random.default_rng(11)
    z, a = rng.standard_normal((5, dyn.n)), rng.standard_normal((5, dyn.n))
    theta, t = 0.7 * rng.standard_normal(dyn.p), 0.37
    args = {"rhs": (z, theta, t), "vjp_state": (z, theta, t, a),
            "vjp_params": (z, theta, t, a), "time_partial": (z, theta, t),
            "jac_state": (z, theta, t), "jac_params": (z, theta, t), "loss": (z,),
            "loss_grad": (z,)}[name]
    got, expected = getattr(matrix, name)(*args), getattr(elementwise, name)(*args)
    assert got.shape == expected.shape
    assert relative_error(got, expected) <= ROUNDING


@pytest.mark.parametrize("case", list(CASES))
def test_kernel_tape_sums_the_parameter_gradient_of_every_slot(case):
    """Deferred products over a tape of several slots equal the per-call sums."""
    matrix, elementwise, dyn = compiled_pair(case)
    rng = np.random.default_rng(3)
    theta = rng.standard_normal(dyn.p)
    kernel = matrix.kernel(theta)
    tape = kernel.tape(3, 4, np.float64)
    save, reverse = kernel.tape_functions(tape)
    expected = np.zeros(dyn.p)
    tbar_total, tbar_expected = 0.0, 0.0
    for slot, t in enumerate((0.1, 0.6, 1.3)):
        z, a = rng.standard_normal((4, dyn.n)), rng.standard_normal((4, dyn.n))
        f = save(z, t, slot, None, False)
        zbar, tbar = reverse(a, t, slot, True, None, False)
        assert relative_error(f, elementwise.rhs(z, theta, t)) <= ROUNDING
        assert relative_error(zbar, elementwise.vjp_state(z, theta, t, a)) <= ROUNDING
        expected += elementwise.vjp_params(z, theta, t, a).sum(axis=0)
        tbar_total += tbar
        tbar_expected += np.sum(a * elementwise.time_partial(z, theta, t))
    assert relative_error(kernel.parameter_gradient(tape), expected) <= ROUNDING
    assert abs(tbar_total - tbar_expected) <= ROUNDING * max(1.0, abs(tbar_expected))


@pytest.mark.parametrize("case", list(CASES))
def test_kernel_tangent_is_the_jacobian_times_the_direction(case):
    matrix, elementwise, dyn = compiled_pair(case)
    rng = np.random.default_rng(5)
    z, theta, t = rng.standard_normal((4, dyn.n)), rng.standard_normal(dyn.p), 0.8
    dz, dtheta = rng.standard_normal((4, dyn.n)), rng.standard_normal(dyn.p)
    got = matrix.kernel(theta).tangent(z, t, dz=dz, dtheta=dtheta, dt=0.25)
    expected = (np.einsum("bij,bj->bi", elementwise.jac_state(z, theta, t), dz)
                + elementwise.jac_params(z, theta, t) @ dtheta
                + 0.25 * elementwise.time_partial(z, theta, t))
    assert relative_error(got, expected) <= ROUNDING


def test_complex_input_flows_through_the_kernels():
    """Complex step through the matrix path: Im f(theta + ih v)/h = (df/dtheta) v."""
    matrix, elementwise, dyn = compiled_pair("time-dependent")
    rng = np.random.default_rng(2)
    z, theta, v = rng.standard_normal((3, dyn.n)), rng.standard_normal(dyn.p), \
        rng.standard_normal(dyn.p)
    step = 1e-30
    got = matrix.rhs(z.astype(complex), theta + 1j * step * v, 0.4).imag / step
    assert relative_error(got, elementwise.jac_params(z, theta, 0.4) @ v) <= ROUNDING


def test_theta_order_and_shapes_follow_params():
    dyn, _ = mlp(3, 4, time=True)
    assert dyn.form == "matrix"
    assert dyn.param_shapes == {"W1": (4, 3), "b1": (4, 1), "W2": (3, 4), "b2": (3, 1),
                                "w_t": (4, 1), "omega": ()}
    assert dyn.p == 12 + 4 + 12 + 3 + 4 + 1
    assert dyn.param_names[:4] == ("W1[0, 0]", "W1[0, 1]", "W1[0, 2]", "W1[1, 0]")
    assert dyn.param_names[12] == "b1[0]" and dyn.param_names[-1] == "omega"
    explicit = dyn.as_elementwise()
    assert explicit.p == dyn.p and explicit.n == dyn.n


def test_derive_adjoint_prints_matrix_formulas():
    """The textbook formulas, not n*p scalar entries (API.md)."""
    dyn, z = mlp(16, 64)
    text = str(derive_adjoint(dyn, (z.T * z)[0, 0] / 2))
    assert "dz/dt = W2 tanh.(W1 z + b1) + b2" in text
    assert "da/dt = -W1^T (" in text and "tanh'.(W1 z + b1)" in text and "W2^T a" in text
    assert "dL/dW2 = a tanh.(W1 z + b1)^T" in text
    assert ") z^T" in text  # dL/dW1 = (tanh'.(W1 z + b1) ∘ W2^T a) z^T
    assert "dL/db2 = a" in text
    assert "W1[" not in text  # never entry by entry


@pytest.mark.parametrize("case", list(CASES))
def test_derived_formulas_evaluate_to_the_kernel_numbers(case):
    """The printed adjoint equations, evaluated entry by entry at numbers, agree with the
    compiled reverse pass (the formulas are the ones the numerics run)."""
    matrix, _, dyn = compiled_pair(case)
    adj = derive_adjoint(dyn, matrix.loss_expr)
    rng = np.random.default_rng(8)
    z, a, theta, t = rng.standard_normal(dyn.n), rng.standard_normal(dyn.n), \
        rng.standard_normal(dyn.p), 0.3
    spec = dyn.matrix
    values = {spec.state: sp.Matrix(z), adj.adjoint: sp.Matrix(a)}
    for leaf, (start, stop, shape) in zip(spec.leaves, spec.offsets, strict=True):
        values[leaf] = sp.Matrix(*shape, theta[start:stop].tolist()) if shape else theta[start]
    if dyn.time is not None:
        values[dyn.time] = t

    def evaluate(expr):
        return np.array(sp.Matrix(expr.xreplace(values).doit()).evalf(), dtype=float).ravel()

    assert relative_error(evaluate(adj.adjoint_rhs),
                          -matrix.vjp_state(z[None], theta, t, a[None])[0]) <= 1e-10
    pieces = [evaluate(expr) if hasattr(expr, "shape") else
              np.array([float(sp.sympify(expr).xreplace(values).doit())])
              for expr in adj.param_integrand.values()]
    assert relative_error(np.concatenate(pieces),
                          matrix.vjp_params(z[None], theta, t, a[None])[0]) <= 1e-10


def _bad(rhs=None, state=None, params=None, time=None):
    z = sp.MatrixSymbol("z", 2, 1)
    W = sp.MatrixSymbol("W", 2, 2)
    return Dynamics(rhs=W * z if rhs is None else rhs(z, W), state=z if state is None else
                    state, params=[W] if params is None else params(W), time=time)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        pytest.param(lambda: _bad(state=sp.MatrixSymbol("z", 1, 2)), "n x 1 MatrixSymbol",
                     id="state-row"),
        pytest.param(lambda: _bad(params=lambda W: "W"), "must be a list", id="params-str-bare"),
        pytest.param(lambda: _bad(params=lambda W: [W, W]), "twice", id="params-repeat"),
        pytest.param(lambda: _bad(params=lambda W: [W, "b"]), r"params\[1\]", id="params-str"),
        pytest.param(lambda: _bad(rhs=lambda z, W: W * z + sp.MatrixSymbol("b", 2, 1)),
                     "neither state, parameter nor time", id="unknown-symbol"),
        pytest.param(lambda: _bad(rhs=lambda z, W: W), "shape 2 x 2", id="rhs-shape"),
        pytest.param(lambda: _bad(rhs=lambda z, W: (z * z.T) * z), "transpose",
                     id="state-transpose"),
        pytest.param(lambda: _bad(rhs=lambda z, W: (z * sp.MatrixSymbol("r", 1, 2)) * z,
                                  params=lambda W: [W, sp.MatrixSymbol("r", 1, 2)]),
                     "multiplies from the left", id="state-matrix-left"),
        pytest.param(lambda: _bad(rhs=lambda z, W: W * z.applyfunc(
            lambda u: sp.tanh(sp.Symbol("k") * u)), params=lambda W: [W, sp.Symbol("k")]),
                     "besides its argument", id="activation-parameter"),
        pytest.param(lambda: _bad(rhs=lambda z, W: W * z, time=sp.MatrixSymbol("t", 1, 1)),
                     "`time` must be a SymPy Symbol", id="time-matrix"),
        pytest.param(lambda: _bad(rhs=lambda z, W: sp.Matrix([[z[0, 0]], [1]])),
                     "explicit matrix", id="explicit-entries"),
    ],
)
def test_malformed_matrix_dynamics_raise(build, match):
    with pytest.raises(DynamicsError, match=match):
        build()


def test_matrix_loss_must_use_the_state_entries():
    dyn, _ = mlp()
    y = sp.MatrixSymbol("y", 3, 1)
    with pytest.raises(DynamicsError, match="not entries of the state"):
        compile_problem(dyn, (y.T * y)[0, 0])
