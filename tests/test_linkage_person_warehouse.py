"""Person linkage and the warehouse: optimizer settings, the scratch database, tables of earlier
versions and re-runs over the same warehouse file."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from linkage_person_helpers import QUIET, _load, _partition
from test_linkage_toydata import make_toy

from linkage.person_linkage import link_persons, stored_model


def test_optimizers_disabled_skips_names_this_duckdb_lacks_and_restores() -> None:
    from linkage.warehouse import optimizers_disabled

    con = duckdb.connect()
    with (
        pytest.raises(RuntimeError, match="stage failed"),  # noqa: PT012
        optimizers_disabled(con, "cte_inlining", "no_such_optimizer"),
    ):
        assert (
            con.execute("SELECT current_setting('disabled_optimizers')").fetchall()[0][0]
            == "cte_inlining"
        )
        raise RuntimeError("stage failed")
    assert con.execute("SELECT current_setting('disabled_optimizers')").fetchall()[0][0] == ""


def test_keyed_tables_of_earlier_versions_are_rebuilt_without_keys(tmp_path: Path) -> None:
    """Earlier versions gave record_person and person a PRIMARY KEY (a re-run then spent
    ~10 s at 1M records maintaining the index). The next run drops the keys and keeps rows
    and person ids."""
    toy = make_toy(n_households=40, seed=3)
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    _load(con, toy.identifiers)
    r1 = link_persons(con, "run-1", QUIET)
    before = _partition(con).sort_values(["agency", "record_ref"], ignore_index=True)
    n_person = con.execute("SELECT count(*) FROM person").fetchall()[0][0]
    for table, key in (("record_person", "agency, record_ref"), ("person", "person_id")):
        con.execute(f"CREATE TABLE {table}_copy AS SELECT * FROM {table}")
        cols = ", ".join(f"{n} {t}" for n, t, *_ in con.execute(f"DESCRIBE {table}").fetchall())
        con.execute(f"DROP TABLE {table}")
        con.execute(f"CREATE TABLE {table} ({cols}, PRIMARY KEY ({key}))")
        con.execute(f"INSERT INTO {table} SELECT * FROM {table}_copy")
        con.execute(f"DROP TABLE {table}_copy")
    keys = (
        "SELECT count(*) FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY' "
        "AND table_name IN ('record_person', 'person')"
    )
    assert con.execute(keys).fetchall()[0][0] == 2
    link_persons(con, "run-2", replace(QUIET, model=r1.model))
    assert con.execute(keys).fetchall()[0][0] == 0
    after = _partition(con).sort_values(["agency", "record_ref"], ignore_index=True)
    pd.testing.assert_frame_equal(after, before)
    assert con.execute("SELECT count(*) FROM person").fetchall()[0][0] == n_person
    con.close()


def test_scratch_database_restores_the_database_in_use_also_on_error(tmp_path: Path) -> None:
    from linkage.warehouse import SCRATCH_DATABASE, scratch_database

    con = duckdb.connect(str(tmp_path / "my warehouse.duckdb"))
    con.execute("CREATE SCHEMA hub; USE hub; CREATE TABLE kept AS SELECT 1 AS x")
    with pytest.raises(RuntimeError, match="stage failed"), scratch_database(con):  # noqa: PT012
        con.execute("CREATE TABLE work AS SELECT 2 AS y")
        assert con.execute(
            "SELECT database_name FROM duckdb_tables() WHERE table_name = 'work'"
        ).fetchall() == [(SCRATCH_DATABASE,)]
        # What the block reads is named with its database.
        assert con.execute('SELECT x FROM "my warehouse".hub.kept').fetchall() == [(1,)]
        with scratch_database(con):  # an inner stage shares the scratch database
            con.execute("CREATE TABLE inner_work AS SELECT 3 AS z")
        assert con.execute("SELECT current_database()").fetchone()[0] == SCRATCH_DATABASE
        assert con.execute("SELECT z FROM inner_work").fetchall() == [(3,)]
        raise RuntimeError("stage failed")
    assert con.execute("SELECT current_database(), current_schema()").fetchall() == [
        ("my warehouse", "hub")
    ]
    assert not con.execute("SELECT 1 FROM duckdb_tables() WHERE table_name = 'work'").fetchall()
    assert con.execute("SELECT x FROM kept").fetchall() == [(1,)]


def test_scratch_database_spills_to_disk_under_the_memory_limit(tmp_path: Path) -> None:
    """Splink's candidate pairs grow faster than the records (names pair up with the square
    of a population): the in-memory scratch database must not cap the hub at its RAM. Under
    DuckDB's memory limit it spills to the warehouse's temp directory."""
    from linkage.warehouse import scratch_database

    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    con.execute("SET memory_limit = '100MB'")
    with scratch_database(con):
        # ~240 MB of three BIGINT columns: over twice the limit.
        con.execute(
            "CREATE TABLE pairs AS SELECT range AS l, range + 1 AS r, range % 2 AS k "
            "FROM range(10000000)"
        )
        spilled = con.execute(
            "SELECT coalesce(sum(size), 0) FROM duckdb_temporary_files()"
        ).fetchone()[0]
        assert spilled > 32 * 2**20  # (spilled blocks are compressed)
        assert con.execute("SELECT count(*), sum(k) FROM pairs").fetchall() == [
            (10_000_000, 5_000_000)
        ]


def test_rerun_keeps_one_open_queue_row_per_pair(tmp_path: Path) -> None:
    """A second full run on the same warehouse supersedes the first run's open queue instead
    of doubling it (the IG report counts open rows as open pairs)."""
    toy = make_toy(n_households=120, seed=3)
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    try:
        _load(con, toy.identifiers)
        first = link_persons(con, "run-a", QUIET)
        model = stored_model(con, first.model_version)
        second = link_persons(con, "run-b", replace(QUIET, model=model))
        assert first.n_clerical_pairs > 0
        open_rows, open_pairs = con.execute("""
            SELECT count(*), count(DISTINCT least(agency_l || record_ref_l,
                                                  agency_r || record_ref_r)
                                         || greatest(agency_l || record_ref_l,
                                                     agency_r || record_ref_r))
            FROM clerical_review WHERE status = 'open'""").fetchone()
        assert open_rows == open_pairs == second.n_clerical_pairs
        runs = con.execute(
            "SELECT DISTINCT run_id FROM clerical_review WHERE status = 'open'"
        ).fetchall()
        assert runs == [("run-b",)]
        assert (
            con.execute(
                "SELECT count(*) FROM clerical_review WHERE status = 'superseded'"
            ).fetchone()[0]
            == first.n_clerical_pairs
        )
    finally:
        con.close()
