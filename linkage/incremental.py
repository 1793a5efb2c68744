"""Incremental person linkage: link what changed since the last run, not everything.

After a full run (`person_linkage.link_persons`, which trains or loads the model and scores
every blocked pair), a landed delta usually touches a few hundred records. This module:

1. rebuilds the linkage input from `identifiers` and compares each record's content digest
   with the one the last successful run stored (`linkage_input_digest`): records whose tokens
   changed or that are new are the *changed* set; records gone from `identifiers` (retired by
   a snapshot) are *retired*;
2. scores only pairs involving a changed record, against every current record, with the stored
   model: Splink's `predict_between(changed, unchanged)` plus `predict_within(changed)`, with
   term frequencies taken from all current records (so weights match a full run's);
3. clusters: each existing person (its unchanged records) is one node, each changed record is a
   node, auto-match edges (same threshold and twin rule as a full run) join them with Splink's
   connected components; the chaining guard runs on the clusters a changed record touched,
   with the existing persons' own records bound by strong edges, so an incremental run only
   ever adds or refuses new links and never splits an existing person (the full relink may);
4. person ids by record overlap (`clusters.assign_person_ids`, the full run's rule), so changed
   records join existing person_ids or get new ones, and persons left with no record retire;
5. updates `record_person`, the clerical queue (open pairs touching a changed or retired record
   are marked `superseded`; new pairs are queued) and writes a `linkage_run` row with
   mode 'incremental'.

The warehouse must have had a full run first; if the identifier columns changed since (a new
field onboarded) the model no longer fits and a full relink is required: `NeedsFullRelink`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from splink import DuckDBAPI, Linker
from splink.clustering import cluster_pairwise_predictions_at_threshold

from linkage.clusters import assign_person_ids, guard_chains
from linkage.guards import dob_conflict_trusted, held_back
from linkage.linkage_input import (
    DIGEST_TABLE,
    RECORD_KEY_TABLE,
    SIGNATURE_TABLE,
    input_digest_sql,
    input_signature,
    save_input_digest,
)
from linkage.person_linkage import (
    ID_COLUMN,
    INPUT_TABLE,
    LinkageSettings,
    load_model,
    prepare_input,
    scored_pairs_sql,
    scoring_settings,
    stored_model,
    token_as_text,
    with_gammas,
)
from linkage.person_run import (
    LinkageResult,
    _write_run,
    append_clerical_pairs,
    ensure_record_person,
    start_run,
)
from linkage.spec_migration import require_one_spec
from linkage.txn import atomic
from linkage.warehouse import scratch_database

log = logging.getLogger(__name__)

NEW_TABLE = "_incr_changed"
OLD_TABLE = "_incr_unchanged"
# Binds an existing person's records together in the chaining guard: far above any real
# match weight, so the guard cuts new edges, never an existing person.
_BIND_WEIGHT = 1e6


class NeedsFullRelink(RuntimeError):
    """The warehouse's state does not allow an incremental run (no earlier run, or the
    identifier columns changed since)."""


@dataclass
class IncrementalResult(LinkageResult):
    n_changed_records: int = 0
    n_retired_records: int = 0
    n_merged_persons: int = 0
    mode: str = "incremental"


def _table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(
        con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]).fetchall()[
            0
        ][0]
    )


def _last_model(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    row = con.execute(
        "SELECT model_version FROM linkage_run ORDER BY finished_at DESC, run_id DESC LIMIT 1"
    ).fetchall()
    if not row:
        raise NeedsFullRelink(
            "no earlier linkage run in the warehouse: run a full relink (link_persons) first"
        )
    return stored_model(con, row[0][0])


def changed_records(con: duckdb.DuckDBPyConnection) -> tuple[list[str], list[str], list[str]]:
    """(columns, changed unique_ids, retired unique_ids) of the linkage input now versus what
    the last successful run linked (its per-record digests). Builds `person_linkage_input`."""
    for t in (DIGEST_TABLE, SIGNATURE_TABLE, "record_person"):
        if not _table_exists(con, t):
            raise NeedsFullRelink(f"warehouse has no {t} table: run a full relink first")
    columns = prepare_input(con)
    before = json.loads(con.execute(f"SELECT signature FROM {SIGNATURE_TABLE}").fetchall()[0][0])
    now = json.loads(input_signature(con))
    prev_cols = [c for c, _ in before["columns"]]
    if prev_cols != columns:
        diff = sorted(set(prev_cols) ^ set(columns))
        raise NeedsFullRelink(
            f"identifier columns changed since the last run ({diff}): the "
            "stored model does not cover them, run a full relink"
        )
    if before != now:
        raise NeedsFullRelink(
            "the linkage input's representation changed since the last run "
            "(an upgrade): run a full relink"
        )
    # Content, not batch id: a snapshot re-sends unchanged records under a new batch id.
    changed = [
        r[0]
        for r in con.execute(f"""
        SELECT i.unique_id FROM ({input_digest_sql(columns)}) i
        LEFT JOIN {DIGEST_TABLE} p USING ({ID_COLUMN})
        WHERE p.digest IS DISTINCT FROM i.digest ORDER BY 1""").fetchall()
    ]
    retired = [
        r[0]
        for r in con.execute(f"""
        SELECT k.agency || ':' || k.record_ref FROM {DIGEST_TABLE} p
        JOIN {RECORD_KEY_TABLE} k USING ({ID_COLUMN})
        WHERE p.{ID_COLUMN} NOT IN (SELECT {ID_COLUMN} FROM {INPUT_TABLE}) ORDER BY 1""").fetchall()
    ]
    return columns, changed, retired


def _score_changed(
    con: duckdb.DuckDBPyConnection, model: dict[str, Any], threshold: float, n_unchanged: int
) -> pd.DataFrame:
    """Scored pairs (>= threshold) with at least one changed record, with gamma/mw evidence."""
    with scratch_database(con):  # Splink's tables stay out of the warehouse file
        frames = _predict_changed(con, model, threshold, n_unchanged)
    pairs = with_gammas(
        pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True),
        model["splink_settings"],
    )
    # Same orientation as a full run (l < r); the evidence columns are symmetric.
    swap = pairs["unique_id_l"] > pairs["unique_id_r"]
    pairs.loc[swap, ["unique_id_l", "unique_id_r"]] = pairs.loc[
        swap, ["unique_id_r", "unique_id_l"]
    ].to_numpy()
    return pairs.drop_duplicates(["unique_id_l", "unique_id_r"]).reset_index(drop=True)


def _predict_changed(
    con: duckdb.DuckDBPyConnection, model: dict[str, Any], threshold: float, n_unchanged: int
) -> list[pd.DataFrame]:
    """Splink's predictions within the changed records and between them and the rest."""
    db_api = DuckDBAPI(con)
    linker = Linker(
        db_api.register(INPUT_TABLE),
        scoring_settings(model["splink_settings"]),
        log_level=logging.WARNING,
    )
    frames: list[pd.DataFrame] = []
    try:
        # Term frequencies over every current record, as the full run computes them.
        for comp in model["splink_settings"]["comparisons"]:
            for lv in comp["comparison_levels"]:
                if lv.get("tf_adjustment_column"):
                    linker.table_management.compute_tf_table(lv["tf_adjustment_column"])
        new = db_api.register(NEW_TABLE)
        preds = [
            linker.inference.predict_within(
                new, threshold_match_probability=threshold, warning_mode="never"
            )
        ]
        if n_unchanged:
            preds.append(
                linker.inference.predict_between(
                    new,
                    db_api.register(OLD_TABLE),
                    threshold_match_probability=threshold,
                    warning_mode="never",
                )
            )
        for pred in preds:
            frames.append(
                con.execute(
                    scored_pairs_sql(
                        pred.physical_name,
                        model["splink_settings"],
                        "match_weight, match_probability, COLUMNS('^(gamma|mw)_.*')",
                    )
                ).df()
            )
    finally:
        linker.table_management.delete_tables_created_by_splink_from_db()
    return frames


