"""Field-level validation at the bridge (issue 17): a bad field is nulled and reported, the
record goes on with what remains; only unlinkable rows are quarantined. Real CSV files through
the real bridge (real keys, sealed batches opened with the hub's key, the hub's ingest)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
import yaml
from sealed_batches import open_batch

from governance.reports.linkage_sections import _batches
from ig_bridge.cli import main
from ig_bridge.dryrun import dry_run
from ig_bridge.encoding import load_encoding_spec
from ig_bridge.landing import landed_batches
from ig_bridge.rowcheck import OVERSIZED
from ig_bridge.split import ExtractRefused, run_bridge
from linkage.config import HubPaths
from linkage.ingest import ingest_landing
from schemas.mapping import MappingError, parse_mapping
from synthetic_data.parties import provision_partnership

MAPPING = {
    "mapping_version": 1,
    # Tiny extracts with bad rows on purpose: the snapshot guards have their own tests
    # (test_snapshot_guards.py).
    "snapshot_guards": {"max_problem_rate": 1, "min_share_of_last_snapshot": 0},
    "agency": {"code": "GPR", "name": "GP register", "kind": "gp"},
    "source": {"format": "csv", "date_formats": ["%d/%m/%Y"]},
    "columns": [
        {"source": "Ref", "field": "record_id", "class": "identifier"},
        {"source": "Forename", "field": "given_name", "class": "identifier"},
        {"source": "Surname", "field": "family_name", "class": "identifier"},
        {"source": "DOB", "field": "date_of_birth", "class": "identifier"},
        {"source": "NHS", "field": "nhs_number", "class": "identifier"},
        {"source": "Postcode", "field": "postcode", "class": "identifier"},
        {
            "source": "Status",
            "field": "registration_status",
            "class": "payload",
            "values": ["registered", "deregistered"],
            "recode": {"R": "registered", "D": "deregistered"},
        },
        {"source": "Notes", "field": "case_notes", "class": "payload"},
    ],
}
HEADER = "Ref,Forename,Surname,DOB,NHS,Postcode,Status,Notes"
ROWS = [  # line 2 onwards
    "R1,Amelia,Smith,04/03/2012,9434765919,LS1 4AB,R,",  # 2 clean
    "R2,Amelia,Smith,31/02/2012,9434765919,LS1 4AB,X,",  # 3 impossible DOB; status X
    "R3,,Smith,04/03/2012,4010232137,LS1 4AB,registered,",  # 4 no given name
    "R4,Ben,Jones,05/13/2012,,M1 1AA,D,",  # 5 day/month swapped
    "R5,Ben,Jones,13/05/2012,,M1 1AA,D,",  # 6 the same date, as mapped
    "R6,Cara,Brown,2011,,B33 8TH,R,",  # 7 year only
    "R7,Cara,Brown,15/06/2011,,B33 8TH,R,",  # 8 full date, same person
    "R8,Dan,Green,01/01/2099,9434765919,LS1 4AB,R,",  # 9 DOB in the future
    "R9,Unknown,White,02/02/2015,4010232137,M1 1AA,R,",  # 10 placeholder given name
    ",Eve,Black,02/02/2015,,M1 1AA,R,",  # 11 no record id
    "R10,,Grey,not a date,123,NOTAPC,R,",  # 12 one identifying field left
    "R11,Eve,Black,02/02/2016,0000000000,NOTAPC,R,",  # 13 NHS placeholder, bad postcode
]
DOB_PARTS = {
    "dob_iso",
    "dob_swapped_iso",
    "dob_ym",
    "dob_md",
    "dob_month",
    "dob_day",
    "date_of_birth",
}


def _write_mapping(tmp: Path, **changes: object) -> Path:
    mp = tmp / "gpr.yaml"
    mp.write_text(yaml.safe_dump({**MAPPING, **changes}))
    return mp


@pytest.fixture(scope="module")
def bridged(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("fieldval")
    mp = _write_mapping(tmp)
    provision_partnership(tmp, ["GPR"])
    ext = tmp / "gp_register.csv"
    ext.write_text("\n".join([HEADER, *ROWS]) + "\n", encoding="utf-8")
    res = run_bridge(ext, mp, tmp / "agency" / "GPR", tmp / "landing")
    opened = open_batch(res.landed_path, tmp / "opened", tmp / "hub" / "keys")
    ids = pq.read_table(opened / "identifiers.parquet").to_pylist()
    pay = pq.read_table(opened / "payload.parquet").to_pylist()
    return tmp, mp, res, opened, ids, pay


def test_rows_read_equal_accepted_plus_quarantined_and_only_unlinkable_rows_go(bridged) -> None:
    _, _, res, _, ids, _ = bridged
    assert res.rows_read == len(ROWS) == res.rows_accepted + res.rows_quarantined
    assert (res.rows_accepted, res.rows_quarantined) == (10, 2)
    assert len(ids) == 10
    q = {r["line"]: r["reason"] for r in pq.read_table(res.quarantine_path).to_pylist()}
    assert set(q) == {11, 12}
    assert q[11] == "subject.record_id: missing"
    # the unlinkable row says why it had too few fields left
    assert q[12].startswith("subject.identifying_fields: fewer than 2 identifying fields")
    assert "subject.nhs_number: nhs_number is not 10 digits" in q[12]
    assert "subject.date_of_birth: unparseable date" in q[12]
    assert "not a date" not in q[12] and "NOTAPC" not in q[12]


def test_bad_dob_keeps_nhs_token_and_missing_given_name_is_accepted(bridged) -> None:
    _, _, res, _, ids, _ = bridged
    by_order = {
        r: ids[i]
        for i, r in enumerate(["R1", "R2", "R3", "R4", "R5", "R6", "R7", "R8", "R9", "R11"])
    }
    r1, r2, r3 = by_order["R1"], by_order["R2"], by_order["R3"]
    assert r2["tok_dob"] is None and r2["tok_nhs_number"] == r1["tok_nhs_number"] is not None
    # Spec v3 salts name tokens with the birth year: an impossible DOB leaves none to salt.
    assert r2["tok_family_name"] is None and r3["tok_family_name"] is not None
    assert by_order["R8"]["tok_dob"] is None  # future DOB nulled
    assert by_order["R8"]["tok_nhs_number"] == r1["tok_nhs_number"]
    assert r3["tok_given_name"] is None and r3["tok_nhs_number"] is not None
    assert r3["tok_dob"] == r1["tok_dob"]
    assert by_order["R9"]["tok_given_name"] is None  # "Unknown" never becomes a token
    assert by_order["R11"]["tok_nhs_number"] is None and by_order["R11"]["tok_dob"] is not None
    fc = res.field_counts
    assert fc["subject.date_of_birth"]["impossible date (no such day)"] == 1
    assert fc["subject.date_of_birth"]["date in the future"] == 1
    assert sum(fc["subject.given_name"].values()) == 2  # R3 missing, R9 a placeholder
    assert fc["subject.nhs_number"] == {"nhs_number is a placeholder": 1}
    assert fc["subject.postcode"] == {"invalid UK postcode format": 1}


def test_day_month_swap_and_year_only_dob(bridged) -> None:
    _, _, res, _, ids, _ = bridged
    r4, r5, r6, r7 = ids[3], ids[4], ids[5], ids[6]
    assert r4["tok_dob"] == r5["tok_dob"] is not None  # 05/13/2012 read as 13 May 2012
    assert r6["tok_dob"] is None  # year only: no full-date token from a guess
    spec = load_encoding_spec()
    year_cols = 0
    for section in ("tokens", "blocking", "bloom"):
        for name, col in (spec.get(section) or {}).get("columns", {}).items():
            salt = col.get("salt")  # one source, or a list of them (bf_address)
            deps = set(col.get("sources") or [col.get("source")]) | set(
                salt if isinstance(salt, list) else [salt]
            )
            if deps & DOB_PARTS:
                assert r6[name] is None, name
            else:  # same person, same names and postcode: only month/day are unknown
                assert r6[name] == r7[name], name
                year_cols += "dob_year" in deps
    assert year_cols >= 1  # the year still reaches encoding
    dob = res.field_counts["subject.date_of_birth"]
    assert dob["day and month swapped (only the swapped reading is a date)"] == 1
    assert dob["partial date: year only (kept as the year)"] == 1


def test_payload_recoded_or_nulled_never_dropped(bridged) -> None:
    _, _, res, _, _, pay = bridged
    assert [p["registration_status"] for p in pay][:5] == [
        "registered",
        None,
        "registered",
        "deregistered",
        "deregistered",
    ]
    assert res.field_counts["payload.registration_status"] == {"not in the vocabulary (nulled)": 1}
    assert res.field_problems == [(3, "registration_status")]


def test_counts_travel_in_the_manifest_and_reach_the_ig_report(bridged) -> None:
    tmp, mp, res, opened, _, _ = bridged
    man = json.loads((opened / "manifest.json").read_text())
    assert man["field_problems"] == res.field_counts
    text = json.dumps(man)
    for value in ("31/02", "Unknown", "NOTAPC", "0000000000", "2099"):
        assert value not in text
    report = json.loads(res.report_path.read_text())
    assert {
        "line": 3,
        "field": "subject.date_of_birth",
        "reason": "impossible date (no such day)",
    } in report["field_rows"]
    # the hub verifies the signed counts, stores them, and the IG report shows them
    paths = HubPaths(hub=tmp / "hub", landing=tmp / "landing", mappings=mp.parent)
    out = ingest_landing(paths)
    assert [o.status for o in out.outcomes] == ["accepted"], out
    con = duckdb.connect(str(paths.warehouse), read_only=True)
    try:
        stored = con.execute(
            "SELECT field, reason, n FROM batch_field_problem WHERE agency = 'GPR'"
        ).fetchall()
        shown = _batches(con)["field_problems"]
    finally:
        con.close()
    assert {(f, r): n for f, r, n in stored} == {
        (f, r): n for f, per in res.field_counts.items() for r, n in per.items()
    }
    assert {(p["field"], p["reason"], p["n"]) for p in shown} == set(stored)
    assert {p["rows_accepted"] for p in shown} == {10}


def test_min_identifying_fields_is_the_mappings_choice(tmp_path: Path) -> None:
    ext = tmp_path / "x.csv"
    ext.write_text(HEADER + "\nA1,,Grey,,,M1 1AA,R,\nA2,,,,,M1 1AA,R,\n", encoding="utf-8")
    default = dry_run(ext, _write_mapping(tmp_path))
    assert (default.rows_accepted, default.rows_quarantined) == (1, 1)
    strict = dry_run(ext, _write_mapping(tmp_path, validation={"min_identifying_fields": 3}))
    assert (strict.rows_accepted, strict.rows_quarantined) == (0, 2)
    lax = dry_run(ext, _write_mapping(tmp_path, validation={"min_identifying_fields": 1}))
    assert (lax.rows_accepted, lax.rows_quarantined) == (2, 0)
    for bad in (0, 11, "two", True):
        with pytest.raises(MappingError, match="min_identifying_fields"):
            parse_mapping({**MAPPING, "validation": {"min_identifying_fields": bad}}, "m.yaml")


def test_validate_is_a_dry_run_of_every_row_check(bridged, capsys) -> None:
    tmp, mp, res, _, _, _ = bridged
    ext = tmp / "gp_register.csv"
    got = dry_run(ext, mp)
    assert (got.rows_read, got.rows_accepted, got.rows_quarantined) == (
        res.rows_read,
        res.rows_accepted,
        res.rows_quarantined,
    )
    assert got.fields.counts == res.field_counts
    code = main(["validate", str(ext), "--mapping", str(mp), "--agency-dir", str(tmp / "v")])
    out = capsys.readouterr()
    text = out.out + out.err
    assert code in (0, 1)
    assert "would be quarantined" in text and "subject.date_of_birth" in text
    assert "partial date: year only" in text
    assert "31/02" not in text and "NOTAPC" not in text  # counts and reasons, never values
    assert not (tmp / "v").exists()  # a dry run writes nothing


def test_semicolon_file_gets_one_hint_not_a_line_per_column(tmp_path: Path, capsys) -> None:
    mp = _write_mapping(tmp_path)
    provision_partnership(tmp_path, ["GPR"])
    ext = tmp_path / "semi.csv"
    ext.write_text("\n".join(r.replace(",", ";") for r in [HEADER, *ROWS[:3]]) + "\n")
    with pytest.raises(ExtractRefused) as exc:
        run_bridge(ext, mp, tmp_path / "agency" / "GPR", tmp_path / "landing")
    problems = exc.value.problems
    assert problems[0].startswith("semi.csv: looks like ';'-delimited: set `delimiter: ';'`")
    assert len(problems) == 2 and not any("is missing" in p for p in problems)
    assert landed_batches(tmp_path / "landing", "GPR") == []
    assert (
        main(["validate", str(ext), "--mapping", str(mp), "--agency-dir", str(tmp_path / "v")]) == 2
    )
    err = capsys.readouterr().err
    assert err.count("looks like ';'-delimited") == 1 and "is missing" not in err
    fixed = _write_mapping(tmp_path, source={**MAPPING["source"], "delimiter": ";"})
    res = run_bridge(ext, fixed, tmp_path / "agency" / "GPR", tmp_path / "landing")
    assert res.rows_accepted == 3


def test_ten_megabyte_field_is_nulled_and_reported_never_a_traceback(
    tmp_path: Path, capsys
) -> None:
    mp = _write_mapping(tmp_path)
    provision_partnership(tmp_path, ["GPR"])
    ext = tmp_path / "big.csv"
    huge = "x" * (10 << 20)
    ext.write_text(
        "\n".join(
            [
                HEADER,
                ROWS[0],
                f"R2,{huge},Smith,04/03/2012,,LS1 4AB,R,",
                f"R3,Ann,Lee,01/02/2013,,M1 1AA,R,{'note ' * 40_000}",
                ROWS[4],
            ]
        )
        + "\n"
    )
    assert main(
        ["validate", str(ext), "--mapping", str(mp), "--agency-dir", str(tmp_path / "v")]
    ) in (0, 1)
    assert "Traceback" not in capsys.readouterr().err
    res = run_bridge(ext, mp, tmp_path / "agency" / "GPR", tmp_path / "landing")
    assert (res.rows_read, res.rows_accepted, res.rows_quarantined) == (4, 4, 0)
    assert res.field_counts["subject.given_name"] == {OVERSIZED: 1}
    assert res.field_counts["payload.case_notes"] == {OVERSIZED: 1}
    report = json.loads(res.report_path.read_text())
    assert {"line": 3, "field": "subject.given_name", "reason": OVERSIZED} in report["field_rows"]
    assert {"line": 4, "field": "payload.case_notes", "reason": OVERSIZED} in report["field_rows"]
    assert res.report_path.stat().st_size < 100_000  # the value is not in the report


@pytest.mark.parametrize(
    ("name", "data", "expect"),
    [
        (
            "utf16.csv",
            (HEADER + "\n" + ROWS[0] + "\n").encode("utf-16"),
            "looks like UTF-16 text (byte-order mark): set `encoding: utf-16`",
        ),
        ("image.csv", bytes(range(256)) * 64, "looks like a binary file"),
        ("sheet.csv", b"PK\x03\x04" + bytes(500), "export the sheet as CSV"),
    ],
)
def test_unreadable_files_are_refusals_with_a_hint(
    tmp_path: Path, capsys, name: str, data: bytes, expect: str
) -> None:
    mp = _write_mapping(tmp_path)
    provision_partnership(tmp_path, ["GPR"])
    ext = tmp_path / name
    ext.write_bytes(data)
    code = main(
        [
            "run",
            str(ext),
            "--mapping",
            str(mp),
            "--agency-dir",
            str(tmp_path / "agency" / "GPR"),
            "--landing",
            str(tmp_path / "landing"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and expect in err and "Traceback" not in err
    assert landed_batches(tmp_path / "landing", "GPR") == []
    refused = list((tmp_path / "agency" / "GPR" / "reports").glob("*.refused.json"))
    assert len(refused) == 1 and expect in refused[0].read_text()
    assert (
        main(["validate", str(ext), "--mapping", str(mp), "--agency-dir", str(tmp_path / "v")]) == 2
    )


def test_cp1252_rows_are_quarantined_with_an_encoding_hint(tmp_path: Path, capsys) -> None:
    mp = _write_mapping(tmp_path)
    ext = tmp_path / "cp.csv"
    ext.write_bytes(
        (HEADER + "\n" + ROWS[0] + "\nR2,Zoë,Smith,04/03/2012,,LS1 4AB,R,\n").encode("cp1252")
    )
    got = dry_run(ext, mp)
    assert (got.rows_read, got.rows_accepted, got.rows_quarantined) == (2, 1, 1)
    assert got.hints == [
        "cp.csv: is not valid utf-8 but reads as Windows-1252: set "
        "`encoding: cp1252` in the mapping's source"
    ]
    fixed = _write_mapping(tmp_path, source={**MAPPING["source"], "encoding": "cp1252"})
    assert dry_run(ext, fixed).rows_accepted == 2


@pytest.mark.parametrize(
    ("problems", "ok"),
    [
        (
            {"subject.upn": {"upn is not a check letter + 11 digits + digit/letter (13 chars)": 2}},
            True,
        ),
        ({"subject.given_name": {"<script>": 1}}, False),  # only short plain-text reasons
        ({"subject.given_name": {"missing given name": -1}}, False),
        ({"Subject Given": {"missing given name": 1}}, False),
        ({"subject.given_name": {f"r{i}": 1 for i in range(51)}}, False),
    ],
)
def test_hub_checks_the_signed_field_problem_counts(
    tmp_path: Path, problems: dict, ok: bool
) -> None:
    """The hub stores only well-formed counts: names of fields, short reasons, integers."""
    import pandas as pd

    from ig_bridge.keys import generate_signing_key
    from ig_bridge.manifest import (
        BatchRefused,
        build_manifest,
        sign_manifest,
        verify_batch,
        write_manifest,
    )

    key = generate_signing_key("GPR")
    batch = tmp_path / "landing" / "GPR" / "b1"
    batch.mkdir(parents=True)
    pd.DataFrame({"record_ref": ["r1"]}).to_parquet(batch / "identifiers.parquet")
    man = build_manifest(
        batch,
        batch_id="b1",
        agency="GPR",
        sequence=1,
        extract_kind="delta",
        mapping_version=1,
        canonical_version=1,
        encoding_spec_version=1,
        link_key_version=1,
        ref_key_version=1,
        signing_key_id=key.key_id,
        rows={"read": 1, "accepted": 1, "quarantined": 0},
    )
    man["field_problems"] = problems  # as a bridge (or a forger holding its key) signs it
    write_manifest(batch, sign_manifest(man, key))
    if ok:
        vm = verify_batch(batch, {key.key_id: key.public_bytes()})
        assert vm.raw["field_problems"] == problems
    else:
        with pytest.raises(BatchRefused, match="field_problems"):
            verify_batch(batch, {key.key_id: key.public_bytes()})
