"""One person-linkage run: its settings and result, its tables, and writing it.

`persist_linkage` writes a full run whichever backend scored it (linkage.person_linkage on
DuckDB, linkage.spark_linkage on Spark); linkage.incremental appends to the same tables.
Tables: `record_person`, `clerical_review`, `linkage_model` and `linkage_run` (docs/linkage.md).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from linkage.clusters import assign_person_ids
from linkage.linkage_input import INPUT_TABLE, ORDER_COLUMN, ORDER_TABLE, save_input_digest
from linkage.person_model import model_to_json
from linkage.txn import atomic
from linkage.warehouse import ensure_keyless_table

# EM leaves m = 0 for levels no training pair happened to show (e.g. "different sex" within
# the NHS-number block), which makes one keying error an absolute veto. A small floor keeps
# such evidence strongly negative but finite.
DEFAULT_M_FLOOR = 1e-3


@dataclass(frozen=True)
class LinkageSettings:
    """Knobs for one linkage run. Defaults were tuned on synthetic ground truth
    (see docs/linkage.md); production partnerships re-tune with `tune_auto_threshold`."""

    auto_match_probability: float = 0.95
    clerical_probability: float = 0.5
    u_max_pairs: float = 2e6
    seed: int = 42
    prior_recall: float = 0.8
    max_em_iterations: int = 25
    m_floor: float = DEFAULT_M_FLOOR
    split_chains: bool = True
    # A previously trained model (as returned by `load_model`): skip training.
    model: dict[str, Any] | None = None
    show_progress: bool = True


@dataclass
class LinkageResult:
    run_id: str
    model_version: str
    settings_hash: str
    auto_match_probability: float
    clerical_probability: float
    n_records: int
    n_scored_pairs: int
    n_auto_pairs: int
    n_clerical_pairs: int
    n_persons: int
    n_new_persons: int
    n_retired_persons: int
    n_flagged_clusters: int
    n_split_clusters: int
    timings: dict[str, float] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict, repr=False)


RUN_DDL = """
CREATE TABLE IF NOT EXISTS linkage_model (
    model_version VARCHAR PRIMARY KEY, settings_hash VARCHAR NOT NULL,
    created_run_id VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL, model_json VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS linkage_run (
    run_id VARCHAR PRIMARY KEY, started_at TIMESTAMP, finished_at TIMESTAMP,
    model_version VARCHAR, settings_hash VARCHAR,
    auto_match_probability DOUBLE, clerical_probability DOUBLE,
    n_records BIGINT, n_scored_pairs BIGINT, n_auto_pairs BIGINT, n_clerical_pairs BIGINT,
    n_persons BIGINT, n_new_persons BIGINT, n_retired_persons BIGINT,
    n_flagged_clusters BIGINT, n_split_clusters BIGINT, timings_json VARCHAR);
ALTER TABLE linkage_run ADD COLUMN IF NOT EXISTS mode VARCHAR DEFAULT 'full';
"""


def _next_model_version(con: duckdb.DuckDBPyConnection, settings_hash_prefix: str) -> str:
    n = con.execute("SELECT count(*) FROM linkage_model").fetchall()[0][0] + 1
    return f"pl-v{n}-{settings_hash_prefix}"


def _comparison_names(model: dict[str, Any]) -> list[str]:
    return [c["output_column_name"] for c in model["splink_settings"]["comparisons"]]


def check_thresholds(s: LinkageSettings) -> None:
    if not 0 < s.clerical_probability <= s.auto_match_probability < 1:
        raise ValueError("need 0 < clerical_probability <= auto_match_probability < 1")


def start_run(con: duckdb.DuckDBPyConnection, run_id: str) -> datetime:
    """Run tables present and `run_id` not used before; returns the run's start time."""
    con.execute(RUN_DDL)
    if con.execute("SELECT 1 FROM linkage_run WHERE run_id = ?", [run_id]).fetchall():
        raise ValueError(f"linkage_run already has run_id {run_id!r}")
    return datetime.now(UTC)


def persist_linkage(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    records: pd.DataFrame,
    pairs: pd.DataFrame,
    model: dict[str, Any],
    s: LinkageSettings,
    *,
    n_records: int,
    n_auto_pairs: int,
    flagged: pd.DataFrame,
    timings: dict[str, float],
    started: datetime,
    new_model: bool,
    mode: str = "full",
) -> LinkageResult:
    """Write one full linkage run, whichever backend scored it (DuckDB here, Spark in
    `linkage.spark_linkage`), in one transaction: stable person ids, `record_person` bands
    and scores, the clerical queue, the `linkage_run` row and, for a newly trained model,
    `linkage_model`.

    records: unique_id, cluster_id (after the chaining guard), ids being ORDER_TABLE ranks
    (`build_record_order`) here and in `pairs`: every pair scored at or above the clerical
    threshold, with Splink's gamma_/mw_ columns (evidence only, no token values); flagged:
    `guard_chains`' flagged clusters.
    """
    t = time.perf_counter()
    with atomic(con):
        assigned, counts = assign_person_ids(con, records, run_id, record_order=ORDER_TABLE)
        n_clerical = _write_outputs(con, run_id, assigned, pairs, model, s)
        result = LinkageResult(
            run_id=run_id,
            model_version=model["model_version"],
            settings_hash=model["settings_hash"],
            auto_match_probability=s.auto_match_probability,
            clerical_probability=s.clerical_probability,
            n_records=int(n_records),
            n_scored_pairs=len(pairs),
            n_auto_pairs=int(n_auto_pairs),
            n_clerical_pairs=n_clerical,
            n_flagged_clusters=len(flagged),
            n_split_clusters=int((flagged["split_into"] > 1).sum()) if len(flagged) else 0,
            timings={**timings, "persist": time.perf_counter() - t},
            model=model,
            **counts,
        )
        _write_run(con, result, started, new_model, mode)
        save_input_digest(con, input_columns(con))
    return result


def input_columns(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [r[0] for r in con.execute(f"DESCRIBE {INPUT_TABLE}").fetchall()]


def ensure_record_person(con: duckdb.DuckDBPyConnection) -> None:
    """record_person present, in its current layout: one row per (agency, record_ref), by
    construction of its writers rather than by an index (`ensure_keyless_table`)."""
    ensure_keyless_table(
        con,
        "record_person",
        """
        record_ref VARCHAR NOT NULL, agency VARCHAR NOT NULL, person_id VARCHAR NOT NULL,
        band VARCHAR NOT NULL, score DOUBLE, run_id VARCHAR NOT NULL""",
    )


def _write_outputs(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    assigned: pd.DataFrame,
    pairs: pd.DataFrame,
    model: dict[str, Any],
    s: LinkageSettings,
) -> int:
    """record_person (current mapping) and the clerical-review queue; returns queue size.

    Joins and per-record maxima run in DuckDB: pandas' dict/Series maps over a million
    string ids took 9 s of a 1M-record run."""
    ensure_record_person(con)
    con.register("_assigned", assigned[["unique_id", "person_id"]])
    con.register(
        "_pairs",
        pd.DataFrame(
            {
                "i": np.arange(len(pairs)),
                "l": pairs["unique_id_l"].to_numpy(),
                "r": pairs["unique_id_r"].to_numpy(),
                "p": pairs["match_probability"].to_numpy(dtype="float64"),
            }
        ),
    )
    try:
        con.execute("""CREATE OR REPLACE TEMP TABLE _scored AS
            SELECT q.i, q.l, q.r, q.p, a.person_id AS pid_l, b.person_id AS pid_r
            FROM _pairs q JOIN _assigned a ON a.unique_id = q.l
                          JOIN _assigned b ON b.unique_id = q.r""")
        (n_scored,) = con.execute("SELECT count(*) FROM _scored").fetchall()[0]
        if n_scored != len(pairs):
            raise ValueError("scored pairs name records the run did not assign")
        # Only the pairs left in two persons go on (to the clerical queue).
        apart = con.execute(f"""
            SELECT i, pid_l, pid_r, ol.agency AS agency_l, ol.record_ref AS record_ref_l,
                   orr.agency AS agency_r, orr.record_ref AS record_ref_r
            FROM _scored JOIN {ORDER_TABLE} ol ON ol.{ORDER_COLUMN} = l
                         JOIN {ORDER_TABLE} orr ON orr.{ORDER_COLUMN} = r
            WHERE pid_l <> pid_r ORDER BY i""").df()
        # Auto: joined into one person above the auto threshold. Clerical: scored above the
        # clerical threshold but not in one person: below the auto threshold, or above it
        # but held back (linkage.guards, or cut by the chaining guard).
        con.execute("DELETE FROM record_person")
        con.execute(
            f"""
            INSERT INTO record_person
            WITH ends AS (
                SELECT l AS unique_id, p, pid_l = pid_r AS same FROM _scored
                UNION ALL SELECT r, p, pid_l = pid_r FROM _scored),
            best AS (
                SELECT unique_id, max(p) FILTER (same AND p >= ?) AS auto_p,
                       max(p) FILTER (NOT same) AS clerical_p
                FROM ends GROUP BY unique_id)
            SELECT o.record_ref, o.agency, a.person_id,
                   CASE WHEN b.auto_p IS NOT NULL THEN 'auto_match'
                        WHEN b.clerical_p IS NOT NULL THEN 'clerical' ELSE 'non_match' END,
                   coalesce(b.auto_p, b.clerical_p), ?
            FROM _assigned a JOIN {ORDER_TABLE} o ON o.{ORDER_COLUMN} = a.unique_id
            LEFT JOIN best b USING (unique_id)""",
            [s.auto_match_probability, run_id],
        )
    finally:
        con.execute("DROP TABLE IF EXISTS _scored")
        con.unregister("_pairs")
        con.unregister("_assigned")
    rows = apart["i"].to_numpy()
    ends = ["pid_l", "pid_r", "agency_l", "record_ref_l", "agency_r", "record_ref_r"]
    clerical = pairs.iloc[rows].assign(**{c: apart[c].to_numpy() for c in ends})
    # A full run re-scores every pair, so its queue replaces whatever was still open.
    if con.execute("SELECT 1 FROM duckdb_tables() WHERE table_name = 'clerical_review'").fetchall():
        con.execute("UPDATE clerical_review SET status = 'superseded' WHERE status = 'open'")
    return append_clerical_pairs(con, run_id, clerical, model)


def append_clerical_pairs(
    con: duckdb.DuckDBPyConnection, run_id: str, clerical: pd.DataFrame, model: dict[str, Any]
) -> int:
    """Append scored pairs (agency_l/_r, record_ref_l/_r, pid_l/_r, Splink's gamma_/mw_
    columns) to the clerical queue as open items. Evidence only: gamma levels and
    per-comparison match weights, never token values."""
    names = _comparison_names(model)
    q = pd.DataFrame(
        {
            "run_id": run_id,
            "record_ref_l": clerical["record_ref_l"],
            "agency_l": clerical["agency_l"],
            "record_ref_r": clerical["record_ref_r"],
            "agency_r": clerical["agency_r"],
            "person_id_l": clerical["pid_l"],
            "person_id_r": clerical["pid_r"],
            "match_probability": clerical["match_probability"],
            "match_weight": clerical["match_weight"],
        }
    )
    for n in names:
        q[f"gamma_{n}"] = clerical[f"gamma_{n}"].astype("int64")
        mw = clerical[f"mw_{n}"].astype("float64")
        tf = clerical.get(f"mw_tf_adj_{n}")
        q[f"mw_{n}"] = mw if tf is None else mw + tf.astype("float64")
    q["status"] = "open"
    cols_sql = ", ".join(
        f'"{c}" {"BIGINT" if c.startswith("gamma_") else "DOUBLE"}'
        for c in q.columns
        if c.startswith(("gamma_", "mw_"))
    )
    con.execute(
        f"""CREATE TABLE IF NOT EXISTS clerical_review (
            run_id VARCHAR, record_ref_l VARCHAR, agency_l VARCHAR, record_ref_r VARCHAR,
            agency_r VARCHAR, person_id_l VARCHAR, person_id_r VARCHAR,
            match_probability DOUBLE, match_weight DOUBLE, {cols_sql}, status VARCHAR)"""
    )
    con.register("_cq", q)
    try:
        # One open row per record pair: a pair queued again (a re-run, or a delta that touched
        # it) supersedes its earlier open row instead of doubling the queue.
        con.execute("""UPDATE clerical_review c SET status = 'superseded'
                       FROM _cq n WHERE c.status = 'open' AND (
                         (c.agency_l = n.agency_l AND c.record_ref_l = n.record_ref_l
                          AND c.agency_r = n.agency_r AND c.record_ref_r = n.record_ref_r) OR
                         (c.agency_l = n.agency_r AND c.record_ref_l = n.record_ref_r
                          AND c.agency_r = n.agency_l AND c.record_ref_r = n.record_ref_l))""")
        con.execute("INSERT INTO clerical_review BY NAME SELECT * FROM _cq")
    finally:
        con.unregister("_cq")
    return len(q)


def _write_run(
    con: duckdb.DuckDBPyConnection,
    r: LinkageResult,
    started: datetime,
    new_model: bool,
    mode: str = "full",
) -> None:
    if new_model:
        con.execute(
            "INSERT INTO linkage_model VALUES (?, ?, ?, ?, ?)",
            [
                r.model_version,
                r.settings_hash,
                r.run_id,
                started.replace(tzinfo=None),
                model_to_json(r.model),
            ],
        )
    row = asdict(r)
    row.pop("model")
    timings = row.pop("timings")
    con.execute(
        """INSERT INTO linkage_run (run_id, started_at, finished_at, model_version,
               settings_hash, auto_match_probability, clerical_probability, n_records,
               n_scored_pairs, n_auto_pairs, n_clerical_pairs, n_persons, n_new_persons,
               n_retired_persons, n_flagged_clusters, n_split_clusters, timings_json, mode)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [
            r.run_id,
            started.replace(tzinfo=None),
            datetime.now(UTC).replace(tzinfo=None),
            r.model_version,
            r.settings_hash,
            r.auto_match_probability,
            r.clerical_probability,
            r.n_records,
            r.n_scored_pairs,
            r.n_auto_pairs,
            r.n_clerical_pairs,
            r.n_persons,
            r.n_new_persons,
            r.n_retired_persons,
            r.n_flagged_clusters,
            r.n_split_clusters,
            json.dumps({k: round(v, 3) for k, v in timings.items()}),
            mode,
        ],
    )