def _clusters(
    records: pd.DataFrame,
    auto: pd.DataFrame,
    prev_pid: dict[str, str],
    changed: set[str],
    split: bool,
    trusted: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cluster ids for every current record: existing persons as nodes + changed records."""
    node = records["unique_id"].map(
        lambda u: u if u in changed or u not in prev_pid else f"person:{prev_pid[u]}"
    )
    records = records.assign(node=node)
    nmap = dict(zip(records["unique_id"], records["node"], strict=True))
    edges = pd.DataFrame(
        {"node_l": auto["unique_id_l"].map(nmap), "node_r": auto["unique_id_r"].map(nmap)}
    )
    edges = edges[edges["node_l"] != edges["node_r"]].drop_duplicates().reset_index(drop=True)
    # Only nodes on a new edge can change cluster; every other node is its own cluster.
    nodes = pd.DataFrame(
        {
            "node": sorted(
                set(edges["node_l"]) | set(edges["node_r"]) | {n for n in node if n in changed}
            )
        }
    )
    comps = cluster_pairwise_predictions_at_threshold(
        nodes,
        edges,
        DuckDBAPI(connection=duckdb.connect()),
        node_id_column_name="node",
        edge_id_column_name_left="node_l",
        edge_id_column_name_right="node_r",
    ).as_pandas_dataframe()[["node", "cluster_id"]]
    records = records.merge(comps, on="node", how="left")
    records["cluster_id"] = records["cluster_id"].fillna(records["node"])
    # Chaining guard on the clusters a changed record reached; elsewhere nothing changed.
    touched = set(records.loc[records["unique_id"].isin(changed), "cluster_id"])
    aff = records[records["cluster_id"].isin(touched)]
    if aff.empty:
        return records.drop(columns="node"), pd.DataFrame(columns=["split_into"])
    old = aff[~aff["unique_id"].isin(changed)].sort_values("unique_id")
    first = old.groupby("node")["unique_id"].transform("first")
    bind = pd.DataFrame(
        {"unique_id_l": first, "unique_id_r": old["unique_id"], "match_weight": _BIND_WEIGHT}
    )
    bind = bind[bind["unique_id_l"] != bind["unique_id_r"]]
    aff_ids = set(aff["unique_id"])
    new_edges = auto[auto["unique_id_l"].isin(aff_ids) & auto["unique_id_r"].isin(aff_ids)]
    guarded, flagged = guard_chains(
        aff.drop(columns="node"),
        pd.concat(
            [bind, new_edges[["unique_id_l", "unique_id_r", "match_weight"]]], ignore_index=True
        ),
        split=split,
        trusted=trusted,
    )
    rest = records[~records["cluster_id"].isin(touched)].drop(columns="node")
    return pd.concat([rest, guarded], ignore_index=True), flagged


def link_incremental(
    con: duckdb.DuckDBPyConnection, run_id: str, settings: LinkageSettings | None = None
) -> IncrementalResult:
    """Link the records that changed since the last run into the existing persons."""
    s = settings or LinkageSettings(show_progress=False)
    require_one_spec(con)
    started = start_run(con, run_id)
    timings: dict[str, float] = {}
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        disable=not s.show_progress,
        transient=True,
    ) as progress:
        task = progress.add_task("incremental linkage: finding changes", total=4)
        t = time.perf_counter()
        model = load_model(s.model) if s.model is not None else _last_model(con)
        columns, changed, retired = changed_records(con)
        try:
            result = _link_changed(
                con,
                run_id,
                s,
                model,
                columns,
                changed,
                retired,
                started,
                timings,
                t,
                progress,
                task,
            )
        finally:
            for tbl in (NEW_TABLE, OLD_TABLE):
                con.execute(f"DROP TABLE IF EXISTS {tbl}")
        progress.advance(task)
    log.info(
        "incremental run %s: %d changed, %d retired records, %d pairs scored",
        run_id,
        len(changed),
        len(retired),
        result.n_scored_pairs,
    )
    return result


def _link_changed(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    s: LinkageSettings,
    model: dict[str, Any],
    columns: list[str],
    changed: list[str],
    retired: list[str],
    started: datetime,
    timings: dict[str, float],
    t: float,
    progress: Progress,
    task: Any,
) -> IncrementalResult:
    """Score, cluster and persist one incremental run (link_incremental's body)."""
    changed_set = set(changed)
    con.register("_changed_ids", pd.DataFrame({"unique_id": pd.Series(changed, dtype=str)}))
    try:
        for table, op in ((NEW_TABLE, "IN"), (OLD_TABLE, "NOT IN")):
            con.execute(f"""CREATE OR REPLACE TEMP TABLE {table} AS SELECT * FROM {INPUT_TABLE}
                            WHERE unique_id {op} (SELECT unique_id FROM _changed_ids)""")
    finally:
        con.unregister("_changed_ids")
    n_records = con.execute(f"SELECT count(*) FROM {INPUT_TABLE}").fetchall()[0][0]
    timings["prepare"] = time.perf_counter() - t
    progress.update(
        task, advance=1, description=f"incremental linkage: scoring {len(changed)} changed"
    )

    t = time.perf_counter()
    if changed:
        pairs = _score_changed(con, model, s.clerical_probability, n_records - len(changed))
    else:
        pairs = pd.DataFrame(
            columns=["unique_id_l", "unique_id_r", "match_weight", "match_probability"]
        )
    timings["predict"] = time.perf_counter() - t
    progress.update(task, advance=1, description="incremental linkage: clustering")

    t = time.perf_counter()
    held = held_back(pairs, model["splink_settings"])
    auto = pairs[(pairs["match_probability"] >= s.auto_match_probability) & ~held]
    prev_rp = con.execute("""SELECT agency || ':' || record_ref AS unique_id, person_id,
                                    band, score, run_id FROM record_person""").df()
    prev_pid = dict(zip(prev_rp["unique_id"], prev_rp["person_id"], strict=True))
    nhs = token_as_text("tok_nhs_number", columns)
    dob = token_as_text("tok_dob", columns)
    records = con.execute(f"""SELECT unique_id, record_ref, agency, batch_id,
                                     {nhs} AS tok_nhs_number, {dob} AS tok_dob
                              FROM {INPUT_TABLE}""").df()
    trusted = auto[dob_conflict_trusted(auto, model["splink_settings"])]
    records, flagged = _clusters(records, auto, prev_pid, changed_set, s.split_chains, trusted)
    timings["cluster"] = time.perf_counter() - t
    progress.update(task, advance=1, description="incremental linkage: persisting")

    t = time.perf_counter()
    with atomic(con):
        assigned, counts = assign_person_ids(con, records, run_id)
        n_clerical = _write_incremental(
            con, run_id, assigned, pairs, prev_rp, model, s, changed_set | set(retired)
        )
        merged = assigned[~assigned["unique_id"].isin(changed_set)]
        merged = merged.assign(prev=merged["unique_id"].map(prev_pid))
        n_merged = int((merged.groupby("person_id")["prev"].nunique() > 1).sum())
        timings["persist"] = time.perf_counter() - t
        result = IncrementalResult(
            run_id=run_id,
            model_version=model["model_version"],
            settings_hash=model["settings_hash"],
            auto_match_probability=s.auto_match_probability,
            clerical_probability=s.clerical_probability,
            n_records=int(n_records),
            n_scored_pairs=len(pairs),
            n_auto_pairs=len(auto),
            n_clerical_pairs=n_clerical,
            n_flagged_clusters=len(flagged),
            n_split_clusters=int((flagged["split_into"] > 1).sum()) if len(flagged) else 0,
            timings=timings,
            model=model,
            n_changed_records=len(changed),
            n_retired_records=len(retired),
            n_merged_persons=n_merged,
            **counts,
        )
        base = LinkageResult(**{k: getattr(result, k) for k in LinkageResult.__dataclass_fields__})
        _write_run(con, base, started, new_model=False, mode="incremental")
        save_input_digest(con, columns)
    return result


def _best(pairs: pd.DataFrame) -> pd.Series:
    both = pd.concat(
        [
            pairs[["unique_id_l", "match_probability"]].set_axis(["unique_id", "p"], axis=1),
            pairs[["unique_id_r", "match_probability"]].set_axis(["unique_id", "p"], axis=1),
        ]
    )
    return both.groupby("unique_id")["p"].max().astype("float64")


def _write_incremental(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    assigned: pd.DataFrame,
    pairs: pd.DataFrame,
    prev_rp: pd.DataFrame,
    model: dict[str, Any],
    s: LinkageSettings,
    touched: set[str],
) -> int:
    """record_person for every current record and the clerical queue; returns queue size."""
    pid = dict(zip(assigned["unique_id"], assigned["person_id"], strict=True))
    p = pairs.assign(pid_l=pairs["unique_id_l"].map(pid), pid_r=pairs["unique_id_r"].map(pid))
    auto = p[(p["match_probability"] >= s.auto_match_probability) & (p["pid_l"] == p["pid_r"])]
    clerical = p[p["pid_l"] != p["pid_r"]]
    auto_score, cler_score = _best(auto), _best(clerical)

    rp = assigned[["unique_id", "record_ref", "agency", "person_id"]].merge(
        prev_rp.rename(columns={"person_id": "prev_person_id"}), on="unique_id", how="left"
    )
    fresh = rp["unique_id"].isin(touched) | rp["band"].isna()
    # Changed records start from nothing; unchanged ones keep their evidence and may gain.
    rp.loc[fresh, ["band", "score"]] = [None, np.nan]
    rp["score"] = rp["score"].astype("float64")
    a = rp["unique_id"].map(auto_score).astype("float64")
    gain = a.notna() & (rp["band"].ne("auto_match") | (a > rp["score"].fillna(-1)))
    rp.loc[gain, "band"], rp.loc[gain, "score"] = "auto_match", a[gain]
    c = rp["unique_id"].map(cler_score).astype("float64")
    to_cler = c.notna() & rp["band"].isna()
    rp.loc[to_cler, "band"], rp.loc[to_cler, "score"] = "clerical", c[to_cler]
    rp["band"] = rp["band"].fillna("non_match")
    moved = fresh | gain | to_cler | (rp["person_id"] != rp["prev_person_id"])
    rp["run_id"] = rp["run_id"].where(~moved, run_id).fillna(run_id)
    out = rp[["record_ref", "agency", "person_id", "band", "score", "run_id"]]
    ensure_record_person(con)
    con.register("_rp_incr", out)
    try:
        con.execute("DELETE FROM record_person")
        con.execute("INSERT INTO record_person SELECT * FROM _rp_incr")
    finally:
        con.unregister("_rp_incr")

    # Queue: pairs touching a changed or retired record were re-scored (or are gone).
    if _table_exists(con, "clerical_review"):
        con.execute(
            """UPDATE clerical_review SET status = 'superseded'
                       WHERE status = 'open' AND (list_contains(?, agency_l || ':' || record_ref_l)
                          OR list_contains(?, agency_r || ':' || record_ref_r))""",
            [sorted(touched), sorted(touched)],
        )
        # Persons may have merged: open pairs carry the current person ids.
        con.register("_pid_now", assigned[["record_ref", "agency", "person_id"]])
        try:
            for side in ("l", "r"):
                con.execute(f"""UPDATE clerical_review c SET person_id_{side} = n.person_id
                                FROM _pid_now n WHERE c.status = 'open'
                                AND n.record_ref = c.record_ref_{side}
                                AND n.agency = c.agency_{side}""")
            con.execute("""UPDATE clerical_review SET status = 'superseded'
                           WHERE status = 'open' AND person_id_l = person_id_r""")
        finally:
            con.unregister("_pid_now")
    if clerical.empty:
        return 0
    for end in ("l", "r"):
        agency_ref = clerical[f"unique_id_{end}"].str.split(":", n=1)
        clerical = clerical.assign(
            **{f"agency_{end}": agency_ref.str[0], f"record_ref_{end}": agency_ref.str[1]}
        )
    return append_clerical_pairs(con, run_id, clerical, model)
