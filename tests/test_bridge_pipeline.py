"""Bridge pipeline on small hand-written extracts: accounting, refusal, quarantine, landing."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from sealed_batches import open_batch

from ig_bridge.landing import landed_batches
from ig_bridge.split import ExtractRefused, run_bridge
from synthetic_data.parties import provision_partnership

MAPPING = {
    "mapping_version": 1,
    "agency": {"code": "SCH", "name": "Schools", "kind": "school"},
    "source": {
        "format": "csv",
        "encoding": "utf-8",
        "delimiter": ",",
        "date_formats": ["%d/%m/%Y", "%Y-%m-%d"],
    },
    "columns": [
        {"source": "Ref", "field": "record_id", "class": "identifier"},
        {"source": "Forename", "field": "given_name", "class": "identifier"},
        {"source": "Surname", "field": "family_name", "class": "identifier"},
        {"source": "DOB", "field": "date_of_birth", "class": "identifier"},
        {"source": "Postcode", "field": "postcode", "class": "identifier"},
        {"source": "NHS", "field": "nhs_number", "class": "identifier"},
        {"source": "P1", "field": "full_name", "class": "identifier", "person": "parent1"},
        {"source": "Notes", "field": "case_notes", "class": "payload"},
        {"source": "Plan", "field": "plan_type", "class": "payload"},
        {"source": "Internal", "class": "drop"},
    ],
    "related_persons": {"parent1": {"relationship": "mother"}},
    # Row accounting on tiny extracts: the snapshot guards (which would refuse most of these)
    # have their own tests (test_snapshot_guards.py).
    "snapshot_guards": {"max_problem_rate": 1, "min_share_of_last_snapshot": 0},
}
HEADER = "Ref,Forename,Surname,DOB,Postcode,NHS,P1,Notes,Plan,Internal\n"
GOOD = [
    'R1,Amelia,Smith,04/03/2012,LS1 4AB,9434765919,Karen Smith,"Amelia (4th March 2012) seen with '
    'Karen Smith at LS14AB",CP,x',
    "R2,Ben,Jones,2011-12-01,M1 1AA,,,,none,y",
]


@pytest.fixture
def setup(tmp_path: Path):
    mp = tmp_path / "sch.yaml"
    mp.write_text(yaml.safe_dump(MAPPING))
    provision_partnership(tmp_path, ["SCH"])
    return tmp_path, mp


def run(tmp: Path, mp: Path, body: str, name: str = "x.csv"):
    ext = tmp / name
    ext.write_text(body, encoding="utf-8")
    return run_bridge(ext, mp, tmp / "agency" / "SCH", tmp / "landing")


def test_good_extract_lands_and_scrubs(setup) -> None:
    tmp, mp = setup
    res = run(tmp, mp, HEADER + "\n".join(GOOD) + "\n")
    assert (res.rows_read, res.rows_accepted, res.rows_quarantined) == (2, 2, 0)
    files = {p.name for p in res.landed_path.iterdir()}
    assert files == {
        "identifiers.parquet.sealed",
        "related.parquet.sealed",
        "payload.parquet.sealed",
        "present.parquet.sealed",
        "manifest.json.sealed",
    }
    with pytest.raises(Exception):  # noqa: B017 - sealed: not Parquet to anyone but the hub
        pq.read_table(res.landed_path / "identifiers.parquet.sealed")
    assert not list((tmp / "agency" / "SCH" / "work").iterdir())  # no plaintext left behind
    opened = open_batch(res.landed_path, tmp / "opened", tmp / "hub" / "keys")
    ids = pq.read_table(opened / "identifiers.parquet").to_pylist()
    assert len(ids) == 2 and all(len(r["tok_family_name"]) == 32 for r in ids)
    rel = pq.read_table(opened / "related.parquet").to_pylist()
    assert [(r["slot"], r["relationship"]) for r in rel] == [("parent1", "mother")]
    pay = pq.read_table(opened / "payload.parquet").to_pylist()
    assert set(pay[0]) == {"record_ref", "agency", "batch_id", "case_notes", "plan_type"}
    note = pay[0]["case_notes"]
    assert "Amelia" not in note and "Karen" not in note and "2012" not in note
    assert "[SUBJECT_NAME]" in note and "[PARENT1_NAME]" in note and "[DOB]" in note
    man = json.loads((opened / "manifest.json").read_text())
    assert man["rows"] == {"read": 2, "accepted": 2, "quarantined": 0}
    assert man["sequence"] == 1
    res2 = run(tmp, mp, HEADER + GOOD[1] + "\n", "y.csv")
    assert res2.sequence == 2


def test_bad_fields_are_nulled_and_only_unlinkable_rows_quarantined(setup) -> None:
    tmp, mp = setup
    bad = [
        "R3,Cy,Doe,31/02/2010,LS1 4AB,,,,CP,x",  # impossible date: nulled
        "R4,Di,Doe,01/01/2010,NOTAPC,,,,CP,x",  # malformed postcode: nulled
        "R5,Ed,Doe,01/01/2010,LS1 4AB,9434765918,,,CP,x",  # bad NHS check digit: nulled
        ",Fa,Doe,01/01/2010,LS1 4AB,,,,CP,x",  # missing record id
        "R1,Ga,Doe,01/01/2010,LS1 4AB,,,,CP,x",  # duplicate record id
        "R6,Hu,Doe,01/01/2010,LS1 4AB,,,,XX,x",  # plan_type not allowed: field nulled
        "R7,Io,Doe",  # ragged
    ]
    res = run(tmp, mp, HEADER + "\n".join(GOOD + bad) + "\n")
    assert res.rows_read == 9 == res.rows_accepted + res.rows_quarantined
    assert res.rows_accepted == 6  # one bad field never costs a child the record
    q = pq.read_table(res.quarantine_path).to_pylist()
    by_line = {r["line"]: r["reason"] for r in q}
    assert by_line == {
        7: "subject.record_id: missing",
        8: "subject.record_id: duplicate",
        10: "ragged row: 3 fields, expected 10",
    }
    assert res.field_counts == {
        "subject.date_of_birth": {"impossible date (no such day)": 1},
        "subject.postcode": {"invalid UK postcode format": 1},
        "subject.nhs_number": {"nhs_number fails the mod-11 check digit": 1},
        "payload.plan_type": {"not in the vocabulary (nulled)": 1},
    }
    assert res.field_problems == [(9, "plan_type")]
    opened = open_batch(res.landed_path, tmp / "opened", tmp / "hub" / "keys")
    pay = pq.read_table(opened / "payload.parquet").to_pylist()
    assert [p["plan_type"] for p in pay] == ["CP", "none", "CP", "CP", "CP", None]
    ids = pq.read_table(opened / "identifiers.parquet").to_pylist()
    assert [r["tok_nhs_number"] is None for r in ids] == [False, True, True, True, True, True]
    assert [r["tok_dob"] is None for r in ids] == [False, False, True, False, False, False]
    man = json.loads((opened / "manifest.json").read_text())
    assert man["field_problems"] == res.field_counts  # counts only
    report = res.report_path.read_text()
    assert json.loads(report)["field_problems"]["rows"] == [{"line": 9, "field": "plan_type"}]
    assert {(r["line"], r["field"]) for r in json.loads(report)["field_rows"]} == {
        (4, "subject.date_of_birth"),
        (5, "subject.postcode"),
        (6, "subject.nhs_number"),
        (9, "payload.plan_type"),
    }
    # (the base64 signature is random text: it may hold "XX" by chance)
    body = json.dumps({k: v for k, v in man.items() if k != "signature"})
    for text in (report, body):
        assert "XX" not in text and "NOTAPC" not in text and "31/02" not in text
    assert (tmp / "agency" / "SCH" / "reports" / "data_docs" / "index.html").exists()


@pytest.mark.parametrize(
    ("body", "expect"),
    [
        (HEADER.replace(",Internal", ""), "mapped column 'Internal' is missing"),
        (HEADER.replace("\n", ",Extra\n"), "unexpected column 'Extra'"),
        (HEADER, "empty file"),
        ("", "empty file"),
    ],
)
def test_extract_level_failure_stops_batch(setup, body: str, expect: str) -> None:
    tmp, mp = setup
    with pytest.raises(ExtractRefused) as exc:
        run(tmp, mp, body)
    assert expect in str(exc.value)
    assert exc.value.report_path.exists()
    assert landed_batches(tmp / "landing", "SCH") == []


def test_wrong_mapping_version_refused(setup) -> None:
    tmp, mp = setup
    mp.write_text(yaml.safe_dump({**MAPPING, "mapping_version": 2}))
    with pytest.raises(ExtractRefused, match="mapping_version"):
        run(tmp, mp, HEADER + GOOD[0] + "\n")


def test_crash_mid_write_leaves_no_batch(setup, monkeypatch) -> None:
    tmp, mp = setup
    import ig_bridge.split as split

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(split, "write_manifest", boom)
    with pytest.raises(OSError, match="disk full"):
        run(tmp, mp, HEADER + "\n".join(GOOD) + "\n")
    assert landed_batches(tmp / "landing", "SCH") == []
    drop = tmp / "landing" / "SCH"
    assert not drop.exists() or list(drop.iterdir()) == []
    assert list((tmp / "agency" / "SCH" / "work").iterdir()) == []  # plaintext removed
    monkeypatch.undo()
    res = run(tmp, mp, HEADER + "\n".join(GOOD) + "\n")
    assert landed_batches(tmp / "landing", "SCH") == [res.landed_path]
