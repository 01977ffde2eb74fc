"""`symbolic.Dynamics` and the loss check: what is accepted, and every malformed input
rejected with a message that names the argument and the problem (shared/API.md)."""

from __future__ import annotations

import pytest
import sympy as sp

from symbolic import Dynamics, DynamicsError, derive_adjoint

t = sp.Symbol("t")
z0, z1 = z = sp.symbols("z0:2")
w = sp.symbols("w0:4")
W = sp.Matrix(2, 2, w)
k = sp.Symbol("k")
LOSS = sp.Rational(1, 2) * (z0**2 + z1**2)


def _seed() -> Dynamics:
    return Dynamics(rhs=W * sp.Matrix(z), state=z, params=w, time=t)


# Each case: a callable that must raise DynamicsError, and a regex naming the argument
# and the problem.
BAD_INPUTS = [
    pytest.param(
        lambda: Dynamics(rhs=[z0, z1], state=(z0, z1, k)),
        r"`state` has 3 symbols but `rhs` has 2 entries",
        id="state longer than rhs",
    ),
    pytest.param(
        lambda: Dynamics(rhs=[z0, z1, z0], state=z),
        r"`state` has 2 symbols but `rhs` has 3 entries",
        id="rhs longer than state",
    ),
    pytest.param(
        lambda: Dynamics(rhs=[], state=()),
        r"`state` is empty",
        id="empty state",
    ),
    pytest.param(
        lambda: Dynamics(rhs=[z0, z1], state=[z0, 2]),
        r"`state\[1\]` must be a SymPy Symbol, got int",
        id="number in state",
    ),
    pytest.param(
        lambda: Dynamics(rhs=[z0, z1], state=[z0, z1 + 1]),
        r"`state\[1\]` must be a SymPy Symbol, got Add",
        id="expression in state",
    ),
    pytest.param(
        lambda: Dynamics(rhs=[z0, z1], state="z0 z1"),
        r"`state` must be a sequence of SymPy Symbols .* got str",
        id="string as state",
    ),
    pytest.param(
        lambda: Dynamics(rhs=[k * z0, z1], state=z, params=[k, 1.5]),
        r"`params\[1\]` must be a SymPy Symbol, got float",
        id="number in params",
    ),
    pytest.param(
        lambda: Dynamics(rhs=[z0, z1], state=z, params=sp.Matrix([[k, 2 * k]])),
        r"`params\[1\]` must be a SymPy Symbol, got Mul",
        id="expression in params matrix",
    ),
    pytest.param(
        lambda: Dynamics(rhs=[z0, z0], state=[z0, z0]),
        r"`state` lists the symbol z0 twice",
        id="state symbol twice",
    ),
    pytest.param(
        lambda: Dynamics(rhs=[k * z0, z1], state=z, params=[k, k]),
        r"`params` lists the symbol k twice",
        id="param symbol twice",
    ),
    pytest.param(
        lambda: Dynamics(rhs=[z0, z1], state=z, params=[k, z1]),
        r"symbol z1 is in both `state` and `params`",
        id="state also a parameter",
    ),
    pytest.param(
        lambda: Dynamics(rhs=[z0, z1], state=z, time=z0),
        r"`time` z0 is also listed in `state`",
        id="time also a state",
    ),
    pytest.param(
        lambda: Dynamics(rhs=[k * z0, z1], state=z, params=[k], time=k),
        r"`time` k is also listed in `params`",
        id="time also a parameter",
    ),
    pytest.param(
        lambda: Dynamics(rhs=[z0, z1], state=z, time="t"),
        r"`time` must be a SymPy Symbol or None, got str",
        id="time a string",
    ),
    pytest.param(
        lambda: Dynamics(rhs=[z1, -k * z0], state=z),
        r"`rhs\[1\]` uses the symbol\(s\) k, which are neither state, parameter nor time",
        id="free symbol in rhs",
    ),
    pytest.param(
        lambda: Dynamics(rhs=[t * z1, -z0], state=z),
        r"`rhs\[0\]` uses the symbol\(s\) t, .* pass it as `time`",
        id="time used but not declared",
    ),
    pytest.param(
        lambda: Dynamics(rhs=z0 + z1, state=[z0]),
        r"`rhs` must be a list, tuple or Matrix of SymPy expressions, got Add",
        id="rhs a bare expression",
    ),
    pytest.param(
        lambda: Dynamics(rhs=3, state=[z0]),
        r"`rhs` must be a list, tuple or Matrix of SymPy expressions, got int",
        id="rhs a number",
    ),
    pytest.param(
        lambda: Dynamics(rhs=sp.Matrix([[z0, z1], [z1, z0]]), state=z),
        r"`rhs` must be a vector .* got a 2 x 2 Matrix",
        id="rhs a 2-D matrix",
    ),
    pytest.param(
        lambda: Dynamics(rhs=[sp.Eq(z0, 1), z1], state=z),
        r"`rhs\[0\]` must be a scalar SymPy expression",
        id="rhs entry an equation",
    ),
    pytest.param(
        lambda: Dynamics(rhs=[z0, object()], state=z),
        r"`rhs\[1\]` must be a SymPy expression, got object",
        id="rhs entry not sympifiable",
    ),
    pytest.param(
        lambda: derive_adjoint(_seed(), None),
        r"`loss` is required",
        id="loss None",
    ),
    pytest.param(
        lambda: derive_adjoint(_seed(), z0**2 + w[0]),
        r"`loss` uses the symbol\(s\) w0, which are not state variables",
        id="loss uses a parameter",
    ),
    pytest.param(
        lambda: derive_adjoint(_seed(), t * z0),
        r"`loss` uses the symbol\(s\) t, which are not state variables",
        id="loss uses time",
    ),
    pytest.param(
        lambda: derive_adjoint(_seed(), sp.Matrix([z0, z1])),
        r"`loss` must be a scalar SymPy expression",
        id="loss a matrix",
    ),
    pytest.param(
        lambda: derive_adjoint(_seed(), object()),
        r"`loss` must be a SymPy expression in the state symbols, got object",
        id="loss not sympifiable",
    ),
    pytest.param(
        lambda: derive_adjoint("f = W z", LOSS),
        r"`dynamics` must be a symbolic.Dynamics, got str",
        id="dynamics not a Dynamics",
    ),
]


