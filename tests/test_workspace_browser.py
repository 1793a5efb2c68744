"""The workspace in a real browser: Debian's chromium driven by Selenium through Debian's
chromium-driver (`make test` installs both; no browser is downloaded), against the real app
served by uvicorn on localhost, over the linked test world and a real agency service.

Every journey asserts what is on the page and what is not, and every page passes axe-core
(installed from the npm registry by `make workspace-assets`) with no WCAG 2.2 A/AA violation.
Forms are submitted as a user would, and no script is served: the pages work without it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from hub_stage_running import hub_stage_running
from test_api import World, build_world
from workspace_world import EARLY_HELP, PASSWORD, S47, Setup, workspace

from workspace.app import create_app
from workspace.pages import label

REPO = Path(__file__).resolve().parent.parent
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
AXE = REPO / "workspace" / "node_modules" / "axe-core" / "axe.min.js"
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def page_left(page):  # noqa: ANN001, ANN201 - selenium element and wait condition
    """Selenium's staleness_of, also when Chromium reports the old page's element mid-navigation
    as "does not belong to the document" (a WebDriverException, not a StaleElementReference)."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    def left(_driver) -> bool:  # noqa: ANN001
        try:
            page.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            if "does not belong to the document" in str(exc):
                return True
            raise
        return False

    return left


