"""The governance API's interactive docs load from the hub itself (governance.api_docs): in
Debian's chromium (Selenium, chromium-driver; no browser download) with every host name but
localhost unresolvable, /docs renders Swagger UI with the API's operations, every resource the
page loads is on the API's own origin, and, as the control, FastAPI's default CDN docs page
stays blank in the same browser.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from governance.api import create_app
from governance.api_docs import assets_dir
from governance.api_tokens import TokenStore
from governance.audit import AuditLog, make_engine
from governance.decisions import Governance
from governance.service import ViewService

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _api(tmp: Path) -> FastAPI:
    warehouse = tmp / "warehouse.duckdb"
    duckdb.connect(str(warehouse)).close()  # the docs need no data
    engine = make_engine(f"sqlite:///{tmp / 'governance.db'}")
    return create_app(ViewService(warehouse, Governance(AuditLog(engine))), TokenStore(engine))


@contextmanager
def _serve(app: FastAPI) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://localhost:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_docs_page_and_assets_are_served_by_the_api(tmp_path: Path) -> None:
    if not (assets_dir() / "swagger-ui-bundle.js").exists():
        pytest.fail(f"{assets_dir()}: missing; run make workspace-assets (npm ci)")
    c = TestClient(_api(tmp_path))
    page = c.get("/docs")
    assert page.status_code == 200
    assert "/docs/assets/swagger-ui-bundle.js" in page.text and "cdn" not in page.text.lower()
    assert "https://" not in page.text and "http://" not in page.text
    js = c.get("/docs/assets/swagger-ui-bundle.js")
    assert js.status_code == 200 and "SwaggerUIBundle" in js.text[:5_000_000]
    assert c.get("/redoc").status_code == 404  # ReDoc would come from a CDN: not served
    assert "/docs" not in c.get("/openapi.json").json()["paths"]


def test_docs_without_assets_say_how_to_install_them(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("JOINEDUP_SWAGGER_UI_DIR", str(tmp_path / "nothing"))
    r = TestClient(_api(tmp_path)).get("/docs")
    assert r.status_code == 503 and "make workspace-assets" in r.text and "http" not in r.text


@pytest.fixture
def chromium() -> Iterator[object]:
    if not (shutil.which("chromium") or Path(CHROMIUM).exists()) or not Path(CHROMEDRIVER).exists():
        pytest.fail("needs Debian's chromium and chromium-driver (make test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        # the network is cut off: only localhost resolves, and no proxy is asked
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost",
        "--no-proxy-server",
    ):
        opts.add_argument(a)
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def _rendered(driver: object, url: str) -> tuple[list[str], list[str]]:
    """(operation paths shown by Swagger UI, URLs of every resource the page loaded)."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    ops: list[str] = []
    for _ in range(100):  # up to 10 s for the script to build the page
        ops = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")]
        if ops:
            break
        time.sleep(0.1)
    loaded = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    return ops, loaded


def test_docs_render_in_chromium_with_the_network_cut_off(tmp_path: Path, chromium) -> None:
    from selenium.webdriver.common.by import By

    app = _api(tmp_path)
    with _serve(app) as base:
        ops, loaded = _rendered(chromium, f"{base}/docs")
        title = chromium.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title").text
    assert "joinedup governance API" in title
    shown = {p.replace("\u200b", "") for p in ops}  # Swagger UI adds break hints to paths
    assert shown == set(app.openapi()["paths"]) and len(shown) >= 7, shown
    assert loaded and all(u.startswith(base + "/") for u in loaded), loaded
    assert f"{base}/docs/assets/swagger-ui-bundle.js" in loaded
    assert f"{base}/openapi.json" in loaded


def test_control_fastapis_cdn_docs_stay_blank_in_the_same_browser(chromium) -> None:
    app = FastAPI(title="cdn docs")

    @app.get("/thing")
    def thing() -> dict[str, str]:
        return {}

    with _serve(app) as base:
        ops, loaded = _rendered(chromium, f"{base}/docs")
    assert ops == []  # the CDN could not be reached, so nothing rendered
    assert not any(u.startswith(base + "/openapi.json") for u in loaded)
