"""Agency kinds and payload fields declared per data-sharing agreement (issue 17 item 2): a
benefits system, an agency kind no built-in list has, is declared with its payload fields in the
partnership's agreement file, bridged with real keys and ingested by the hub."""

from __future__ import annotations

import copy
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mapping_export_helpers import _hub, _vals, _write_mapping
from sealed_batches import open_batch

from ig_bridge.split import run_bridge
from schemas.mapping import MappingError, load_all_mappings, load_mapping
from synthetic_data.parties import provision_partnership

AGREEMENT = {
    "agreement_version": 1,
    "name": "Northshire children's partnership DSA",
    "agency_kinds": {
        "benefits": {"doc": "Housing benefit and council tax support"},
        "youth_offending": {"doc": "Youth justice service"},
    },
    "payload_fields": {
        "benefit_type": {"type": "category", "allowed": ["housing_benefit", "council_tax_support"]},
        "claim_start": {"type": "date"},
        "weekly_award": {"type": "number"},
        "claim_notes": {"type": "text"},
    },
}
BENEFITS = {
    "mapping_version": 1,
    "agency": {"code": "BEN", "name": "Benefits system", "kind": "benefits"},
    "source": {"format": "csv", "date_formats": ["%Y-%m-%d"]},
    "columns": [
        {"source": "ClaimRef", "field": "record_id", "class": "identifier"},
        {"source": "Name", "field": "full_name", "class": "identifier"},
        {"source": "DOB", "field": "date_of_birth", "class": "identifier"},
        {"source": "Addr", "field": "address", "class": "identifier"},
        {
            "source": "Benefit",
            "field": "benefit_type",
            "class": "payload",
            "recode": {"HB": "housing_benefit", "CTS": "council_tax_support"},
        },
        {"source": "Start", "field": "claim_start", "class": "payload"},
        {"source": "Award", "field": "weekly_award", "class": "payload"},
        {
            "source": "Role",
            "field": "relationship_to_lead",
            "class": "payload",
            "recode": {"C": "lead", "P": "partner", "D": "child"},
        },
    ],
}


def test_benefits_kind_declared_bridged_and_ingested(tmp_path: Path) -> None:
    mappings = tmp_path / "mappings"
    _write_mapping(mappings, AGREEMENT, "agreement.yaml")
    mp = _write_mapping(mappings, BENEFITS, "ben.yaml")
    assert list(load_all_mappings(mappings)) == ["BEN"]  # the agreement is not a mapping
    m = load_mapping(mp)
    assert m.kind == "benefits" and m.canonical.agreement == mappings / "agreement.yaml"
    provision_partnership(tmp_path, ["BEN"])
    ext = tmp_path / "claims.csv"
    ext.write_text(
        "ClaimRef,Name,DOB,Addr,Benefit,Start,Award,Role\n"
        'C1,Ann Khan,1985-03-02,"Flat 1, 12 High Street, Leeds, LS6 1AA",HB,2025-04-01,'
        "93.50,C\n"
        'C2,Omar Khan,2015-06-05,"Flat 1, 12 High Street, Leeds, LS6 1AA",hb,2025-04-01,,D\n'
        'C3,Tom Baker,1980-08-07,"2/12 High St, Leeds LS6 1AA",UC,,,X\n',
        encoding="utf-8",
    )
    res = run_bridge(ext, mp, tmp_path / "agency" / "BEN", tmp_path / "landing")
    assert (res.rows_read, res.rows_accepted) == (3, 3)
    assert sorted(res.field_problems) == [(4, "benefit_type"), (4, "relationship_to_lead")]
    paths, con = _hub(tmp_path, mappings, "BEN")
    try:
        rows = con.execute(
            "SELECT benefit_type, claim_start, weekly_award, relationship_to_lead "
            "FROM payload ORDER BY claim_start NULLS LAST, weekly_award "
            "NULLS LAST"
        ).fetchall()
        types = dict(
            con.execute(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'payload' "
                "AND column_name IN ('benefit_type', 'claim_start', 'weekly_award')"
            ).fetchall()
        )
    finally:
        con.close()
    assert types == {"benefit_type": "VARCHAR", "claim_start": "DATE", "weekly_award": "DOUBLE"}
    assert [(r[0], str(r[1]) if r[1] else None, r[2], r[3]) for r in rows] == [
        ("housing_benefit", "2025-04-01", 93.5, "lead"),
        ("housing_benefit", "2025-04-01", None, "child"),
        (None, None, None, None),
    ]


