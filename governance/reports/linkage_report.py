"""The linkage audit report for IG leads: one self-contained HTML file per run.

`collect_report_data` gathers the figures (plain dicts and lists, so tests compare them with the
warehouse); `render_report` turns them into HTML with inline base64 PNG charts (matplotlib) and
no external JS/CSS; `build_report` does both and writes `hub/reports/linkage_report_<run>.html`.

Nothing identifying goes in: hub ids appear only where an IG lead needs them (break-glass user
ids, protocol ids); counts that describe people are suppressed below the marts threshold and
shown as "<t", as in the marts.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from governance.reports import appropriateness
from linkage.disclosure import DEFAULT_THRESHOLD

QUALITY_FILE = "linkage_quality.json"  # written by benchmarks/evaluate_linkage.py
NEAR_END_DAYS = 7  # a grant this close to the end of the user's relationship is worth a look


# --------------------------------------------------------------------------- small helpers


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


def _weight(p: float | None) -> float | None:
    if p is None or not 0 < p < 1:
        return None
    return math.log2(p / (1 - p))


# --------------------------------------------------------------------------- linkage sections


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


# --------------------------------------------------------------------------- access sections


def _decision_outcome(body: Mapping[str, Any]) -> str:
    fields = body.get("fields") or []
    if body.get("type") == "withheld_request":
        return "withheld_by_practitioner"
    allowed = sum(bool(f.get("allowed")) for f in fields)
    if not fields or allowed == 0:
        return "denied"
    return "granted" if allowed == len(fields) else "partly_granted"


def _one_request(body: Mapping[str, Any]) -> Mapping[str, Any]:
    """A household view is one request (one audit entry) with a decision per member: count it
    once, over all members' fields, with its break-glass if any member's was recorded."""
    if body.get("type") != "household_decision":
        return body
    subs = list(body.get("decisions") or [])
    bgs = [d["break_glass"] for d in subs if d.get("break_glass")]
    bg = None if not bgs else {**bgs[0], "used": any(b.get("used") for b in bgs)}
    return {
        **body,
        "type": "decision",
        "fields": [f for d in subs for f in d.get("fields") or []],
        "break_glass": bg,
        "subject": {"person_id": None, "household_id": body.get("household_id")},
    }


def _access(
    entries: Iterable[Mapping[str, Any]],
    protocols: Iterable[str],
    relationships: pd.DataFrame | None,
    identity_logs: Mapping[str, Path],
    consent: pd.DataFrame | None,
    t: int,
) -> dict[str, Any]:
    by_prot_role_outcome: Counter[tuple[str, str, str]] = Counter()
    break_glass: list[dict[str, Any]] = []
    override_by_user: Counter[str] = Counter()
    grants_by_user: Counter[str] = Counter()
    denied_with_consent: Counter[tuple[str, str]] = Counter()
    used_protocols: set[str] = set()
    near_end: list[dict[str, Any]] = []
    ends: dict[tuple[str, str], list[dt.date]] = defaultdict(list)
    if relationships is not None and not relationships.empty:
        for r in relationships.itertuples(index=False):
            if isinstance(r.end, str | dt.date) and str(r.end).strip():
                ends[(r.user_id, r.subject_id)].append(pd.Timestamp(r.end).date())
    n = 0
    for body in map(_one_request, entries):
        if body.get("type") not in ("decision", "withheld_request"):
            continue
        n += 1
        outcome = _decision_outcome(body)
        proto, role, user = body.get("protocol_id"), body.get("role"), body.get("user_id")
        used_protocols.add(proto)
        by_prot_role_outcome[(proto, role, outcome)] += 1
        bg = body.get("break_glass")
        if bg:
            break_glass.append(
                {
                    "at": body.get("at"),
                    "protocol_id": proto,
                    "user_id": user,
                    "role": role,
                    "used": bg.get("used"),
                    "problems": ", ".join(bg.get("problems") or []) or "-",
                    "justification": bg.get("justification") or "",
                }
            )
        if outcome in ("granted", "partly_granted"):
            grants_by_user[user] += 1
            if bg and bg.get("used"):
                override_by_user[user] += 1
            at = pd.Timestamp(body.get("at")).date()
            subj = body.get("subject") or {}
            for sid in (subj.get("person_id"), subj.get("household_id")):
                for end in ends.get((user, sid), []):
                    if 0 <= (end - at).days <= NEAR_END_DAYS:
                        near_end.append(
                            {
                                "at": body.get("at"),
                                "user_id": user,
                                "protocol_id": proto,
                                "days_before_end": (end - at).days,
                            }
                        )
        for f in body.get("fields") or []:
            if not f.get("allowed") and f.get("consent") == "given":
                denied_with_consent[(proto, ",".join(f.get("reasons") or []))] += 1
    over_open = [
        {
            "user_id": u,
            "grants": grants_by_user[u],
            "via_override": k,
            "share": k / grants_by_user[u],
        }
        for u, k in override_by_user.most_common()
    ]
    identity: Counter[tuple[str, str, str]] = Counter()
    for agency, path in sorted(identity_logs.items()):
        if not Path(path).exists():
            continue
        for line in Path(path).read_text("utf-8").splitlines():
            if line.strip():
                e = json.loads(line)
                if e.get("outcome") == "unauthenticated_refusals":  # one line, many requests
                    identity[(agency, "-", "unauthenticated_refusals")] += sum(
                        int(n) for n in (e.get("counts") or {}).values()
                    )
                    continue
                identity[(agency, str(e.get("protocol_id")), str(e.get("outcome")))] += 1
    cov = []
    if consent is not None:
        for r in consent.itertuples(index=False):
            cov.append(
                {
                    "purpose": r.purpose,
                    "agency": r.agency,
                    "state": r.state,
                    "persons": "<" + str(t) if pd.isna(r.n) else f"{int(r.n):,}",
                }
            )
    return {
        "n_decisions": n,
        "by_protocol_role_outcome": [
            {"protocol_id": p, "role": r, "outcome": o, "decisions": c}
            for (p, r, o), c in sorted(by_prot_role_outcome.items(), key=lambda x: str(x[0]))
        ],
        "break_glass": break_glass,
        "identity_requests": [
            {"agency": a, "protocol_id": p, "outcome": o, "requests": c}
            for (a, p, o), c in sorted(identity.items())
        ],
        "consent_coverage": cov,
        "consent_recorded": _consent_recorded(cov),
        "over_open": {"override_grants": over_open, "near_relationship_end": near_end},
        "over_cautious": {
            "denied_with_consent": [
                {"protocol_id": p, "reasons": r, "fields": c}
                for (p, r), c in sorted(denied_with_consent.items())
            ],
            "protocols_never_used": sorted(set(protocols) - used_protocols),
        },
    }


def _consent_recorded(cov: list[dict[str, Any]]) -> dict[str, Any]:
    """The consent table without its zeros: one row per purpose and agency where any consent
    decision is recorded (given, refused or withdrawn; a suppressed count is not a zero), and
    the agencies that hold no consent decision for any purpose."""
    cells: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for c in cov:
        cells[(c["purpose"], c["agency"])][c["state"]] = c["persons"]
    decided = ("given", "refused", "withdrawn")
    rows = [
        {"purpose": p, "agency": a, **{k: v.get(k, "0") for k in (*decided, "none")}}
        for (p, a), v in sorted(cells.items())
        if any(v.get(k, "0") != "0" for k in decided)
    ]
    with_any = {r["agency"] for r in rows}
    return {"rows": rows, "no_decisions": sorted({a for _, a in cells} - with_any)}


# --------------------------------------------------------------------------- collect


def collect_report_data(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    *,
    threshold: int = DEFAULT_THRESHOLD,
    audit_entries: Iterable[Mapping[str, Any]] | None = None,
    protocols: Iterable[str] | None = None,
    relationships: pd.DataFrame | None = None,
    identity_logs: Mapping[str, Path] | None = None,
    marts_path: Path | None = None,
    quality_file: Path | None = None,
    now: dt.datetime | None = None,
    audit_chain: Mapping[str, Any] | None = None,
    staff: Mapping[str, tuple[str | None, str | None]] | None = None,
) -> dict[str, Any]:
    """Every figure of the report. `audit_entries` are decoded audit bodies (AuditRecord.data());
    `relationships` the registry's frame (user_id, kind, subject_id, start, end); `audit_chain`
    the verification of the log against the trusted key (audit_checkpoints.report_line);
    `staff` user_id -> (agency, team), for the appropriateness section."""
    tally, audit_entries = appropriateness.tally(audit_entries, staff)  # one read of the log
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    run = _run_row(con, run_id)
    consent = None
    if marts_path is not None and Path(marts_path).exists():
        m = duckdb.connect(str(marts_path), read_only=True)
        try:
            if _has(m, "agg_consent_coverage"):
                consent = m.execute(
                    "SELECT purpose, agency, state, n FROM agg_consent_coverage ORDER BY ALL"
                ).df()
        finally:
            m.close()
    if protocols is None:
        from governance.policy import load_protocols

        protocols = list(load_protocols())
    quality = None
    if quality_file is not None and Path(quality_file).exists():
        quality = json.loads(Path(quality_file).read_text("utf-8"))
    data = {
        "run_id": run_id,
        "generated_at": now.isoformat(timespec="seconds"),
        "threshold": threshold,
        "run": {
            k: (v.isoformat(timespec="seconds") if isinstance(v, dt.datetime) else v)
            for k, v in run.items()
            if k != "timings_json"
        },
        "batches": _batches(con, run),
        "match_rates": _match_rates(con, threshold),
        "scores": _scores(con),
        "thresholds": {
            "auto_match_probability": run["auto_match_probability"],
            "clerical_probability": run["clerical_probability"],
        },
        "model": _model(con, run["model_version"]),
        "clerical": _clerical(con, now),
        "clusters": _clusters(con, run, threshold),
        "stability": _stability(con, run_id, threshold),
        "privacy": None
        if quality is None
        else {
            k: quality.get(k)
            for k in (
                "privacy_cost_f1",
                "privacy_cost_f1_cross_agency",
                "auto_match_precision",
                "pair_completeness",
                "person_all_pairs",
                "plaintext_all_pairs",
                "n_records",
            )
        },
        "access": None
        if audit_entries is None
        else _access(
            audit_entries, protocols, relationships, identity_logs or {}, consent, threshold
        ),
        "appropriateness": None if tally is None else tally.section(),  # after "access"
        "audit_chain": None if audit_chain is None else dict(audit_chain),
        "pseudonym_strength": _pseudonym_strength(con),
    }
    return data


def _pseudonym_strength(con: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
    from governance.reports.pseudonym_strength import section
    from linkage.config import EncodingContract

    if not _has(con, "identifiers"):
        return None
    return section(con, EncodingContract.load().spec)


# --------------------------------------------------------------------------- charts + render


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _charts(data: dict[str, Any]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts: dict[str, str] = {}
    weights = [w for w in (_weight(s) for s in data["scores"]["record_scores"]) if w is not None]
    cl = [w for w in (_weight(s) for s in data["scores"]["clerical_scores"]) if w is not None]
    fig, ax = plt.subplots(figsize=(7, 3))
    if weights:
        ax.hist(weights, bins=40, alpha=0.7, label="records (best pair score)")
    if cl:
        ax.hist(cl, bins=40, alpha=0.7, label="clerical pairs")
    for name, p in data["thresholds"].items():
        w = _weight(p)
        if w is not None:
            ax.axvline(
                w,
                color="red" if "auto" in name else "orange",
                linestyle="--",
                label=f"{name} = {p}",
            )
    ax.set_xlabel("match weight (log2 odds)")
    ax.set_ylabel("count")
    ax.legend(fontsize=7)
    charts["scores"] = _png(fig)

    lv = [x for x in data["model"]["levels"] if x["weight"] is not None]
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.22 * len(lv))))
    ax.barh(
        [f"{x['comparison']}: {str(x['level'])[:40]}" for x in lv],
        [x["weight"] for x in lv],
        color=["tab:green" if x["weight"] > 0 else "tab:red" for x in lv],
    )
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=6)
    ax.set_xlabel("match weight log2(m/u)")
    charts["model"] = _png(fig)

    charts["match_rates"] = _match_heatmap(data["match_rates"], data["threshold"], plt)

    sizes = data["clusters"]["sizes"]
    fig, ax = plt.subplots(figsize=(6, 2.8))
    t = data["threshold"]
    # a bar below the threshold would show a small count about people: drawn at 0, labelled
    ax.bar(
        [str(s["size"]) for s in sizes], [s["persons"] if s["persons"] >= t else 0 for s in sizes]
    )
    ax.set_xlabel("records per person")
    ax.set_ylabel(f"persons (bars under {t} not drawn)")
    ax.set_yscale("symlog")
    charts["clusters"] = _png(fig)
    charts.update(appropriateness.charts(data.get("appropriateness"), plt))
    return charts


def _match_heatmap(rates: list[dict[str, Any]], t: int, plt: Any) -> str:
    """Agency A (rows) by agency B (columns): the share of A's persons B also holds. A cell
    whose count is suppressed is grey and labelled <t, never coloured by its rate."""
    import numpy as np

    agencies = sorted({m["agency_a"] for m in rates} | {m["agency_b"] for m in rates})
    pos = {a: i for i, a in enumerate(agencies)}
    n = max(len(agencies), 1)
    grid = np.full((n, n), np.nan)
    text = [["" for _ in range(n)] for _ in range(n)]
    for m in rates:
        i, j = pos[m["agency_a"]], pos[m["agency_b"]]
        if m["rate"] is None:
            text[i][j] = m["n_both_shown"] if str(m["n_both_shown"]).startswith("<") else "-"
        else:
            grid[i, j] = 100 * m["rate"]
            text[i][j] = f"{100 * m['rate']:.0f}%"
    cmap = plt.get_cmap("Blues").copy()
    cmap.set_bad("#e6e6e6")
    fig, ax = plt.subplots(figsize=(1.6 + 0.75 * n, 1.0 + 0.6 * n))
    im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=100)
    for i in range(n):
        for j in range(n):
            dark = not np.isnan(grid[i, j]) and grid[i, j] > 60
            ax.text(
                j,
                i,
                text[i][j],
                ha="center",
                va="center",
                fontsize=7,
                color="white" if dark else "black",
            )
    ax.set_xticks(range(len(agencies)), agencies)
    ax.set_yticks(range(len(agencies)), agencies)
    ax.set_xlabel("also held by agency B")
    ax.set_ylabel("persons held by agency A")
    fig.colorbar(im, ax=ax, label="% of A's persons also at B", shrink=0.8)
    return _png(fig)


def render_report(data: dict[str, Any]) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resources.files("governance.reports") / "templates")),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
    )
    env.filters["pct"] = lambda v: "-" if v is None else f"{100 * v:.1f}%"
    env.filters["num"] = lambda v: (
        "-"
        if v is None
        else (f"{v:,.3f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v))
    )
    return env.get_template("linkage_report.html.j2").render(d=data, charts=_charts(data))


def portable_name(run_id: str) -> str:
    """A run id as a file-name part any share can hold: Airflow's run ids
    (`manual__2026-12-03T07:30:00+00:00`) have ':' (refused by Windows shares) and '+'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", run_id).strip("-") or "run"


