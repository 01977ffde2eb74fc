"""The error measure (MATH.md, "Error measure"): every entry on its own term scale, no
floor from another block. Wrong gradients that a blockwise measure passed must fail; correct
ones must pass; the report names the measure and each row's worst entry."""

import json

import numpy as np
import pytest
import sympy as sp

from numeric import InputError, gradient
from symbolic import Dynamics
from verification import audit, audit_gradient, block_error
from verification._tolerances import compare_block, entry_scales

Z = sp.symbols("z0:2")
W = sp.Matrix(2, 2, sp.symbols("w0:4"))
C = sp.Symbol("c")
HALF_NORM = sp.Rational(1, 2) * (Z[0] ** 2 + Z[1] ** 2)
SEED = Dynamics(rhs=W * sp.Matrix(Z), state=Z, params=W)
#: a parameter of small influence: dL/dc is 1e-8 of the other parameter entries
SMALL_INFLUENCE = Dynamics(rhs=W * sp.Matrix(Z) + 1e-8 * C * sp.Matrix(Z), state=Z,
                           params=[*W, C])
ROTATION = np.array([-0.5, 1.0, -1.0, -0.2])
DECAY = np.array([-1.0, 0.0, 0.0, -1.5])

#: name -> (dynamics, z0, theta, times)
PROBLEMS = {
    "state-1e6": (SEED, 1e6 * np.array([[1.0, 0.5], [0.2, -0.3]]), ROTATION,
                  np.array([0.0, 0.5, 1.0])),
    "small-influence": (SMALL_INFLUENCE, np.array([[1.0, 0.5], [0.2, -0.3]]),
                        np.append(ROTATION, 0.7), np.array([0.0, 0.5, 1.0])),
    "small-sample": (SEED, np.array([[1.0, 0.5], [1e-4, -2e-4]]), ROTATION,
                     np.array([0.0, 0.5, 1.0])),
    "decayed-time": (SEED, np.array([[1.0, 0.5]]), DECAY, np.array([0.0, 1.0, 12.0])),
}


def _exact(problem):
    dynamics = PROBLEMS[problem][0]

    def grad(z0, theta, times):
        g = gradient(dynamics, z0, theta, times, loss=HALF_NORM, method="exact")
        return g.z0.copy(), g.theta.copy(), g.times.copy()

    return grad


def _changed(problem, block, index, change):
    """The exact gradient with one entry changed by ``change(value)``."""
    exact = _exact(problem)

    def grad(z0, theta, times):
        blocks = dict(zip(("z0", "theta", "times"), exact(z0, theta, times), strict=True))
        blocks[block][index] = change(blocks[block][index])
        return blocks["z0"], blocks["theta"], blocks["times"]

    return grad


def _block_scaled(problem, block, factor):
    exact = _exact(problem)

    def grad(z0, theta, times):
        blocks = dict(zip(("z0", "theta", "times"), exact(z0, theta, times), strict=True))
        blocks[block] = blocks[block] * factor
        return blocks["z0"], blocks["theta"], blocks["times"]

    return grad


def _audit(problem, fn, **kwargs):
    dynamics, z0, theta, times = PROBLEMS[problem]
    return audit_gradient(dynamics, fn, z0, theta, times, loss=HALF_NORM, **kwargs)


#: (problem, wrong implementation, rtol, the worst entry the failure names, whether the
#: block's 2-norm alone (measure="normwise") sees it)
WRONG = [
    pytest.param("state-1e6", _block_scaled("state-1e6", "z0", 1.1), 1e-4, "z0[", True,
                 id="dz0-10pct-under-1e12-theta"),
    pytest.param("small-influence", _changed("small-influence", "theta", 4, lambda v: -v),
                 1e-6, "theta[4] (c)", False, id="dc-sign-flipped"),
    pytest.param("small-influence", _changed("small-influence", "theta", 4, lambda v: 0.0),
                 1e-6, "theta[4] (c)", False, id="dc-zeroed"),
    pytest.param("small-influence", _changed("small-influence", "theta", 4, lambda v: 30 * v),
                 1e-6, "theta[4] (c)", False, id="dc-30x"),
    pytest.param("small-sample", _changed("small-sample", "z0", (1, 0), lambda v: 1.1 * v),
                 1e-4, "z0[1, 0]", False, id="small-sample-10pct"),
    pytest.param("decayed-time", _changed("decayed-time", "times", 2, lambda v: -v),
                 1e-6, "times[2]", False, id="small-times-entry-sign"),
    pytest.param("state-1e6", _changed("state-1e6", "theta", 3, lambda v: v * (1 + 1e-3)),
                 1e-4, "theta[3] (w3)", True, id="one-theta-entry-1e-3"),
]