@pytest.mark.parametrize(
    ("change", "where", "says"),
    [
        ({"agency_kinds": {"housing": {}}}, "agency_kinds.housing", "built-in"),
        ({"agency_kinds": {"Benefits": {}}}, "agency_kinds.Benefits", "lower_snake_case"),
        (
            {"agency_kinds": {"benefits": {"docs": "x"}}},
            "agency_kinds.benefits.docs",
            "unknown key",
        ),
        (
            {"payload_fields": {"event_date": {"type": "date"}}},
            "payload_fields.event_date",
            "already a canonical field",
        ),
        (
            {"payload_fields": {"nhs_number": {"type": "category"}}},
            "payload_fields.nhs_number",
            "already a canonical field",
        ),
        (
            {"payload_fields": {"benefit_type": {"type": "enum"}}},
            "payload_fields.benefit_type.type",
            "unknown payload type",
        ),
        (
            {"payload_fields": {"claim_start": {"type": "date", "allowed": ["x"]}}},
            "payload_fields.claim_start.allowed",
            "only category",
        ),
        ({"agreement_version": 2}, "agreement_version", "expected 1"),
        ({"parties": []}, "parties", "unknown key"),
    ],
)
def test_bad_agreement_names_file_and_key(
    tmp_path: Path, change: dict, where: str, says: str
) -> None:
    doc = copy.deepcopy(AGREEMENT)
    for k, v in change.items():
        if isinstance(v, dict) and isinstance(doc.get(k), dict):
            doc[k] = v
        else:
            doc[k] = v
    _write_mapping(tmp_path, doc, "agreement.yaml")
    mp = _write_mapping(tmp_path, BENEFITS, "ben.yaml")
    for load in (lambda: load_mapping(mp), lambda: load_all_mappings(tmp_path)):
        with pytest.raises(MappingError) as exc:
            load()
        assert exc.value.path == str(tmp_path / "agreement.yaml"), str(exc.value)
        assert exc.value.key_path == where and says in exc.value.problem, str(exc.value)


def test_undeclared_kind_and_field_name_the_mapping(tmp_path: Path) -> None:
    mp = _write_mapping(tmp_path, BENEFITS, "ben.yaml")  # no agreement.yaml beside it
    with pytest.raises(MappingError) as exc:
        load_mapping(mp)
    assert exc.value.path == str(mp) and exc.value.key_path == "agency.kind"
    assert "agreement.yaml" in exc.value.problem
    doc = copy.deepcopy(AGREEMENT)
    del doc["payload_fields"]["weekly_award"]
    _write_mapping(tmp_path, doc, "agreement.yaml")
    with pytest.raises(MappingError) as exc:
        load_mapping(mp)
    assert exc.value.key_path == "columns[6].field" and "weekly_award" in exc.value.problem


def test_packaged_benefits_example_validates_and_bridges(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[1] / "schemas" / "examples" / "benefits"
    (m,) = load_all_mappings(example).values()
    assert m.kind == "benefits"
    provision_partnership(tmp_path, [m.code])
    ext = tmp_path / "ben.csv"
    ext.write_bytes(
        (
            "Claim Ref,Person No,Title,Forename,Surname,DOB,Gender,NI Number,Flat,Address 1,"
            "Address 2,Town,Postcode,UPRN,Relationship,Benefit,Claim Start,Claim End,"
            "Weekly Award,Suspended\n"
            "B1,1,Ms,Zoë,Okafor,02/03/1988,2,QQ123456C,Flat 2,Rose Court,12 High St,Leeds,"
            "LS6 1AA,,CL,HB,01/04/2025,,120.40,N\n"
            "B2,2,,Baby,Okafor,01/09/2026,9,,2,Rose Court,12 High Street,Leeds,LS6 1AA,,CH,"
            "HB,01/04/2025,,,N\n"
        ).encode("cp1252")
    )
    res = run_bridge(ext, m.path, tmp_path / "agency" / m.code, tmp_path / "landing")
    assert (res.rows_read, res.rows_accepted, res.field_problems) == (2, 2, [])
    assert res.placeholder_names == {"given_name": 1}
    opened = open_batch(res.landed_path, tmp_path / "opened", tmp_path / "hub" / "keys")
    ids = pq.read_table(opened / "identifiers.parquet").to_pandas()
    pay = pq.read_table(opened / "payload.parquet").to_pandas()
    assert ids.loc[0, "tok_address"] == ids.loc[1, "tok_address"]
    assert _vals(pay["benefit_type"]) == ["housing_benefit"] * 2
    assert _vals(pay["relationship_to_lead"]) == ["lead", "child"]
    assert "NI Number" not in pay.columns and "claim_suspended" in pay.columns


def test_agreement_file_is_not_an_agency_dag() -> None:
    from linkage.orchestration import agency_dag_specs

    example = Path(__file__).resolve().parents[1] / "schemas" / "examples" / "benefits"
    assert [s.code for s in agency_dag_specs(example)] == ["BEN"]
