"""The evaluation's loss breakdown (benchmarks/linkage_breakdown.py): counts by kind, right
stage and right fields, and nothing that names a record."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from benchmarks import linkage_breakdown as lb


def _truth() -> pd.DataFrame:
    # true person 1 has three records at three agencies; hub split them as {a, b} / {c};
    # true person 2 has two records the hub never put together.
    return pd.DataFrame(
        {
            "unique_id": ["A:a", "B:b", "C:c", "A:d", "B:e"],
            "agency": ["A", "B", "C", "A", "B"],
            "person_id": [1, 1, 1, 2, 2],
            "cluster_id": ["P1", "P1", "P2", "P3", "P4"],
            "plain_id": ["A:1", "B:1", "C:1", "A:2", "B:2"],
        }
    )


def _plain() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "plain_id": ["A:1", "B:1", "C:1", "A:2", "B:2"],
            "given_name": ["ann", "ann", "ann", "bob", "rob"],
            "family_name": ["lee", "lee", "lee", "kay", "kay"],
            "date_of_birth": ["2010-01-02", "2010-01-02", "2010-02-01", "2001-05-05", "2001-05-05"],
            "postcode": ["X1", "X1", None, "Y2", "Y2"],
        }
    )


def test_missed_pairs_by_stage_and_fields() -> None:
    blocked = pd.DataFrame({"unique_id_l": ["C:c", "A:a"], "unique_id_r": ["B:b", "B:b"]})
    scored = pd.DataFrame(
        {
            "unique_id_l": ["B:b", "A:a"],
            "unique_id_r": ["C:c", "B:b"],
            "match_probability": [0.97, 0.999],
        }
    )
    out = lb.missed_pairs(_truth(), blocked, scored, _plain(), threshold=0.95)
    assert out["n_missed_cross_agency_pairs"] == 3
    stages = out["by_stage"]
    # b-c: candidate, above the threshold, yet apart (a guard); a-c: never a candidate
    assert stages["above the threshold, held back or cut by a guard"] == {
        "pairs": 1,
        "fields_differing": {"date_of_birth, postcode missing": 1},
    }
    assert stages["not a candidate pair"]["pairs"] == 2
    assert stages["not a candidate pair"]["fields_differing"] == {
        "date_of_birth, postcode missing": 1,
        "given_name": 1,
    }
    text = json.dumps(out)
    for value in ("ann", "bob", "rob", "lee", "2010", "A:1", "A:a"):
        assert value not in text


def test_household_errors_by_kind() -> None:
    rec = pd.DataFrame(
        {
            "unique_id": ["r1", "r2", "r3", "r4", "r5", "r6"],
            "person_id": [1, 2, 3, 3, 4, 5],
            "true_household_id": ["H1", "H1", "H1", "H1", "H2", "H3"],
            "cluster_id": ["P1", "P2", "P3", "P3b", "P4", "P5"],
            "household_id": ["X", None, "X", "Y", "X", "Z"],
            "property_key": ["k1", None, "k1", "k2", "k1", "k1"],
        }
    )
    out = lb.household_errors(rec)
    assert out["missed_pairs"] == {
        "a record's person not placed": 3,  # r2 with r1, r3, r4
        "placed at different properties": 1,  # r4 with r1
        "one person split in two by person linkage": 1,  # r3-r4 (one person)
        "one property split (group quarters)": 0,
    }
    # r5 (another household) placed with r1 and r3 at k1
    assert out["false_pairs"] == {
        "two households at one property": 2,
        "two people linked as one person": 0,
    }


def test_lost_rows_by_reason_reads_every_bridge_report(tmp_path: Path) -> None:
    for agency, reasons in (
        ("GP", {"no record id": 2}),
        ("SCH", {"no record id": 1, "too few identifying fields": 4}),
    ):
        d = tmp_path / "agency" / agency / "reports"
        d.mkdir(parents=True)
        (d / "r.json").write_text(json.dumps({"reasons": reasons}), "utf-8")
    assert lb.lost_by_reason(tmp_path) == {"too few identifying fields": 4, "no record id": 3}
