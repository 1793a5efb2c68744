"""Identity requests: hub API -> signed request -> the agency's re-identification service
(ig_bridge.reid_service on a real 127.0.0.1 port, with the agency's own keys and extract).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from test_api import MAPPINGS, World, build_world, make_hub

from governance.api import create_app
from governance.audit import generate_hub_key
from governance.decisions import Governance
from governance.identity import IdentityService, sign_request
from ig_bridge.keys import KeyStore, decrypt_record_ref
from ig_bridge.reid_service import ReidService, extract_lookup, load_hub_public_key, make_server
from ig_bridge.reidentify import verify_audit_chain
from schemas.mapping import SUBJECT, load_mapping
from synthetic_data.parties import agree_partnership_protocols

PROTOCOL = "s47_child_protection_enquiry"
REASON = "strategy discussion needs to confirm which child this record concerns"


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory)


def _extract(run: Path, code: str) -> Path:
    [path] = [p for p in (run / "population" / "extracts" / code).iterdir() if p.is_file()]
    return path


def _agency_for(world: World, gov: Governance) -> str:
    con = duckdb.connect(str(world.warehouse), read_only=True)
    held = [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT agency FROM record_person WHERE person_id = ? ORDER BY 1",
            [world.person],
        ).fetchall()
    ]
    con.close()
    covered = [a for a in held if a in gov.protocols[PROTOCOL].agencies]
    assert covered
    return "GP" if "GP" in covered else covered[0]


@dataclass
class Setup:
    client: TestClient
    gov: Governance
    tokens: dict[str, str]
    agency: str
    bridge: ReidService
    bridge_log: Path
    hub_key: Ed25519PrivateKey
    hub_dir: Path
    url: str

    def ask(self, who: str = "sw1", person: str | None = None, **body: str):  # noqa: ANN201
        payload = {"protocol_id": PROTOCOL, "agency": self.agency, "reason": REASON, **body}
        return self.client.post(
            f"/persons/{person or WORLD_PERSON[0]}/identity",
            json=payload,
            headers={"Authorization": f"Bearer {self.tokens[who]}"},
        )


WORLD_PERSON: list[str] = []


@pytest.fixture
def setup(world: World, tmp_path: Path) -> Iterator[Setup]:
    WORLD_PERSON[:] = [world.person]
    hub_dir = tmp_path / "hub"
    gov, views, store, tokens, _ = make_hub(world, hub_dir, deployed=False)  # seqs from 1
    agency = _agency_for(world, gov)
    hub_key = generate_hub_key(hub_dir / "keys" / "hub_request.pem")
    agency_dir = tmp_path / "agency" / agency  # the bridge's own audit log lives here
    agree_partnership_protocols(tmp_path, [agency])  # the agency's IG lead agrees its protocols
    bridge = ReidService(
        agency,
        KeyStore(world.run / "agency" / agency / "keys", agency),
        load_hub_public_key(hub_dir / "keys" / "hub_request.pub"),
        extract_lookup(_extract(world.run, agency), MAPPINGS / f"{agency.lower()}.yaml"),
        agency_dir / "audit.log",
    )
    server = make_server(bridge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    ident = IdentityService(views, hub_key, {agency: url})
    client = TestClient(create_app(views, store, ident))
    try:
        yield Setup(
            client, gov, tokens, agency, bridge, agency_dir / "audit.log", hub_key, hub_dir, url
        )
    finally:
        server.shutdown()
        server.server_close()
        ident.http.close()


def _bridge_entries(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text("utf-8").splitlines() if x.strip()]


def _truth(world: World, agency: str) -> dict[str, dict[str, str]]:
    """The agency's own extract read independently: local id -> canonical display values."""
    mapping = load_mapping(MAPPINGS / f"{agency.lower()}.yaml")
    cols = mapping.identifier_columns(SUBJECT)
    src = mapping.source
    path = _extract(world.run, agency)
    df = (
        pd.read_parquet(path)
        if src.format == "parquet"
        else pd.read_csv(
            path, sep=src.delimiter, encoding=src.encoding, dtype=str, keep_default_na=False
        )
    )
    df = df[list(cols.values())].rename(columns={v: k for k, v in cols.items()})
    if "address" not in df and "address_line_1" in df:  # the service shows the first line
        df["address"] = df["address_line_1"]
    return {str(r["record_id"]).strip(): r for r in df.to_dict("records")}


