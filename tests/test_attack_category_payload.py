"""Attack (issue #15, item 4): an agency's extract carries a child's name, date of birth and
street address in its category payload fields (school name, referral reason, practice code,
lead practitioner contact, ...). Every agency of the demo partnership is attacked with its real
mapping, bridged with real keys and ingested by the real hub. Nothing of the planted values may
reach the hub (warehouse rows, warehouse file bytes, any landed, ingested or report file), and
every attacked record must still arrive: a bad field is nulled and reported (line and field,
never the value), the row is kept. An open category declared `scrub: true` arrives scrubbed.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from ig_bridge.keys import KeyStore, encrypt_record_refs
from ig_bridge.split import run_bridge
from linkage.config import HubPaths
from linkage.ingest import ingest_landing
from schemas.mapping import SUBJECT, Mapping, load_mapping
from synthetic_data.generate import generate_population
from synthetic_data.parties import provision_partnership

MAPPINGS = Path(__file__).resolve().parents[1] / "schemas" / "agencies"
ATTACKED_ROWS = 3
SCRUBBED = ("CSC", "referral_reason")  # declared an open category in the attack's own mapping


def _read(path: Path, m: Mapping) -> pd.DataFrame:
    if m.source.format == "parquet":
        return pq.read_table(path).to_pandas()
    return pd.read_csv(
        path,
        dtype=str,
        sep=m.source.delimiter,
        encoding=m.source.encoding,
        keep_default_na=False,
        na_values=[""],
    )


def _write(df: pd.DataFrame, path: Path, m: Mapping) -> None:
    if m.source.format == "parquet":
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
    else:
        df.to_csv(path, sep=m.source.delimiter, encoding=m.source.encoding, index=False)


def _plant(df: pd.DataFrame, m: Mapping, targets: list[str]) -> tuple[list[int], list[str]]:
    """Write '<name> born <DOB>' and '<street> <postcode>' of each attacked row's own subject
    into its category columns. Returns the rows' positions and the planted needles."""
    ids = m.identifier_columns(SUBJECT)
    name_cols = [ids[f] for f in ("given_name", "family_name", "full_name") if f in ids]
    addr_col = ids.get("address_line_1") or ids.get("address")
    need = [*name_cols, ids["date_of_birth"], addr_col]
    rows = [i for i in range(len(df)) if df.loc[i, need].notna().all()][:ATTACKED_ROWS]
    needles: list[str] = []
    for i in rows:
        name = " ".join(str(df.loc[i, c]) for c in name_cols)
        dob = str(df.loc[i, ids["date_of_birth"]])
        street = str(df.loc[i, addr_col]).split(",")[0].strip()
        pc = (
            str(df.loc[i, ids["postcode"]])
            if "postcode" in ids and pd.notna(df.loc[i, ids["postcode"]])
            else ""
        )
        planted = [f"{name} born {dob}", f"{street} {pc}".strip()]
        for j, col in enumerate(targets):
            df.loc[i, col] = planted[j % 2] if len(targets) > 1 else "; ".join(planted)
        needles += [name, dob, street] + ([pc] if len(pc) >= 5 else [])
    return rows, needles


@pytest.fixture(scope="module")
def attack(tmp_path_factory: pytest.TempPathFactory):
    run = tmp_path_factory.mktemp("category_attack")
    summary = generate_population(run / "population", seed=20240615, people=300)
    codes = list(summary.agencies)
    provision_partnership(run, codes)
    maps_dir = run / "mappings"
    shutil.copytree(MAPPINGS, maps_dir)
    # The CSC data officer declares referral_reason open (scrub: true) instead of closed.
    csc = maps_dir / "csc.yaml"
    doc = yaml.safe_load(csc.read_text("utf-8"))
    for col in doc["columns"]:
        if col.get("field") == SCRUBBED[1]:
            col.pop("values")
            col["scrub"] = True
    csc.write_text(yaml.safe_dump(doc, sort_keys=False), "utf-8")

    planted: dict[str, dict] = {}
    for code, agency in summary.agencies.items():
        mp = maps_dir / f"{code.lower()}.yaml"
        m = load_mapping(mp)
        extract = run / "population" / agency.file
        df = _read(extract, m)
        pols = m.payload_policies()
        targets = [m.payload_columns()[f] for f, p in pols.items() if p.type == "category"]
        rows, needles = _plant(df, m, targets)
        _write(df, extract, m)
        if m.source.format == "csv":  # the attack really is in the file the bridge reads
            raw = extract.read_text(encoding=m.source.encoding)
            assert all(n in raw for n in needles), code
        res = run_bridge(extract, mp, run / "agency" / code, run / "landing")
        ref_key = KeyStore(run / "agency" / code / "keys", code).ref_key()
        record_ids = [str(df.loc[i, m.record_id_column]).strip() for i in rows]
        planted[code] = {
            "mapping": m,
            "rows": rows,
            "needles": needles,
            "result": res,
            "refs": encrypt_record_refs(ref_key, record_ids),
            "fields": {f: p.kind for f, p in pols.items() if p.type == "category"},
        }
    landed = sorted(p for p in (run / "landing").rglob("*") if p.is_file())
    landed_text = _file_texts(landed)
    paths = HubPaths(hub=run / "hub", landing=run / "landing", mappings=maps_dir)
    report = ingest_landing(paths)
    return run, planted, report, landed_text


