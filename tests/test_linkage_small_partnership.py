"""A partnership's first hub run often sees one or two small batches: it must still link."""

from __future__ import annotations

from pathlib import Path

import duckdb

from ig_bridge.split import run_bridge
from linkage.config import HubPaths
from linkage.orchestration import resolve_extract
from linkage.pipeline import stage_households, stage_ingest, stage_link_persons
from schemas.mapping import load_all_mappings
from synthetic_data.generate import generate_population
from synthetic_data.parties import provision_partnership


def test_two_small_agencies_link_without_errors(tmp_path: Path) -> None:
    run = tmp_path / "run"
    generate_population(run / "population", seed=5, people=200)
    codes = ["GP", "SCH"]
    provision_partnership(run, codes)
    mappings = load_all_mappings(HubPaths.for_run(run).mappings)
    for code in codes:
        run_bridge(
            resolve_extract(code, base=run),
            mappings[code].path,
            run / "agency" / code,
            run / "landing",
        )
    paths = HubPaths.for_run(run)
    ingested = stage_ingest(paths)
    assert {o["status"] for o in ingested["outcomes"]} == {"accepted"}

    linked = stage_link_persons(paths, "first-run")
    stage_households(paths, "first-run")
    con = duckdb.connect(str(paths.warehouse), read_only=True)
    try:
        n_records = con.execute("SELECT count(*) FROM identifiers").fetchone()[0]
        bands = dict(con.execute("SELECT band, count(*) FROM record_person GROUP BY 1").fetchall())
        n_persons = con.execute("SELECT count(*) FROM person WHERE status = 'active'").fetchone()[0]
    finally:
        con.close()
    assert sum(bands.values()) == n_records == linked["n_records"]
    assert set(bands) <= {"auto_match", "clerical", "non_match"}
    # pupils are registered with GPs too: some records must have linked across the two
    assert 0 < n_persons < n_records