def test_identity_round_trip_logged_on_both_sides(setup: Setup, world: World) -> None:
    r = setup.ask()
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    ids = body["identities"]
    assert ids and all(i["found"] for i in ids)
    # the answer is the agency's own data for this person's records
    con = duckdb.connect(str(world.warehouse), read_only=True)
    refs = [
        x[0]
        for x in con.execute(
            "SELECT record_ref FROM record_person WHERE person_id = ? "
            "AND agency = ? ORDER BY record_ref",
            [world.person, setup.agency],
        ).fetchall()
    ]
    con.close()
    keys = KeyStore(world.run / "agency" / setup.agency / "keys", setup.agency).ref_keys()
    truth = _truth(world, setup.agency)
    for ref, got in zip(refs, ids, strict=True):
        row = truth[decrypt_record_ref(ref, keys)]
        for k, v in got["display"].items():
            assert str(v) == str(row[k]), k
    # hub: exactly one audit entry, granted, no identity in it
    assert setup.gov.audit.count() == 1
    hub_rec = setup.gov.audit.get(1)
    hub_entry = hub_rec.data()
    assert hub_entry["type"] == "identity_request" and hub_entry["outcome"] == "forwarded"
    assert hub_entry["request_id"] == body["request_id"]
    # bridge: one request per record ref, each answered and logged in its own chained log,
    # naming the hub's request, decision and audit entry (seq and hash) and the protocol
    entries = _bridge_entries(setup.bridge_log)
    assert [e["outcome"] for e in entries] == ["answered"] * len(refs)
    assert [e["request_id"] for e in entries] == hub_entry["bridge_request_ids"]
    proto = setup.gov.protocols[PROTOCOL]
    for e in entries:
        assert e["hub_request_id"] == body["request_id"]
        assert e["hub_decision_id"] == hub_entry["decision_id"]
        assert (e["hub_audit_seq"], e["hub_audit_hash"]) == (1, hub_rec.entry_hash)
        assert (e["protocol_version"], e["protocol_sha256"]) == (
            proto.version,
            proto.document_sha256,
        )
        assert e["requesting_user"] == "sw1" and e["found"] == 1
        assert len(e["record_refs"]) == 1
    assert [e["record_refs"][0] for e in entries] == refs
    assert verify_audit_chain(setup.bridge_log) == len(refs)


def test_identity_is_never_stored_at_the_hub(setup: Setup, world: World) -> None:
    r = setup.ask()
    assert r.status_code == 200
    needles = set()
    for ident in r.json()["identities"]:
        for k, v in (ident["display"] or {}).items():
            if v and k in ("family_name", "given_name", "date_of_birth", "address"):
                needles.add(str(v).encode())
    needles = {n for n in needles if len(n) >= 4}
    assert needles
    hub_files = [p for p in setup.hub_dir.rglob("*") if p.is_file()]
    hub_files += [p for p in (world.run / "hub").rglob("*") if p.is_file()]
    assert any(p.name == "governance.db" for p in hub_files)
    for path in hub_files:
        data = path.read_bytes()
        for n in needles:
            assert n not in data, (path.name, "holds an identity")
    for rec in setup.gov.audit.entries():
        for n in needles:
            assert n.decode() not in rec.body


def test_refused_request_never_reaches_the_bridge(setup: Setup) -> None:
    r = setup.ask(who="sw2")
    assert r.status_code == 403 and "no_legitimate_relationship" in r.json()["reasons"]
    assert setup.gov.audit.get(1).data()["outcome"] == "refused"
    assert _bridge_entries(setup.bridge_log) == []


