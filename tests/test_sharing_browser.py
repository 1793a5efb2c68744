"""The decision log in a real browser (Debian's chromium through chromedriver, as
tests/test_workspace_browser.py): a practitioner records a strategy-meeting share (a
justification naming someone is refused first, and not kept), challenges a refusal of the
protocol rules, and the IG lead overturns it as Caldicott guardian. Every page passes axe-core
(WCAG 2.2 A/AA) and each record is an entry of the audit chain, which verifies."""

from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select
from test_workspace_browser import Live, live, world  # noqa: F401 - the fixtures
from workspace_world import EARLY_HELP, PASSWORD

from governance.testing import signed_and_verified

SHARED = "strategy discussion agreed police should know of the plan"


def _sharing_bodies(page: Live) -> list[dict]:
    return [r.data() for r in page.s.ws.gov.audit.entries() if r.kind == "sharing"]


def _sign_in(page: Live, user: str) -> None:
    page.go("/sign-in")
    page.fill("username", user)
    page.fill("password", PASSWORD)
    page.click("Sign in")


def test_off_system_share_and_a_challenge_in_chromium(live: Live) -> None:  # noqa: F811
    s, violations = live.s, {}

    def check(name: str) -> None:
        violations[name] = live.axe()
        live.shot(name)

    s.ws.accounts.create("cg1", PASSWORD, "caldicott_guardian", None, team="information governance")
    _sign_in(live, "sw1")
    live.click("Decision log")
    assert "Record sharing done outside the system" in live.html
    check("decision log")

    # a share at a strategy meeting, recorded after the event
    live.click("Record sharing done outside the system")
    check("off-system form")
    other = "POL" if s.agency != "POL" else "CSC"
    live.fill("person_id", s.person)
    live.driver.find_element(By.ID, "channel-strategy_meeting").click()
    for part, value in (("day", "29"), ("month", "5"), ("year", "2026")):
        live.fill(f"occurred_on-{part}", value)
    Select(live.driver.find_element(By.ID, "from_agency")).select_by_value(s.agency)
    Select(live.driver.find_element(By.ID, "to_agency")).select_by_value(other)
    live.driver.find_element(By.ID, "asked-yes").click()
    live.driver.find_element(By.ID, "categories-case_notes").click()
    Select(live.driver.find_element(By.ID, "basis")).select_by_value("CA1989_s47")
    # first with a name and a postcode in it: refused, said why, and the text is not kept
    live.fill("justification", "Mrs Jane Smith of SW1A 1AA told the meeting about it")
    live.click("Record")
    assert "There is a problem" in live.html and "Your text was not kept" in live.html
    assert "Jane Smith" not in live.html and "SW1A" not in live.html
    assert live.driver.find_element(By.ID, "person_id").get_attribute("value") == s.person
    check("off-system refused")
    assert not [b for b in _sharing_bodies(live) if b["type"] == "sharing_off_system"]
    live.fill("justification", SHARED)
    for part, value in (("day", "29"), ("month", "5"), ("year", "2026")):
        live.fill(f"occurred_on-{part}", value)
    assert live.driver.find_element(By.ID, "categories-case_notes").is_selected()  # kept
    live.click("Record")
    assert "The sharing outside the system is recorded" in live.html, live.html
    seq = int(live.driver.find_element(By.ID, "recorded-seq").text)
    check("off-system recorded")
    body = live.s.ws.gov.audit.get(seq).data()
    assert (body["type"], body["channel"], body["justification"], body["team"]) == (
        "sharing_off_system",
        "strategy_meeting",
        SHARED,
        "assessment team 1",
    )
    assert body["occurred_on"] == "2026-05-29" and body["from_agency"] == s.agency

    # a refusal by the protocol rules (Early Help without partner consent), then challenged
    live.go(f"/households/{s.world.household}?protocol={EARLY_HELP}")
    [refusal] = [r for r in s.ws.gov.audit.entries() if r.kind == "decision"][-1:]
    assert "refuse_request" in refusal.body
    live.go(f"/sharing/challenge?target_seq={refusal.seq}")
    assert live.driver.find_element(By.ID, "target_seq").get_attribute("value") == str(refusal.seq)
    check("challenge form")
    live.driver.find_element(By.ID, "to-caldicott_guardian").click()
    live.fill("grounds", "the family consented to early help sharing with partners")
    live.click("Record")
    assert "Your challenge is recorded and sent" in live.html
    check("challenge recorded")
    live.click("Sign out")

    # the Caldicott guardian it was addressed to decides it
    _sign_in(live, "cg1")
    live.go("/sharing")
    assert str(refusal.seq) in live.driver.find_element(By.ID, "open-challenges").text
    check("open challenges")
    live.driver.find_element(By.CSS_SELECTOR, "#open-challenges a").click()
    assert (
        "the family consented to early help"
        in live.driver.find_element(By.ID, "sharing-intro").text
    )
    check("decide form")
    live.driver.find_element(By.ID, "outcome-overturned").click()
    live.fill("reasons", "the consent recorded covers school and health information")
    live.click("Record")
    assert "The decision on the challenge is recorded" in live.html
    live.go("/sharing")
    assert "open-challenges" not in live.html
    decided = [b for b in _sharing_bodies(live) if b["type"] == "sharing_challenge_decision"]
    assert [(d["outcome"], d["decided_as"], d["user_id"], d["target_seq"]) for d in decided] == [
        ("overturned", "caldicott_guardian", "cg1", refusal.seq)
    ]
    assert signed_and_verified(s.ws.gov.audit, s.tmp / "verify").ok
    assert "Jane Smith" not in "".join(r.body for r in s.ws.gov.audit.entries())
    bad = {k: v for k, v in violations.items() if v}
    assert not bad, bad
