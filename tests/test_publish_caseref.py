"""Write-audit-publish of the warehouse (linkage.publish) and the agency's case-reference
answer (ig_bridge.caseref), on real DuckDB files, real AES-SIV record-ref keys and real
hub-signed requests through the agency's HTTP service.
"""

from __future__ import annotations

import datetime as dt
import json
import stat
import threading
import uuid
from pathlib import Path

import duckdb
import httpx
import pandas as pd
import pytest

from governance.audit import AuditLog, generate_hub_key, make_engine
from governance.decisions import User
from governance.identity import BridgeUnavailable, sign_request
from ig_bridge.keys import KeyStore, decrypt_record_ref
from ig_bridge.reid_service import ReidService, load_hub_public_key, make_server
from ig_bridge.reidentify import frame_lookup
from linkage.config import HubPaths
from linkage.publish import VIEW_TABLES, PublishError, current, publish
from workspace.caseref import CaseRefFinder


def _warehouse(paths: HubPaths, persons: int = 3) -> None:
    paths.hub.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(paths.warehouse))
    for t in VIEW_TABLES:
        con.execute(f'CREATE TABLE "{t}" (id INTEGER)')
    con.execute("INSERT INTO person SELECT range FROM range(?)", [persons])
    con.close()


def test_publish_copies_checks_and_points_at_the_new_copy(tmp_path: Path) -> None:
    paths = HubPaths.for_run(tmp_path)
    _warehouse(paths)
    assert current(paths) is None
    first = publish(paths, "r1")
    assert current(paths) == first and first != paths.warehouse
    assert stat.S_IMODE(first.stat().st_mode) == 0o400
    con = duckdb.connect(str(first), read_only=True)
    assert con.execute("SELECT count(*) FROM person").fetchone()[0] == 3
    con.close()
    con = duckdb.connect(str(paths.warehouse))  # the hub writes on; the copy does not move
    con.execute("INSERT INTO person VALUES (99)")
    con.close()
    second = publish(paths, "r2")
    assert current(paths) == second != first
    info = json.loads((paths.hub / "published" / "current.json").read_text())
    assert info["run_id"] == "r2" and info["row_counts"]["person"] == 4


def test_a_copy_that_fails_its_checks_is_never_published(tmp_path: Path) -> None:
    paths = HubPaths.for_run(tmp_path)
    _warehouse(paths)
    good = publish(paths, "r1")
    con = duckdb.connect(str(paths.warehouse))
    con.execute("DROP TABLE household")
    con.close()
    with pytest.raises(PublishError, match="household"):
        publish(paths, "r2")
    assert current(paths) == good  # readers stay on the last good copy
    assert sorted(p.name for p in (paths.hub / "published").glob("*.duckdb")) == [good.name]


@pytest.fixture
def agency(tmp_path: Path):  # noqa: ANN201
    keys = KeyStore(tmp_path / "agency" / "CSC" / "keys", "CSC")
    keys.ensure()
    hub_key = generate_hub_key(tmp_path / "hub" / "hub_request.pem")
    lookup = frame_lookup(
        pd.DataFrame({"record_id": ["CASE-1", "CASE-2"], "given_name": ["Amy", "Ben"]})
    )
    log = tmp_path / "agency" / "CSC" / "audit.log"
    service = ReidService(
        "CSC", keys, load_hub_public_key(tmp_path / "hub" / "hub_request.pub"), lookup, log
    )
    server = make_server(service)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    yield keys, hub_key, url, log
    server.shutdown()
    server.server_close()


def _request(**over: object) -> dict:
    now = dt.datetime.now(dt.UTC)
    return {
        "request_version": 1,
        "request_id": uuid.uuid4().hex,
        "agency": "CSC",
        "requesting_user": "sw1",
        "requesting_agency": "CSC",
        "case_reference": "CASE-2",
        "issued_at": now.isoformat(),
        "expires_at": (now + dt.timedelta(minutes=2)).isoformat(),
        **over,
    }


def test_the_agency_turns_its_own_case_reference_into_its_record_ref(agency, tmp_path) -> None:
    keys, hub_key, url, log = agency
    req = _request()
    env = {"request": req, "signature": sign_request(req, hub_key)}
    r = httpx.post(f"{url}/record-ref", json=env)
    assert r.status_code == 200 and r.json()["found"] is True
    assert decrypt_record_ref(r.json()["record_ref"], keys.ref_keys()) == "CASE-2"
    assert httpx.post(f"{url}/record-ref", json=env).json() == {"error": "replayed_request"}
    cases = {
        "not_this_agencys_worker": _request(requesting_agency="POL"),
        "wrong_agency": _request(agency="GP"),
        "lifetime_too_long": _request(
            expires_at=(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
        ),
        "malformed_request": _request(case_reference="x" * 65),
    }
    for code, req in cases.items():
        r = httpx.post(
            f"{url}/record-ref", json={"request": req, "signature": sign_request(req, hub_key)}
        )
        assert r.json() == {"error": code}, code
    forged = _request()
    other = generate_hub_key(tmp_path / "other.pem")
    r = httpx.post(
        f"{url}/record-ref", json={"request": forged, "signature": sign_request(forged, other)}
    )
    assert r.status_code == 403 and r.json() == {"error": "bad_signature"}
    missing = _request(case_reference="CASE-404")
    r = httpx.post(
        f"{url}/record-ref", json={"request": missing, "signature": sign_request(missing, hub_key)}
    )
    assert r.json()["found"] is False and r.json()["record_ref"] is None
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["outcome"] for x in lines].count("record_ref_answered") == 2
    assert "CASE-2" not in log.read_text()  # the agency logs the ref it gave, not the number


def test_the_hub_maps_the_answer_to_its_person_and_audits_no_case_number(agency, tmp_path) -> None:
    keys, hub_key, url, _log = agency
    ref = keys.ref_key().encrypt("CASE-1")
    wh = tmp_path / "wh.duckdb"
    con = duckdb.connect(str(wh))
    con.execute(
        "CREATE TABLE record_person (agency VARCHAR, record_ref VARCHAR, person_id VARCHAR)"
    )
    con.execute("INSERT INTO record_person VALUES ('CSC', ?, 'P000042')", [ref])
    con.close()
    audit = AuditLog(make_engine(f"sqlite:///{tmp_path / 'gov.db'}"))
    finder = CaseRefFinder(hub_key, {"CSC": url}, audit)
    worker = User("sw1", "practitioner", "CSC")
    found = finder.find(worker, " CASE-1 ", wh)
    assert (found.outcome, found.person_id) == ("found", "P000042")
    assert finder.find(worker, "CASE-2", wh).outcome == "not_linked"
    assert finder.find(worker, "CASE-9", wh).outcome == "not_found_at_agency"
    text = "\n".join(json.dumps(r.data()) for r in audit.entries())
    assert "CASE-" not in text and text.count('"case_lookup"') == 3
    with pytest.raises(BridgeUnavailable, match="no service configured"):
        finder.find(User("pc9", "practitioner", "POL"), "CASE-1", wh)