def test_reason_that_looks_like_an_identifier_is_422_unlogged(setup: Setup) -> None:
    r = setup.ask(reason="please confirm the child living at postcode SW1A 1AA, urgent")
    assert r.status_code == 422
    assert setup.gov.audit.count() == 0 and _bridge_entries(setup.bridge_log) == []


def test_agency_outside_protocol_is_refused(setup: Setup) -> None:
    r = setup.ask(agency="EH")  # s47 does not cover Early Help
    assert r.status_code == 403 and setup.gov.audit.count() == 1


def _refs(setup: Setup, n: int = 2) -> list[str]:
    con = duckdb.connect(
        str(setup.bridge.keys.directory.parents[2] / "hub" / "warehouse.duckdb"), read_only=True
    )
    refs = [
        x[0]
        for x in con.execute(
            "SELECT record_ref FROM record_person WHERE agency = ? ORDER BY record_ref LIMIT ?",
            [setup.agency, n],
        ).fetchall()
    ]
    con.close()
    return refs


def envelope(
    setup: Setup, key: Ed25519PrivateKey | None = None, *, ref: str | None = None, **over: object
) -> dict:
    """A well-formed v2 request as the hub would sign it; `over` replaces (None: removes)."""
    now = dt.datetime.now(dt.UTC)
    proto = setup.gov.protocols[PROTOCOL]
    req = {
        "request_version": 2,
        "request_id": uuid.uuid4().hex,
        "hub_request_id": uuid.uuid4().hex,
        "hub_decision_id": uuid.uuid4().hex,
        "hub_audit_seq": 7,
        "hub_audit_hash": "ab" * 32,
        "protocol_id": PROTOCOL,
        "protocol_version": proto.version,
        "protocol_sha256": proto.document_sha256,
        "requesting_user": "sw1",
        "reason": REASON,
        "agency": setup.agency,
        "record_ref": ref or _refs(setup, 1)[0],
        "issued_at": now.isoformat(),
        "expires_at": (now + dt.timedelta(minutes=2)).isoformat(),
    }
    req.update(over)
    req = {k: v for k, v in req.items() if v is not None}
    return {"request": req, "signature": sign_request(req, key or setup.hub_key)}


def test_bridge_refuses_forged_tampered_expired_and_replayed(setup: Setup) -> None:
    good = envelope(setup)
    status, body = setup.bridge.handle(json.dumps(good).encode())
    assert status == 200 and len(body["identities"]) == 1 and body["identities"][0]["found"]
    status, body = setup.bridge.handle(json.dumps(good).encode())
    assert (status, body["error"]) == (403, "replayed_request")
    forged = envelope(setup, key=Ed25519PrivateKey.generate())
    assert setup.bridge.handle(json.dumps(forged).encode())[1]["error"] == "bad_signature"
    tampered = envelope(setup)
    tampered["request"]["requesting_user"] = "someone_else"
    assert setup.bridge.handle(json.dumps(tampered).encode())[1]["error"] == "bad_signature"
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    expired = envelope(
        setup, issued_at=old.isoformat(), expires_at=(old + dt.timedelta(minutes=2)).isoformat()
    )
    assert setup.bridge.handle(json.dumps(expired).encode())[1]["error"] == "expired"
    other = envelope(setup, agency="ZZ")
    assert setup.bridge.handle(json.dumps(other).encode())[1]["error"] == "wrong_agency"
    bad_sig = {**envelope(setup), "signature": base64.b64encode(b"x" * 64).decode()}
    assert setup.bridge.handle(json.dumps(bad_sig).encode())[0] == 403
    assert setup.bridge.handle(b"{not json")[0] == 400
    # signed requests: one line each; unsigned ones only as counters until the summary
    outcomes = [(e["outcome"], e.get("detail")) for e in _bridge_entries(setup.bridge_log)]
    assert outcomes == [
        ("answered", None),
        ("refused", "replayed_request"),
        ("refused", "expired"),
        ("refused", "wrong_agency"),
    ]
    setup.bridge.close()
    summary = _bridge_entries(setup.bridge_log)[-1]
    assert summary["outcome"] == "unauthenticated_refusals"
    assert summary["counts"] == {"bad_signature": 3, "malformed_json": 1}
    assert verify_audit_chain(setup.bridge_log) == 5
    # a restarted service still knows the request ids it has answered
    again = ReidService(
        setup.agency, setup.bridge.keys, setup.bridge.hub_key, setup.bridge.lookup, setup.bridge_log
    )
    assert again.handle(json.dumps(good).encode())[1]["error"] == "replayed_request"


