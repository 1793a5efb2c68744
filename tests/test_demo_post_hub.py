"""The demo's post-hub steps on a real linked run (helper-7's orchestrated_run, linked by the
outputs builder): the hub DAG's report task body, then evaluation, a week of practitioner
activity through the HTTP API (with an agency's re-identification service on a local port),
the re-rendered IG report and one subject access report. Each output exists, the report
carries the privacy cost and the access figures, and no identity reaches the hub side."""

from __future__ import annotations

import html
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select, update
from test_report_support import RUN2, build_outputs

from governance.audit import AuditError, AuditLog
from governance.audit_keys import load_trusted_keys
from governance.consent import SqlConsentRegistry
from governance.hub_stage import governance_engine, report_stage
from governance.models import Alert, AuditEntry, Checkpoint, NotificationDue
from governance.policy import load_protocols
from governance.signoff import SignOffStore, parties
from synthetic_data.demo_post_hub import post_hub


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, orchestrated_run: Path) -> dict:
    outputs = build_outputs(tmp_path_factory, orchestrated_run)
    run = tmp_path_factory.mktemp("demo_post_hub") / "run"
    shutil.copytree(outputs.run, run, symlinks=True)
    for leftover in ("governance.db", "gov_meta.json", "rel.json"):
        (run / "hub" / leftover).unlink(missing_ok=True)  # the builder's own decisions
    stage = report_stage(RUN2, base=run)  # what the hub DAG's report task runs
    result = post_hub(run)
    return {"run": run, "stage": stage, "result": result}


def test_report_stage_refreshed_consent_and_rendered(demo: dict) -> None:
    stage, run = demo["stage"], demo["run"]
    assert Path(stage["report"]).exists() and stage["consent_events"] > 0
    # write-audit-publish: the run's warehouse copy the workspace reads (linkage.publish)
    from linkage.config import HubPaths
    from linkage.publish import current

    assert current(HubPaths.for_run(run)) == Path(stage["published"])
    engine = governance_engine(run)
    assert len(SqlConsentRegistry(engine)) >= stage["consent_events"]
    engine.dispose()


def test_every_output_exists(demo: dict) -> None:
    outs = demo["result"]["outputs"]
    for name, path in outs.items():
        assert Path(path).exists(), name
    quality = json.loads(Path(outs["linkage quality (JSON)"]).read_text())
    assert quality["run_id"] == RUN2
    assert quality["privacy_cost_f1"] is not None and quality["auto_match_precision"] > 0.99


def test_week_did_each_kind_of_activity(demo: dict) -> None:
    calls = demo["result"]["week"].calls
    statuses = [c["status"] for c in calls]
    assert statuses.count(200) >= 5 and 403 in statuses
    assert any("involvement" in c["call"] and c["status"] == 200 for c in calls)
    # MASH break-glass needs a manager: the practitioner's request waits (403, nothing shown),
    # their team manager approves it, and the view opens under the approved grant
    assert any(
        c["call"].endswith("break-glass")
        and c["status"] == 403
        and c["user"] == "sw.csc.1"
        and "break_glass_needs_manager_approval" in c["reasons"]
        for c in calls
    )
    assert any(
        c["user"] == "tm.csc.1" and "approves" in c["what"] and c["status"] == 200 for c in calls
    )
    assert any(c["what"] == "reopen break-glass" and c["status"] == 200 for c in calls)
    assert any(
        c["call"].endswith("break-glass")
        and c["status"] == 403
        and "break_glass_not_permitted_by_protocol" in c["reasons"]
        for c in calls
    )
    assert any("break_glass_expired" in c["reasons"] for c in calls)
    assert any(c["call"].endswith("identity") and c["status"] == 200 for c in calls)
    assert any("no_legitimate_relationship" in c["reasons"] for c in calls)
    assert any("consent_withdrawn" in c["reasons"] for c in calls)
    # the decision log: offer, refused offer, request not made, off-system sharing, and a
    # challenge of the refusal decided by the Caldicott guardian, each recorded (201)
    log_calls = {c["what"]: c for c in calls if c["call"].startswith("POST /sharing")}
    assert len(log_calls) == 6 and all(c["status"] == 201 for c in log_calls.values()), log_calls
    assert log_calls["Caldicott guardian overturns it"]["user"] == "caldicott.1"
    engine = governance_engine(demo["run"])
    audit = AuditLog(engine, create=False)
    report = audit.verify(load_trusted_keys(demo["run"] / "ig_lead" / "trusted_keys"))
    assert report.ok and report.uncovered == 0, report.summary()
    # every protocol was put in force by each of its controllers, one audit entry each
    signoffs = SignOffStore(engine)
    assert not any(signoffs.missing(p) for p in load_protocols().values())
    signed = len(signoffs.all())
    assert signed == sum(len(parties(p)) for p in load_protocols().values())
    # one entry per call (the approval included), plus the sign-offs, the withheld request,
    # the hub run's own entry and one import per agency that sent allocations
    imports = sum(1 for r in audit.entries() if r.kind == "allocations_import")
    assert imports >= 1 and audit.count() == len(calls) + signed + imports + 2
    with engine.connect() as conn:  # the hub run's end, then the API process's start and stop
        origins = [
            o for (o,) in conn.execute(select(Checkpoint.origin).order_by(Checkpoint.cp_seq))
        ]
    assert origins[0] == f"hub_run:{RUN2}/end_of_run" and demo["stage"]["audit_checkpoint"] == 1
    assert origins[-1].startswith("api:") and origins[-1].endswith("/stop")
    with engine.connect() as conn:
        kinds = [
            r[0] for r in conn.execute(Alert.__table__.select().with_only_columns(Alert.kind)).all()
        ]
        notes = conn.execute(NotificationDue.__table__.select()).all()
    engine.dispose()
    assert "break_glass_used" in kinds and "break_glass_attempted" in kinds and notes