def _file_texts(files: list[Path]) -> dict[str, str]:
    """Raw bytes (latin-1, lower-cased) of each file, plus every decoded Parquet string value."""
    out: dict[str, str] = {}
    for p in files:
        text = p.read_bytes().decode("latin-1")
        if p.suffix == ".parquet":
            t = pq.read_table(p)
            text += "\n".join(
                str(v)
                for name in t.column_names
                if pa.types.is_string(t.schema.field(name).type)
                for v in t.column(name).to_pylist()
                if v is not None
            )
        out[str(p)] = text.lower()
    return out


def _found(needle: str, text: str) -> bool:
    """The needle as a value of its own, not four letters inside a base64 record_ref or token:
    a random 43-character ref holds a given 4-letter word case-insensitively about once in 10^4
    refs, which made this test fail on a short needle ('tong') by chance."""
    edge = r"[a-z0-9+/=_-]"
    return re.search(rf"(?<!{edge}){re.escape(needle)}(?!{edge})", text) is not None


def _warehouse_strings(path: Path) -> str:
    """Every string value of every table of the warehouse, decoded by DuckDB itself."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        cols = con.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE data_type = 'VARCHAR'"
        ).fetchall()
        vals = [
            str(v)
            for t, c in cols
            for (v,) in con.execute(
                f'SELECT DISTINCT "{c}" FROM "{t}" WHERE "{c}" IS NOT NULL'
            ).fetchall()
        ]
    finally:
        con.close()
    assert len(vals) > 1000
    return "\n".join(vals).lower()


def test_attack_was_planted(attack) -> None:
    _, planted, _, _ = attack
    assert set(planted) == {"GP", "HV", "SCH", "CSC", "POL", "HSG", "EH"}
    for code, p in planted.items():
        assert len(p["rows"]) == ATTACKED_ROWS, code
        assert len(p["needles"]) >= 3 * ATTACKED_ROWS, code


def test_nothing_planted_reaches_the_hub(attack) -> None:
    run, planted, report, landed_text = attack
    assert report.outcomes and all(o.status == "accepted" for o in report.outcomes), report
    needles = {n.lower() for p in planted.values() for n in p["needles"]}
    hub_files = [
        p for p in (run / "hub").rglob("*") if p.is_file() and "public_keys" not in p.parts
    ]
    texts = {
        **landed_text,
        **_file_texts(hub_files),
        "warehouse rows": _warehouse_strings(HubPaths.for_run(run).warehouse),
    }
    assert any("ingested" in k for k in texts) and any(k.endswith(".duckdb") for k in texts)
    leaks = [(where, n) for where, text in texts.items() for n in needles if _found(n, text)]
    assert leaks == [], leaks[:10]


def test_every_attacked_record_arrived_with_its_field_nulled_or_scrubbed(attack) -> None:
    run, planted, _, _ = attack
    con = duckdb.connect(str(HubPaths.for_run(run).warehouse), read_only=True)
    try:
        for code, p in planted.items():
            res = p["result"]
            assert res.rows_read == res.rows_accepted + res.rows_quarantined
            n = con.execute("SELECT count(*) FROM payload WHERE agency = ?", [code]).fetchone()[0]
            assert n == res.rows_accepted, code
            for ref in p["refs"]:
                row = con.execute(
                    "SELECT * FROM payload WHERE agency = ? AND record_ref = ?", [code, ref]
                ).fetchdf()
                assert len(row) == 1, (code, "attacked record lost")
                for f, kind in p["fields"].items():
                    v = row.loc[0, f]
                    if kind == "closed":
                        assert pd.isna(v), (code, f)
                    else:  # the open category arrived, scrubbed of the child's identifiers
                        assert (code, f) == SCRUBBED
                        assert set(v.split()) <= {
                            "[SUBJECT_NAME]",
                            "born",
                            "[DOB]",
                            "[ADDRESS]",
                            "[POSTCODE]",
                            ";",
                        }, v
    finally:
        con.close()


def test_bridge_report_names_line_and_field_never_the_value(attack) -> None:
    _, planted, _, _ = attack
    for code, p in planted.items():
        res = p["result"]
        closed = sorted(f for f, k in p["fields"].items() if k == "closed")
        assert {f for _, f in res.field_problems} == set(closed), code
        assert len(res.field_problems) == ATTACKED_ROWS * len(closed), code
        report = json.loads(res.report_path.read_text("utf-8"))
        listed = report["field_problems"]["rows"]
        assert {(r["line"], r["field"]) for r in listed} == set(res.field_problems)
        lines = {r["line"] for r in listed}  # CSV: line in the file (header is 1); Parquet: row
        if p["mapping"].source.format == "parquet":
            assert lines == {i + 1 for i in p["rows"]}, code
        else:
            assert len(lines) == ATTACKED_ROWS and min(lines) >= p["rows"][0] + 2, code
        text = res.report_path.read_text("utf-8").lower()
        assert [n for n in p["needles"] if _found(n.lower(), text)] == [], code


def test_the_leak_check_finds_a_planted_value_but_not_letters_inside_a_ref() -> None:
    ref = "gAAAAABpZxTONgq3k_0vWl-7Hq9xYz"  # base64url ciphertext shape
    assert not _found("tong", ref.lower())
    for leaked in ('{"reason": "tong born 2015-03-01"}', "x\x07tong\x00", "12 oak st, tong"):
        assert _found("tong", leaked.lower()), leaked