def test_hub_refuses_identity_where_the_protocol_does_not_allow_it(setup: Setup) -> None:
    """involvement_index says identity: {allowed: false}: the hub refuses and never asks."""
    r = setup.ask(protocol_id="involvement_index")
    assert r.status_code == 403
    assert r.json()["reasons"] == ["identity_not_allowed_by_protocol"]
    entry = setup.gov.audit.get(1).data()
    assert entry["outcome"] == "refused" and entry["bridge_request_ids"] == []
    assert "identity_not_allowed_by_protocol" in entry["refusal_reasons"]
    assert _bridge_entries(setup.bridge_log) == []
    r = setup.ask(protocol_id="no_such_protocol")
    assert r.status_code == 403 and r.json()["reasons"] == ["unknown_protocol"]
    assert _bridge_entries(setup.bridge_log) == []


def test_unreachable_bridge_is_502_and_nothing_disclosed(setup: Setup, world: World) -> None:
    gov, v2, store, tokens, _ = make_hub(world, setup.hub_dir / "second", deployed=False)
    ident = IdentityService(v2, setup.hub_key, {setup.agency: "http://127.0.0.1:9"})
    client = TestClient(create_app(v2, store, ident))
    r = client.post(
        f"/persons/{world.person}/identity",
        json={"protocol_id": PROTOCOL, "agency": setup.agency, "reason": REASON},
        headers={"Authorization": f"Bearer {tokens['sw1']}"},
    )
    assert r.status_code == 502 and "identities" not in r.text
    assert gov.audit.count() == 1


def test_reconciliation_finds_what_a_leaked_key_got_past_the_bridge(setup: Setup) -> None:
    """Within the bridge's limits a forged request under an agreed protocol is answered; the
    IG lead's pairing of the agency's log with the hub's audit log finds every such answer and
    none of the hub's own."""
    from governance.audit import load_hub_key
    from governance.identity import unmatched_answers
    from ig_bridge.reid_controls import read_audit

    r = setup.ask()
    assert r.status_code == 200
    n_real = len(r.json()["identities"])
    hub_rec = setup.gov.audit.get(1)
    stolen = load_hub_key(setup.hub_dir / "keys" / "hub_request.pem")
    # made-up decision reference; a real one re-used for another request; a real one claimed
    # by another user
    made_up = envelope(setup, key=stolen)
    reused = envelope(
        setup,
        key=stolen,
        hub_audit_seq=1,
        hub_audit_hash=hub_rec.entry_hash,
        hub_decision_id=hub_rec.data()["decision_id"],
        hub_request_id=hub_rec.data()["request_id"],
    )
    other_user = envelope(
        setup,
        key=stolen,
        hub_audit_seq=1,
        hub_audit_hash=hub_rec.entry_hash,
        hub_decision_id=hub_rec.data()["decision_id"],
        hub_request_id=hub_rec.data()["request_id"],
        request_id=hub_rec.data()["bridge_request_ids"][0][::-1],
        requesting_user="insider",
    )
    for env in (made_up, reused, other_user):
        status, body = setup.bridge.handle(json.dumps(env).encode())
        assert status == 200, body
    found = unmatched_answers(read_audit(setup.bridge_log), setup.gov.audit)
    assert {f["request_id"]: f["problem"] for f in found} == {
        made_up["request"]["request_id"]: "no_such_hub_entry",
        reused["request"]["request_id"]: "request_not_in_hub_entry",
        other_user["request"]["request_id"]: "request_not_in_hub_entry",
    }
    answered = [e for e in read_audit(setup.bridge_log) if e["outcome"] == "answered"]
    assert len(answered) == n_real + 3
