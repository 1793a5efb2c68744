"""Payload vocabularies in onboarding mappings (docs/contracts.md): every category payload
field is closed (values / recode / pattern, or the canonical `allowed` list) or scrubbed
(scrub: true); a mapping with neither is refused at load, and the bridge applies what it says
(recodes, nulls-and-reports, scrubs) on a real extract."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from sealed_batches import open_batch

from ig_bridge.split import run_bridge
from schemas.mapping import MappingError, load_all_mappings, parse_mapping
from synthetic_data.parties import provision_partnership

REPO = Path(__file__).resolve().parents[1]
BASE = {
    "mapping_version": 1,
    "agency": {"code": "CSC", "name": "Social care", "kind": "social_care"},
    "source": {"format": "csv", "date_formats": ["%d/%m/%Y"]},
    "columns": [
        {"source": "Ref", "field": "record_id", "class": "identifier"},
        {"source": "Forename", "field": "given_name", "class": "identifier"},
        {"source": "Surname", "field": "family_name", "class": "identifier"},
        {"source": "DOB", "field": "date_of_birth", "class": "identifier"},
        {
            "source": "Reason",
            "field": "referral_reason",
            "class": "payload",
            "values": ["Neglect", "Domestic abuse"],
            "recode": {"DA": "Domestic abuse"},
        },
        {"source": "Source", "field": "referral_source", "class": "payload", "scrub": True},
        {
            "source": "Practice",
            "field": "gp_practice",
            "class": "payload",
            "pattern": "[A-Z][0-9]{5}",
        },
        {"source": "Plan", "field": "plan_type", "class": "payload", "recode": {"cp plan": "CP"}},
        {"source": "Date", "field": "event_date", "class": "payload"},
    ],
}


def _with(col: int, **changes: object) -> dict:
    doc = copy.deepcopy(BASE)
    entry = doc["columns"][col]
    for k, v in changes.items():
        if v is None:
            entry.pop(k, None)
        else:
            entry[k] = v
    return doc


def test_every_demo_mapping_declares_each_payload_field() -> None:
    for code, m in load_all_mappings(REPO / "schemas" / "agencies").items():
        for f, pol in m.payload_policies().items():
            assert pol.kind in ("typed", "closed", "scrub"), (code, f)
            if pol.type == "category":
                assert pol.kind == "closed", (code, f)  # the demo has no open category
            if pol.type == "text":
                assert pol.kind == "scrub", (code, f)


def test_policies_of_a_valid_mapping() -> None:
    pols = parse_mapping(BASE, "m.yaml").payload_policies()
    assert {f: p.kind for f, p in pols.items()} == {
        "referral_reason": "closed",
        "referral_source": "scrub",
        "gp_practice": "closed",
        "plan_type": "closed",
        "event_date": "typed",
    }
    assert pols["referral_reason"].lookup == {
        "neglect": "Neglect",
        "domestic abuse": "Domestic abuse",
        "da": "Domestic abuse",
    }
    assert pols["plan_type"].lookup["cp plan"] == "CP" and pols["plan_type"].lookup["lac"] == "LAC"


@pytest.mark.parametrize(
    ("doc", "where", "says"),
    [
        (_with(4, values=None, recode=None), "columns[4]", "neither a closed vocabulary"),
        (_with(5, scrub=False), "columns[5]", "neither a closed vocabulary"),
        (_with(5, scrub="yes"), "columns[5].scrub", "true or false"),
        (_with(4, scrub=True), "columns[4].scrub", "scrub: true is for open categories"),
        (_with(7, scrub=True, recode=None), "columns[7].scrub", "closed vocabulary"),
        (_with(7, values=["CP", "Child protection"]), "columns[7].values", "Child protection"),
        (_with(7, recode={"cp plan": "Child protection"}), "columns[7].recode", "outside"),
        (_with(4, recode={"DA": "Abuse"}), "columns[4].recode", "outside"),
        (_with(4, values=["Neglect", "neglect "]), "columns[4].values", "listed twice"),
        (_with(4, values=[]), "columns[4].values", "non-empty list"),
        (_with(6, pattern=".*"), "columns[6].pattern", "codes only"),
        (_with(6, pattern=r"[\w\s/]+"), "columns[6].pattern", "codes only"),
        (_with(6, pattern="([A-Z]"), "columns[6].pattern", "not a valid regex"),
        (_with(8, values=["x"]), "columns[8].values", "closed by its type"),
        (_with(1, values=["x"]), "columns[1].values", "only payload columns"),
        (
            _with(4, field="case_notes", values=["x"], recode=None),
            "columns[4].values",
            "always scrubbed",
        ),
    ],
)
def test_mapping_without_a_vocabulary_decision_is_refused(doc: dict, where: str, says: str) -> None:
    with pytest.raises(MappingError) as exc:
        parse_mapping(doc, "m.yaml")
    assert exc.value.key_path == where and says in exc.value.problem, str(exc.value)


def test_bridge_recodes_nulls_and_scrubs(tmp_path: Path) -> None:
    mp = tmp_path / "csc.yaml"
    mp.write_text(yaml.safe_dump(BASE), encoding="utf-8")
    provision_partnership(tmp_path, ["CSC"])
    ext = tmp_path / "x.csv"
    ext.write_text(
        "Ref,Forename,Surname,DOB,Reason,Source,Practice,Plan,Date\n"
        "R1,Amelia,Quantock,04/03/2012, NEGLECT ,School,B81234,cp plan,01/02/2024\n"
        "R2,Ben,Okafor,01/12/2011,DA,Amelia Quantock's school,b81234,LAC,01/02/2024\n"
        "R3,Cy,Doe,02/02/2010,Amelia Quantock 04/03/2012,Police,Amelia Quantock,XX,\n",
        encoding="utf-8",
    )
    res = run_bridge(ext, mp, tmp_path / "agency" / "CSC", tmp_path / "landing")
    assert (res.rows_read, res.rows_accepted, res.rows_quarantined) == (3, 3, 0)
    opened = open_batch(res.landed_path, tmp_path / "opened", tmp_path / "hub" / "keys")
    pay = pq.read_table(opened / "payload.parquet").to_pylist()
    got = [
        (p["referral_reason"], p["referral_source"], p["gp_practice"], p["plan_type"]) for p in pay
    ]
    assert got == [
        ("Neglect", "School", "B81234", "CP"),
        ("Domestic abuse", "[NAME] school", None, "LAC"),
        (None, "Police", None, None),
    ]
    assert sorted(res.field_problems) == [
        (3, "gp_practice"),
        (4, "gp_practice"),
        (4, "plan_type"),
        (4, "referral_reason"),
    ]
    report = json.loads(res.report_path.read_text("utf-8"))["field_problems"]
    assert report["count"] == 4 and report["by_field"]["gp_practice"] == 2
    raw = res.report_path.read_text("utf-8")
    assert "Quantock" not in raw and "04/03/2012" not in raw and "b81234" not in raw