@pytest.mark.parametrize(("problem", "fn", "rtol", "entry", "normwise_sees_it"), WRONG)
def test_wrong_gradients_fail_on_their_own_scale(problem, fn, rtol, entry,
                                                 normwise_sees_it):
    report = _audit(problem, fn, rtol=rtol)
    assert not report.passed, str(report)
    assert len(report.failures) == 1
    assert report.failures[0].entry.startswith(entry), str(report)
    # the blockwise measure, kept as an option, is what passed these before
    normwise = _audit(problem, fn, rtol=rtol, measure="normwise")
    assert normwise.passed != normwise_sees_it, str(normwise)


@pytest.mark.parametrize("problem", list(PROBLEMS))
@pytest.mark.parametrize("method", ["exact", "interpolated_adjoint", "forward_sensitivity"])
def test_correct_gradients_pass_everywhere(problem, method):
    dynamics, z0, theta, times = PROBLEMS[problem]

    def grad(z0, theta, times):
        g = gradient(dynamics, z0, theta, times, loss=HALF_NORM, method=method,
                     **({} if method == "exact" else {"rtol": 1e-10, "atol": 1e-12}))
        return g.z0, g.theta, g.times

    report = audit_gradient(dynamics, grad, z0, theta, times, loss=HALF_NORM)
    assert report.passed, str(report)


@pytest.mark.parametrize("problem", ["state-1e6", "small-influence", "decayed-time"])
def test_every_library_method_passes_its_audit(problem):
    dynamics, z0, theta, times = PROBLEMS[problem]
    report = audit(dynamics, z0, theta, times, loss=HALF_NORM)
    assert report.passed, str(report)


def test_report_names_the_measure_and_the_worst_entry():
    report = _audit("small-influence", _changed("small-influence", "theta", 4, lambda v: -v))
    row = report.failures[0]
    assert "error measure: componentwise" in report.format()
    assert "theta[4] (c)" in report.format()
    assert "componentwise: the largest over a block's entries" in report.format()
    assert "| theta[4] (c) |" in report.to_markdown()
    assert "error measure: componentwise" in report.to_markdown()
    data = json.loads(report.to_json())
    assert data["problems"][0]["measure"] == "componentwise"
    assert {r["entry"] for r in data["rows"] if not r["passed"]} == {"theta[4] (c)"}
    assert row.error > 1.0 > row.tolerance
    normwise = _audit("small-influence", _changed("small-influence", "theta", 4, lambda v: -v),
                      measure="normwise")
    assert "error measure: normwise" in normwise.format()


@pytest.mark.parametrize(
    ("value", "reference", "terms", "expected"),
    [
        pytest.param([1.0, 2.0], [1.0, 2.0], None, 0.0, id="equal"),
        pytest.param([1.1, 1e-8], [1.0, 1e-8], None, 0.1, id="large-entry"),
        pytest.param([1.0, 2e-8], [1.0, 1e-8], None, 1.0, id="small-entry-own-scale"),
        pytest.param([1.0, 2e-8], [1.0, 1e-8], [1.0, 1e-6], 1e-2, id="small-entry-terms"),
        # a structurally zero entry: judged on ROUNDING times the block's own largest scale
        pytest.param([1.0, 1e-13], [1.0, 0.0], None, 0.1, id="structural-zero"),
        pytest.param([np.inf, 0.0], [1.0, 0.0], None, np.inf, id="not-finite"),
    ],
)
def test_block_error_is_the_worst_entry_on_its_own_scale(value, reference, terms, expected):
    error = block_error(np.array(value), np.array(reference),
                        None if terms is None else np.array(terms))
    assert error == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_floor_comes_from_the_block_itself_never_from_another():
    scales = entry_scales(np.array([1e-8, 0.0]), np.array([2e-8, 0.0]))
    assert scales[0] == 2e-8 and scales[1] == pytest.approx(2e-20)
    verdict = compare_block(np.array([1e-8, 1e-9]), np.array([1e-8, 0.0]), rtol=1e-6)
    assert not verdict.passed and verdict.index == 1


def test_atol_is_per_entry_and_the_verdict_is_its_worst_entry():
    verdict = compare_block(np.array([1.0 + 2e-6, 5e-7]), np.array([1.0, 0.0]), rtol=1e-6,
                            atol=1e-6)
    assert not verdict.passed and verdict.index == 0  # 2e-6 > 1e-6 * 1 + 1e-6
    assert verdict.error > verdict.tolerance


def test_unknown_measure_is_an_input_error():
    with pytest.raises(InputError, match="`measure` must be one of 'componentwise', "
                       "'normwise', got 'maxnorm'"):
        _audit("state-1e6", _exact("state-1e6"), measure="maxnorm")
