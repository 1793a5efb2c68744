"""`make demo`: the whole pipeline THROUGH AIRFLOW on the embedded defaults.

synthetic population -> partnership keys -> every agency's bridge DAG (dag.test) -> the hub DAG
(dag.test) -> then, as the partnership would (`post_hub`):
  (a) the linkage evaluation (benchmarks/evaluate_linkage.py: plays every party, decrypting refs
      with each agency's own key, against ground truth and a plaintext baseline) writes
      hub/reports/linkage_quality.json;
  (b) a week of practitioner activity through the governance HTTP API (allocations, consent and
      gateway views, a denial, a break-glass, an identity request answered by an agency's
      re-identification service on a local port);
  (c) the IG lead's linkage audit report re-rendered with the quality figures and access section;
  (d) one subject access report, re-identified by the agency that received the request;
and prints where each output is. Airflow metadata is SQLite in <out>/airflow, the warehouse a
DuckDB file, the landing zone a folder (docs/contracts.md).

The Airflow environment must be set before Airflow is imported, so `main` configures it and
then re-runs itself in a child process with the environment in place.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from synthetic_data.demo_access import approve_waiting, put_protocols_in_force
from synthetic_data.demo_allocations import send_allocations
from synthetic_data.demo_next import DEMO_USERS, prepare_next_steps, show_next_steps
from synthetic_data.demo_sharing import record_decision_log

REPO = Path(__file__).resolve().parents[1]
console = Console()


def airflow_env(out: Path) -> dict[str, str]:
    """Environment for an embedded Airflow rooted at <out>/airflow (SQLite metadata)."""
    home = out / "airflow"
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get(
                "AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING"
            ),
            "JOINEDUP_RUN_DIR": str(out),
            "GX_ANALYTICS_ENABLED": "false",
            "NO_PROXY": "*",  # macOS: avoid proxy lookups forking in tasks
        }
    )
    return env


def migrate(env: dict[str, str]) -> None:
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    airflow = Path(sys.executable).with_name("airflow")
    cmd = [str(airflow)] if airflow.exists() else [sys.executable, "-m", "airflow"]
    subprocess.run([*cmd, "db", "migrate"], env=env, check=True, capture_output=True)


def prepare(out: Path, people: int, seed: int, profile: str = "default") -> list[str]:
    """Population (skipped if already generated with the same size/seed/profile) and keys."""
    import json

    from linkage.orchestration import agency_dag_specs, provision
    from synthetic_data.generate import generate_population

    pop = out / "population"
    meta = pop / "population.json"
    current = json.loads(meta.read_text()) if meta.exists() else {}
    if (current.get("people"), current.get("seed"), current.get("profile", "default")) != (
        people,
        seed,
        profile,
    ):
        generate_population(pop, seed=seed, people=people, progress=True, profile=profile)
    codes = [s.code for s in agency_dag_specs()]
    provision(out, codes)
    return codes


def run_dags(codes: list[str]) -> dict[str, str]:
    """Runs inside the child process (environment already set). Returns dag_id -> state."""
    from airflow.dag_processing.dagbag import DagBag
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from linkage.orchestration import HUB_DAG_ID

    bag = DagBag(dag_folder=str(REPO / "dags"))
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    states: dict[str, str] = {}
    dag_ids = [f"bridge_{c.lower()}" for c in codes] + [HUB_DAG_ID]
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        job = bar.add_task("Airflow runs", total=len(dag_ids))
        for dag_id in dag_ids:
            bar.update(job, description=f"dag.test {dag_id}")
            dag = bag.get_dag(dag_id)
            dr = dag.test(run_conf={} if dag_id == HUB_DAG_ID else {"extract_kind": "snapshot"})
            states[dag_id] = str(getattr(dr.state, "value", dr.state))
            bar.advance(job)
    return states


def summarise(out: Path, states: dict[str, str], seconds: float) -> int:
    import duckdb

    from linkage.orchestration import hub_outputs

    runs = Table(title="Airflow runs")
    runs.add_column("DAG")
    runs.add_column("state")
    for dag_id, state in states.items():
        runs.add_row(dag_id, f"[green]{state}" if state == "success" else f"[red]{state}")
    console.print(runs)
    outputs = hub_outputs(out)
    wh = Path(outputs["warehouse"])
    if wh.exists():
        con = duckdb.connect(str(wh), read_only=True)
        try:
            counts = Table(title="Warehouse")
            counts.add_column("table")
            counts.add_column("rows", justify="right")
            for t in (
                "batch",
                "refused_batch",
                "record_person",
                "person",
                "household",
                "household_member",
                "family_edge",
                "clerical_review",
                "linkage_run",
            ):
                try:
                    n = con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]
                except duckdb.Error:
                    n = "-"
                counts.add_row(t, str(n))
            console.print(counts)
        finally:
            con.close()
    for k, v in outputs.items():
        console.print(f"[bold]{k}[/]: {v}")
    console.print(f"Airflow metadata and logs: {out / 'airflow'}  ({seconds:.0f} s)")
    return 0 if all(s == "success" for s in states.values()) else 1


# --------------------------------------------------------------------------- after the hub DAG


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


@dataclass
class Week:
    """What the simulated week did: ids (pseudonymous), HTTP statuses, where the logs are."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    sar_person: str | None = None
    identity_agency: str | None = None