def build_report(
    paths: Any,
    run_id: str,
    *,
    audit: Any = None,
    relationships: pd.DataFrame | None = None,
    threshold: int = DEFAULT_THRESHOLD,
    out: Path | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
    trusted_keys: Any = None,
) -> Path:
    """Collect, render and write the report for one run; returns the HTML path.

    `paths` is a linkage.config.HubPaths; `audit` a governance.audit.AuditLog (optional);
    identity-request logs are read from the agencies' audit.log files beside the hub folder
    when present (the embedded layout; in production each agency sends its log's counts).
    With `trusted_keys` (the IG lead's hub audit public keys) the report says whether the audit
    chain verifies against them and up to which checkpoint."""
    chain = staff = None
    if audit is not None:
        from governance.audit_checkpoints import report_line
        from governance.staff import staff_directory

        staff = staff_directory(audit.engine)

        chain = report_line(audit.verify(trusted_keys) if trusted_keys else None)
    own = con is None
    con = con or duckdb.connect(str(paths.warehouse), read_only=True)
    try:
        entries = None if audit is None else (r.data() for r in audit.entries())
        run_dir = Path(paths.hub).parent
        logs = {p.parent.name: p for p in sorted((run_dir / "agency").glob("*/audit.log"))}
        data = collect_report_data(
            con,
            run_id,
            threshold=threshold,
            audit_entries=entries,
            relationships=relationships,
            identity_logs=logs,
            marts_path=Path(paths.marts) / "analyst.duckdb",
            quality_file=Path(paths.reports) / QUALITY_FILE,
            audit_chain=chain,
            staff=staff,
        )
    finally:
        if own:
            con.close()
    html = render_report(data)
    out = out or Path(paths.reports) / f"linkage_report_{portable_name(run_id)}.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(html, "utf-8")
    tmp.chmod(0o600)  # the IG lead's, not the machine's
    tmp.replace(out)
    return out
