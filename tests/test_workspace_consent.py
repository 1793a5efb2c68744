"""Consent in the workspace: recorded and withdrawn through the pages (CSRF, audit, errors that
name the field and never echo the value), the Early Help view that follows it, and the same
journey in a real browser (Chromium, axe-core): record consent, see partner data in scope,
withdraw, and the very next view is refused."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from test_api import NOW, World, build_world
from test_workspace_app import audit_bodies, client, csrf, sign_in
from test_workspace_browser import Live
from test_workspace_browser import live as live  # noqa: F401 - the browser fixture
from workspace_world import EARLY_HELP, Setup, workspace

from governance.consent import ConsentStatus
from governance.consent_scope import Scope

CATS = ["involvement", "education", "health", "housing"]


EARLY_HELP_UNCONSENTED = True  # the household the consent tests start from (also for `live`)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory)


@pytest.fixture
def setup(world: World, tmp_path: Path) -> Iterator[Setup]:
    with workspace(world, tmp_path, early_help_unconsented=True) as s:
        yield s


def _subject(s: Setup) -> tuple[str, list[str]]:
    """A household member with records at two or more Early Help partners and no consent
    recorded by any agency: (person, the partners holding records)."""
    proto = s.ws.gov.protocols[EARLY_HELP]
    con = duckdb.connect(str(s.world.warehouse), read_only=True)
    rows = con.execute(
        "SELECT DISTINCT person_id, agency FROM record_person WHERE list_contains(?, person_id)",
        [s.world.members],
    ).fetchall()
    con.close()
    holders: dict[str, set[str]] = {}
    for p, a in rows:
        if a in proto.agencies:
            holders.setdefault(p, set()).add(a)
    for p in sorted(holders):
        if len(holders[p]) >= 2 and all(
            s.ws.gov.consent.state(p, "early_help", a, NOW).status is ConsentStatus.NONE
            for a in proto.agencies
        ):
            return p, sorted(holders[p])
    pytest.fail("no household member without early_help consent to start from")


def _form(token: str, agencies: list[str], **kw: str) -> dict:
    d = {
        "csrf_token": token,
        "purpose": "early_help",
        "status": "given",
        "consenter": "parent",
        "capacity": "parental_responsibility",
        "method": "written_in_person",
        "not_sought_reason": "",
        "evidence_ref": "EH/TAF/0042",
        "agencies": agencies,
        "categories": CATS,
        "given_day": "20",
        "given_month": "5",
        "given_year": "2026",
        "review_day": "20",
        "review_month": "11",
        "review_year": "2026",
    }
    d.update(kw)
    return d


def test_record_and_withdraw_through_the_pages(setup: Setup) -> None:
    c = sign_in(client(setup))
    person, holders = _subject(setup)
    in_scope = holders[:-1]
    view = f"/people/{person}?protocol={EARLY_HELP}"
    assert c.get(view).status_code == 403
    page = c.get(f"/people/{person}/consent")
    assert page.status_code == 200 and "No consent is recorded" in page.text
    token = csrf(page.text)
    # without the session's CSRF token nothing is recorded
    before = len(audit_bodies(setup, "consent"))
    r = c.post(f"/people/{person}/consent", data=_form("forged", in_scope))
    assert r.status_code == 403 and "Form expired" in r.text
    assert len(audit_bodies(setup, "consent")) == before
    # a bad evidence reference is refused naming the field, and not echoed back
    r = c.post(
        f"/people/{person}/consent", data=_form(token, in_scope, evidence_ref="943 476 5919")
    )
    assert r.status_code == 422 and "evidence_ref:" in r.text and "943 476 5919" not in r.text
    r = c.post(f"/people/{person}/consent", data=_form(token, in_scope))
    assert r.status_code == 303 and r.headers["location"].endswith("?done=recorded")
    [rec] = [b for b in audit_bodies(setup, "consent") if b["type"] == "consent_recorded"]
    assert rec["person_id"] == person and rec["agencies"] == in_scope
    # the Early Help view now shows what partners hold in scope, and nothing else
    html = c.get(view).text
    scope = Scope.of(in_scope, CATS)
    [d] = [
        b
        for b in audit_bodies(setup, "decision")
        if b.get("protocol_id") == EARLY_HELP and b.get("subject", {}).get("person_id") == person
    ][-1:]
    shown = {(f["agency"], f["field"]) for f in d["fields"] if f["allowed"]}
    assert {a for a, _ in shown} == set(in_scope)
    assert all(scope.covers(a, f) for a, f in shown)
    assert "consent recorded does not cover this agency or information" in html
    # withdraw: the next view is refused at once
    page = c.get(f"/people/{person}/consent")
    record_id = rec["record_id"]
    assert f'id="withdraw-{record_id}"' in page.text
    r = c.post(
        f"/consents/{record_id}/withdraw",
        data={"csrf_token": csrf(page.text), "person_id": person, "withdrawal_way": "phone"},
    )
    assert r.status_code == 303 and r.headers["location"].endswith("?done=withdrawn")
    r = c.get(view)
    assert r.status_code == 403 and "consent was withdrawn" in r.text
    page = c.get(f"/people/{person}/consent?done=withdrawn").text
    assert "Withdrawn" in page and f'id="withdraw-{record_id}"' not in page
    types = [b["type"] for b in audit_bodies(setup, "consent")]
    assert types.count("consent_withdrawn") == 1 and "consent_records_read" in types


def test_analyst_may_not_record_or_read_consent(setup: Setup) -> None:
    c = sign_in(client(setup), "an1")
    person, holders = _subject(setup)
    r = c.get(f"/people/{person}/consent")
    assert r.status_code == 403
    page = c.get("/")
    r = c.post(f"/people/{person}/consent", data=_form(csrf(page.text), holders))
    assert r.status_code == 403
    assert not [b for b in audit_bodies(setup, "consent") if b["type"] == "consent_recorded"]


def test_record_consent_then_withdraw_in_chromium(live: Live) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    s = live.s
    person, holders = _subject(s)
    in_scope = holders[:-1]
    live.go("/")
    live.fill("username", "sw1")
    live.fill("password", "correct horse battery staple")
    live.click("Sign in")
    view = f"/people/{person}?protocol={EARLY_HELP}"
    live.go(view)
    assert "no consent recorded for this purpose" in live.html
    live.go(f"/people/{person}/consent")
    assert live.axe() == [], "consent page"
    live.driver.find_element(By.ID, "purpose-early_help").click()
    for a in in_scope:
        live.driver.find_element(By.ID, f"agency-{a}").click()
    for cat in CATS:
        live.driver.find_element(By.ID, f"category-{cat}").click()
    live.fill("evidence_ref", "EH/TAF/0042")
    for part, value in (("day", "20"), ("month", "5"), ("year", "2026")):
        live.fill(f"given_{part}", value)
    live.click("Record consent")
    assert "Consent recorded." in live.html
    assert live.axe() == [], "consent recorded"
    cards = live.driver.find_elements(By.CSS_SELECTOR, ".ws-consent[data-status=given]")
    assert len(cards) == 1 and ", ".join(in_scope) in cards[0].text
    live.go(view)
    assert "consent given" in live.html
    assert "consent recorded does not cover this agency or information" in live.html
    assert live.axe() == [], "early help view with consent"
    live.go(f"/people/{person}/consent")
    live.driver.find_element(
        By.ID, "way-" + re.search(r'id="withdraw-([0-9a-f]{32})"', live.html).group(1) + "-phone"
    ).click()
    live.click("Withdraw this consent")
    assert "Consent withdrawn." in live.html
    assert live.driver.find_elements(By.CSS_SELECTOR, ".ws-consent[data-status=withdrawn]")
    assert live.axe() == [], "consent withdrawn"
    live.go(view)  # the very next view is refused
    assert "consent was withdrawn" in live.html and "consent given" not in live.html
    decisions = [r.data() for r in s.ws.gov.audit.entries() if r.kind == "decision"]
    last = decisions[-1]
    assert last["subject"]["person_id"] == person
    assert not any(f["allowed"] for f in last["fields"])
    assert dt.datetime.fromisoformat(last["at"]) == NOW
