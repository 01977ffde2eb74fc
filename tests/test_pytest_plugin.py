"""The pytest plugin: the testing guide's example file, and a failing gradient shown with its
diagnosis."""

import pathlib
import re

import pytest

GUIDE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "guides" / "testing.md"

WRONG_AND_RIGHT = '''
import numpy as np
import pytest
from verification import builtin_problem
from numeric import gradient

PROBLEM = builtin_problem("linear")


def right(z0, theta, times):
    g = gradient(PROBLEM.dynamics, z0, theta, times, loss=PROBLEM.loss, method="exact")
    return g.z0, g.theta, g.times


def wrong(z0, theta, times):  # ascends: the sign of every block flipped
    dz0, dtheta, dtimes = right(z0, theta, times)
    return -dz0, -dtheta, -dtimes


def noisy(z0, theta, times):
    dz0, dtheta, dtimes = right(z0, theta, times)
    return dz0 * (1 + 1e-4), dtheta, dtimes


def test_right(assert_gradient_correct):
    assert_gradient_correct(right, PROBLEM)


def test_wrong(assert_gradient_correct):
    assert_gradient_correct(wrong, PROBLEM)
'''


def _readme_example() -> str:
    """The test file of the testing guide, as a user copies it."""
    text = GUIDE.read_text()
    return next(b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S)
                if b.startswith("# test_my_neural_ode.py"))


def test_readme_example_file_passes(pytester):
    pytester.makepyfile(test_my_neural_ode=_readme_example())
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_one_pass_one_failure_with_the_diagnosis(pytester):
    pytester.makepyfile(test_grads=WRONG_AND_RIGHT)
    result = pytester.runpytest("-q")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*the gradient is wrong*",
        "*opposite sign: the gradient is the negative of the reference*",
    ])


def test_marker_sets_the_tolerance(pytester):
    pytester.makepyfile(test_grads=WRONG_AND_RIGHT + '''

def test_noisy_default(assert_gradient_correct):
    assert_gradient_correct(noisy, PROBLEM)


@pytest.mark.adjoint_verify(rtol=1e-3)
def test_noisy_loose(assert_gradient_correct):
    assert_gradient_correct(noisy, PROBLEM)
''')
    result = pytester.runpytest("-q", "-k", "noisy")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*FAILED*test_noisy_default*"])


def test_command_line_option_sets_the_tolerance(pytester):
    pytester.makepyfile(test_grads=WRONG_AND_RIGHT)
    result = pytester.runpytest("-q", "-k", "right", "--adjoint-verify-rtol", "1e-3")
    result.assert_outcomes(passed=1)


def test_discrete_reference_from_marker(pytester):
    pytester.makepyfile(test_rk4='''
import pytest
from numeric import gradient
from verification import builtin_problem

PROBLEM = builtin_problem("tanh")


def rk4_backprop(z0, theta, times):
    g = gradient(PROBLEM.dynamics, z0, theta, times, loss=PROBLEM.loss,
                 method="discrete_adjoint", solver="rk4", steps=5)
    return g.z0, g.theta, g.times


@pytest.mark.adjoint_verify(reference="discrete", solver="rk4", steps=5, rtol=1e-11)
def test_matches_its_solver_exactly(assert_gradient_correct):
    assert_gradient_correct(rk4_backprop, PROBLEM)


@pytest.mark.adjoint_verify(rtol=1e-11)
def test_is_not_the_continuous_gradient_to_rounding(assert_gradient_correct):
    assert_gradient_correct(rk4_backprop, PROBLEM)
''')
    result = pytester.runpytest("-q")
    result.assert_outcomes(passed=1, failed=1)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["--adjoint-verify-reference", "nope"], "invalid choice", id="reference"),
        pytest.param(["--adjoint-verify-rtol", "x"], "invalid float value", id="rtol"),
    ],
)
def test_bad_options_are_usage_errors(pytester, argv, message):
    pytester.makepyfile(test_x="def test_x():\n    assert True\n")
    result = pytester.runpytest(*argv)
    assert result.ret != 0
    result.stderr.fnmatch_lines([f"*{message}*"])


@pytest.mark.parametrize("on_ci", [False, True], ids=["local", "ci"])
def test_a_failure_prints_the_table_once_and_no_library_frames(pytester, monkeypatch, on_ci):
    # on CI (the variable CI set) pytest's short summary repeats a failure's whole message
    if on_ci:
        monkeypatch.setenv("CI", "true")
    else:
        monkeypatch.delenv("CI", raising=False)
        monkeypatch.delenv("BUILD_NUMBER", raising=False)
    pytester.makepyfile(test_grads=WRONG_AND_RIGHT)
    result = pytester.runpytest("-q", "-k", "wrong")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert out.count("== wrong [FAIL]") == 1, out
    assert "During handling of the above exception" not in out
    for library_file in ("pytest_plugin.py", "_assertions.py", "_audit_gradient.py"):
        assert library_file not in out, out
    result.stdout.fnmatch_lines(["*assert_gradient_correct(wrong, PROBLEM)*"])
    # one summary line (cut to the terminal's width unless on CI)
    summary = "FAILED test_grads.py::test_wrong - GradientMismatch: the gradient is wrong"
    if on_ci:
        summary += ": 0 of 3 checks passed, 3 failed (the audit table is in the failure above)"
    result.stdout.fnmatch_lines([summary + ("" if on_ci else "*")])


