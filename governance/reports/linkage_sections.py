"""Linkage sections of the linkage audit report (governance.reports.linkage_report): batches,
cross-agency match rates, the model's weights, score bands, clerical review, cluster sizes and
stability between runs. Counts about people are suppressed below the marts threshold."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import duckdb


@dataclass(frozen=True)
class Suppressed:
    """A count about people, after suppression: `value` is None when below the threshold."""

    value: int | None
    threshold: int

    def __str__(self) -> str:
        return f"<{self.threshold}" if self.value is None else f"{self.value:,}"


def people_count(n: int, threshold: int) -> Suppressed:
    n = int(n)
    return Suppressed(None if 0 < n < threshold else n, threshold)


def _rows(
    con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None
) -> list[dict[str, Any]]:
    cur = con.execute(sql, params or [])
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def _has(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
        ).fetchone()[0]
    )


def _batches(
    con: duckdb.DuckDBPyConnection, run: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """This run's batches: those taken in after the previous run finished and by the time this
    one did (ingest precedes linkage in a hub run), with every run's total beside them. Without
    a run (nothing linked yet): every batch."""
    run = run or {}
    prev = (
        con.execute(
            "SELECT max(finished_at) FROM linkage_run WHERE finished_at < ?", [run["finished_at"]]
        ).fetchone()[0]
        if run.get("finished_at")
        else None
    )
    # ingested_at is DuckDB's now() stored in the session's time zone; the run times are UTC:
    # compare both in the session's zone (the same machine wrote both).
    local = "CAST(timezone('UTC', ?::TIMESTAMP) AS TIMESTAMP)"
    window = (
        f"(?::TIMESTAMP IS NULL OR ingested_at <= {local})"
        f" AND (?::TIMESTAMP IS NULL OR ingested_at > {local})"
    )
    end = run.get("finished_at")
    args = [end, end, prev, prev]
    sums = (
        "count(*) AS batches, sum(rows_read) AS rows_read, sum(rows_accepted) AS "
        "rows_accepted, sum(rows_quarantined) AS rows_quarantined"
    )
    per_agency, all_runs = [], {"batches": 0, "rows_read": None}
    if _has(con, "batch"):
        per_agency = _rows(
            con,
            f"SELECT agency, {sums} FROM batch WHERE {window} GROUP BY agency ORDER BY agency",
            args,
        )
        all_runs = _rows(con, f"SELECT {sums} FROM batch")[0]
    refused = (
        _rows(
            con,
            """
        SELECT agency, reason_code, count(*) AS batches FROM refused_batch
        WHERE (?::TIMESTAMP IS NULL OR refused_at <= ?)
          AND (?::TIMESTAMP IS NULL OR refused_at > ?)
        GROUP BY ALL ORDER BY agency, reason_code""",
            args,
        )
        if _has(con, "refused_batch")
        else []
    )
    n_refused_all = (
        con.execute("SELECT count(*) FROM refused_batch").fetchone()[0]
        if _has(con, "refused_batch")
        else 0
    )
    # Verified batches waiting for an earlier sequence number (linkage.sequence), and the
    # numbers an operator recorded as never coming.
    reason = (
        "held_reason" if "held_reason" in _columns(con, "held_batch") else "NULL AS held_reason"
    )
    held = (
        _rows(
            con,
            f"""
        SELECT agency, sequence, batch_id, extract_kind, waiting_for, held_at::VARCHAR AS held_at,
               {reason} FROM held_batch ORDER BY agency, sequence""",
        )
        if _has(con, "held_batch")
        else []
    )
    abandoned = (
        _rows(
            con,
            """
        SELECT agency, sequence, reason, recorded_by, recorded_at::VARCHAR AS recorded_at
        FROM sequence_abandoned ORDER BY agency, sequence""",
        )
        if _has(con, "sequence_abandoned")
        else []
    )
    # What the bridges nulled or flagged in accepted rows of each agency's latest batch
    # (counts from the signed manifest; never values).
    field_problems = (
        _rows(
            con,
            """
        WITH latest AS (SELECT agency, arg_max(batch_id, sequence) AS batch_id,
                               arg_max(rows_accepted, sequence) AS rows_accepted
                        FROM batch GROUP BY agency)
        SELECT l.agency, l.batch_id, l.rows_accepted, p.field, p.reason, p.n
        FROM latest l JOIN batch_field_problem p USING (agency, batch_id)
        ORDER BY l.agency, p.n DESC, p.field, p.reason""",
        )
        if _has(con, "batch") and _has(con, "batch_field_problem")
        else []
    )
    # Snapshot guards an agency's data officer forced at the bridge (reason from the signed
    # manifest), and snapshots held for mass retirement with the operator's confirmation.
    forced = (
        _rows(
            con,
            """
        SELECT agency, sequence, batch_id, forced_guards, forced_reason, rows_read,
               rows_accepted, rows_quarantined FROM batch WHERE forced_reason IS NOT NULL
        ORDER BY agency, sequence""",
        )
        if "forced_reason" in _columns(con, "batch")
        else []
    )
    retirement = (
        _rows(
            con,
            """
        SELECT agency, sequence, batch_id, current_records, would_retire, limit_share,
               held_at::VARCHAR AS held_at, confirmed_by, confirm_reason,
               confirmed_at::VARCHAR AS confirmed_at, applied_at::VARCHAR AS applied_at
        FROM retirement_hold ORDER BY agency, sequence""",
        )
        if _has(con, "retirement_hold")
        else []
    )
    return {
        "per_agency": per_agency,
        "refused": refused,
        "held": held,
        "abandoned": abandoned,
        "since": None if prev is None else prev.isoformat(timespec="seconds"),
        "all_runs": {**all_runs, "refused": n_refused_all},
        "forced": forced,
        "retirement": retirement,
        "field_problems": field_problems,
    }


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    return {
        r[0]
        for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]
        ).fetchall()
    }


def _match_rates(con: duckdb.DuckDBPyConnection, t: int) -> list[dict[str, Any]]:
    """For each ordered agency pair (A, B): persons known to A, how many of them B also holds."""
    rows = _rows(
        con,
        """
        WITH pa AS (SELECT DISTINCT person_id, agency FROM record_person),
        n AS (SELECT agency, count(*) AS n_a FROM pa GROUP BY agency),
        both_ AS (SELECT a.agency AS agency_a, b.agency AS agency_b,
                         count(DISTINCT a.person_id) AS n_both
                  FROM pa a JOIN pa b ON a.person_id = b.person_id AND a.agency <> b.agency
                  GROUP BY ALL)
        -- every ordered pair, those sharing nobody included (a true 0, not a gap)
        SELECT x.agency AS agency_a, y.agency AS agency_b, x.n_a,
               coalesce(both_.n_both, 0) AS n_both
        FROM n x JOIN n y ON x.agency <> y.agency
        LEFT JOIN both_ ON both_.agency_a = x.agency AND both_.agency_b = y.agency
        ORDER BY 1, 2""",
    )
    out = []
    for r in rows:
        both = people_count(r["n_both"], t)
        n_a = people_count(r["n_a"], t)
        rate = None if both.value is None or not n_a.value else both.value / n_a.value
        out.append({**r, "n_both_shown": str(both), "n_a_shown": str(n_a), "rate": rate})
    return out


def _run_row(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, Any]:
    rows = _rows(con, "SELECT * FROM linkage_run WHERE run_id = ?", [run_id])
    if not rows:
        raise KeyError(f"no linkage_run row for run {run_id!r} in the warehouse")
    return rows[0]


def _model(con: duckdb.DuckDBPyConnection, model_version: str) -> dict[str, Any]:
    from linkage.person_linkage import stored_model

    model = stored_model(con, model_version)
    levels = []
    for comp in model["splink_settings"]["comparisons"]:
        for lvl in comp["comparison_levels"]:
            if lvl.get("is_null_level"):
                continue
            m, u = lvl.get("m_probability"), lvl.get("u_probability")
            w = math.log2(m / u) if m and u else None
            levels.append(
                {
                    "comparison": comp["output_column_name"],
                    "level": lvl.get("label_for_charts") or lvl.get("sql_condition"),
                    "m": m,
                    "u": u,
                    "weight": w,
                }
            )
    return {
        "model_version": model_version,
        "settings_hash": model["settings_hash"],
        "prior": model["splink_settings"].get("probability_two_random_records_match"),
        "levels": levels,
    }


def _scores(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    bands = {
        r["band"]: r["n"]
        for r in _rows(con, "SELECT band, count(*) AS n FROM record_person GROUP BY band")
    }
    scores = [
        r[0]
        for r in con.execute("SELECT score FROM record_person WHERE score IS NOT NULL").fetchall()
    ]
    clerical = (
        [
            r[0]
            for r in con.execute(
                "SELECT match_probability FROM clerical_review WHERE status = 'open'"
            ).fetchall()
        ]
        if _has(con, "clerical_review")
        else []
    )
    return {"bands": bands, "record_scores": scores, "clerical_scores": clerical}


def _clerical(con: duckdb.DuckDBPyConnection, now: dt.datetime) -> dict[str, Any]:
    if not _has(con, "clerical_review"):
        return {"open": 0, "by_run": []}
    by_run = _rows(
        con,
        """
        SELECT c.run_id, count(*) AS open_pairs, min(r.finished_at) AS queued_at
        FROM clerical_review c LEFT JOIN linkage_run r USING (run_id)
        WHERE c.status = 'open' GROUP BY c.run_id ORDER BY queued_at""",
    )
    for r in by_run:
        q = r["queued_at"]
        r["age_days"] = None if q is None else round((now - q).total_seconds() / 86400, 1)
    return {
        "open": sum(r["open_pairs"] for r in by_run),
        "by_run": by_run,
        "oldest_days": max((r["age_days"] or 0 for r in by_run), default=0),
    }


def _clusters(con: duckdb.DuckDBPyConnection, run: dict[str, Any], t: int) -> dict[str, Any]:
    sizes = _rows(
        con,
        """
        SELECT n_records AS size, count(*) AS persons FROM person WHERE status = 'active'
        GROUP BY 1 ORDER BY 1""",
    )
    for s in sizes:
        s["persons_shown"] = str(people_count(s["persons"], t))
    return {
        "sizes": sizes,
        "flagged": run.get("n_flagged_clusters"),
        "split": run.get("n_split_clusters"),
    }


def _stability(con: duckdb.DuckDBPyConnection, run_id: str, t: int) -> dict[str, Any]:
    def kind(table: str, lineage: str, key: str) -> dict[str, Any] | None:
        if not _has(con, table):
            return None
        row = _rows(
            con,
            f"""
            SELECT count(*) FILTER (WHERE status = 'active') AS active,
                   count(*) FILTER (WHERE first_run_id = ?) AS new,
                   count(*) FILTER (WHERE retired_run_id = ?) AS retired,
                   count(*) FILTER (WHERE status = 'active' AND first_run_id <> ?) AS carried
            FROM {table}""",
            [run_id, run_id, run_id],
        )[0]
        prev = (
            con.execute(
                f"""SELECT count(DISTINCT {key}) FILTER (WHERE {key} <> previous_{key}),
                                      count(*) FROM {lineage} WHERE run_id = ?""",
                [run_id],
            ).fetchone()
            if _has(con, lineage)
            else (0, 0)
        )
        row["renamed_or_merged"] = int(prev[0] or 0)
        base = row["carried"] + row["retired"]
        row["stable_share"] = None if base == 0 else row["carried"] / base
        row["first_run"] = base == 0
        return {
            k: (str(people_count(v, t)) if k in ("new", "retired") and table == "person" else v)
            for k, v in row.items()
        }

    return {
        "persons": kind("person", "person_lineage", "person_id"),
        "households": kind("household", "household_lineage", "household_id"),
    }
