"""End to end through Airflow (dag.test on SQLite, as `make demo` does): the session's demo run
(conftest `airflow_demo`). Kill-and-rerun of the hub stages: test_hub_kill_rerun.py."""

from __future__ import annotations

import json

import duckdb

REQUIRED = (
    "record_person",
    "person",
    "household",
    "household_member",
    "family_edge",
    "clerical_review",
    "linkage_run",
    "batch",
)


def test_demo_runs_bridges_and_hub_through_airflow(airflow_demo: dict) -> None:
    out = airflow_demo["run"]  # the session's `make demo` run (conftest), read only
    stdout, stderr = airflow_demo["stdout"], airflow_demo["stderr"]
    assert airflow_demo["returncode"] == 0, (stdout[-3000:], stderr[-3000:])
    states = json.loads((out / "demo_states.json").read_text())
    assert states and set(states.values()) == {"success"}
    assert len(states) == 8  # seven bridges + the hub
    # every batch went through the landing zone, was verified and loaded, none refused
    assert not any((out / "landing").rglob("manifest.json*"))
    con = duckdb.connect(str(out / "hub" / "warehouse.duckdb"), read_only=True)
    try:
        tables = {
            t for (t,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        }
        assert set(REQUIRED) <= tables
        assert con.execute("SELECT count(DISTINCT agency) FROM batch").fetchone()[0] == 7
        assert con.execute("SELECT count(*) FROM refused_batch").fetchone()[0] == 0
        for t in ("record_person", "person", "household", "household_member", "family_edge"):
            assert con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] > 0, t
        n_records = con.execute("SELECT count(*) FROM identifiers").fetchone()[0]
        assert con.execute("SELECT count(*) FROM record_person").fetchone()[0] == n_records
        # the Airflow run id is the linkage run id
        run_ids = [r for (r,) in con.execute("SELECT run_id FROM linkage_run").fetchall()]
        assert len(run_ids) == 1 and run_ids[0].startswith("manual__")
    finally:
        con.close()
    # the asset events carry the batch ids that landed
    import sqlite3

    meta = sqlite3.connect(out / "airflow" / "airflow.db")
    extras = [json.loads(e) for (e,) in meta.execute("SELECT extra FROM asset_event")]
    meta.close()
    assert sorted(e["agency"] for e in extras) == sorted(
        p.name for p in (out / "agency").iterdir() if (p / "keys").is_dir()
    )
    assert all(e["batch_id"].startswith(e["agency"] + "-") for e in extras)
    assert "warehouse:" in stdout and "marts:" in stdout
    # and the Airflow-run warehouse links at the quality floors the linkage issue sets
    from test_quality_floors import FLOORS

    q = json.loads((out / "hub" / "reports" / "linkage_quality.json").read_text())
    assert q["auto_match_precision"] >= FLOORS["auto_match_precision"]
    assert q["person_all_pairs"]["f1"] >= FLOORS["person_f1"]
    assert q["person_cross_agency"]["f1"] >= FLOORS["cross_agency_f1"]
    assert q["pair_completeness"] >= FLOORS["pair_completeness"]
    assert q["household_pairwise"]["f1"] >= FLOORS["household_f1"]
    assert q["privacy_cost_f1"] >= FLOORS["privacy_cost_f1"]