def test_report_has_privacy_cost_and_access_figures(demo: dict) -> None:
    result = demo["result"]
    page = Path(result["outputs"]["IG linkage audit report"]).read_text("utf-8")
    q = result["quality"]
    cost = f"{q['privacy_cost_f1']:,.3f}"
    assert re.search(r"pseudonymised minus plaintext</td><td>" + re.escape(cost), page)
    calls = result["week"].calls
    # views and the withheld request; identity requests are counted from the agencies' logs,
    # and the manager's approval is not a decision about a view
    n = (
        len(
            [
                c
                for c in calls
                if not c["call"].endswith("/identity")
                and not c["call"].startswith(("POST /approvals", "POST /sharing"))
            ]
        )
        + 1
    )
    assert f"<p>{n} decisions recorded in the governance audit log.</p>" in page
    # the decision log's week (synthetic_data.demo_sharing) in the appropriateness section
    assert "1 raised, 0 upheld, 1 overturned, 0 open" in page
    assert "Sharing outside the system: strategy meeting 1." in page
    pol = re.search(r"<tr><td>POL</td>.*?</tr>", page[page.index('id="appropriateness-agency"') :])
    assert pol and "(1 overturned)" in pol.group(0)  # its refusal of the offer
    chain = re.search(r'<p id="audit-chain"[^>]*>(.*?)</p>', page, re.S)
    assert chain and "verifies against the trusted hub audit key" in chain.group(1)
    assert "up to checkpoint #" in chain.group(1) and "/stop" in chain.group(1)
    assert 'id="breakglass-table"' in page and "risk_of_significant_harm: Contact from" in page
    identity = page[page.index('id="identity-table"') :]
    agency = result["week"].identity_agency
    assert re.search(rf"<td>{agency}</td><td>s47_child_protection_enquiry</td>", identity)


def test_sar_is_written_agency_side_and_no_identity_reaches_the_hub(demo: dict) -> None:
    run, result = demo["run"], demo["result"]
    sar = Path(result["outputs"]["subject access report (agency side)"])
    person = result["week"].sar_person
    assert sar.is_relative_to(run / "agency") and person in sar.name
    text = sar.read_text("utf-8")
    # in words for the person who asked: the agreement's title, the turned-down request
    assert "Child protection enquiry (Children Act 1989 s.47)" in text
    assert "s47_child_protection_enquiry" not in text and "withhold_request" not in text
    assert "The request was not answered" in text
    # it holds name, date of birth and address: owner-only, in an owner-only folder
    assert sar.stat().st_mode & 0o777 == 0o600 and sar.parent.stat().st_mode & 0o777 == 0o700
    # the identity the agency put in the SAR appears nowhere on the hub side
    block = text[text.index("Who this report is about") : text.index("Records held")]
    values = [
        html.unescape(kv.split(": ", 1)[1])
        for li in re.findall(r"<li>(.*?)</li>", block)
        for kv in li.split("; ")
        if ": " in kv
    ]
    values = [v for v in values if len(v) >= 6]
    assert values, "the SAR should be addressed to the person (agency-side identity)"
    hub_bytes = b"".join(
        p.read_bytes()
        for p in (run / "hub").rglob("*")
        if p.is_file() and p.suffix in (".html", ".json", ".db")
    )
    for v in values:
        assert v.encode() not in hub_bytes


