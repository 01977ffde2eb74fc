"""`symbolic.derive_adjoint`: the exact adjoint system of shared/MATH.md, checked against
expressions written out by hand (the seed's f = W z and a nonlinear, time-dependent f)."""

from __future__ import annotations

import pytest
import sympy as sp

from symbolic import AdjointSystem, Dynamics, derive_adjoint

t = sp.Symbol("t")
z0, z1 = z = sp.symbols("z0:2")
w = sp.symbols("w0:4")
W = sp.Matrix(2, 2, w)
LOSS = sp.Rational(1, 2) * (z0**2 + z1**2)


def _is_zero(matrix) -> bool:
    return all(sp.simplify(entry) == 0 for entry in sp.Matrix(matrix))


@pytest.fixture(scope="module")
def seed() -> AdjointSystem:
    """The seed's example of API.md: f = W z, l = |z|^2 / 2."""
    dyn = Dynamics(rhs=W * sp.Matrix(z), state=z, params=w, time=t)
    return derive_adjoint(dyn, LOSS)


@pytest.fixture(scope="module")
def nonlinear() -> AdjointSystem:
    """f = (w0 sin(t) z1 + z0 z1,  exp(-w1 t) z0^2 + w2), a loss that is not quadratic."""
    dyn = Dynamics(
        rhs=[w[0] * sp.sin(t) * z1 + z0 * z1, sp.exp(-w[1] * t) * z0**2 + w[2]],
        state=z,
        params=w[:3],
        time=t,
    )
    return derive_adjoint(dyn, sp.log(1 + z0**2) + z1**4 / 4)


# -- the seed: f = W z -------------------------------------------------------------------


def test_seed_adjoint_symbols(seed):
    assert len(seed.adjoint) == 2
    assert all(isinstance(a_i, sp.Symbol) for a_i in seed.adjoint)
    assert not set(seed.adjoint) & set(z + w + (t,))


def test_seed_adjoint_rhs_is_minus_w_transpose_a(seed):
    a = sp.Matrix(seed.adjoint)
    assert seed.adjoint_rhs.shape == (2, 1)
    assert _is_zero(seed.adjoint_rhs - (-W.T * a))


def test_seed_param_integrand_is_a_z_transpose_row_major(seed):
    a = sp.Matrix(seed.adjoint)
    outer = a * sp.Matrix(z).T  # dL/dW = integral of a z^T: entry (i, j) belongs to W[i, j]
    assert seed.param_integrand.shape == (4, 1)
    assert _is_zero(seed.param_integrand - sp.Matrix(list(outer)))


def test_seed_loss_gradient_is_z(seed):
    assert seed.loss_gradient.shape == (2, 1)
    assert _is_zero(seed.loss_gradient - sp.Matrix(z))


def test_seed_time_partial_is_zero_when_autonomous(seed):
    assert sp.simplify(seed.time_partial) == 0


def test_seed_jacobians(seed):
    assert _is_zero(seed.jacobian_state - W)
    # df_i/dw_k = z_j where k = 2 i + j (row-major), else 0
    expected = sp.Matrix([[z0, z1, 0, 0], [0, 0, z0, z1]])
    assert _is_zero(seed.jacobian_params - expected)


def test_time_partial_is_zero_without_a_time_symbol():
    adj = derive_adjoint(Dynamics(rhs=[z1, -z0], state=z), LOSS)
    assert adj.time_partial == 0
    assert adj.param_integrand.shape == (0, 1)


# -- a nonlinear, time-dependent f ---------------------------------------------------------


def test_nonlinear_adjoint_rhs(nonlinear):
    a0, a1 = nonlinear.adjoint
    # J = [[z1, w0 sin t + z0], [2 z0 exp(-w1 t), 0]];  -J^T a:
    expected = sp.Matrix(
        [
            -(z1 * a0 + 2 * z0 * sp.exp(-w[1] * t) * a1),
            -((w[0] * sp.sin(t) + z0) * a0),
        ]
    )
    assert _is_zero(nonlinear.adjoint_rhs - expected)


def test_nonlinear_param_integrand(nonlinear):
    a0, a1 = nonlinear.adjoint
    expected = sp.Matrix(
        [
            sp.sin(t) * z1 * a0,
            -t * sp.exp(-w[1] * t) * z0**2 * a1,
            a1,
        ]
    )
    assert _is_zero(nonlinear.param_integrand - expected)


def test_nonlinear_time_partial(nonlinear):
    a0, a1 = nonlinear.adjoint
    expected = a0 * w[0] * sp.cos(t) * z1 - a1 * w[1] * sp.exp(-w[1] * t) * z0**2
    assert sp.simplify(nonlinear.time_partial - expected) == 0


def test_nonlinear_loss_gradient(nonlinear):
    expected = sp.Matrix([2 * z0 / (1 + z0**2), z1**3])
    assert _is_zero(nonlinear.loss_gradient - expected)


def test_adjoint_symbols_avoid_names_already_taken():
    a_z0 = sp.Symbol("a_z0")  # a parameter with the adjoint's default name
    dyn = Dynamics(rhs=[a_z0 * z1, -z0], state=z, params=[a_z0])
    adj = derive_adjoint(dyn, LOSS)
    assert str(a_z0) not in {str(a_i) for a_i in adj.adjoint}
    a0, a1 = adj.adjoint
    assert _is_zero(adj.adjoint_rhs - sp.Matrix([a1, -a_z0 * a0]))
    assert _is_zero(adj.param_integrand - sp.Matrix([z1 * a0]))


# -- printing ------------------------------------------------------------------------------


def test_str_shows_every_equation_and_the_matrix_form(seed):
    text = str(seed)
    for a_i, rhs_i in zip(seed.adjoint, seed.adjoint_rhs, strict=True):
        assert f"d{a_i}/dt" in text
        assert str(rhs_i) in text
    for integrand_j in seed.param_integrand:
        assert str(integrand_j) in text
    assert "dz0/dt" in text and "dz1/dt" in text
    assert "matrix form: da/dt = -J^T a with J = df/dz = [[w0, w1], [w2, w3]]" in text
    assert "integral of a z^T dt" in text


def test_str_has_no_matrix_form_for_nonlinear_f(nonlinear):
    text = str(nonlinear)
    for a_i, rhs_i in zip(nonlinear.adjoint, nonlinear.adjoint_rhs, strict=True):
        assert f"d{a_i}/dt" in text
        assert str(rhs_i) in text
    assert "matrix form" not in text


def test_latex_is_an_aligned_block(seed):
    text = seed.latex()
    assert text.startswith("\\begin{aligned}")
    assert text.rstrip().endswith("\\end{aligned}")
    assert "\\frac" in text
    assert "\\int_{t_0}^{t_N}" in text
    for rhs_i in seed.adjoint_rhs:
        assert sp.latex(rhs_i) in text
