"""`make demo` after the hub DAG (`post_hub`), as the partnership would run it:
(a) the linkage evaluation writes hub/reports/linkage_quality.json;
(b) a week of practitioner activity through the governance API (synthetic_data.demo_week);
(c) the IG lead's linkage audit report re-rendered with the quality figures and access section;
(d) one subject access report, re-identified by the agency that received the request;
(e) the API config and the demo users' tokens (synthetic_data.demo_next).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from synthetic_data.demo_next import prepare_next_steps
from synthetic_data.demo_week import simulate_week

REPO = Path(__file__).resolve().parents[1]
console = Console()


def latest_run_id(warehouse: Path) -> str:
    import duckdb

    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        row = con.execute(
            "SELECT run_id FROM linkage_run ORDER BY finished_at DESC NULLS LAST, "
            "run_id DESC LIMIT 1"
        ).fetchone()
    finally:
        con.close()
    if row is None:
        raise SystemExit(f"{warehouse}: no linkage run; did the hub DAG succeed?")
    return str(row[0])


def _evaluation_module() -> Any:
    """benchmarks/evaluate_linkage.py (a script, not a package), imported by path."""
    import importlib.util

    path = REPO / "benchmarks" / "evaluate_linkage.py"
    spec = importlib.util.spec_from_file_location("joinedup_evaluate_linkage", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def evaluate(out: Path, run_id: str, *, baseline: bool = True) -> dict[str, Any]:
    """(a) The partnership's linkage evaluation: writes hub/reports/linkage_quality.json."""
    return _evaluation_module().evaluate_run(out, run_id, baseline=baseline)


def write_report(out: Path, run_id: str) -> Path:
    """(c) The IG report re-rendered with the quality figures and the week's access section."""
    from governance.audit import AuditLog
    from governance.hub_stage import governance_engine, trusted_audit_keys
    from governance.relationships import SqlRelationshipRegistry
    from governance.reports.linkage_report import build_report
    from linkage.config import HubPaths

    engine = governance_engine(out)
    try:  # the IG lead's copy of the hub audit key: the report says if the chain verifies
        return build_report(
            HubPaths.for_run(out),
            run_id,
            audit=AuditLog(engine),
            relationships=SqlRelationshipRegistry(engine).to_frame(),
            trusted_keys=trusted_audit_keys(out),
        )
    finally:
        engine.dispose()


def write_sar(out: Path, person_id: str, agency: str | None = None) -> Path:
    """(d) One subject access report. The hub collects every audit entry about the person
    (ids and codes only); the agency that received the request re-identifies its own refs
    with its own key, and the addressed report is written on the agency's side only."""
    import duckdb

    from governance.audit import AuditLog
    from governance.hub_stage import governance_engine
    from governance.reports.sar import (
        agency_identity_requests,
        collect_sar,
        reidentify_for_sar,
        render_sar,
        write_sar_file,
    )
    from ig_bridge.keys import KeyStore
    from ig_bridge.reid_service import extract_lookup
    from linkage.config import HubPaths

    engine = governance_engine(out)
    con = duckdb.connect(str(HubPaths.for_run(out).warehouse), read_only=True)
    try:
        report = collect_sar(AuditLog(engine), person_id, con)
    finally:
        con.close()
        engine.dispose()
    agency = agency or sorted(report.record_refs)[0]
    adir = out / "agency" / agency
    mapping = REPO / "schemas" / "agencies" / f"{agency.lower()}.yaml"
    extract = next(
        p for p in sorted((out / "population" / "extracts" / agency).iterdir()) if p.is_file()
    )
    ids = reidentify_for_sar(
        report,
        agency,
        ref_keys=KeyStore(adir / "keys", agency).ref_keys(),
        lookup=extract_lookup(extract, mapping),
        audit_log=adir / "audit.log",
        requesting_user="sar.officer",
    )
    earlier = agency_identity_requests(adir / "audit.log", report.record_refs.get(agency, []))
    path = adir / "sar" / f"sar_{person_id}.html"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return write_sar_file(path, render_sar(report, ids, earlier))


def post_hub(
    out: Path, *, baseline: bool = True, start: dt.datetime | None = None
) -> dict[str, Any]:
    """Everything after the hub DAG, on a run folder the hub has linked. Returns the outputs."""
    from linkage.config import HubPaths

    paths = HubPaths.for_run(out)
    run_id = latest_run_id(paths.warehouse)
    with console.status(
        "(a) linkage evaluation against ground truth"
        + (" and the plaintext baseline" if baseline else "")
    ):
        quality = evaluate(out, run_id, baseline=baseline)
    with console.status("(b) a week of practitioner activity through the governance API"):
        week = simulate_week(out, start=start)
    with console.status("(c) IG report with quality and access sections"):
        report = write_report(out, run_id)
    with console.status("(d) subject access report"):
        sar = write_sar(out, week.sar_person or "", week.identity_agency)
    with console.status("(e) API config and demo users' tokens"):
        steps = prepare_next_steps(
            out,
            {
                "IG linkage audit report": report,
                "subject access report (agency side)": sar,
                "linkage quality (JSON)": paths.reports / "linkage_quality.json",
            },
        )
    return {
        "run_id": run_id,
        "quality": quality,
        "week": week,
        "next": steps,
        "outputs": {
            "linkage quality (JSON)": paths.reports / "linkage_quality.json",
            "IG linkage audit report": report,
            "subject access report (agency side)": sar,
            "governance store (audit log, consent, allocations)": governance_db_display(out),
            "hub audit public key (the IG lead's copy, for verify)": out
            / "ig_lead"
            / "trusted_keys",
            "analyst marts": paths.marts / "analyst.duckdb",
            "warehouse": paths.warehouse,
        },
    }


def governance_db_display(out: Path) -> str:
    url = os.environ.get("JOINEDUP_GOVERNANCE_DB")
    return "JOINEDUP_GOVERNANCE_DB" if url else str(out / "hub" / "governance.db")


def show_post_hub(result: dict[str, Any]) -> None:
    q = result["quality"]
    figures = Table(title=f"Linkage quality, run {result['run_id']}")
    figures.add_column("figure")
    figures.add_column("value", justify="right")
    for k in (
        "auto_match_precision",
        "pair_completeness",
        "privacy_cost_f1",
        "privacy_cost_f1_cross_agency",
    ):
        v = q.get(k)
        figures.add_row(k, "-" if v is None else f"{v:+.4f}" if "cost" in k else f"{v:.4f}")
    figures.add_row("person F1 (all pairs)", f"{q['person_all_pairs']['f1']:.4f}")
    figures.add_row("household F1", f"{q['household_pairwise']['f1']:.4f}")
    console.print(figures)
    calls = Table(title="A week of practitioner activity (governance API)")
    for c in ("day", "user", "what", "HTTP", "reasons"):
        calls.add_column(c)
    for c in result["week"].calls:
        style = "green" if c["status"] == 200 else "yellow"
        calls.add_row(
            str(c["day"] + 1),
            c["user"],
            c["what"],
            f"[{style}]{c['status']}",
            c["reasons"].replace(",", ", "),
        )
    console.print(calls)
    console.print("[bold]Where each output is")
    for k, v in result["outputs"].items():
        console.print(f"  {k}: {v}", soft_wrap=True)
