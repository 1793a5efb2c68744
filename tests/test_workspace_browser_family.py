"""A family allocation in a real browser (Debian's chromium through Selenium and chromium-driver,
the `live` workspace of tests/test_workspace_browser.py): the worker's agency sends a family
case (its case references under one family reference) through its bridge, the hub lands it as
an allocation to the household, and the worker opens the family from My caseload: known to,
then the detail for every member (also those the agency holds no record of). Then the pages
no other journey visits: a person's case summary, the break-glass refusal of a justification
naming someone, a page that does not exist, and the decision log's offer and "not shared"
forms. Every page passes axe-core (WCAG 2.2 A/AA), is no-store, and shows no case reference.
"""

from __future__ import annotations

import os
from pathlib import Path

from selenium.webdriver.common.by import By
from test_caseload_allocations import Agency, hub_import
from test_caseload_households import send
from test_workspace_browser import Live, live, world  # noqa: F401 - fixtures
from workspace_world import MASH, PASSWORD, S47

from governance.relationships import SqlRelationshipRegistry

FAMILY = "FAMILY-CASE-77"


def test_family_allocation_and_the_remaining_pages_in_chromium(live: Live) -> None:  # noqa: F811
    s, checked, hh = live.s, {}, live.s.world.household
    s.ws.gov.relationships = SqlRelationshipRegistry(s.ws.gov.audit.engine)
    agency = Agency(s, s.agency)
    refs = list(agency.case_refs(s.world.members).values())
    rows = [("sw1", ref, "2026-05-01", "", FAMILY) for ref in refs]
    report = hub_import(s, send(agency, rows, sequence=1), s.agency)
    assert (report.added, report.households_unresolved) == (1, 0)
    shots = os.environ.get("JOINEDUP_WORKSPACE_SCREENSHOTS")

    def check(name: str) -> None:
        checked[name] = live.axe()
        if shots:
            Path(shots).mkdir(parents=True, exist_ok=True)
            live.driver.save_screenshot(str(Path(shots) / f"{name.replace(' ', '_')}.png"))
        path = live.driver.current_url[len(live.base) :]
        assert live.headers(path).get("cache-control") == "no-store", name
        assert not any(r in live.html for r in [*refs, FAMILY]), name

    live.go("/")
    live.fill("username", "sw1")
    live.fill("password", PASSWORD)
    live.click("Sign in")
    live.click("All my allocations, with who else is known to be involved")
    rows_shown = live.driver.find_elements(By.CSS_SELECTOR, "#caseload-table tr.ws-allocation")
    assert [r.get_attribute("data-subject") for r in rows_shown] == [hh]
    assert f"Family {hh}" in rows_shown[0].text and "case system" in rows_shown[0].text
    check("caseload family")

    # known to, for the whole household, then the detail: every member, under s47
    live.driver.find_element(By.CSS_SELECTOR, f'a[href="/households/{hh}/known-to"]').click()
    live.driver.find_element(By.ID, f"protocol-{MASH}").click()
    live.click("Continue")
    for m in s.world.members:
        assert live.driver.find_elements(By.ID, f"known-{m}"), m
    check("known to family")
    live.go(f"/households/{hh}/known-to?protocol={S47}")
    live.click("See the detail this protocol allows")
    assert all(f"Member {m}" in live.html for m in s.world.members)
    check("family view from a family allocation")

    # a person's own case summary (the household's is in the main journey)
    live.go(f"/people/{s.person}/summary?protocol={S47}")
    assert "Case summary" in live.html and "Multi-agency chronology" in live.html
    check("person summary")

    # break-glass whose justification names someone: refused, said why, the text not shown
    live.go(f"/households/{hh}/break-glass?protocol={MASH}")
    live.fill("justification", "Mother Jane Smith phoned on 07700 900123 about injuries")
    live.fill("hours", "4")
    live.click("Override and show")
    assert 'data-reason="justification_contains_identifier"' in live.html
    assert "Jane Smith" not in live.html and "07700" not in live.html
    assert "Member " not in live.html
    check("break-glass refused")

    live.go("/people/no-such-person/nothing-here")
    assert "Page not found" in live.html
    check("page not found")
    live.go("/sharing/offer")
    check("offer form")
    live.go("/sharing/not-shared")
    check("not shared form")

    live.click("Sign out")
    bad = {k: v for k, v in checked.items() if v}
    assert not bad, bad
