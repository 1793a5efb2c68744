"""My caseload and the "known to" stage in a real browser (Debian's chromium through Selenium
and chromium-driver, the `live` workspace of tests/test_workspace_browser.py), after a real
allocations export from the worker's agency (its keys, sealed, signed) has landed at the hub.
Every page passes axe-core with no WCAG 2.2 A/AA violation; each journey asserts what is on
the page and what is not (no case reference, no content before the detail).
"""

from __future__ import annotations

import os
from pathlib import Path

from selenium.webdriver.common.by import By
from test_caseload_allocations import Agency, hub_import
from test_workspace_browser import Live, live, world  # noqa: F401 - fixtures
from workspace_world import EARLY_HELP, MASH, PASSWORD, S47

from governance.relationships import SqlRelationshipRegistry


def test_caseload_then_known_to_then_detail_in_chromium(live: Live) -> None:  # noqa: F811
    s, checked = live.s, {}
    s.ws.gov.relationships = SqlRelationshipRegistry(s.ws.gov.audit.engine)
    agency = Agency(s, s.agency)
    ref = agency.case_refs(s.world.members)[s.person]
    hub_import(s, agency.export([("sw1", ref, "2026-05-01", "")], sequence=1), s.agency)
    shots = os.environ.get("JOINEDUP_WORKSPACE_SCREENSHOTS")

    def check(name: str) -> None:
        checked[name] = live.axe()
        if shots:
            Path(shots).mkdir(parents=True, exist_ok=True)
            live.driver.save_screenshot(str(Path(shots) / f"{name.replace(' ', '_')}.png"))
        assert (
            live.headers(live.driver.current_url[len(live.base) :]).get("cache-control")
            == "no-store"
        ), name
        assert ref not in live.html, name  # the case reference never reaches a hub page

    live.go("/")
    live.fill("username", "sw1")
    live.fill("password", PASSWORD)
    live.click("Sign in")
    live.click("All my allocations, with who else is known to be involved")
    assert live.driver.current_url.endswith("/caseload")
    rows = live.driver.find_elements(By.CSS_SELECTOR, "#caseload-table tr.ws-allocation")
    assert [r.get_attribute("data-subject") for r in rows] == [s.person]
    assert "case system" in rows[0].text and "2026-05-01" in rows[0].text
    check("caseload")

    # stage 1: known to, under a protocol the worker chooses
    live.driver.find_element(By.CSS_SELECTOR, f'a[href="/people/{s.person}/known-to"]').click()
    assert "Under which protocol" in live.html
    live.driver.find_element(By.ID, f"protocol-{MASH}").click()
    live.click("Continue")
    known = [
        e.get_attribute("data-agency")
        for e in live.driver.find_elements(By.CSS_SELECTOR, f"#known-{s.person} li.ws-known-to")
    ]
    covers = s.ws.gov.protocols[MASH].known_to.agencies
    assert known and set(known) <= set(covers)
    for word in ("Incident type", "Risk level", "Referral reason", "Attendance pct"):
        assert word not in live.html  # no content before the detail
    check("known to mash")
    live.go(f"/people/{s.person}/known-to?protocol={EARLY_HELP}")
    eh = [
        e.get_attribute("data-agency")
        for e in live.driver.find_elements(By.CSS_SELECTOR, f"#known-{s.person} li.ws-known-to")
    ]
    assert set(eh) <= {"EH"} and eh != known  # another protocol, another answer
    check("known to early help")

    # stage 2: the detail, decided separately. Under MASH this child's detail is refused (no
    # consent recorded): the front door knows who is involved, not what they hold
    live.go(f"/people/{s.person}/known-to?protocol={MASH}")
    live.click("See the detail this protocol allows")
    assert live.driver.current_url.endswith(f"/people/{s.person}?protocol={MASH}")
    assert "Refused under the protocol" in live.html and "no consent" in live.html
    assert f"Member {s.person}" not in live.html
    check("detail refused after known to")
    live.go(f"/people/{s.person}/known-to?protocol={S47}")
    live.click("See the detail this protocol allows")
    assert f"Member {s.person}" in live.html and "legal gateway CA1989_s47" in live.html
    check("detail after known to")

    # a person not on the caseload: refused at the known-to stage, saying why, nothing else
    other = next(m for m in s.world.members if m != s.person)
    live.go(f"/people/{other}/known-to?protocol={MASH}")
    assert "no current allocation" in live.html and "ws-known-to" not in live.html
    check("known to refused")

    live.click("Sign out")
    live.go("/caseload")
    assert live.driver.current_url.endswith("/sign-in")

    bad = {k: v for k, v in checked.items() if v}
    assert not bad, bad
