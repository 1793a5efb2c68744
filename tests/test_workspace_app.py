"""The workspace's access decisions through the real app (TestClient over HTTPS, so the Secure
cookies are sent): the same ViewService decisions and audit log as the JSON API, sign-in and
sessions, CSRF, case-reference look-up through the agency's real service, identity, break-glass,
and pages served from the published warehouse while a writer holds the live one.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from fastapi.testclient import TestClient
from test_api import World, build_world
from workspace_world import EARLY_HELP, MASH, PASSWORD, S47, Setup, workspace

from governance.service import ViewService
from workspace.app import create_app


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory)


@pytest.fixture
def setup(world: World, tmp_path: Path) -> Iterator[Setup]:
    with workspace(world, tmp_path) as s:
        yield s


def client(s: Setup) -> TestClient:
    return TestClient(create_app(s.ws), base_url="https://testserver", follow_redirects=False)


def csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def sign_in(c: TestClient, user: str = "sw1", password: str = PASSWORD) -> TestClient:
    page = c.get("/sign-in")
    r = c.post(
        "/sign-in", data={"username": user, "password": password, "csrf_token": csrf(page.text)}
    )
    assert r.status_code == 303 and r.headers["location"] == "/", r.text
    return c


def audit_bodies(s: Setup, kind: str | None = None) -> list[dict]:
    out = []
    for rec in s.ws.gov.audit.entries():
        if kind is None or rec.kind == kind:
            out.append(rec.data())
    return out


def audit_text(s: Setup) -> str:
    return "\n".join(json.dumps(b) for b in audit_bodies(s))


def test_failed_sign_in_is_audited_and_nothing_of_the_password_kept(setup: Setup) -> None:
    c = client(setup)
    page = c.get("/sign-in")
    r = c.post(
        "/sign-in",
        data={"username": "sw1", "password": "wrong password 123", "csrf_token": csrf(page.text)},
    )
    assert r.status_code == 401 and "Enter a correct username and password" in r.text
    assert "ws_session" not in r.cookies
    [fail] = [b for b in audit_bodies(setup, "auth_failure") if b.get("route") == "/sign-in"]
    assert fail["reason"] == "bad_password" and fail["method"] == "POST"
    assert "wrong password" not in audit_text(setup)
    r = c.post(
        "/sign-in", data={"username": "nobody", "password": PASSWORD, "csrf_token": csrf(r.text)}
    )  # each form its own token
    assert r.status_code == 401
    assert [b["reason"] for b in audit_bodies(setup, "auth_failure")] == [
        "bad_password",
        "unknown_account",
    ]


def test_every_page_is_no_store_and_every_view_audited(setup: Setup) -> None:
    c = sign_in(client(setup))
    household = setup.world.household
    for url in (
        "/",
        f"/households/{household}?protocol={S47}",
        f"/households/{household}/summary?protocol={S47}",
        f"/households/{household}/involvement",
        "/sign-in",
    ):
        r = c.get(url)
        assert r.status_code == 200, (url, r.text[:500])
        assert r.headers["cache-control"] == "no-store", url
        assert "script-src 'none'" in r.headers["content-security-policy"]
    views = [b for b in audit_bodies(setup, "page_view")]
    assert [v["route"] for v in views][-5:] == [
        "/",
        "/households/{household_id}",
        "/{kind}/{subject}/summary",
        "/households/{household_id}/involvement",
        "/sign-in",
    ]
    assert all(v["user_id"] == "sw1" for v in views[-5:-1])
    session = c.cookies.get("ws_session")
    assert session and session not in audit_text(setup)


def test_post_without_the_session_csrf_token_is_refused_before_anything_happens(
    setup: Setup,
) -> None:
    c = sign_in(client(setup))
    before = len(audit_bodies(setup, "case_lookup"))
    for token in ("", "forged-token"):
        r = c.post("/find", data={"case_reference": setup.case_reference, "csrf_token": token})
        assert r.status_code == 403 and "Form expired" in r.text
    assert len(audit_bodies(setup, "case_lookup")) == before
    assert not setup.bridge_log.exists()  # the agency was never asked
    r = c.post("/sign-out", data={"csrf_token": "forged-token"})
    assert r.status_code == 403 and c.get("/").status_code == 200  # still signed in
    # the sign-in form has its own pre-session token
    r = client(setup).post("/sign-in", data={"username": "sw1", "password": PASSWORD})
    assert r.status_code == 403


def test_find_by_own_case_reference_through_the_agencys_service(setup: Setup) -> None:
    c = sign_in(client(setup))
    home = c.get("/")
    r = c.post(
        "/find", data={"case_reference": setup.case_reference, "csrf_token": csrf(home.text)}
    )
    assert r.status_code == 303 and r.headers["location"] == f"/people/{setup.person}"
    # The bridge answered from its own key; the hub audit names outcome and person, never
    # the case reference.
    bridge = [json.loads(x) for x in setup.bridge_log.read_text().splitlines()]
    assert bridge[-1]["outcome"] == "record_ref_answered" and bridge[-1]["found"] is True
    [lookup] = audit_bodies(setup, "case_lookup")
    assert lookup["outcome"] == "found" and lookup["person_id"] == setup.person
    assert setup.case_reference not in audit_text(setup)
    r = c.post("/find", data={"case_reference": "NO-SUCH-CASE-0", "csrf_token": csrf(home.text)})
    assert r.status_code == 404 and "no case with that reference" in r.text
    assert audit_bodies(setup, "case_lookup")[-1]["outcome"] == "not_found_at_agency"


def test_an_agency_answers_case_references_for_its_own_workers_only(setup: Setup) -> None:
    c = sign_in(client(setup), "pc9")  # a POL worker; the service belongs to another agency
    r = c.post(
        "/find", data={"case_reference": setup.case_reference, "csrf_token": csrf(c.get("/").text)}
    )
    assert r.status_code == 502
    assert setup.case_reference not in r.text


def test_family_view_under_two_protocols_is_the_governed_view(setup: Setup) -> None:
    c = sign_in(client(setup))
    hh = setup.world.household
    views = ViewService(setup.ws.warehouse(), setup.ws.gov, clock=setup.ws.clock)
    from governance.decisions import User

    user = User("sw1", "practitioner", setup.agency)
    s47 = c.get(f"/households/{hh}?protocol={S47}").text
    eh = c.get(f"/households/{hh}?protocol={EARLY_HELP}").text
    expected = {p: views.household_view(user, p, hh) for p in (S47, EARLY_HELP)}
    for html, proto in ((s47, S47), (eh, EARLY_HELP)):
        v = expected[proto]
        for m in v.members:
            assert f"Member {m}" in html
        shown = {(r.agency, f) for r in v.records for f in r.fields}
        for agency, field in shown:
            assert field.replace("_", " ").capitalize() in html, (proto, agency, field)
    assert "legal gateway CA1989_s47" in s47
    # Under Early Help consent decides: the withheld items say so, and nothing of what.
    assert expected[EARLY_HELP].withheld and "Information from" in eh
    assert "no consent recorded for this purpose" in eh or "consent was" in eh
    allowed_anywhere = {f for r in expected[EARLY_HELP].records for f in r.fields}
    for w in expected[EARLY_HELP].withheld:
        if w.field not in allowed_anywhere:
            assert w.field.replace("_", " ").capitalize() not in eh, w.field
    # The decision the page showed is the one recorded: one decision entry per page.
    decisions = [b for b in audit_bodies(setup, "decision") if b.get("protocol_id") == S47]
    assert decisions and decisions[0]["user_id"] == "sw1"


def test_without_an_allocation_the_refusal_shows_only_reasons_about_the_asker(setup: Setup) -> None:
    c = sign_in(client(setup), "pc9")
    for url in (
        f"/households/{setup.world.household}?protocol={S47}",
        f"/people/{setup.person}?protocol={S47}",
        "/people/P-NOT-A-PERSON?protocol=" + S47,
    ):
        r = c.get(url)
        assert r.status_code == 403
        assert 'data-reason="no_legitimate_relationship"' in r.text
        assert "Member " not in r.text and "audit entry" not in r.text.split("Why")[0][-80:]
    analyst = sign_in(client(setup), "an1")
    r = analyst.get(f"/households/{setup.world.household}?protocol={S47}")
    assert r.status_code == 403 and 'data-reason="role_not_row_level"' in r.text
    r = analyst.get(f"/households/{setup.world.household}")  # no protocol is assigned to them
    assert r.status_code == 200 and "Under which protocol" in r.text
    assert 'name="protocol"' not in r.text


def test_identity_only_after_the_agency_answers(setup: Setup) -> None:
    c = sign_in(client(setup))
    page = c.get(f"/people/{setup.person}?protocol={S47}")
    assert page.status_code == 200
    form = c.get(f"/people/{setup.person}/identity?protocol={S47}")
    bad = c.post(
        f"/people/{setup.person}/identity",
        data={
            "protocol": S47,
            "agency": setup.agency,
            "csrf_token": csrf(form.text),
            "reason": "confirm this is the child at 12 High Street",
        },
    )
    assert bad.status_code == 422 and "12 High Street" not in bad.text
    r = c.post(
        f"/people/{setup.person}/identity",
        data={
            "protocol": S47,
            "agency": setup.agency,
            "csrf_token": csrf(form.text),
            "reason": "strategy discussion must confirm which child this record concerns",
        },
    )
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    identity = re.search(
        r'<dl class="govuk-summary-list" id="identity">(.*?)</dl>', r.text, re.S
    ).group(1)
    values = re.findall(r'summary-list__value">([^<]+)<', identity)
    assert values and all(v.strip() not in page.text for v in values if len(v.strip()) > 3)
    bridge = [json.loads(x) for x in setup.bridge_log.read_text().splitlines()]
    assert bridge[-1]["outcome"] == "answered"
    assert not any(v.strip() in audit_text(setup) for v in values if len(v.strip()) > 3)


def test_break_glass_screens_the_justification_and_alerts(setup: Setup) -> None:
    c = sign_in(client(setup))
    hh = setup.world.household
    form = c.get(f"/households/{hh}/break-glass?protocol={MASH}")
    assert form.status_code == 200 and "Justification" in form.text
    bad = c.post(
        f"/households/{hh}/break-glass",
        data={
            "protocol": MASH,
            "category": "risk_of_significant_harm",
            "hours": "4",
            "justification": "Mother Jane Smith phoned on 07700 900123 about injuries",
            "csrf_token": csrf(form.text),
        },
    )
    assert bad.status_code == 403
    assert 'data-reason="justification_contains_identifier"' in bad.text
    assert "07700" not in audit_text(setup) and "Jane Smith" not in bad.text
    # MASH's break-glass needs a manager's approval (as deployed): the request waits ...
    waiting = c.post(
        f"/households/{hh}/break-glass",
        data={
            "protocol": MASH,
            "category": "risk_of_significant_harm",
            "hours": "4",
            "justification": "School reported injuries and consent would alert the alleged abuser",
            "csrf_token": csrf(form.text),
        },
    )
    assert waiting.status_code == 403 and "needs a manager" in waiting.text
    assert "Break-glass override active" not in waiting.text
    # ... until sw1's team manager approves it; then it opens the family under the override.
    manager = sign_in(client(setup), "tm1")
    queue = manager.get("/approvals")
    [request_id] = re.findall(r'action="/approvals/([^"]+)"', queue.text)[:1]
    done = manager.post(
        f"/approvals/{request_id}",
        data={"decision": "approve", "csrf_token": csrf(queue.text)},
        follow_redirects=False,
    )
    assert done.status_code == 303
    link = (
        re.search(r'href="(/households/[^"]*break_glass_id=[^"]+)"', c.get("/approvals").text)
        .group(1)
        .replace("&amp;", "&")
    )
    ok = c.get(link)
    assert ok.status_code == 200, ok.text[:400]
    assert "Shown under an override until" in ok.text
    bg = [b for b in audit_bodies(setup, "decision") if b.get("break_glass_grant")]
    assert len(bg) == 3 and bg[-1]["break_glass_grant"]["grant_id"]
    odd = c.post(
        f"/households/{hh}/break-glass",
        data={
            "protocol": MASH,
            "category": "risk_of_significant_harm",
            "hours": "four o'clock",
            "justification": "x",
            "csrf_token": csrf(form.text),
        },
    )
    assert odd.status_code == 422 and "hours" in odd.text and "four o" not in odd.text


def test_idle_session_times_out_and_sign_out_ends_it(world: World, tmp_path: Path) -> None:
    with workspace(world, tmp_path, idle_minutes=0.0005) as s:
        c = sign_in(client(s))
        time.sleep(0.1)
        r = c.get("/")
        assert r.status_code == 303 and r.headers["location"] == "/sign-in"
        assert any(b.get("reason") == "session_timed_out" for b in audit_bodies(s, "auth_failure"))
    with workspace(world, tmp_path / "again") as s:
        c = sign_in(client(s))
        home = c.get("/")
        r = c.post("/sign-out", data={"csrf_token": csrf(home.text)})
        assert r.status_code == 303 and r.headers["location"] == "/signed-out"
        assert c.get("/").status_code == 303  # the old cookie is no session any more


HOLD_WRITER = """
import sys, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("BEGIN")
con.execute("UPDATE person SET status = status")
print("locked", flush=True)
sys.stdin.readline()
con.execute("ROLLBACK")
"""


def test_pages_serve_from_the_published_copy_while_a_writer_holds_the_warehouse(
    setup: Setup,
) -> None:
    c = sign_in(client(setup))
    hh = setup.world.household
    writer = subprocess.Popen(
        [sys.executable, "-c", HOLD_WRITER, str(setup.ws.paths.warehouse)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "locked"
        with pytest.raises(duckdb.IOException):  # the control: the live file cannot be read
            duckdb.connect(str(setup.ws.paths.warehouse), read_only=True)
        r = c.get(f"/households/{hh}?protocol={S47}")
        assert r.status_code == 200 and f"Member {setup.world.members[0]}" in r.text
    finally:
        writer.stdin.write("\n")
        writer.stdin.flush()
        writer.wait(timeout=30)


def test_wider_family_shows_relatives_elsewhere_only_from_agencies_the_view_shares(
    setup: Setup,
) -> None:
    from test_api import NOW

    from governance.relationships import Relationship, SubjectKind

    s47 = setup.ws.gov.protocols[S47]
    con = duckdb.connect(str(setup.ws.warehouse()), read_only=True)
    edges = con.execute("""SELECT m.household_id, e.subject_person_id, e.related_person_id,
            e.agency FROM family_edge e JOIN household_member m ON m.person_id =
            e.subject_person_id JOIN household h USING (household_id)
        WHERE h.status = 'active' AND e.related_person_id IS NOT NULL
          AND e.related_person_id NOT IN (SELECT person_id FROM household_member m2
                                          WHERE m2.household_id = m.household_id)
        ORDER BY 1""").fetchall()
    con.close()
    hh = next(h for h, _, _, a in edges if a in s47.agencies)
    setup.ws.gov.relationships.add(
        Relationship("sw1", SubjectKind.HOUSEHOLD, hh, NOW.date().replace(month=1, day=1))
    )
    c = sign_in(client(setup))
    html = c.get(f"/households/{hh}?protocol={S47}").text
    shown = set(re.findall(r'class="ws-wider" data-person="([^"]+)"', html))
    expected = {r for h, _, r, a in edges if h == hh and a in s47.agencies}
    assert shown == expected and shown
    hidden = {r for h, _, r, a in edges if h == hh and a not in s47.agencies} - expected
    assert not any(f'data-person="{r}"' in html for r in hidden)
    # a relative's own page is a new decision: sw1 has no allocation to them
    relative = sorted(shown)[0]
    r = c.get(f"/people/{relative}?protocol={S47}")
    assert r.status_code in (200, 403)
    decisions = [
        b
        for b in audit_bodies(setup, "decision")
        if (b.get("subject") or {}).get("person_id") == relative
    ]
    assert decisions, "opening a relative is recorded as its own decision"
