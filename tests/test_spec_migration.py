"""Encoding spec change on a running partnership (issue 16: v2 -> v3), end to end on real
bridges, real keys, a real DuckDB warehouse and real linkage: the hub links nothing while rows
of two spec versions are mixed, every agency re-sends a full snapshot under the new spec,
`finish` drops the old spec's low-entropy columns, and person ids carry over."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
import yaml

from ig_bridge.encoding import SPEC_ENV, load_encoding_spec
from ig_bridge.split import run_bridge
from linkage import spec_migration
from linkage.config import EncodingContract, HubPaths
from linkage.orchestration import resolve_extract
from linkage.pipeline import stage_ingest, stage_link_persons
from schemas.mapping import load_all_mappings
from synthetic_data.generate import generate_population
from synthetic_data.parties import provision_partnership

CODES = ["GP", "SCH"]


def _old_spec(path: Path) -> Path:
    """An older spec as partnerships ran before v3: standalone sex and birth-year tokens, and
    without one of v3's blocking keys."""
    spec = load_encoding_spec()
    spec["encoding_spec_version"] = spec["encoding_spec_version"] - 1
    spec["tokens"]["columns"]["tok_sex"] = {"source": "sex", "domain": "sex"}
    spec["tokens"]["columns"]["tok_dob_year"] = {"source": "dob_year", "domain": "dob_year"}
    del spec["blocking"]["columns"]["blk_initials_dob"]
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _bridge(run: Path, code: str) -> None:
    mappings = load_all_mappings(HubPaths.for_run(run).mappings)
    run_bridge(
        resolve_extract(code, base=run), mappings[code].path, run / "agency" / code, run / "landing"
    )


def _persons(paths: HubPaths, run_id: str) -> dict[str, str]:
    con = duckdb.connect(str(paths.warehouse), read_only=True)
    try:
        return dict(con.execute("SELECT record_ref, person_id FROM record_person").fetchall())
    finally:
        con.close()


def _columns(paths: HubPaths, table: str) -> set[str]:
    con = duckdb.connect(str(paths.warehouse), read_only=True)
    try:
        return {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}
    finally:
        con.close()


def test_spec_change_waits_for_every_agency_then_drops_old_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    generate_population(run / "population", seed=5, people=200)
    provision_partnership(run, CODES)
    paths = HubPaths.for_run(run)

    # The partnership as it ran before: every bridge and the hub on the old spec.
    monkeypatch.setenv(SPEC_ENV, str(_old_spec(tmp_path / "old_spec.yaml")))
    old = EncodingContract.load()
    for code in CODES:
        _bridge(run, code)
    assert {o["status"] for o in stage_ingest(paths)["outcomes"]} == {"accepted"}
    stage_link_persons(paths, "r1")
    before = _persons(paths, "r1")
    assert {"tok_sex", "tok_dob_year"} <= _columns(paths, "identifiers")

    # The upgrade: hub and bridges on the packaged (new) spec; GP re-sends first.
    monkeypatch.delenv(SPEC_ENV)
    new = EncodingContract.load()
    assert new.version == old.version + 1
    _bridge(run, "GP")
    assert {o["status"] for o in stage_ingest(paths)["outcomes"]} == {"accepted"}
    assert "blk_initials_dob" in _columns(paths, "identifiers")  # added for v3
    con = duckdb.connect(str(paths.warehouse))
    try:
        status = spec_migration.migration_status(con, new)
        assert status.pending_agencies == ["SCH"]
        assert set(status.rows_by_agency["GP"]) == {new.version}  # the snapshot replaced v2
        assert {"tok_sex", "tok_dob_year"} <= set(status.stale_columns["identifiers"])
        # Old and new rows would meet as strangers: linking and finishing both refuse.
        with pytest.raises(spec_migration.SpecMigrationPending, match="SCH"):
            spec_migration.finish(con, new)
    finally:
        con.close()
    with pytest.raises(spec_migration.SpecMigrationPending, match="SCH"):
        stage_link_persons(paths, "r2")

    _bridge(run, "SCH")
    assert {o["status"] for o in stage_ingest(paths)["outcomes"]} == {"accepted"}
    assert spec_migration.main(["finish", "--run-dir", str(run)]) == 0
    for table in ("identifiers", "related"):
        cols = _columns(paths, table)
        assert not cols & {"tok_sex", "tok_dob_year"}, table  # nothing of v2's tokens is left
        assert set(new.encoded_columns) <= cols
    con = duckdb.connect(str(paths.warehouse))
    try:
        assert spec_migration.migration_status(con, new).done
    finally:
        con.close()

    stage_link_persons(paths, "r2")
    after = _persons(paths, "r2")
    assert set(after) == set(before)  # record refs do not depend on the spec
    kept = sum(after[r] == p for r, p in before.items())
    assert kept >= 0.95 * len(before), (kept, len(before))  # person ids carry over