HYPOTHESIS_TEST = '''
import dataclasses

import numpy as np
from hypothesis import given, settings, strategies as st
from numeric import gradient
from verification import builtin_problem

PROBLEM = builtin_problem("linear")


def branching(z0, theta, times):
    g = gradient(PROBLEM.dynamics, z0, theta, times, loss=PROBLEM.loss, method="exact")
    dz0 = g.z0
    if z0[0, 0] > 0.5:
        dz0 = dz0 * 1.5  # THE BUG
    return dz0, g.theta, g.times


def smooth(z0, theta, times):
    g = gradient(PROBLEM.dynamics, z0, theta, times, loss=PROBLEM.loss, method="exact")
    return g.z0 * (1 + 0.5 * (z0[0, 0] > 0.5)), g.theta, g.times


@settings(max_examples=15, deadline=None)
@given(st.floats(0, 1))
def test_branching(assert_gradient_correct, x):
    problem = dataclasses.replace(PROBLEM, z0=np.array([[x, 0.5], [0.2, -0.3]]))
    assert_gradient_correct(branching, problem)


@settings(max_examples=15, deadline=None)
@given(st.floats(0, 1))
def test_smooth(assert_gradient_correct, x):
    problem = dataclasses.replace(PROBLEM, z0=np.array([[x, 0.5], [0.2, -0.3]]))
    assert_gradient_correct(smooth, problem)
'''


def test_hypothesis_explains_failures_by_the_code_under_test_only(pytester):
    """Hypothesis's explain phase reports lines only failing examples ran; the library's
    failure path (diagnoses, report) must not be among them, the code's own branch must."""
    path = pytester.makepyfile(test_hyp=HYPOTHESIS_TEST)
    bug = next(i for i, line in enumerate(path.read_text().splitlines(), start=1)
               if "THE BUG" in line)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)  # and no FailedHealthCheck for the fixture
    out = result.stdout.str()
    assert "FailedHealthCheck" not in out
    explained = [line.strip() for line in out.splitlines() if re.search(r"\.py:\d+$", line)]
    assert any(line.endswith(f"test_hyp.py:{bug}") for line in explained), out
    library = [line for line in explained
               if re.search(r"[/\\](verification|numeric|symbolic|numpy|scipy)[/\\]", line)]
    assert not library, out


NETWORK_TEST = '''
import numpy as np
import sympy as sp

from numeric import gradient
from symbolic import Dynamics
from verification import Problem

n, h = 8, 64
z = sp.MatrixSymbol("z", n, 1)
W1, b1 = sp.MatrixSymbol("W1", h, n), sp.MatrixSymbol("b1", h, 1)
W2, b2 = sp.MatrixSymbol("W2", n, h), sp.MatrixSymbol("b2", n, 1)
DYN = Dynamics(rhs=W2 * (W1 * z + b1).applyfunc(sp.tanh) + b2, state=z, params=[W1, b1, W2, b2])
LOSS = (z.T * z)[0, 0] / 2
rng = np.random.default_rng(0)
PROBLEM = Problem(dynamics=DYN, loss=LOSS, z0=rng.standard_normal((64, n)),
                  theta=0.2 * rng.standard_normal(DYN.p), times=np.array([0.0, 0.5, 1.0]))


def my_gradient(z0, theta, times):
    g = gradient(DYN, z0, theta, times, loss=LOSS, method="discrete_adjoint", solver="rk4",
                 steps=200)
    return g.z0, g.theta, g.times


def my_wrong_gradient(z0, theta, times):
    dz, dtheta, dtimes = my_gradient(z0, theta, times)
    dtheta = dtheta.copy()
    dtheta[h * n : h * n + h] *= -1  # the sign of b1's gradient flipped
    return dz, dtheta, dtimes


def test_network_gradient(assert_gradient_correct):
    assert_gradient_correct(my_gradient, PROBLEM)


def test_network_wrong_gradient(assert_gradient_correct):
    assert_gradient_correct(my_wrong_gradient, PROBLEM)
'''


def test_plugin_audits_a_width_64_network(pytester):
    """The fixture at network size (1,096 parameters, a batch of 64): a reference certified
    along random directions, a pass, and a failure naming the parameter matrix."""
    pytester.makepyfile(test_network=NETWORK_TEST)
    result = pytester.runpytest("-q")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*certified along*random directions*", "*b1: opposite sign*"])
