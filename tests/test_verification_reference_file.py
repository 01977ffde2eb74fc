"""Reference files: round trip, tamper detection, the stored references/, and the CLI."""

import json
import pathlib

import mpmath
import numpy as np
import pytest

from numeric import gradient
from verification import builtin_problem
from verification._cli import main
from verification._problems import BUILTIN_PROBLEMS
from verification._reference_file import (
    ReferenceFileError,
    check_against_reference,
    load_reference,
    reference_document,
    write_reference,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def linear_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "linear.json"
    write_reference(builtin_problem("linear"), path)
    return path


def _library_gradient(problem):
    def grad(z0, theta, times):
        g = gradient(problem.dynamics, z0, theta, times, loss=problem.loss,
                     method="interpolated_adjoint", rtol=1e-10, atol=1e-12)
        return g.z0, g.theta, g.times

    return grad


def test_round_trip_passes_against_our_own_gradient(linear_file):
    loaded = load_reference(linear_file)
    problem = loaded.problem
    assert str(problem.dynamics.rhs) == str(builtin_problem("linear").dynamics.rhs)
    np.testing.assert_array_equal(problem.theta, builtin_problem("linear").theta)
    report = check_against_reference(loaded, _library_gradient(problem))
    assert report.passed, str(report)


def test_matrix_form_round_trip_keeps_the_matrices_and_catches_a_wrong_gradient(tmp_path):
    """The network stored in matrix form (a time-dependent scalar factor, a transpose, a
    Hadamard product with a constant, a scalar parameter): read back as matrix-form
    dynamics, our gradient passes, a sign flip in one matrix fails naming it."""
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    import problems

    original = problems.matrix_network()
    path = tmp_path / "net.json"
    write_reference(original, path)
    document = json.loads(path.read_text())
    assert document["dynamics"]["form"] == "matrix"
    loaded = load_reference(path)
    problem = loaded.problem
    assert problem.dynamics.form == "matrix"
    assert problem.dynamics.param_shapes == original.dynamics.param_shapes
    assert check_against_reference(loaded, _library_gradient(problem)).passed
    good = _library_gradient(problem)

    def flipped(z0, theta, times):
        g_z0, g_theta, g_times = good(z0, theta, times)
        g_theta = g_theta.copy()
        g_theta[18:24] *= -1  # b1
        return g_z0, g_theta, g_times

    report = check_against_reference(loaded, flipped)
    assert not report.passed and "b1" in str(report)


def test_document_carries_provenance(linear_file):
    document = json.loads(linear_file.read_text())
    assert document["reference"]["method"] == "high_precision"
    assert document["reference"]["digits"] == 30
    assert set(document["versions"]) >= {"adjoint-verify", "sympy", "numpy", "scipy"}
    assert len(document["sha256"]) == 64
    assert all(isinstance(x, str) for x in document["gradient"]["theta"])


def _change_one_digit(text: str) -> str:
    document = json.loads(text)
    entry = document["gradient"]["theta"][0]
    digit = entry[3]
    document["gradient"]["theta"][0] = entry[:3] + ("7" if digit != "7" else "8") + entry[4:]
    return json.dumps(document, indent=1)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        pytest.param(_change_one_digit, "fails its checksum", id="one-digit-changed"),
        pytest.param(lambda text: text[: len(text) // 2], "not valid JSON", id="truncated"),
        pytest.param(lambda text: json.dumps({"format": "other"}), "not an adjoint-verify",
                     id="other-format"),
    ],
)
def test_damaged_files_are_errors(linear_file, tmp_path, damage, message):
    bad = tmp_path / "bad.json"
    bad.write_text(damage(linear_file.read_text()))
    with pytest.raises(ReferenceFileError, match=message):
        load_reference(bad)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(ReferenceFileError, match="cannot read reference file"):
        load_reference(tmp_path / "nope.json")


#: Stiff nonlinear problems have no stored 30-digit reference: the high-precision method
#: stable on them (linearly implicit extrapolation) takes hours over Robertson's twelve
#: decades; their audits use rodas4 forward sensitivity at the accuracy the verdict needs.
WITHOUT_STORED_REFERENCE = ("robertson", "stiff_van_der_pol")


@pytest.mark.parametrize(
    "name", [name for name in BUILTIN_PROBLEMS if name not in WITHOUT_STORED_REFERENCE])
def test_stored_references_regenerate(name):
    stored_path = ROOT / "references" / f"{name}.json"
    stored = load_reference(stored_path).document  # verifies the checksum
    fresh = reference_document(builtin_problem(name))
    for key in ("dynamics", "loss", "z0", "theta", "times"):
        assert fresh[key] == stored[key], key
    assert fresh["reference"]["method"] == stored["reference"]["method"]
    digits = stored["reference"]["digits"]
    tolerance = mpmath.mpf(10) ** (1 - digits)
    with mpmath.workdps(digits + 10):
        for block in ("z0", "theta", "times"):
            new = [mpmath.mpf(x) for x in np.ravel(fresh["gradient"][block])]
            old = [mpmath.mpf(x) for x in np.ravel(stored["gradient"][block])]
            error = mpmath.norm([a - b for a, b in zip(new, old, strict=True)]) / mpmath.norm(old)
            assert error <= tolerance, f"{name} {block}: {error} > {tolerance}"


def test_high_precision_reference_keeps_its_digits():
    document = json.loads((ROOT / "references" / "van_der_pol.json").read_text())
    assert document["reference"]["method"] == "high_precision"
    assert document["reference"]["digits"] >= 28
    assert document["reference"]["error_estimate"] < 1e-28
    mantissa = document["gradient"]["theta"][0].split("e")[0].lstrip("-").replace(".", "")
    assert len(mantissa) >= 28


def test_cli_check_passes_the_hand_written_example(linear_file, capsys):
    code = main(["check", str(linear_file), "--impl", f"{EXAMPLES / 'seed_gradient.py'}:grad"])
    assert code == 0, capsys.readouterr().out


def test_cli_check_fails_the_broken_copy_with_its_diagnosis(linear_file, capsys):
    code = main(["check", str(linear_file), "--impl",
                 f"{EXAMPLES / 'seed_gradient_broken.py'}:grad"])
    out = capsys.readouterr().out
    assert code == 1
    assert "observation-time jumps are missing" in out


def test_cli_check_markdown(linear_file, capsys):
    code = main(["check", str(linear_file), "--impl",
                 f"{EXAMPLES / 'seed_gradient_broken.py'}:grad", "--format", "markdown"])
    out = capsys.readouterr().out
    assert code == 1
    assert "| method | block |" in out and "**FAIL**" in out


@pytest.mark.parametrize(
    ("argv_tail", "message"),
    [
        pytest.param(["--impl", "examples/nothing_here.py:grad"], "no such file", id="file"),
        pytest.param(["--impl", "no_such_module_xyz:grad"], "cannot import", id="module"),
        pytest.param(["--impl", "grad"], "MODULE:FUNCTION", id="spec"),
        pytest.param(["--impl", f"{EXAMPLES / 'seed_gradient.py'}:nope"], "no function",
                     id="function"),
    ],
)
def test_cli_check_bad_implementation_is_usage_error(linear_file, capsys, argv_tail, message):
    assert main(["check", str(linear_file), *argv_tail]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_check_tampered_file_is_one_line(linear_file, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(_change_one_digit(linear_file.read_text()))
    assert main(["check", str(bad), "--impl", f"{EXAMPLES / 'seed_gradient.py'}:grad"]) == 2
    err = capsys.readouterr().err
    assert "checksum" in err and len(err.strip().splitlines()) == 1


def test_cli_reference_writes_a_loadable_file(tmp_path, capsys):
    out = tmp_path / "vdp.json"
    assert main(["reference", "--problem", "van_der_pol", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert load_reference(out).problem.name == "van_der_pol"


def test_cli_convergence_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "conv.png"
    assert main(["convergence", "--problem", "linear", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "observed order" in capsys.readouterr().out


def test_single_sample_reference_keeps_its_shape(tmp_path):
    from verification import Problem

    seed = builtin_problem("linear")
    single = Problem(dynamics=seed.dynamics, loss=seed.loss, z0=seed.z0[0], theta=seed.theta,
                     times=seed.times, name="single")
    path = tmp_path / "single.json"
    write_reference(single, path)
    loaded = load_reference(path)
    assert loaded.problem.z0.shape == (2,)
    shapes = []

    def grad(z0, theta, times):
        shapes.append(z0.shape)
        g = gradient(seed.dynamics, z0, theta, times, loss=seed.loss, method="exact")
        return g.z0, g.theta, g.times

    assert check_against_reference(loaded, grad).passed
    assert shapes[0] == (2,)
