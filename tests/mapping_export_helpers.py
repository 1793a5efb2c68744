"""Shared by the real-export mapping tests: writing a mapping file and ingesting its batches."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import duckdb
import pandas as pd
import yaml

from linkage.config import HubPaths
from linkage.ingest import ingest_landing


def _vals(series: pd.Series) -> list:
    """Values with every missing marker (None, NaN, pd.NA) as None."""
    return [None if pd.isna(v) else v for v in series]


def _write_mapping(folder: Path, doc: dict, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def _hub(run: Path, mappings: Path, code: str) -> tuple[HubPaths, duckdb.DuckDBPyConnection]:
    """Ingest every landed batch with the hub's real ingest, reading this mappings folder."""
    paths = dataclasses.replace(HubPaths.for_run(run), mappings=mappings)
    report = ingest_landing(paths)
    assert [o.status for o in report.outcomes] == ["accepted"], report.outcomes
    return paths, duckdb.connect(str(paths.warehouse))


def households_of_one_export(
    run: Path, doc: dict, code: str, extract_text: str, members_sql: str
) -> dict:
    """One agency's export through its real bridge and the hub's ingest, then households
    with one person per record (these tests are about address evidence, not person linkage).
    Returns the bridge result, the opened batch's identifiers and payload, `members_sql`'s
    rows and the households result."""
    import pyarrow.parquet as pq
    from sealed_batches import open_batch

    from ig_bridge.split import run_bridge
    from linkage.households import build_households
    from synthetic_data.parties import provision_partnership

    mappings = run / "mappings"
    mp = _write_mapping(mappings, doc, f"{code.lower()}.yaml")
    provision_partnership(run, [code])
    ext = run / "register.csv"
    ext.write_text(extract_text, encoding="utf-8")
    res = run_bridge(ext, mp, run / "agency" / code, run / "landing")
    opened = open_batch(res.landed_path, run / "opened", run / "hub" / "keys")
    ids = pq.read_table(opened / "identifiers.parquet").to_pandas()
    pay = pq.read_table(opened / "payload.parquet").to_pandas()
    _, con = _hub(run, mappings, code)
    try:
        con.execute(
            "CREATE TABLE person AS SELECT record_ref AS person_id, 'active' AS status "
            "FROM identifiers"
        )
        con.execute(
            "CREATE TABLE record_person AS SELECT record_ref, agency, "
            "record_ref AS person_id FROM identifiers"
        )
        hh = build_households(con, "hh-1", tenancies=[])
        members = con.execute(members_sql).df()
    finally:
        con.close()
    return {"res": res, "ids": ids, "pay": pay, "members": members, "hh": hh}
