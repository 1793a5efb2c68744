"""The linkage audit report for IG leads: one self-contained HTML file per run.

`collect_report_data` gathers the figures (plain dicts and lists, so tests compare them with the
warehouse); `render_report` turns them into HTML with inline base64 PNG charts (matplotlib) and
no external JS/CSS; `build_report` does both and writes `hub/reports/linkage_report_<run>.html`.

Nothing identifying goes in: hub ids appear only where an IG lead needs them (break-glass user
ids, protocol ids); counts that describe people are suppressed below the marts threshold and
shown as "<t", as in the marts.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from governance.reports import appropriateness
from governance.reports.access_sections import _access
from governance.reports.linkage_sections import (
    _batches,
    _clerical,
    _clusters,
    _has,
    _match_rates,
    _model,
    _run_row,
    _scores,
    _stability,
)
from governance.reports.report_charts import _charts
from linkage.disclosure import DEFAULT_THRESHOLD

QUALITY_FILE = "linkage_quality.json"  # written by benchmarks/evaluate_linkage.py


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


# --------------------------------------------------------------------------- render


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
