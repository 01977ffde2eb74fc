"""The learning examples, in a short configuration: recovered parameters and final loss."""

import pathlib
import sys

import numpy as np
import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))

import learn_linear_dynamics as linear  # noqa: E402
import learn_nonlinear_dynamics as nonlinear  # noqa: E402


def test_linear_example_recovers_w_star():
    setup = linear.make_setup()
    result = linear.train(setup, iterations=60, audit_every=5)
    assert not result.stopped_by_audit
    assert linear.relative_error(result, setup.w_true) <= 1e-3
    assert result.history[-1][1] <= 1e-10 * result.history[0][1]
    assert sum(1 for h in result.history if h[3] == "pass") >= 2


def test_linear_example_with_noise_lands_near_w_star():
    setup = linear.make_setup(noise=0.01, seed=4)
    result = linear.train(setup, iterations=60)
    assert not result.stopped_by_audit
    # noise of 0.01 on 40 observations moves the least-squares optimum by ~1e-3..1e-2
    assert linear.relative_error(result, setup.w_true) <= 5e-2


def test_backsolve_on_contracting_dynamics_is_stopped_by_the_audit(capsys):
    assert linear.main(["--backsolve-contracting"]) == 1
    out = capsys.readouterr().out
    assert "the audit of the backsolve_adjoint gradient failed" in out
    assert "reconstruction drifted" in out
    assert "backsolve_adjoint" in out.split("training stopped")[1]


@pytest.fixture(scope="module")
def nonlinear_run():
    setup = nonlinear.make_setup(hidden=4)
    return setup, nonlinear.train(setup, iterations=60, audit_every=30)


def test_nonlinear_example_lowers_the_loss_by_two_orders(nonlinear_run):
    _, result = nonlinear_run
    assert not result.stopped_by_audit
    assert result.final_loss <= 1e-2 * result.initial_loss


def test_nonlinear_example_matches_the_data(nonlinear_run):
    setup, result = nonlinear_run
    # the trained trajectories stay within 5% of the data's range at every observation
    assert nonlinear.fit_error(setup, result) <= 0.05
    assert np.all(np.isfinite(nonlinear.trajectories(setup, result.theta)))


def test_linear_cli_prints_the_loss_table(capsys):
    assert linear.main(["--iterations", "30"]) == 0
    out = capsys.readouterr().out
    assert "learned W" in out and "relative error" in out
    assert "   0 " in out and " pass" in out  # the loss table, first row audited