@pytest.mark.parametrize(("build", "message"), BAD_INPUTS)
def test_bad_input_raises_dynamics_error(build, message):
    with pytest.raises(DynamicsError, match=message):
        build()


def test_dynamics_error_is_a_value_error():
    assert issubclass(DynamicsError, ValueError)
    with pytest.raises(ValueError, match=r"`state` lists the symbol z0 twice"):
        Dynamics(rhs=[z0, z0], state=[z0, z0])


def test_matrix_params_are_flattened_row_major():
    a, b, c, d = sp.symbols("a b c d")
    M = sp.Matrix([[a, b], [c, d]])
    dyn = Dynamics(rhs=M * sp.Matrix(z), state=z, params=M)
    assert dyn.params == (a, b, c, d)
    assert dyn.p == 4


def test_non_square_matrix_params_are_flattened_row_major():
    p = sp.Matrix(2, 3, sp.symbols("p0:6"))
    dyn = Dynamics(rhs=list(p * sp.Matrix([1, z0, z1])), state=z, params=p)
    assert dyn.params == (p[0, 0], p[0, 1], p[0, 2], p[1, 0], p[1, 1], p[1, 2])


def test_attributes_of_the_seed():
    dyn = _seed()
    assert dyn.n == 2
    assert dyn.p == 4
    assert dyn.state == z
    assert dyn.params == w
    assert dyn.time == t
    assert dyn.autonomous
    assert isinstance(dyn.rhs, sp.MatrixBase)
    assert dyn.rhs.shape == (2, 1)
    assert list(dyn.rhs) == list(W * sp.Matrix(z))


@pytest.mark.parametrize(
    ("rhs", "time", "autonomous"),
    [
        pytest.param([z1, -z0], None, True, id="no time symbol"),
        pytest.param([z1, -z0], t, True, id="time declared, unused"),
        pytest.param([z1, -z0 * sp.cos(t)], t, False, id="time used"),
    ],
)
def test_autonomous(rhs, time, autonomous):
    dyn = Dynamics(rhs=rhs, state=z, time=time)
    assert dyn.autonomous is autonomous
    assert dyn.time == time


def test_defaults_no_params_no_time():
    dyn = Dynamics(rhs=[z1, -z0], state=z)
    assert dyn.p == 0
    assert dyn.params == ()
    assert dyn.time is None


@pytest.mark.parametrize(
    "rhs",
    [
        pytest.param([z1, -z0], id="list"),
        pytest.param((z1, -z0), id="tuple"),
        pytest.param(sp.Matrix([z1, -z0]), id="column matrix"),
        pytest.param(sp.Matrix([[z1, -z0]]), id="row matrix"),
    ],
)
def test_rhs_containers_give_a_column(rhs):
    dyn = Dynamics(rhs=rhs, state=z)
    assert dyn.rhs.shape == (2, 1)
    assert list(dyn.rhs) == [z1, -z0]


def test_numbers_in_rhs_are_sympified():
    dyn = Dynamics(rhs=[1, 2.5], state=z)
    assert list(dyn.rhs) == [sp.Integer(1), sp.Float(2.5)]


def test_single_symbol_state():
    x = sp.Symbol("x")
    dyn = Dynamics(rhs=[-x], state=x)
    assert dyn.state == (x,)
    assert dyn.n == 1


def test_equal_dynamics_are_equal_and_hash_equal():
    assert _seed() == _seed()
    assert hash(_seed()) == hash(_seed())
    assert _seed() != Dynamics(rhs=W.T * sp.Matrix(z), state=z, params=w, time=t)