@dataclass
class Live:
    s: Setup
    base: str
    driver: object

    def go(self, path: str) -> None:
        self.driver.get(self.base + path)

    @property
    def html(self) -> str:
        return self.driver.page_source

    def fill(self, name: str, value: str) -> None:
        from selenium.webdriver.common.by import By

        el = self.driver.find_element(By.NAME, name)
        el.clear()
        el.send_keys(value)

    def click(self, text: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        page = self.driver.find_element(By.TAG_NAME, "html")
        self.driver.find_element(
            By.XPATH, f"//button[normalize-space()='{text}'] | //a[normalize-space()='{text}']"
        ).click()
        WebDriverWait(self.driver, 20).until(page_left(page))  # the next page loaded

    def axe(self) -> list[dict]:
        """axe-core's WCAG 2.2 A/AA violations on the current page."""
        self.driver.execute_script(AXE.read_text("utf-8"))
        res = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {runOnly: {type: 'tag', values: arguments[0]}})"
            ".then(r => done(JSON.stringify(r.violations)), e => done(String(e)));",
            WCAG_TAGS,
        )
        return [
            {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
            for v in json.loads(res)
        ]

    def shot(self, name: str) -> None:
        """A screenshot for docs/workspace.md if JOINEDUP_WORKSPACE_SCREENSHOTS names a folder."""
        folder = os.environ.get("JOINEDUP_WORKSPACE_SCREENSHOTS")
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            self.driver.save_screenshot(str(Path(folder) / f"{name.replace(' ', '_')}.png"))

    def headers(self, path: str) -> httpx.Headers:
        cookies = {c["name"]: c["value"] for c in self.driver.get_cookies()}
        return httpx.get(self.base + path, cookies=cookies, follow_redirects=False).headers


@pytest.fixture
def live(world: World, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Live]:
    if not (shutil.which("chromium") or Path(CHROMIUM).exists()) or not Path(CHROMEDRIVER).exists():
        pytest.fail("needs Debian's chromium and chromium-driver (make test installs them)")
    if not AXE.exists():
        pytest.fail(f"{AXE}: missing; run make workspace-assets (npm ci)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # a test module that needs workspace_world's early_help_unconsented household says so
    with workspace(
        world,
        tmp_path,
        early_help_unconsented=getattr(request.module, "EARLY_HELP_UNCONSENTED", False),
    ) as s:
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
            # localhost: a secure context, so the Secure session cookie is kept over http here.
            yield Live(s, f"http://localhost:{port}", driver)
        finally:
            driver.quit()
            server.should_exit = True
            thread.join(timeout=10)


def test_practitioner_journeys_in_chromium(live: Live) -> None:
    s, pages_checked = live.s, {}

    shots = os.environ.get("JOINEDUP_WORKSPACE_SCREENSHOTS")  # docs/workspace.md's images

    def check(name: str) -> None:
        pages_checked[name] = live.axe()
        if shots:
            Path(shots).mkdir(parents=True, exist_ok=True)
            live.driver.save_screenshot(str(Path(shots) / f"{name.replace(' ', '_')}.png"))
        assert (
            live.headers(live.driver.current_url[len(live.base) :]).get("cache-control")
            == "no-store"
        ), name

    def fields_shown() -> set[str]:
        from selenium.webdriver.common.by import By

        return {e.text for e in live.driver.find_elements(By.CSS_SELECTOR, "dl.ws-fields dt")}

    # sign in: a wrong password first (shown and audited), then the right one
    live.go("/")
    assert live.driver.current_url.endswith("/sign-in")
    check("sign in")
    live.fill("username", "sw1")
    live.fill("password", "not the password")
    live.click("Sign in")
    assert "Enter a correct username and password" in live.html
    check("sign in error")
    assert [
        b["reason"]
        for b in (r.data() for r in s.ws.gov.audit.entries())
        if b.get("type") == "auth_failure"
    ] == ["bad_password"]
    live.fill("username", "sw1")
    live.fill("password", PASSWORD)
    live.click("Sign in")
    assert "Find a child or family" in live.html and s.world.household in live.html
    check("home")

    # a form whose CSRF token was tampered with is refused
    live.driver.execute_script(
        "document.querySelector('form[action=\"/find\"] input[name=csrf_token]').value='x'"
    )
    live.fill("case_reference", s.case_reference)
    live.click("Find")
    assert "Form expired" in live.html and "Member " not in live.html
    check("form expired")

    # find by the worker's own case reference, then choose the protocol
    live.go("/")
    live.fill("case_reference", s.case_reference)
    live.click("Find")
    assert live.driver.current_url.endswith(f"/people/{s.person}")
    assert "Under which protocol" in live.html
    check("choose protocol")
    from selenium.webdriver.common.by import By

    live.driver.find_element(By.ID, f"protocol-{S47}").click()
    live.click("Continue")
    assert f"Member {s.person}" in live.html and "legal gateway CA1989_s47" in live.html
    assert s.case_reference not in live.html
    check("person view")

    # the family under two protocols: Early Help withholds what consent does not cover
    hh = s.world.household
    live.go(f"/households/{hh}?protocol={S47}")
    s47_html = live.html
    check("family view s47")
    s47_fields = fields_shown()
    live.go(f"/households/{hh}?protocol={EARLY_HELP}")
    assert "Information from" in live.html and "withheld" in live.html
    # no field outside the protocol's dataset, and s47 did show some Early Help may not
    allowed = {label(f) for fs in s.ws.gov.protocols[EARLY_HELP].agencies.values() for f in fs}
    assert fields_shown() <= allowed and s47_fields - allowed
    check("family view early help")

    live.go(f"/households/{hh}/summary?protocol={S47}")
    assert "Multi-agency chronology" in live.html and "Case summary" in live.html
    dates = [
        e.text
        for e in live.driver.find_elements(
            By.CSS_SELECTOR, "#chronology-table tbody tr td:first-child"
        )
    ]
    assert dates == sorted(dates, reverse=True)
    check("summary")
    live.go(f"/households/{hh}/involvement")
    assert "Lead practitioner contact" in live.html
    check("involvement")
    live.go(f"/households/{hh}/break-glass?protocol=mash_information_sharing")
    check("break-glass form")

    # identity: nothing of it before the agency answers, then shown and not stored
    live.go(f"/people/{s.person}/identity?protocol={S47}")
    before = live.html
    check("identity form")
    live.fill("reason", "strategy discussion must confirm which child this record concerns")
    live.click("Ask the agency")
    values = [
        e.text
        for e in live.driver.find_elements(By.CSS_SELECTOR, "#identity .govuk-summary-list__value")
    ]
    assert values and not any(v in before or v in s47_html for v in values if len(v) > 3)
    check("identity answer")

    # a page still renders while a real hub stage writes the live warehouse (it reads the
    # published copy): counted only if the stage held the file before and after the page
    overlapped = False
    with hub_stage_running(s.tmp, s.ws.paths.warehouse) as held:
        for _ in range(50):
            before = held()
            live.go(f"/households/{hh}?protocol={S47}")
            assert f"Member {s.world.members[0]}" in live.html
            if before and held():
                overlapped = True
                break
    assert overlapped, "no page was served while the hub stage held the warehouse"

    live.click("Sign out")
    assert "You have signed out" in live.html
    check("signed out")
    live.go("/")
    assert live.driver.current_url.endswith("/sign-in")

    bad = {k: v for k, v in pages_checked.items() if v}
    assert not bad, bad
