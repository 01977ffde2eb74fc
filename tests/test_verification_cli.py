"""The adjoint-verify command line: verdicts, exit codes, one-line errors."""

import json
import subprocess
import sys

import pytest

from verification._cli import main


def test_list_names_every_builtin_problem(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("linear", "tanh", "lotka_volterra", "van_der_pol", "forced_oscillator"):
        assert name in out


def test_audit_json_is_machine_readable(capsys):
    assert main(["audit", "--problem", "linear", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["passed"] is True
    assert {row["block"] for row in data["rows"]} == {"z0", "theta", "times"}


def test_failed_check_exits_one(capsys):
    assert main(["audit", "--problem", "contracting"]) == 1
    out = capsys.readouterr().out
    assert "backsolve_adjoint" in out and "FAIL" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["audit", "--problem", "nope"], "unknown problem 'nope'", id="problem"),
        pytest.param(["audit"], "--problem", id="missing-problem"),
        pytest.param(["frobnicate"], "invalid choice", id="command"),
        pytest.param(["audit", "--problem", "linear", "--rtol", "-1"], "> 0", id="rtol"),
        pytest.param(["audit", "--problem", "linear", "--solver", "rk4", "--rtol", "1e-3"],
                     "apply to the adaptive solver", id="rtol-fixed-step"),
        pytest.param(["audit", "--problem", "linear", "--solver", "rk4", "--steps", "0"],
                     "--steps must be a positive integer", id="steps"),
        pytest.param([], "give a command", id="no-command"),
    ],
)
def test_usage_errors_are_one_line_with_exit_two(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_console_script_demo_passes():
    result = subprocess.run(
        [sys.executable, "-m", "verification._cli", "demo"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert any(line.startswith("PASS: ") for line in result.stdout.splitlines())
    assert "observed order 4.0" in result.stdout  # rk4's discrete adjoint in the demo


def test_a_closed_pipe_ends_quietly():
    """`adjoint-verify list | head -1`: the reader is gone before the output is written."""
    proc = subprocess.Popen([sys.executable, "-m", "verification._cli", "list"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # no reader left: every write raises BrokenPipeError
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert err == ""


def test_plot_without_matplotlib_fails_before_the_study(monkeypatch, capsys):
    import importlib.util

    import verification._cli as cli

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else find_spec(name, *a))
    monkeypatch.setattr(cli, "convergence_study", lambda *a, **k: pytest.fail("study ran"))
    assert main(["convergence", "--problem", "linear", "--plot", "order.png"]) == 2
    err = capsys.readouterr().err
    assert "--plot needs matplotlib: pip install 'adjoint-verify[plot]'" in err
    assert len(err.strip().splitlines()) == 1
