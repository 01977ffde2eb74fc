"""Audits at network size: directional references, the certified reference vector, the
strategy chosen by cost, and buggy network gradients named by their parameter matrix
(at a small width, with the directional strategy asked for, to keep the suite fast)."""

import numpy as np
import pytest
import sympy as sp
from helpers import ROUNDING

from numeric import gradient
from numeric._checks import check_problem
from numeric._directional import Direction, tangent_directional
from symbolic import Dynamics
from verification import audit, audit_gradient
from verification._scale import (
    CERTIFY_FRACTION,
    certified_adjoint,
    per_entry_affordable,
)

N, WIDTH, BATCH = 3, 6, 5
TIMES = np.array([0.0, 0.4, 0.7, 1.0])


def network(n=N, width=WIDTH, time=False):
    z = sp.MatrixSymbol("z", n, 1)
    W1, b1 = sp.MatrixSymbol("W1", width, n), sp.MatrixSymbol("b1", width, 1)
    W2, b2 = sp.MatrixSymbol("W2", n, width), sp.MatrixSymbol("b2", n, 1)
    t = sp.Symbol("t")
    inner = W1 * z + b1 + (t * sp.MatrixSymbol("w_t", width, 1) if time else sp.ZeroMatrix(
        width, 1))
    params = [W1, b1, W2, b2] + ([sp.MatrixSymbol("w_t", width, 1)] if time else [])
    dyn = Dynamics(rhs=W2 * inner.applyfunc(sp.tanh) + b2, state=z, params=params,
                   time=t if time else None)
    return dyn, (z.T * z)[0, 0] / 2


def inputs(dyn, batch=BATCH, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, dyn.n)), 0.5 * rng.standard_normal(dyn.p)


def slices(dyn):
    out, start = {}, 0
    for name, shape in dyn.param_shapes.items():
        size = int(np.prod(shape)) if shape else 1
        out[name] = slice(start, start + size)
        start += size
    return out


@pytest.fixture(scope="module")
def setup():
    dyn, loss = network()
    z0, theta = inputs(dyn)

    def correct(z, th, t):
        g = gradient(dyn, z, th, t, loss=loss, method="quadrature_adjoint", rtol=1e-11,
                     atol=1e-13)
        return g.z0, g.theta, g.times

    return dyn, loss, z0, theta, correct


@pytest.mark.parametrize("time", [False, True], ids=["autonomous", "time-dependent"])
def test_tangent_directional_derivative_is_the_gradient_along_v(time):
    """v^T g from the tangent system equals the 30-digit gradient dotted with v, within
    the error bound it states (times moved too)."""
    dyn, loss = network(2, 3, time=time)
    z0, theta = inputs(dyn, batch=2)
    checked = check_problem(dyn, loss, z0, theta, TIMES)
    rng = np.random.default_rng(4)
    v = Direction(rng.standard_normal(z0.shape), rng.standard_normal(dyn.p),
                  0.01 * rng.standard_normal(TIMES.shape))
    truth = gradient(dyn, z0, theta, TIMES, loss=loss, method="high_precision")
    result = tangent_directional(checked.compiled, checked.z0, checked.theta, checked.times, v)
    expected = v.dot(truth.z0, truth.theta, truth.times)
    assert abs(result.value - expected) <= result.error
    assert result.error <= 1e-9 * result.info["scale"]


def test_certified_reference_bounds_its_own_error(setup):
    """The certificate is an upper bound: the certified vector's every entry is within the
    certified error of the 30-digit gradient, on the entries' scales."""
    dyn, loss, z0, theta, _ = setup
    checked = check_problem(dyn, loss, z0, theta, TIMES)
    g, terms, error, certificate = certified_adjoint(checked.compiled, checked.z0,
                                                     checked.theta, checked.times, seed=3)
    assert not certificate.caveat and error < 1e-7
    assert certificate.directions == 4 * (1 + 4 + 1)  # z0, W1, b1, W2, b2, times
    truth = gradient(dyn, z0, theta, TIMES, loss=loss, method="forward_sensitivity",
                     rtol=1e-13, atol=1e-15)
    for block in ("z0", "theta", "times"):
        scale = np.maximum(np.abs(getattr(truth, block)), terms[block])
        deviation = np.abs(getattr(g, block) - getattr(truth, block)) / scale
        # the 1e-13 forward sensitivity carries ~1e-10 of its own: room for it, not more
        assert np.max(deviation) <= error + 1e-9, block
    assert 0 < CERTIFY_FRACTION < 1