def _pick(warehouse: Path, consent: Any, at: dt.datetime) -> dict[str, Any]:
    """Households for the week's cases, chosen from the warehouse by what they need to show."""
    import duckdb

    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        hh = con.execute("""
            SELECT m.household_id, list(DISTINCT m.person_id ORDER BY m.person_id) AS members,
                   list(DISTINCT rp.agency ORDER BY rp.agency) AS agencies
            FROM household_member m JOIN household h USING (household_id)
            JOIN record_person rp USING (person_id)
            WHERE h.status = 'active' GROUP BY 1 HAVING count(DISTINCT m.person_id) >= 2
            AND bool_or(rp.agency = 'CSC')  -- sw.csc.1's cases come from CSC's case system
            ORDER BY count(DISTINCT rp.agency) DESC, 1 LIMIT 60""").fetchall()
        eh_given = con.execute("""
            SELECT rp.person_id, min(m.household_id), min(p.agency) FROM payload p
            JOIN record_person rp USING (agency, record_ref)
            JOIN household_member m ON m.person_id = rp.person_id
            WHERE p.consent_purpose = 'early_help' AND p.consent_status = 'given'
            GROUP BY 1 ORDER BY 1""").fetchall()
    finally:
        con.close()
    if len(hh) < 3:
        raise SystemExit(f"{warehouse}: too few multi-member households for the demo week")
    eh = next(
        ((p, h, a) for p, h, a in eh_given if consent.state(p, "early_help", a, at).given), None
    )
    mash = next(
        (
            h
            for h, members, agencies in hh[1:]
            if any(not consent.state(p, "mash", a, at).given for p in members for a in agencies)
        ),
        hh[1][0],
    )
    case = hh[0]
    person = case[1][0]
    return {
        "case": case[0],
        "person": person,
        "mash_household": mash,
        "eh": eh,
        "other_household": hh[2][0],
    }


