"""Reference files never run code, and every invalid entry is one line blaming the file.

Each crafted file below carries a correct sha256: the checksum detects accidents, not
forgery, so validation after it is what stands between a file and the machine."""

import copy
import json
import pathlib

import pytest

from verification import builtin_problem
from verification._cli import main
from verification._reference_file import (
    ReferenceFileError,
    _checksum,
    load_reference,
    reference_document,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]
IMPL = f"{ROOT / 'examples' / 'seed_gradient.py'}:grad"


@pytest.fixture(scope="module")
def document():
    return reference_document(builtin_problem("linear"))


def _write(tmp_path, document, name="ref.json"):
    document = copy.deepcopy(document)
    document["sha256"] = _checksum(document)
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


def _as_format_1(document):
    """The same problem as format 1 wrote it: expressions as strings."""
    old = copy.deepcopy(document)
    if old["format_version"] == 1:
        return old
    old["format_version"] = 1
    readable = old.pop("readable")
    old["dynamics"] = {key: old["dynamics"][key] for key in ("state", "params", "time")}
    old["dynamics"]["rhs"] = readable["rhs"]
    old["loss"] = readable["loss"]
    return old


def test_format_1_files_are_still_read(tmp_path, document):
    loaded = load_reference(_write(tmp_path, _as_format_1(document)))
    new = load_reference(_write(tmp_path, document, "new.json"))
    assert loaded.problem.dynamics == new.problem.dynamics
    assert loaded.problem.loss == new.problem.loss


def _code(flag: pathlib.Path) -> str:
    """A string that sympify evaluates as Python: it writes ``flag`` and is then ``z0``."""
    return f"__import__('pathlib').Path({str(flag)!r}).write_text('ran') * 0 + z0"


@pytest.mark.parametrize("where", ["rhs", "loss"])
def test_a_format_1_file_cannot_run_code_on_load(tmp_path, document, where):
    flag = tmp_path / "flag"
    crafted = _as_format_1(document)
    if where == "rhs":
        crafted["dynamics"]["rhs"][0] = _code(flag)
    else:
        crafted["loss"] = _code(flag)
    with pytest.raises(ReferenceFileError, match="does not parse"):
        load_reference(_write(tmp_path, crafted))
    assert not flag.exists(), "loading the reference file ran code from it"


def test_a_format_2_file_cannot_name_a_callable(tmp_path, document):
    crafted = copy.deepcopy(document)
    crafted["dynamics"]["rhs"][0] = ["__import__", ["Symbol", "z0"]]
    with pytest.raises(ReferenceFileError, match="unknown node type '__import__'"):
        load_reference(_write(tmp_path, crafted))


def _set(path, value):
    def change(doc):
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _delete(path):
    def change(doc):
        target = doc
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return change


INVALID = [
    pytest.param(_delete(["theta"]), "`theta` is missing", id="missing-key"),
    pytest.param(_delete(["dynamics", "rhs"]), "`dynamics.rhs` is missing", id="missing-rhs"),
    pytest.param(_delete(["gradient", "times"]), "`gradient.times` is missing",
                 id="missing-block"),
    pytest.param(_set(["theta", 0], "1.0x"), r"`theta\[0\]` is not a finite number",
                 id="bad-number"),
    pytest.param(_set(["z0", 0, 1], "nan"), r"`z0\[0\]\[1\]` is not a finite number",
                 id="nan"),
    pytest.param(_set(["gradient", "loss"], True), "`gradient.loss` is not a number",
                 id="boolean"),
    pytest.param(_set(["format_version"], 3), "format_version 3, which this version",
                 id="unknown-version"),
    pytest.param(_set(["dynamics", "rhs", 0], ["Frobnicate", ["Symbol", "z0"]]),
                 "does not parse: unknown node type 'Frobnicate'", id="unknown-node"),
    pytest.param(_set(["dynamics", "rhs", 0], ["Symbol", "q"]),
                 "does not parse: undeclared symbol 'q'", id="undeclared-symbol"),
    pytest.param(_set(["loss"], ["Pow", ["Integer", "2"], ["Integer", "999999999"]]),
                 "too large to evaluate", id="huge-power"),
    pytest.param(_set(["dynamics", "form"], "tensor"), "`dynamics.form` 'tensor'",
                 id="unknown-form"),
    pytest.param(_set(["theta"], ["1.0", "2.0"]), r"`theta` must have shape \(p,\) = \(4,\)",
                 id="theta-shape"),
    pytest.param(_set(["times"], ["1.0", "0.5"]), "strictly increasing", id="times-order"),
    pytest.param(_set(["gradient", "theta"], ["1.0"]),
                 r"`gradient.theta` has shape \(1,\), but the problem's theta has shape \(4,\)",
                 id="gradient-shape"),
    pytest.param(_set(["z0"], [["1.0", "2.0"], ["3.0"]]), "`z0` is not a rectangular array",
                 id="ragged"),
    pytest.param(_set(["dynamics", "state"], ["z0"]), "dynamics are malformed",
                 id="state-length"),
    pytest.param(_set(["reference", "error_estimate"], "-1e-3"), "is negative",
                 id="negative-error"),
]


@pytest.mark.parametrize(("change", "message"), INVALID)
def test_an_invalid_entry_is_a_reference_file_error_naming_it(tmp_path, document, change,
                                                               message):
    crafted = copy.deepcopy(document)
    change(crafted)
    with pytest.raises(ReferenceFileError, match=message):
        load_reference(_write(tmp_path, crafted))


@pytest.mark.parametrize(("change", "message"), INVALID[:8])
def test_cli_check_of_an_invalid_file_is_one_line_blaming_the_file(tmp_path, document, change,
                                                                    message, capsys):
    crafted = copy.deepcopy(document)
    change(crafted)
    assert main(["check", str(_write(tmp_path, crafted)), "--impl", IMPL]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "reference file" in err


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("[" * 100_000 + "]" * 100_000, id="deep-nesting"),
        pytest.param("\x89PNG\r\n", id="binary"),
    ],
)
def test_files_that_are_not_reference_files_are_one_line(tmp_path, text, capsys):
    path = tmp_path / "x.json"
    path.write_bytes(text.encode("latin-1"))
    assert main(["check", str(path), "--impl", IMPL]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
