"""Incremental person linkage against a full relink, on the whole chain.

Setup (once per module, from the `orchestrated_run` fixture's 1,500 people): GP's landed batch
is replaced by a snapshot without 120 registrations; the hub ingests everything and runs a full
linkage (model trained). Then GP sends a delta with the 120 held-back registrations plus 10
changed ones (new phone number). The same warehouse is then linked two ways: incrementally,
and by a full relink with the stored model; the two partitions must agree.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from ig_bridge.keys import KeyStore
from ig_bridge.split import run_bridge
from linkage.config import HubPaths
from linkage.evaluation import pairwise_metrics
from linkage.incremental import NeedsFullRelink, link_incremental
from linkage.ingest import ingest_landing
from linkage.person_linkage import LinkageSettings, link_persons, stored_model
from linkage.sequence import abandon_sequence

ROOT = Path(__file__).resolve().parents[1]
MAPPINGS = ROOT / "schemas" / "agencies"
HELD_BACK = 120
CHANGED = 10


def _gp_extract(run: Path) -> tuple[Path, pd.DataFrame]:
    (path,) = sorted((run / "population" / "extracts" / "GP").glob("*.csv"))
    # every value as the text it was, so the re-written extract differs only where we say
    return path, pd.read_csv(path, dtype=str, keep_default_na=False)


def _bridge(
    run: Path, code: str, frame: pd.DataFrame, kind: str, name: str, suffix: str = "csv"
) -> Path:
    path = run / "population" / f"{name}.{suffix}"
    if suffix == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    res = run_bridge(
        path,
        MAPPINGS / f"{code.lower()}.yaml",
        run / "agency" / code,
        run / "landing",
        extract_kind=kind,
    )
    assert res.landed_path is not None and res.rows_accepted > 0
    return res.landed_path


def _settings(**kw: object) -> LinkageSettings:
    return LinkageSettings(show_progress=False, **kw)


@pytest.fixture(scope="module")
def base(orchestrated_run: Path, copy_run, tmp_path_factory: pytest.TempPathFactory) -> dict:
    run = copy_run(orchestrated_run, tmp_path_factory.mktemp("incremental") / "run")
    shutil.rmtree(next((run / "landing" / "GP").iterdir()))
    paths = HubPaths.for_run(run)
    # GP's first batch is withdrawn unsent: the hub is told, or it holds GP's later batches
    # waiting for sequence 1 (linkage.sequence).
    abandon_sequence(paths, "GP", 1, "test: first extract withdrawn unsent", "test")
    _path, gp = _gp_extract(run)
    held = gp.sample(n=HELD_BACK, random_state=3)
    first = gp.drop(held.index)
    _bridge(run, "GP", first, "snapshot", "gp_first")
    assert not ingest_landing(paths).refused
    con = duckdb.connect(str(paths.warehouse))
    try:
        full = link_persons(con, "full-1", _settings())
    finally:
        con.close()
    changed = first.sample(n=CHANGED, random_state=5).copy()
    phone_col = next(c for c in gp.columns if "phone" in c.lower() or "tel" in c.lower())
    changed[phone_col] = [f"07700 9001{i:02d}" for i in range(CHANGED)]
    delta = _bridge(run, "GP", pd.concat([held, changed]), "delta", "gp_delta")
    report = ingest_landing(paths, batch_dirs=[delta])
    assert [o.status for o in report.outcomes] == ["accepted"]
    return {"run": run, "model_version": full.model_version, "first_run": full}


def _hub_copy(base: dict, name: str) -> HubPaths:
    run = base["run"]
    shutil.copytree(run / "hub", run / name)
    return HubPaths(hub=run / name, landing=run / "landing")


def _partition(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return con.execute("""SELECT agency || ':' || record_ref AS unique_id, agency, person_id
                          FROM record_person""").df()


def test_incremental_agrees_with_full_relink_and_is_faster(base: dict) -> None:
    inc_paths, full_paths = _hub_copy(base, "hub_inc"), _hub_copy(base, "hub_full")
    con = duckdb.connect(str(inc_paths.warehouse))
    try:
        before = _partition(con)
        t = time.perf_counter()
        inc = link_incremental(con, "inc-1", _settings())
        t_inc = time.perf_counter() - t
        p_inc = _partition(con)
        mode = con.execute("SELECT mode FROM linkage_run WHERE run_id = 'inc-1'").fetchall()[0][0]
        n_persons = con.execute("SELECT count(*) FROM person WHERE status = 'active'").fetchall()[0]
    finally:
        con.close()
    con = duckdb.connect(str(full_paths.warehouse))
    try:
        model = stored_model(con, base["model_version"])
        t = time.perf_counter()
        full = link_persons(con, "full-2", _settings(model=model))
        t_full = time.perf_counter() - t
        p_full = _partition(con)
    finally:
        con.close()
    print(
        f"\nincremental {t_inc:.2f}s ({inc.n_scored_pairs} pairs scored, "
        f"{inc.n_changed_records} changed records) vs full relink with the stored model "
        f"{t_full:.2f}s ({full.n_scored_pairs} pairs): {t_full / t_inc:.1f}x; "
        f"incremental stages {inc.timings}, full stages {full.timings}"
    )

    assert mode == "incremental"
    assert inc.model_version == base["model_version"]
    assert inc.n_changed_records == HELD_BACK + CHANGED
    assert inc.n_retired_records == 0
    assert inc.n_scored_pairs < full.n_scored_pairs / 5
    assert len(p_inc) == len(p_full) == len(before) + HELD_BACK
    assert n_persons[0] == p_inc["person_id"].nunique()

    # The two partitions agree: pairwise F1 of incremental against full.
    m = pairwise_metrics(
        p_inc.rename(columns={"person_id": "cluster_id"}),
        p_full[["unique_id", "person_id"]],
        key="unique_id",
    )
    print(f"incremental vs full: precision {m.precision:.4f} recall {m.recall:.4f} F1 {m.f1:.4f}")
    assert m.f1 >= 0.99
    # Unchanged records: the same person partition as the full relink, up to pairs near the
    # threshold whose term-frequency adjusted weight moves when new records change how common
    # a name is (a full relink recomputes frequencies and rescores old pairs; seen: 4 of
    # ~1,060 pairs in one run of this test, none in others) ...
    unchanged = set(before["unique_id"])
    ui = p_inc[p_inc["unique_id"].isin(unchanged)]
    uf = p_full[p_full["unique_id"].isin(unchanged)]
    mu = pairwise_metrics(
        ui.rename(columns={"person_id": "cluster_id"}),
        uf[["unique_id", "person_id"]],
        key="unique_id",
    )
    assert mu.f1 >= 0.995, mu
    # ... and the person ids they had (a merge keeps one of them).
    keep = ui.merge(before, on="unique_id", suffixes=("", "_before"))
    assert (keep["person_id"] == keep["person_id_before"]).mean() >= 0.995
    # A new record the full relink puts with earlier records joins their existing person_id.
    full_pid = dict(zip(p_full["unique_id"], p_full["person_id"], strict=True))
    old_of_full = (
        uf.assign(pid_full=uf["unique_id"].map(full_pid))
        .merge(before, on="unique_id", suffixes=("", "_before"))
        .groupby("pid_full")["person_id_before"]
        .first()
    )
    new = p_inc[~p_inc["unique_id"].isin(unchanged)].copy()
    new["expected"] = new["unique_id"].map(full_pid).map(old_of_full)
    joined = new[new["expected"].notna()]
    print(f"{len(joined)} of {len(new)} new records belong with earlier records")
    assert len(joined) >= HELD_BACK // 4
    assert (joined["person_id"] == joined["expected"]).mean() >= 0.99


def test_changed_records_rescored_and_queue_updated(base: dict) -> None:
    paths = _hub_copy(base, "hub_queue")
    con = duckdb.connect(str(paths.warehouse))
    try:
        open_before = con.execute(
            "SELECT count(*) FROM clerical_review WHERE status = 'open'"
        ).fetchall()[0][0]
        inc = link_incremental(con, "inc-q", _settings())
        # every current record has exactly one mapping; touched rows carry this run's id
        n_rp, n_ids = con.execute("""SELECT (SELECT count(*) FROM record_person),
                                     (SELECT count(*) FROM identifiers)""").fetchall()[0]
        assert n_rp == n_ids
        touched = con.execute(
            "SELECT count(*) FROM record_person WHERE run_id = 'inc-q'"
        ).fetchall()[0][0]
        assert touched >= HELD_BACK + CHANGED
        new_q = con.execute(
            "SELECT count(*) FROM clerical_review WHERE run_id = 'inc-q'"
        ).fetchall()[0][0]
        assert new_q == inc.n_clerical_pairs
        # no open pair sits inside one person
        assert (
            con.execute("""SELECT count(*) FROM clerical_review WHERE status = 'open'
                              AND person_id_l = person_id_r""").fetchall()[0][0]
            == 0
        )
        assert (
            con.execute("SELECT count(*) FROM clerical_review WHERE status = 'open'").fetchall()[0][
                0
            ]
            <= open_before + new_q
        )
        # a second incremental run with nothing new changes nothing
        snap = _partition(con)
        again = link_incremental(con, "inc-q2", _settings())
        assert again.n_changed_records == 0 and again.n_scored_pairs == 0
        assert again.n_new_persons == 0 and again.n_retired_persons == 0
        pd.testing.assert_frame_equal(
            snap.sort_values("unique_id").reset_index(drop=True),
            _partition(con).sort_values("unique_id").reset_index(drop=True),
        )
    finally:
        con.close()


def test_snapshot_retirements_leave_their_persons(base: dict) -> None:
    run = base["run"]
    paths = _hub_copy(base, "hub_retire")
    (hsg_path,) = sorted((run / "population" / "extracts" / "HSG").glob("*.parquet"))
    hsg = pd.read_parquet(hsg_path)
    # Agency side: HSG knows its refs (its own key); pick 5 tenancies whose lead tenant has
    # no other record at the hub and 10 whose lead tenant has.
    ref_key = KeyStore(run / "agency" / "HSG" / "keys", "HSG").ref_key()
    hsg["ref"] = [ref_key.encrypt(str(x)) for x in hsg["tenancy_ref"]]
    con = duckdb.connect(str(paths.warehouse), read_only=True)
    try:
        n_rec = dict(
            con.execute("""SELECT rp.record_ref, p.n_records FROM record_person rp
                                    JOIN person p USING (person_id)
                                    WHERE rp.agency = 'HSG'""").fetchall()
        )
    finally:
        con.close()
    hsg["n"] = hsg["ref"].map(n_rec)
    drop = pd.concat([hsg[hsg["n"] == 1].head(5), hsg[hsg["n"] > 1].head(10)]).index
    assert len(drop) == 15
    landing = run / "landing_retire"
    snap_path = run / "population" / "hsg_retire.parquet"
    hsg.drop(index=drop).drop(columns=["ref", "n"]).to_parquet(snap_path, index=False)
    res = run_bridge(
        snap_path, MAPPINGS / "hsg.yaml", run / "agency" / "HSG", landing, extract_kind="snapshot"
    )
    paths = HubPaths(hub=paths.hub, landing=landing)
    assert [o.status for o in ingest_landing(paths).outcomes] == ["accepted"]
    con = duckdb.connect(str(paths.warehouse))
    try:
        gone = con.execute(
            "SELECT agency || ':' || record_ref FROM record_retired WHERE batch_id = ?",
            [res.batch_id],
        ).fetchall()
        gone = {g for (g,) in gone}
        assert len(gone) == 15
        prev = _partition(con)
        prev_p = prev[prev["unique_id"].isin(gone)]["person_id"]
        inc = link_incremental(con, "inc-r", _settings())
        now = _partition(con)
        assert inc.n_retired_records == 15
        assert not set(now["unique_id"]) & gone
        # persons whose only record retired are retired; the others lost a record
        only = set(prev_p) - set(now["person_id"])
        status = dict(con.execute("SELECT person_id, status FROM person").fetchall())
        assert len(only) == 5 and all(status[p] == "retired" for p in only)
        # (this warehouse also holds GP's unlinked delta, whose records may merge persons)
        assert inc.n_retired_persons == len(set(prev["person_id"]) - set(now["person_id"]))
        kept = set(prev_p) & set(now["person_id"])
        for p in kept:
            n = con.execute("SELECT n_records FROM person WHERE person_id = ?", [p]).fetchall()[0]
            assert n[0] == (now["person_id"] == p).sum()
    finally:
        con.close()


def test_needs_a_full_run_first(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    try:
        with pytest.raises(NeedsFullRelink, match="full relink"):
            link_incremental(con, "inc-0", _settings())
    finally:
        con.close()


def test_pipeline_stage_is_idempotent(base: dict) -> None:
    from linkage.pipeline import stage_link_incremental

    paths = _hub_copy(base, "hub_stage")
    first = stage_link_incremental(paths, "stage-inc")
    assert first["mode"] == "incremental" and first["n_changed_records"] == HELD_BACK + CHANGED
    again = stage_link_incremental(paths, "stage-inc")
    assert again.get("skipped") is True and again["n_persons"] == first["n_persons"]


def test_digest_is_what_the_last_successful_run_linked(base: dict) -> None:
    """The linkage input is a TEMP view (over `linkage_features`), never a table of its own;
    the next incremental run compares against per-record digests written with the last
    successful run, which a refused run leaves untouched."""
    from linkage.incremental import changed_records

    paths = _hub_copy(base, "hub_digest")
    con = duckdb.connect(str(paths.warehouse))
    persisted = (
        "SELECT count(*) FROM duckdb_tables() "
        "WHERE table_name = 'person_linkage_input' AND NOT temporary"
    )
    try:
        assert con.execute(persisted).fetchall()[0][0] == 0
        before = con.execute("SELECT * FROM linkage_input_digest ORDER BY uid").df()
        assert len(before) == base["first_run"].n_records
        ref, dob = con.execute(
            "SELECT record_ref, tok_dob FROM identifiers WHERE tok_dob IS NOT NULL "
            "ORDER BY record_ref LIMIT 1"
        ).fetchall()[0]
        con.execute(
            "UPDATE identifiers SET tok_dob = ? WHERE record_ref = ?", ["zz" + dob[2:], ref]
        )
        with pytest.raises(ValueError, match="tok_dob"):
            link_persons(con, "refused", _settings())
        after = con.execute("SELECT * FROM linkage_input_digest ORDER BY uid").df()
        pd.testing.assert_frame_equal(before, after)
        con.execute("UPDATE identifiers SET tok_dob = ? WHERE record_ref = ?", [dob, ref])
        # A warehouse from before the input became TEMP held it as a table: it is dropped.
        con.execute("CREATE TABLE main.person_linkage_input AS SELECT 1 AS legacy")
        _cols, changed, retired = changed_records(con)
        assert len(changed) == HELD_BACK + CHANGED and retired == []
        assert con.execute(persisted).fetchall()[0][0] == 0
    finally:
        con.close()