def test_a_hub_run_on_a_tampered_audit_log_says_so_and_fails(demo: dict, tmp_path: Path) -> None:
    """A hub insider edits a recorded decision in the governance store; the next hub run's
    report stage refuses to sign a checkpoint over it, writes the IG report saying the chain
    does not verify against the trusted key (and where), and fails the run."""
    run = tmp_path / "run"
    shutil.copytree(demo["run"], run, symlinks=True)
    engine = governance_engine(run)
    with engine.begin() as conn:
        conn.execute(
            update(AuditEntry)
            .where(AuditEntry.seq == 3)
            .values(body='{"type":"decision","outcome":"nothing to see"}')
        )
    before = AuditLog(engine, create=False).count()
    engine.dispose()
    with pytest.raises(AuditError, match="refusing to sign: the chain is broken at entry 3"):
        report_stage(RUN2, base=run)
    page = (run / "hub" / "reports" / f"linkage_report_{RUN2}.html").read_text("utf-8")
    chain = re.search(r'<p id="audit-chain"[^>]*>(.*?)</p>', page, re.S)
    assert chain and "DOES NOT VERIFY against the trusted hub audit key" in chain.group(1)
    assert "first bad entry is 3" in chain.group(1)
    engine = governance_engine(run)
    with engine.connect() as conn:  # the run's entry is kept, nothing was signed over it
        assert AuditLog(engine, create=False).count() == before + 1
        assert not conn.execute(
            select(Checkpoint).where(
                Checkpoint.origin == f"hub_run:{RUN2}/end_of_run", Checkpoint.cp_seq > 1
            )
        ).first()
    engine.dispose()