def test_verdicts_beyond_a_float64_certificate_are_certified_in_double_double():
    """At an rtol the float64 tangent cannot certify, the same directions are computed in
    double-double and the reference adjoint tightened: the certificate falls below 1e-11,
    the 30-digit gradient passes at rtol 1e-10 and one entry of W1 off by 1e-8 fails,
    named."""
    dyn, loss = network(2, 3)
    z0, theta = inputs(dyn, batch=2)
    checked = check_problem(dyn, loss, z0, theta, TIMES)
    _, _, float64_error, plain = certified_adjoint(checked.compiled, checked.z0,
                                                   checked.theta, checked.times)
    assert plain.precision == "float64 tangent"
    _, _, error, certificate = certified_adjoint(checked.compiled, checked.z0, checked.theta,
                                                 checked.times, accuracy=1e-10)
    assert "double-double" in certificate.precision and not certificate.caveat
    assert error <= 1e-11 < 10 * float64_error
    truth = gradient(dyn, z0, theta, TIMES, loss=loss, method="high_precision")

    def exact(z, th, t):
        return truth.z0, truth.theta, truth.times

    report = audit_gradient(dyn, exact, z0, theta, TIMES, loss=loss, rtol=1e-10,
                            strategy="directional")
    assert report.passed, str(report)
    assert "double-double references" in report.problems[0].reference

    def off(z, th, t):
        bad = truth.theta.copy()
        bad[0] *= 1 + 1e-8
        return truth.z0, bad, truth.times

    report = audit_gradient(dyn, off, z0, theta, TIMES, loss=loss, rtol=1e-10,
                            strategy="directional")
    assert not report.passed and "W1[0, 0]" in str(report)


def test_strategy_follows_the_cost_of_per_entry_references():
    dyn, loss = network()
    small = check_problem(dyn, loss, *inputs(dyn), TIMES).compiled
    assert per_entry_affordable(small, np.zeros((BATCH, N)))
    big, _ = network(16, 64)
    compiled = check_problem(big, (sp.MatrixSymbol("z", 16, 1).T * sp.MatrixSymbol(
        "z", 16, 1))[0, 0] / 2, np.zeros((256, 16)), np.zeros(big.p), TIMES).compiled
    assert not per_entry_affordable(compiled, np.zeros((256, 16)))


def test_correct_gradient_passes_and_the_report_says_how(setup):
    dyn, loss, z0, theta, correct = setup
    report = audit_gradient(dyn, correct, z0, theta, TIMES, loss=loss, strategy="directional",
                            seed=11)
    assert report.passed, str(report)
    notes = " ".join(report.problems[0].notes)
    assert "directional" in notes and "seed 11" in notes and "24 random directions" in notes
    assert "solves" in notes and " s in all" in notes
    assert "certified along 24 random directions" in report.problems[0].reference


def _mutants(dyn, correct):
    part = slices(dyn)

    def edit(fn):
        def grad(z, th, t):
            dz, dth, dt = correct(z, th, t)
            return fn(dz, dth.copy(), dt.copy(), z)
        return grad

    def flip_b1(dz, dth, dt, z):
        dth[part["b1"]] *= -1
        return dz, dth, dt

    def w2_mean(dz, dth, dt, z):
        dth[part["W2"]] /= z.shape[0]
        return dz, dth, dt

    def reorder(dz, dth, dt, z):
        return dz, np.concatenate([dth[part[k]] for k in ("W2", "b2", "W1", "b1")]), dt

    def one_entry(dz, dth, dt, z):
        dth[part["W1"].start + 4] *= 1 + 1e-4
        return dz, dth, dt

    def times_zero(dz, dth, dt, z):
        return dz, dth, np.zeros_like(dt)

    return {
        "b1-sign": (edit(flip_b1), "theta", "b1: opposite sign"),
        "W2-mean": (edit(w2_mean), "theta", "W2: scaled by a constant"),
        "reordered": (edit(reorder), "theta", "concatenated in another order"),
        "one-entry": (edit(one_entry), "theta", "W1: largest deviation at W1[1, 1]"),
        "times-zero": (edit(times_zero), "times", "observation-time gradients"),
    }


@pytest.mark.parametrize("case", ["b1-sign", "W2-mean", "reordered", "one-entry",
                                  "times-zero"])
def test_buggy_network_gradients_fail_naming_what_is_wrong(setup, case):
    dyn, loss, z0, theta, correct = setup
    fn, block, phrase = _mutants(dyn, correct)[case]
    report = audit_gradient(dyn, fn, z0, theta, TIMES, loss=loss, strategy="directional")
    assert not report.passed
    failed = {row.block: row for row in report.failures}
    assert block in failed, str(report)
    assert phrase in failed[block].diagnosis, failed[block].diagnosis
    if case == "W2-mean":
        assert f"1/B with batch size B = {BATCH}" in failed[block].diagnosis


def test_audit_at_network_size_checks_discrete_methods_along_directions():
    """Where complex step and finite differences per entry exceed their budget, the audit
    checks them along random directions: the discrete adjoint to rounding."""
    dyn, loss = network()
    z0, theta = inputs(dyn)
    report = audit(dyn, z0, theta, TIMES, loss=loss, name="net", solver="rk4", steps=20,
                   strategy="directional")
    assert report.passed, str(report)
    assert any(r.method == "finite_difference (directional)" for r in report.rows)
    along = [r for r in report.rows if r.reference.startswith("complex_step along")
             and r.method == "discrete_adjoint"]
    assert along and all(r.tolerance == ROUNDING for r in along)
    assert any("random directions" in note for note in report.problems[0].notes)
