"""(b) of `make demo`: a week of practitioner activity through the governance HTTP API.

Allocations, consent and gateway views, a denial, a break-glass, an identity request answered
by an agency's re-identification service on a local port, and the decision log (offers,
refusals, a challenge), on the hub's governance store of a run folder the hub has linked.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthetic_data.demo_access import approve_waiting, put_protocols_in_force
from synthetic_data.demo_allocations import send_allocations
from synthetic_data.demo_next import DEMO_USERS
from synthetic_data.demo_sharing import record_decision_log

REPO = Path(__file__).resolve().parents[1]


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
    import warnings

    with warnings.catch_warnings():  # Starlette's note on its test client's HTTP library
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        from fastapi.testclient import TestClient

    from governance.access import configured_access
    from governance.api import create_app
    from governance.api_tokens import TokenStore
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