def simulate_week(
    out: Path, *, start: dt.datetime | None = None, bridge_agency: str | None = None
) -> Week:
    """(b) A week of practitioner activity through the governance HTTP API on the hub's
    governance store (<out>/hub/governance.db unless JOINEDUP_GOVERNANCE_DB is set)."""
    import threading

    from fastapi.testclient import TestClient

    from governance.access import configured_access
    from governance.api import TokenStore, create_app
    from governance.audit import AuditLog, generate_hub_key, load_hub_key
    from governance.audit_checkpointer import attach_checkpointer, process_origin
    from governance.audit_keys import load_audit_key
    from governance.consent import SqlConsentRegistry
    from governance.decisions import Governance, User
    from governance.hub_stage import governance_engine, hub_keys_dir, refresh_consent
    from governance.identity import IdentityService
    from governance.relationships import (
        Relationship,
        SqlRelationshipRegistry,
        Subject,
        SubjectKind,
    )
    from governance.service import ViewService
    from ig_bridge.keys import KeyStore
    from ig_bridge.reid_service import ReidService, extract_lookup, load_hub_public_key, make_server
    from linkage.config import HubPaths

    paths = HubPaths.for_run(out)
    engine = governance_engine(out)
    consent = SqlConsentRegistry(engine)
    if not consent.has_warehouse_events():  # the hub DAG's report stage normally did this
        refresh_consent(engine, paths.warehouse)
    rels = SqlRelationshipRegistry(engine)
    # The API process signs checkpoints with the hub's audit key (start, periodic, shutdown).
    audit = AuditLog(
        engine, signing_key=load_audit_key(hub_keys_dir(paths.hub)), origin=process_origin("api")
    )
    # What ships: the shipped assignments and controllers' sign-off (governance.access).
    gov = Governance(audit, consent, rels, access=configured_access(engine))
    now = dt.datetime.now(dt.UTC)
    monday = start or (now - dt.timedelta(days=now.weekday() + 7)).replace(
        hour=9, minute=0, second=0, microsecond=0
    )
    put_protocols_in_force(audit, monday - dt.timedelta(days=61))  # the partnership's set-up
    clock = {"t": monday}
    views = ViewService(paths.warehouse, gov, clock=lambda: clock["t"])
    pick = _pick(paths.warehouse, consent, monday)

    # Allocations, as the case-management system would sync them (persisted in the store).
    alloc_start = (monday - dt.timedelta(days=60)).date()
    allocations = [
        Relationship("sw.csc.1", SubjectKind.HOUSEHOLD, pick["case"], alloc_start),
        # the MASH contact: sw.csc.1's, so their manager tm.csc.1 holds it too (team rights)
        Relationship("sw.csc.1", SubjectKind.HOUSEHOLD, pick["mash_household"], alloc_start),
        Relationship(
            "sw.csc.1",
            SubjectKind.HOUSEHOLD,
            pick["other_household"],
            alloc_start,
            (monday + dt.timedelta(days=4)).date(),
        ),
    ]
    if pick["eh"] is not None:  # the Early Help worker holds the family too (who holds what)
        allocations += [
            Relationship("ehw.eh.1", SubjectKind.PERSON, pick["eh"][0], alloc_start),
            Relationship("ehw.eh.1", SubjectKind.HOUSEHOLD, pick["eh"][1], alloc_start),
        ]
    # Sent by each worker's agency through its bridge and landed by the hub (production's path).
    send_allocations(out, allocations, DEMO_USERS, engine, audit)
    store = TokenStore(engine)
    tokens = {u: store.issue(u, role, agency) for u, (role, agency) in DEMO_USERS.items()}

    # An agency's re-identification service on a local port, verifying hub-signed requests.
    key_path = paths.hub / "keys" / "hub_request.pem"
    hub_key = load_hub_key(key_path) if key_path.exists() else generate_hub_key(key_path)
    holders = views.agencies_holding([pick["person"]])[pick["person"]]
    s47 = gov.protocols["s47_child_protection_enquiry"]
    agency = bridge_agency or next(
        (a for a in ("CSC", "GP", "SCH", "POL", "HV") if a in holders and a in s47.agencies), None
    )
    server = service = None
    bridges: dict[str, str] = {}
    if agency is not None:
        mapping = REPO / "schemas" / "agencies" / f"{agency.lower()}.yaml"
        extract = next(
            p for p in sorted((out / "population" / "extracts" / agency).iterdir()) if p.is_file()
        )
        # It answers only under the protocols the agency's IG lead agreed (provisioned with
        # the keys: out/agency/<CODE>/agreed_protocols.yaml), within its rate limits.
        service = ReidService(
            agency,
            KeyStore(out / "agency" / agency / "keys", agency),
            load_hub_public_key(key_path.with_suffix(".pub")),
            extract_lookup(extract, mapping),
            out / "agency" / agency / "audit.log",
        )
        server = make_server(service)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        bridges[agency] = f"http://127.0.0.1:{server.server_address[1]}"
    ident = IdentityService(views, hub_key, bridges)
    app = create_app(views, store, ident)
    attach_checkpointer(app, audit)
    client = TestClient(app).__enter__()  # runs the app's start-up (checkpoint) now
    week = Week(sar_person=pick["person"], identity_agency=agency)

    def call(
        what: str,
        day: int,
        hour: int,
        who: str,
        method: str,
        url: str,
        body: dict[str, Any] | None = None,
    ) -> Any:
        clock["t"] = monday + dt.timedelta(days=day, hours=hour)
        r = client.request(
            method, url, json=body, headers={"Authorization": f"Bearer {tokens[who]}"}
        )
        res = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        # What the demo prints: the call and its outcome, never a response body (identities).
        week.calls.append(
            {
                "day": day,
                "user": who,
                "what": what,
                "call": f"{method} {url.split('?')[0]}",
                "status": r.status_code,
                "reasons": ",".join(res.get("reasons") or []),
            }
        )
        return res

    case, person, mh = pick["case"], pick["person"], pick["mash_household"]
    try:
        call("involvement index", 0, 0, "sw.csc.1", "GET", f"/households/{case}/involvement")
        call("s47 household view", 0, 1, "sw.csc.1", "GET", f"/households/{case}?protocol={s47.id}")
        call("s47 person view", 0, 2, "sw.csc.1", "GET", f"/persons/{person}?protocol={s47.id}")
        if pick["eh"] is not None:
            call(
                "Early Help view (consent)",
                1,
                0,
                "ehw.eh.1",
                "GET",
                f"/persons/{pick['eh'][0]}?protocol=early_help_family_support",
            )
        call("no allocation", 1, 3, "pc.pol.9", "GET", f"/persons/{person}?protocol={s47.id}")
        mash = "mash_information_sharing"
        call("MASH view (consent)", 2, 0, "sw.csc.1", "GET", f"/households/{mh}?protocol={mash}")
        call("MASH team view", 2, 0, "tm.csc.1", "GET", f"/households/{mh}?protocol={mash}")
        # The MASH protocol requires a manager's approval: the request waits for tm.csc.1.
        call(
            "MASH break-glass (waits)",
            2,
            1,
            "sw.csc.1",
            "POST",
            f"/households/{mh}/break-glass",
            {
                "protocol_id": mash,
                "category": "risk_of_significant_harm",
                "justification": "Contact from school about injuries; consent could not be "
                "sought without alerting the alleged abuser",
                "hours": 8,
            },
        )
        clock["t"] = monday + dt.timedelta(days=2, hours=2)
        gid = approve_waiting(gov, clock["t"])
        week.calls.append(
            {
                "day": 2,
                "user": "tm.csc.1",
                "what": "manager approves break-glass",
                "call": "POST /approvals/{request}",
                "status": 200 if gid else 404,
                "reasons": "",
            }
        )
        if gid:
            call(
                "reopen break-glass",
                2,
                4,
                "sw.csc.1",
                "GET",
                f"/households/{mh}?protocol={mash}&break_glass_id={gid}",
            )
            call(
                "reopen next day",
                3,
                0,
                "sw.csc.1",
                "GET",  # next day: the grant has expired
                f"/households/{mh}?protocol={mash}&break_glass_id={gid}",
            )
        call(
            "s47 break-glass",
            3,
            2,
            "sw.csc.1",
            "POST",
            f"/persons/{person}/break-glass",
            {
                "protocol_id": s47.id,
                "category": "immediate_danger",
                "justification": "Wanted the full picture before the strategy meeting",
                "hours": 2,
            },
        )
        if agency is not None:
            call(
                "identity request",
                3,
                3,
                "sw.csc.1",
                "POST",
                f"/persons/{person}/identity",
                {
                    "protocol_id": s47.id,
                    "agency": agency,
                    "reason": "Strategy meeting must confirm which child the records concern",
                },
            )
        call(
            "last day of allocation",
            4,
            0,
            "sw.csc.1",
            "GET",
            f"/households/{pick['other_household']}?protocol={s47.id}",
        )
        if pick["eh"] is not None:  # the parent withdraws consent by phone: effective at once
            pid, hh, ag = pick["eh"]
            clock["t"] = monday + dt.timedelta(days=4, hours=2)
            consent.record(pid, ag, "early_help", "withdrawn", clock["t"])
            call(
                "after withdrawal",
                4,
                3,
                "ehw.eh.1",
                "GET",
                f"/persons/{pid}?protocol=early_help_family_support",
            )
        clock["t"] = monday + dt.timedelta(days=4, hours=5)
        gov.record_withheld_request(
            User("sw.csc.1", "practitioner", "CSC"),
            "mash_information_sharing",
            Subject(person, case),
            "not_proportionate",
            clock["t"],
        )
        record_decision_log(call, tokens, store, person, monday)  # offers, refusals, a challenge
    finally:
        client.__exit__(None, None, None)  # the app's shutdown: a checkpoint over the week
        if server is not None:
            server.shutdown()
            server.server_close()
        if service is not None:
            service.close()
        ident.http.close()
        engine.dispose()
    return week


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("var/demo"))
    ap.add_argument("--people", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument(
        "--profile",
        choices=("default", "messy"),
        default="default",
        help="synthetic population profile (messy: real exports' errors, synthetic_data.messy)",
    )
    ap.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the plaintext Splink baseline (no privacy-cost figure)",
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    out = args.out.resolve()
    if args.child:
        codes = os.environ["JOINEDUP_DEMO_CODES"].split(",")
        states = run_dags(codes)
        import json

        (out / "demo_states.json").write_text(json.dumps(states))
        return 0
    start = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    # A fresh governance store and agency re-identification logs per demo: the week is
    # simulated, so a re-run shows one week, not the sum of every earlier demo.
    (out / "hub" / "governance.db").unlink(missing_ok=True)
    for log in (out / "agency").glob("*/audit.log"):
        log.unlink()
    env = airflow_env(out)
    with console.status("Preparing Airflow metadata (SQLite)"):
        migrate(env)
    codes = prepare(out, args.people, args.seed, args.profile)
    env["JOINEDUP_DEMO_CODES"] = ",".join(codes)
    states_file = out / "demo_states.json"
    states_file.unlink(missing_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "synthetic_data.demo", "--out", str(out), "--child"],
        env=env,
        check=False,
    )
    if proc.returncode != 0 or not states_file.exists():
        console.print(
            f"[red]Airflow runs failed (exit {proc.returncode}); logs under {out / 'airflow'}"
        )
        return 1
    import json

    rc = summarise(out, json.loads(states_file.read_text()), time.monotonic() - start)
    if rc != 0:
        return rc
    result = post_hub(out, baseline=not args.no_baseline)
    show_post_hub(result)
    console.print(f"demo finished in {time.monotonic() - start:.0f} s")
    show_next_steps(result["next"], console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
