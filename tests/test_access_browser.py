"""Access in a real browser (Debian's chromium through Selenium, as tests/test_workspace_browser):
a team manager approving a practitioner's break-glass, and a restricted record's view. The
workspace is the real app on uvicorn over the linked test world, with access control on
(schemas/assignments.yaml); every page passes axe-core with no WCAG 2.2 A/AA violation.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
import uvicorn
from access_world import MASH, S47, SW, TM, flag_restricted
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from test_api import World, build_world
from test_workspace_browser import AXE, CHROMEDRIVER, CHROMIUM, Live, _free_port, page_left
from workspace_world import PASSWORD, workspace

from governance.access import load_assignments
from governance.approvals import ApprovalStore
from governance.relationships import Relationship, SubjectKind
from workspace.app import create_app

WHY = "strategy discussion needs the police risk picture tonight"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory)


@pytest.fixture
def live(world: World, tmp_path: Path) -> Iterator[Live]:
    if not Path(CHROMIUM).exists() or not Path(CHROMEDRIVER).exists():
        pytest.fail("needs Debian's chromium and chromium-driver (make test installs them)")
    if not AXE.exists():
        pytest.fail(f"{AXE}: missing; run make workspace-assets (npm ci)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with workspace(world, tmp_path) as s:
        # the workspace world runs the deployed rules (shipped assignments: SW and TM are
        # csc_assessment_1; every protocol signed off); SW is allocated its household
        s.ws.gov.relationships.add(
            Relationship(SW.user_id, SubjectKind.HOUSEHOLD, s.world.household, dt.date(2026, 1, 1))
        )
        s.ws.accounts.create(SW.user_id, PASSWORD, SW.role, SW.agency, team="csc_assessment_1")
        s.ws.accounts.create(TM.user_id, PASSWORD, TM.role, TM.agency, team="csc_assessment_1")
        port = _free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(s.ws), host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for a in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--window-size=1280,1600",
        ):
            opts.add_argument(a)
        driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
        driver.set_script_timeout(60)
        try:
            yield Live(s, f"http://localhost:{port}", driver)
        finally:
            driver.quit()
            server.should_exit = True
            thread.join(timeout=10)


def _sign_in(live: Live, user_id: str) -> None:
    live.go("/sign-in")
    live.fill("username", user_id)
    live.fill("password", PASSWORD)
    live.click("Sign in")
    assert "Find a child or family" in live.html


def _sign_out(live: Live) -> None:
    live.click("Sign out")


def test_manager_approves_break_glass_in_chromium(live: Live) -> None:
    s, hh = live.s, live.s.world.household
    violations = {}
    _sign_in(live, SW.user_id)
    live.go(f"/households/{hh}/break-glass?protocol={MASH}")
    live.fill("justification", WHY)
    live.fill("hours", "4")
    live.click("Override and show")
    assert "needs a manager" in live.html and "waiting under Approvals" in live.html
    violations["request refused, waiting"] = live.axe()
    live.go("/approvals")
    assert 'data-status="pending"' in live.html and "Approve" not in live.html
    violations["practitioner approvals"] = live.axe()
    [req] = ApprovalStore(s.ws.gov.audit.engine).for_requester(SW.user_id)
    _sign_out(live)

    _sign_in(live, TM.user_id)
    live.go("/approvals")
    assert f'data-request="{req.request_id}"' in live.html and WHY in live.html
    assert "Your team's current allocations" in live.html and hh in live.html
    violations["manager approvals"] = live.axe()
    live.shot("manager approvals")
    live.click("Approve")
    assert live.driver.current_url.endswith("/approvals") and "Nothing is waiting" in live.html
    approved = [
        r.data() for r in s.ws.gov.audit.entries() if r.data().get("type") == "break_glass_approval"
    ]
    assert [(b["outcome"], b["user_id"], b["requester"]) for b in approved] == [
        ("approved", TM.user_id, SW.user_id)
    ]
    _sign_out(live)

    _sign_in(live, SW.user_id)
    live.go("/approvals")
    assert 'data-status="approved"' in live.html
    live.click("Open with the approved break-glass")
    assert "Shown under an override until" in live.html
    violations["family under approved override"] = live.axe()
    assert violations == {k: [] for k in violations}


def test_restricted_record_view_in_chromium(live: Live) -> None:
    s, hh = live.s, live.s.world.household
    target = s.world.members[0]
    flag_restricted(s.ws.warehouse(), target)
    _sign_in(live, SW.user_id)
    live.go(f"/people/{target}?protocol={S47}")
    assert "This record is restricted" in live.html
    contacts = load_assignments().restricted_contacts.values()
    assert any(c.replace("'", "&#39;") in live.html or c in live.html for c in contacts)
    con = duckdb.connect(str(s.ws.warehouse()), read_only=True)
    values = [
        str(v)
        for row in con.execute(
            """SELECT p.referral_reason, p.incident_type,
            p.school_name FROM payload p JOIN record_person rp USING (agency, record_ref)
            WHERE rp.person_id = ?""",
            [target],
        ).fetchall()
        for v in row
        if v is not None
    ]
    con.close()
    assert not any(f">{v}<" in live.html for v in values)
    assert live.axe() == []
    live.go(f"/households/{hh}?protocol={S47}")
    assert f"Member {target}" not in live.html and target not in live.html
    assert any(f"Member {m}" in live.html for m in s.world.members[1:])
    assert live.axe() == []


def test_owning_agency_marks_a_record_restricted_in_chromium(live: Live) -> None:
    """The agency's own worker marks its record restricted on the Restricted records screen
    (the case reference goes to the agency's own service); the person's page then shows only
    that it is restricted; the worker lifts it again."""
    s = live.s
    _sign_in(live, SW.user_id)
    live.click("Restricted records")
    assert 'id="no-markers"' in live.html
    violations = {"restrictions, none": live.axe()}
    live.fill("case_reference", s.case_reference)
    live.driver.find_element(By.ID, "reason-refuge").click()
    live.click("Mark restricted")
    assert "Record marked restricted." in live.html and "Living in a refuge" in live.html
    violations["restrictions, one"] = live.axe()
    assert s.case_reference not in live.html
    live.go(f"/people/{s.person}?protocol={S47}")
    assert "This record is restricted" in live.html
    live.go("/restrictions")
    page = live.driver.find_element(By.TAG_NAME, "html")
    live.driver.find_element(By.CSS_SELECTOR, "#markers button").click()
    WebDriverWait(live.driver, 20).until(page_left(page))
    assert "Restriction lifted." in live.html and 'id="no-markers"' in live.html
    live.go(f"/people/{s.person}?protocol={S47}")
    assert "This record is restricted" not in live.html
    assert violations == {k: [] for k in violations}
