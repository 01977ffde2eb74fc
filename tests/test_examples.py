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


import learn_spiral as spiral  # noqa: E402


def test_spiral_example_learns_the_spiral_with_audited_gradients():
    """A short run of the width-50 spiral: the window loss falls a hundredfold and every
    audit on the way passes."""
    setup = spiral.make_setup(windows=12, points=400, span=10.0)
    result = spiral.train(setup, iterations=40, audit_every=20)
    assert not result.stopped_by_audit
    assert sum(1 for row in result.history if row[3] == "pass") >= 2
    assert result.final_loss <= 1e-2 * result.initial_loss


def test_audit_of_the_spiral_model_passes_and_names_what_it_skipped():
    from verification import audit

    setup = spiral.make_setup(windows=3, window=4)
    report = audit(setup.model, setup.z0, setup.theta_start, setup.times, loss=spiral.LOSS,
                   targets=spiral.TARGET, data=setup.data[:, :3], name="spiral")
    assert report.passed, str(report)
    skipped = {s.method: s.reason for s in report.skipped}
    assert "exact" in skipped and "nonlinear" in skipped["exact"]
    assert "high_precision" in skipped
    assert {r.method for r in report.rows} >= {"interpolated_adjoint", "discrete_adjoint",
                                               "finite_difference"}