def test_what_next_serves_the_api_with_the_demo_tokens(
    demo: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """`make demo` ends with what next: the printed command's config and each demo user's
    token work against a real API app over the demo store, each allocated family is visible
    to its user, and "who holds what" names record kinds and lead practitioner contacts."""
    from fastapi.testclient import TestClient

    from governance.api import app_from_env
    from governance.api import main as api_main

    steps = demo["result"]["next"]
    run = demo["run"]
    assert steps.config.is_relative_to(run) and steps.config.stat().st_mode & 0o777 == 0o600
    assert steps.config.parent.stat().st_mode & 0o777 == 0o700
    words = shlex.split(steps.command)
    env, uvicorn, *args = words
    assert env.startswith("JOINEDUP_API_CONFIG=") and Path(uvicorn).name == "uvicorn"
    assert args[:2] == ["--factory", "governance.api:app_from_env"]
    monkeypatch.setenv("JOINEDUP_API_CONFIG", env.split("=", 1)[1])  # what the command runs
    users = {u.user_id: u for u in steps.users}
    assert users["sw.csc.1"].households and users["tm.csc.1"].households
    assert users["ehw.eh.1"].households and not users["pc.pol.9"].households
    # the manager holds the team's cases (sw.csc.1's), and what next names their sign-in
    assert set(users["sw.csc.1"].households) <= set(users["tm.csc.1"].households)
    from workspace.cli import demo_next_steps

    assert any(
        line.strip().startswith("tm.csc.1 (CSC): team manager") and "approves MASH" in line
        for line in demo_next_steps(run)
    )
    with TestClient(app_from_env()) as client:
        contacts, seen = set(), set()
        for u in steps.users:
            assert u.token_file.is_relative_to(run)
            assert u.token_file.stat().st_mode & 0o777 == 0o600
            auth = {"Authorization": f"Bearer {u.token_file.read_text().strip()}"}
            for hh in u.households:
                r = client.get(f"/households/{hh}/involvement", headers=auth)
                assert r.status_code == 200, (u.user_id, r.text)
                agencies = r.json()["agencies"]
                assert agencies and all(a["record_types"] for a in agencies)
                for a in agencies:
                    seen.add(a["agency"])
                    if a["agency"] in ("CSC", "EH"):  # the agencies that name a contact
                        assert a["lead_practitioner_contacts"], (hh, a["agency"])
                    contacts.update(a["lead_practitioner_contacts"])
            assert client.get(u.try_url or "/health", headers=auth).status_code in (200, 403)
        assert contacts and "CSC" in seen
        # the unallocated user is refused the same family; an unknown token is not a user
        pol = {"Authorization": f"Bearer {users['pc.pol.9'].token_file.read_text().strip()}"}
        first = users["sw.csc.1"].households[0]
        r = client.get(f"/households/{first}/involvement", headers=pol)
        assert r.status_code == 403 and "no_legitimate_relationship" in r.json()["reasons"]
        r = client.get(
            f"/households/{first}/involvement", headers={"Authorization": "Bearer not-a-demo-token"}
        )
        assert r.status_code == 401
        # docs/api.md's issue-token example, pointed at this run instead of var/demo, gives a
        # token the demo API accepts
        doc = (Path(__file__).parents[1] / "docs" / "api.md").read_text("utf-8")
        example = re.search(r"python -m governance\.api (issue-token .*?)\n```", doc, re.S)
        assert example and "sqlite:///var/demo/hub/governance.db" in example.group(1)
        argv = shlex.split(example.group(1).replace("\\\n", " ").replace("var/demo", str(run)))
        capsys.readouterr()
        assert api_main(argv) == 0
        token = capsys.readouterr().out.strip()
        r = client.get(
            f"/households/{first}/involvement", headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 200, r.text


def test_the_weeks_allocations_came_from_the_agencies_case_systems(demo: dict) -> None:
    """No allocation is typed at the hub: each worker's agency sent its own through its
    bridge (sealed, signed, record refs only) and the hub's import landed them, the families
    as households; nothing of the exports stays in the drop areas or the agencies' folders."""
    from governance.relationships import SqlRelationshipRegistry, SubjectKind

    run = demo["run"]
    engine = governance_engine(run)
    rels = SqlRelationshipRegistry(engine).all()
    imports = [r.data() for r in AuditLog(engine, create=False).entries()]
    engine.dispose()
    imports = [b for b in imports if b.get("type") == "allocations_import"]
    by_worker = {(r.user_id, r.kind, r.reason) for r in rels}
    assert ("sw.csc.1", SubjectKind.HOUSEHOLD, "allocation_CSC") in by_worker
    assert {r.reason for r in rels} <= {"allocation_CSC", "allocation_EH"}
    assert {b["agency"] for b in imports} == {r.reason.removeprefix("allocation_") for r in rels}
    assert sum(b["added"] for b in imports) == len(rels) >= 3
    assert all(b["unlinked"] == b["households_unresolved"] == 0 for b in imports)
    assert not list((run / "allocations_landing").rglob("*.sealed"))
    assert not list((run / "agency").glob("*/case_system/*.csv"))


def test_make_workspace_serves_the_demo_run(demo: dict, tmp_path: Path) -> None:
    """What `make workspace` runs (`python -m workspace serve --run <demo> --demo`), as a real
    server: the demo sign-ins are written owner-only, sw.csc.1 signs in and My caseload lists
    the families CSC's case system sent, each of which opens."""
    import os
    import socket
    import subprocess
    import sys
    import time

    import httpx

    run = tmp_path / "run"
    shutil.copytree(demo["run"], run, symlinks=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    repo = Path(__file__).resolve().parent.parent
    server = subprocess.Popen(
        [sys.executable, "-m", "workspace", "serve", "--run", str(run), "--demo"]
        + ["--port", str(port)],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://localhost:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "the workspace did not start"
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        sign_ins = run / "workspace" / "demo_sign_ins.txt"
        assert sign_ins.stat().st_mode & 0o777 == 0o600
        password = dict(
            line.split(" ", 1) for line in sign_ins.read_text().splitlines() if line[:1] != "#"
        )["sw.csc.1"]
        page = httpx.get(f"{base}/sign-in")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        r = httpx.post(
            f"{base}/sign-in",
            data={"username": "sw.csc.1", "password": password, "csrf_token": token},
            headers={"Cookie": f"ws_signin_csrf={page.cookies['ws_signin_csrf']}"},
        )
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = {"Cookie": f"ws_session={r.cookies['ws_session']}"}
        caseload = httpx.get(f"{base}/caseload", headers=cookie)
        assert caseload.status_code == 200
        families = re.findall(r'ws-allocation" data-subject="([^"]+)"', caseload.text)
        # two open families from CSC's case system (the week's third allocation has ended)
        assert len(families) == 2 and "case system" in caseload.text
        assert "recorded at the hub" not in caseload.text  # nothing typed at the hub
        for hh in families:
            view = httpx.get(f"{base}/households/{hh}/involvement", headers=cookie)
            assert view.status_code == 200 and "Lead practitioner contact" in view.text
    finally:
        server.terminate()
        server.wait(timeout=60)
