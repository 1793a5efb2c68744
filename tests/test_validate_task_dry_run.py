"""The bridge DAG's validate task is the bridge's dry run: every row check `run` makes, its
counts per field and reason (never a value) in a report at the agency and in the task's
result, before the batch is split. A refused extract still fails with a report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_bridge_field_validation import HEADER, MAPPING, ROWS

from ig_bridge.split import ExtractRefused, run_bridge
from linkage.orchestration import validate_task
from synthetic_data.parties import provision_partnership


@pytest.fixture
def agency(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, Path]:
    monkeypatch.delenv("JOINEDUP_AGENCY_DIR", raising=False)
    mp = tmp_path / "gpr.yaml"
    mp.write_text(yaml.safe_dump(MAPPING))
    ext = tmp_path / "gp_register.csv"
    ext.write_text("\n".join([HEADER, *ROWS]) + "\n", encoding="utf-8")
    return tmp_path, mp, ext


def test_validate_task_counts_what_run_then_does(agency) -> None:
    tmp, mp, ext = agency
    checked = validate_task("GPR", mp, str(ext), base=tmp)
    report = Path(checked["report"])
    assert report.parent == tmp / "agency" / "GPR" / "reports"
    assert report.name.startswith("validated-GPR-")
    on_disk = json.loads(report.read_text())

    provision_partnership(tmp, ["GPR"])
    res = run_bridge(ext, mp, tmp / "agency" / "GPR", tmp / "landing")
    assert (
        checked["rows_read"],
        checked["rows_would_accept"],
        checked["rows_would_quarantine"],
    ) == (res.rows_read, res.rows_accepted, res.rows_quarantined)
    assert checked["rows_would_quarantine"] > 0
    assert checked["field_problems"] == res.field_counts == on_disk["field_problems"]
    assert "partial date: year only" in json.dumps(checked["field_problems"])
    # counts and reasons only: no value of the extract in the result or the report
    text = json.dumps(checked) + report.read_text()
    for value in ("31/02", "NOTAPC", "9434765919", "Amelia", "05/13/2012"):
        assert value not in text
    assert checked["extract"] == str(ext)


def test_validate_task_refuses_an_unreadable_header_with_a_report(agency) -> None:
    tmp, mp, _ = agency
    bad = tmp / "bad.csv"
    bad.write_text("NotAColumn;Other\nx;y\n", encoding="cp1252")
    with pytest.raises(ExtractRefused) as refused:
        validate_task("GPR", mp, str(bad), base=tmp)
    assert refused.value.report_path is not None
    assert refused.value.report_path.name.startswith("refused-GPR-")
    assert "bad.csv" in refused.value.report_path.read_text()
