"""``adjoint-verify peers``: the table of every gradient mode of torchdiffeq and diffrax, its
verdicts and diagnoses, exit codes, and the one-line error when an extra is missing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import import_extra

from verification import builtin_problem
from verification._cli import main
from verification.adapters import MissingExtra, diffrax_gradient, torchdiffeq_gradient


def _label(mode) -> str:
    from verification._peers import _short_label

    return _short_label(mode.build(builtin_problem("van_der_pol")))


def test_import_needs_neither_torch_nor_jax():
    code = ("import sys, verification, verification.adapters, verification._peers, "
            "verification._cli; print(sorted(m for m in ('torch', 'jax', 'torchdiffeq', "
            "'diffrax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(("hidden", "build", "command"), [
    pytest.param("torchdiffeq", torchdiffeq_gradient,
                 "pip install torch==2.13.0 'adjoint-verify[torch]'", id="torch"),
    pytest.param("diffrax", diffrax_gradient, "pip install 'adjoint-verify[jax]'", id="jax"),
])
def test_missing_extra_is_a_one_line_error_naming_the_install(monkeypatch, hidden, build,
                                                              command):
    from verification import builtin_problem

    monkeypatch.setitem(sys.modules, hidden, None)  # as if not installed
    problem = builtin_problem("linear")
    with pytest.raises(MissingExtra, match=rf"{hidden} is not installed; .*") as info:
        build(problem.dynamics, problem.loss)
    assert str(info.value).endswith(command) and "\n" not in str(info.value)


def test_cli_names_the_install_when_a_library_is_missing(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "diffrax", None)
    assert main(["peers", "--library", "diffrax"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'adjoint-verify[jax]'" in err and len(err.strip().splitlines()) == 1


def test_cli_usage_errors(capsys):
    assert main(["peers", "--problem", "nope"]) == 2
    assert "unknown problem 'nope'" in capsys.readouterr().err
    assert main(["peers", "--library", "tensorflow"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_torchdiffeq_table_on_contracting(capsys):
    """Exit 1: odeint_adjoint fails with the reconstruction diagnosis, torchdiffeq's own
    step_size grid with zero observation-time gradients; the fixed-grid modes pass at
    rounding against our matching tableau, float32 at float32's tier."""
    import_extra("torchdiffeq")
    assert main(["peers", "--library", "torchdiffeq", "--problem", "contracting"]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()

    def line(start: str) -> str:
        return next(x for x in lines if x.strip().startswith(start))

    assert "FAIL" in line("odeint_adjoint dopri5 rtol=1e-07 float64")
    assert "backward reconstruction of z drifted" in out
    assert "FAIL" in line("odeint rk4 step_size=")
    assert "entries times[1] are zero where the reference is not" in out
    for mode in ("euler", "midpoint", "rk4", "heun2", "heun3"):
        row = line(f"odeint {mode} 32/interval float64")
        assert "pass" in row and "1e-11" in row
    assert "ours: rk4_38 on the same grid" in line("odeint rk4 32/interval float64")
    assert "5e-04" in line("odeint rk4 32/interval float32")
    assert "float32's rounding tier" in out
    # explicit_adams: backpropagation is the derivative of the Adams–Bashforth map
    assert "pass" in line("odeint explicit_adams 32/interval float64")
    assert "ours: adams_bashforth on the same grid" in out


def test_a_diverging_adams_bashforth_map_gets_no_verdict():
    """van der Pol at 32 steps per interval: the order-11 formula's map overflows, so there
    is no reference; the row says why instead of passing or failing."""
    import_extra("torchdiffeq")
    from verification._peers import _audit_mode, peer_modes

    mode = next(m for m in peer_modes("torchdiffeq")
                if _label(m) == "odeint explicit_adams 32/interval float64")
    report = _audit_mode(builtin_problem("van_der_pol"), mode, "torchdiffeq / van_der_pol")
    assert not report.rows
    assert "no exact reference: the Adams–Bashforth map became non-finite" in (
        report.skipped[0].reason)


def test_peers_leave_out_stiff_problems_and_refuse_them_by_name(capsys):
    from verification._peers import PEER_PROBLEMS

    assert "robertson" not in PEER_PROBLEMS and "network" in PEER_PROBLEMS
    assert main(["peers", "--problem", "robertson"]) == 2
    assert "'robertson' is stiff" in capsys.readouterr().err


def test_torchdiffeq_json_on_the_matrix_form_network(capsys):
    """The built-in network in matrix form (one nn.Parameter per matrix): every mode passes
    but torchdiffeq's own step_size grid, whose observation-time gradients are missing."""
    import_extra("torchdiffeq")
    assert main(["peers", "--library", "torchdiffeq", "--problem", "network", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    failed = {(row["method"], row["block"]) for row in data["rows"] if not row["passed"]}
    assert failed == {("odeint rk4 step_size=0.015625 float64", "times")}
    assert data["problems"][0]["name"] == "torchdiffeq / network"
    assert "82 parameters" in data["problems"][0]["description"]


def test_diffrax_table_on_a_smooth_problem_passes(capsys):
    """Every diffrax mode on the seed problem: fixed steps at rounding against our matching
    tableau, the three adjoints against the exact gradient at O(rtol), BacksolveAdjoint's
    missing time gradient listed as not provided, not failed."""
    import_extra("diffrax")
    assert main(["peers", "--library", "diffrax", "--problem", "linear"]) == 0
    out = capsys.readouterr().out
    for mode in ("Euler", "Midpoint", "Heun", "Ralston", "Bosh3", "Tsit5"):
        assert f"RecursiveCheckpointAdjoint {mode} 32/interval float64" in out
    for adjoint in ("RecursiveCheckpointAdjoint", "DirectAdjoint", "BacksolveAdjoint"):
        assert f"{adjoint} Dopri5 rtol=1e-08 float64" in out
    assert ("(not provided: BacksolveAdjoint Dopri5 rtol=1e-08 float64: dL/dtimes: diffrax's "
            "BacksolveAdjoint differentiates y0 and args only") in out
    assert "1 block(s) not provided by the implementation" in out
