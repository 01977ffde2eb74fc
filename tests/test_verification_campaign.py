"""The false-alarm campaign: the library's own audit over drawn problems, resumable, with
its failures kept for replay."""

import json

import pytest
from suite_helpers import SMALL

from numeric import InputError
from verification import campaign, replay_campaign
from verification._campaign import audit_job
from verification._cli import main
from verification._report import Report, Row
from verification._suite_files import read_lines
from verification._suite_sources import drawn_problems

SMALL_OPTIONS = ["--max-n", "2", "--max-params", "6", "--max-observations", "2"]


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    out = tmp_path_factory.mktemp("campaign") / "c"
    code = main(["campaign", "--count", "3", "--seed", "4", *SMALL_OPTIONS, "--out", str(out),
                 "--workers", "2", "--quiet"])
    return out, code


def test_campaign_counts_no_false_alarm_on_correct_methods(done, capsys):
    out, code = done
    assert code == 0
    manifest = json.loads((out / "campaign.json").read_text())
    assert manifest["problems"] == manifest["passed"] == 3
    assert manifest["false_alarms"] == [] and manifest["errors"] == {}
    assert manifest["source"] == {"count": 3, "seed": 4, "bounds": SMALL,
                                  "hypothesis": manifest["source"]["hypothesis"]}
    assert manifest["wall_seconds"] > 0 and manifest["cpu_seconds"] > 0
    lines = read_lines(out / "results.jsonl").entries
    assert [e["status"] for e in lines.values()] == ["pass"] * 3


def test_campaign_resumes_and_refuses_another_draw(done):
    out, _ = done
    again = campaign(3, 4, out=out, bounds=SMALL, workers=1)
    assert again.ran == 0 and again.passed and len(again.results) == 3
    with pytest.raises(InputError, match="holds a campaign drawn with"):
        campaign(3, 5, out=out, bounds=SMALL, workers=1)


def test_replay_audits_the_recorded_failures_again(done, tmp_path, capsys):
    out, _ = done
    manifest = json.loads((out / "campaign.json").read_text())
    name = next(iter(read_lines(out / "results.jsonl").entries))
    manifest["false_alarms"] = [name]  # as if its audit had failed
    replay = tmp_path / "replay"
    replay.mkdir()
    (replay / "campaign.json").write_text(json.dumps(manifest))
    reports = replay_campaign(replay)
    assert list(reports) == [name] and reports[name].passed
    assert main(["campaign", "--replay", str(replay)]) == 0
    assert name in capsys.readouterr().out


def test_a_failed_audit_is_a_false_alarm_with_its_report(monkeypatch):
    failing = Report(rows=[Row(block="theta", method="quadrature_adjoint", reference="exact",
                               error=1e-3, tolerance=1e-7, passed=False,
                               diagnosis="scaled by a constant 1.001")])
    monkeypatch.setattr("verification._campaign.audit_problem", lambda problem: failing)
    result = audit_job(drawn_problems(1, 0)[0])
    assert result["status"] == "false_alarm"
    assert result["failures"] == [{"method": "quadrature_adjoint", "block": "theta",
                                   "diagnosis": "scaled by a constant 1.001"}]
    assert "FAIL" in result["report"]


def test_replay_of_a_folder_without_a_campaign_is_an_error(tmp_path):
    with pytest.raises(InputError, match="holds no campaign"):
        replay_campaign(tmp_path)
