"""audit_gradient's contract: the form of what it accepts, its tolerances and references."""

import numpy as np
import pytest
from mutants import linear_gradient

from numeric import InputError, gradient
from verification import GradientShapeError, audit_gradient, builtin_problem
from verification._audit_gradient import ImplementationError
from verification._cli import main
from verification._references import best_reference
from verification._tolerances import block_error

SEED = builtin_problem("linear")


def _audit(fn, **kwargs):
    return audit_gradient(SEED.dynamics, fn, SEED.z0, SEED.theta, SEED.times, loss=SEED.loss,
                          **kwargs)


@pytest.mark.parametrize(
    ("fn", "error", "message"),
    [
        pytest.param(lambda *a: linear_gradient(*a)[0], GradientShapeError,
                     r"must return a tuple \(dz0, dtheta\)", id="not-a-tuple"),
        pytest.param(lambda *a: (*linear_gradient(*a), 0.0), GradientShapeError,
                     r"of length 4", id="four-blocks"),
        pytest.param(lambda *a: (linear_gradient(*a)[0].ravel(), *linear_gradient(*a)[1:]),
                     GradientShapeError, r"block `z0` .* shape \(4,\), expected \(2, 2\)",
                     id="z0-flattened"),
        pytest.param(lambda *a: (linear_gradient(*a)[0], linear_gradient(*a)[1][:3]),
                     GradientShapeError, r"block `theta` .* shape \(3,\), expected \(4,\)",
                     id="theta-short"),
        pytest.param(lambda *a: (linear_gradient(*a)[0], linear_gradient(*a)[1] + 0j),
                     GradientShapeError, r"dtype complex128", id="complex"),
        pytest.param(lambda *a: 1 / 0, ImplementationError, r"raised ZeroDivisionError",
                     id="raises"),
    ],
)
def test_malformed_implementations_are_clear_errors(fn, error, message):
    with pytest.raises(error, match=message):
        _audit(fn)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"rtol": 0.0}, r"`rtol` must be a finite number > 0", id="rtol-zero"),
        pytest.param({"rtol": 1e-14}, r"below what the reference", id="rtol-too-tight"),
        pytest.param({"atol": -1.0}, r"`atol` must be a finite number >= 0", id="atol"),
        pytest.param({"reference": "oracle"}, r"`reference` must be one of", id="reference"),
    ],
)
def test_bad_options(kwargs, message):
    with pytest.raises(InputError, match=message):
        _audit(linear_gradient, **kwargs)


def test_non_finite_gradient_fails_not_errors():
    report = _audit(lambda *a: (linear_gradient(*a)[0] * np.nan, *linear_gradient(*a)[1:]))
    assert not report.passed
    assert "inf or nan" in report.failures[0].diagnosis


def test_atol_admits_an_error_on_the_gradient_scale():
    def off(z0, theta, times):
        dz0, dtheta, dtimes = linear_gradient(z0, theta, times)
        return dz0, dtheta + 1e-7, dtimes

    assert not _audit(off, rtol=1e-9).passed
    report = _audit(off, rtol=1e-9, atol=1e-6)
    assert report.passed
    assert all(r.tolerance > 1e-9 for r in report.rows)


def test_reference_follows_the_accuracy_the_verdict_needs():
    problem = builtin_problem("van_der_pol")
    from numeric._checks import check_compiled

    compiled = check_compiled(problem.dynamics, problem.loss)
    loose = best_reference(compiled, problem.z0, problem.theta, problem.times, accuracy=1e-6)
    tight = best_reference(compiled, problem.z0, problem.theta, problem.times, accuracy=1e-12)
    assert loose.label == "forward_sensitivity@1e-13"
    assert tight.label == "high_precision"
    # the float64 reference's estimated error bounds its distance to high precision
    terms = loose.gradient.info["term_scale"]
    for block in ("z0", "theta", "times"):
        assert block_error(getattr(loose.gradient, block), getattr(tight.gradient, block),
                           terms[block]) <= loose.error


def test_cli_check_reports_a_crashing_implementation_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text("def grad(z0, theta, times):\n    raise RuntimeError('boom')\n")
    assert main(["check", "references/linear.json", "--impl", f"{bad}:grad"]) == 2
    err = capsys.readouterr().err
    assert "raised RuntimeError: boom" in err and len(err.strip().splitlines()) == 1


def test_library_gradient_passes_with_discrete_reference_on_its_grid():
    def rk4(z0, theta, times):
        g = gradient(SEED.dynamics, z0, theta, times, loss=SEED.loss,
                     method="discrete_adjoint", solver="rk4", steps=3)
        return g.z0, g.theta, g.times

    assert _audit(rk4, reference="discrete", solver="rk4", steps=3, rtol=1e-11).passed
    assert not _audit(rk4, rtol=1e-11).passed
