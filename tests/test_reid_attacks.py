"""Attack: the hub's identity-request key has leaked. Whoever holds it signs requests as the hub
and sends them straight to an agency's re-identification service (a real ig_bridge.reid_service
over HTTP on 127.0.0.1, the agency's real keys and extract). The bridge must refuse bulk
re-identification on its own: every forged request below is signed with the REAL hub key read
from the hub's key file, and each refusal must be in the agency's own audit log.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_api import MAPPINGS, World, build_world
from test_identity import PROTOCOL, REASON, _extract, _truth

import ig_bridge.reid_controls as controls
import ig_bridge.reid_service as reid_service
from governance.audit import generate_hub_key, load_hub_key
from governance.identity import sign_request
from governance.policy import load_protocols
from ig_bridge.keys import KeyStore
from ig_bridge.reid_controls import AgreedProtocols, SlidingWindowLimiter, agree_protocol
from ig_bridge.reid_service import (
    MAX_BODY,
    ReidService,
    extract_lookup,
    load_hub_public_key,
    make_server,
)
from ig_bridge.reidentify import verify_audit_chain

PROTOCOLS = Path(__file__).resolve().parent.parent / "schemas" / "protocols"
PER_USER, TOTAL = 5, 20
POLICY = load_protocols()  # the hub's protocols as it loads them (version, document SHA-256)


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory)


@dataclass
class Target:
    url: str
    agency: str
    stolen_key: Ed25519PrivateKey
    refs: list[str]
    log: Path
    service: ReidService
    http: httpx.Client
    agency_dir: Path

    def send(self, req: dict, key: Ed25519PrivateKey | None = None) -> httpx.Response:
        env = {"request": req, "signature": sign_request(req, key or self.stolen_key)}
        return self.http.post(f"{self.url}/reidentify", json=env)

    def log_entries(self) -> list[dict]:
        return [json.loads(x) for x in self.log.read_text("utf-8").splitlines() if x.strip()]


def _agency(world: World) -> str:
    con = duckdb.connect(str(world.warehouse), read_only=True)
    n = dict(con.execute("SELECT agency, count(*) FROM record_person GROUP BY 1").fetchall())
    con.close()
    return "GP" if n.get("GP", 0) >= 50 else max(n, key=lambda a: n[a])


def _serve(service: ReidService) -> tuple[str, object]:
    server = make_server(service)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


@pytest.fixture
def target(world: World, tmp_path: Path) -> Iterator[Target]:
    agency = _agency(world)
    hub_keys = tmp_path / "hub" / "keys"
    generate_hub_key(hub_keys / "hub_request.pem")
    agency_dir = tmp_path / "agency" / agency
    # The agency's IG lead agreed s47 (identity allowed) and the involvement index (not).
    for pid in ("s47_child_protection_enquiry", "involvement_index"):
        agree_protocol(agency_dir, agency, PROTOCOLS / f"{pid}.yaml", agreed_by="ig.lead")
    service = ReidService(
        agency,
        KeyStore(world.run / "agency" / agency / "keys", agency),
        load_hub_public_key(hub_keys / "hub_request.pub"),
        extract_lookup(_extract(world.run, agency), MAPPINGS / f"{agency.lower()}.yaml"),
        agency_dir / "audit.log",
        agreed=AgreedProtocols.load(agency_dir, agency),
        limits=SlidingWindowLimiter(PER_USER, TOTAL, 3600, clock=time.time),
    )
    url, server = _serve(service)
    con = duckdb.connect(str(world.warehouse), read_only=True)
    refs = [
        r[0]
        for r in con.execute(
            "SELECT record_ref FROM record_person WHERE agency = ? ORDER BY record_ref", [agency]
        ).fetchall()
    ]
    con.close()
    # The attacker reads the hub's key file from disk: the real key, not a test double.
    stolen = load_hub_key(hub_keys / "hub_request.pem")
    http = httpx.Client(timeout=10, trust_env=False)
    try:
        yield Target(url, agency, stolen, refs, agency_dir / "audit.log", service, http, agency_dir)
    finally:
        http.close()
        server.shutdown()  # type: ignore[attr-defined]
        server.server_close()  # type: ignore[attr-defined]


def forged(t: Target, **over: object) -> dict:
    """What an attacker with the key would send: a complete, plausible v2 request."""
    now = dt.datetime.now(dt.UTC)
    proto = POLICY[PROTOCOL]
    req = {
        "request_version": 2,
        "request_id": uuid.uuid4().hex,
        "hub_request_id": uuid.uuid4().hex,
        "hub_decision_id": uuid.uuid4().hex,
        "hub_audit_seq": 41,
        "hub_audit_hash": "c0" * 32,
        "protocol_id": PROTOCOL,
        "protocol_version": proto.version,
        "protocol_sha256": proto.document_sha256,
        "requesting_user": "insider",
        "reason": REASON,
        "agency": t.agency,
        "record_ref": t.refs[0],
        "issued_at": now.isoformat(),
        "expires_at": (now + dt.timedelta(minutes=2)).isoformat(),
    }
    req.update(over)
    return {k: v for k, v in req.items() if v is not None}


def _identities_disclosed(r: httpx.Response) -> bool:
    return "identities" in r.json() or "display" in r.text


def test_each_forged_request_is_refused_and_logged(target: Target, world: World) -> None:
    t = target
    now = dt.datetime.now(dt.UTC)
    s47 = POLICY[PROTOCOL]
    mash = POLICY["mash_information_sharing"]
    attacks = {
        # every record of the agency in one request (the original attack), and two refs
        "one_subject_per_request": [
            forged(t, record_ref=None, record_refs=t.refs),
            forged(t, record_ref=None, record_refs=t.refs[:2]),
            forged(t, record_ref=t.refs[:3]),
        ],
        "protocol_not_agreed": [
            forged(
                t, protocol_id="bulk_export_all", protocol_version=1, protocol_sha256="00" * 32
            ),  # made up
            # a real partnership protocol this agency never agreed, with its true hash
            forged(
                t,
                protocol_id=mash.id,
                protocol_version=mash.version,
                protocol_sha256=mash.document_sha256,
            ),
        ],
        # the agreed protocol, but a different text (say, edited to allow bulk identity)
        "protocol_version_not_agreed": [
            forged(t, protocol_sha256="ee" * 32),
            forged(t, protocol_version=s47.version + 1),
        ],
        # agreed, but the protocol itself does not allow identity (who holds what)
        "identity_not_allowed_by_protocol": [
            forged(
                t,
                protocol_id="involvement_index",
                protocol_version=POLICY["involvement_index"].version,
                protocol_sha256=POLICY["involvement_index"].document_sha256,
            )
        ],
        "lifetime_too_long": [
            forged(
                t, issued_at=now.isoformat(), expires_at=(now + dt.timedelta(days=3650)).isoformat()
            ),
            forged(t, expires_at=(now + dt.timedelta(minutes=6)).isoformat()),
        ],
        "not_yet_valid": [
            forged(
                t,
                issued_at=(now + dt.timedelta(hours=1)).isoformat(),
                expires_at=(now + dt.timedelta(hours=1, minutes=2)).isoformat(),
            )
        ],
        "expired": [
            forged(
                t,
                issued_at=(now - dt.timedelta(minutes=10)).isoformat(),
                expires_at=(now - dt.timedelta(minutes=8)).isoformat(),
            )
        ],
        "no_hub_decision": [
            forged(t, hub_decision_id=None, hub_audit_seq=None, hub_audit_hash=None),
            forged(t, hub_audit_hash=None),
            forged(t, hub_audit_seq=0),
            forged(t, hub_decision_id="not-a-decision"),
        ],
        "wrong_agency": [forged(t, agency="ZZ")],
    }
    sent: dict[str, str] = {}
    for code, reqs in attacks.items():
        for req in reqs:
            r = t.send(req)
            assert r.status_code == 403, (code, r.status_code, r.text)
            assert r.json() == {"error": code}
            assert not _identities_disclosed(r)
            sent[req["request_id"]] = code
    # every refusal is one line of the agency's own chained log, with the code, and nothing
    # was answered; the log holds no identity
    entries = t.log_entries()
    assert {e["request_id"]: e["detail"] for e in entries} == sent
    assert all(e["outcome"] == "refused" for e in entries)
    assert verify_audit_chain(t.log) == len(sent)
    bulk = [e for e in entries if e["detail"] == "one_subject_per_request"]
    assert bulk[0]["n_record_refs"] == len(t.refs) and "record_refs" not in bulk[0]
    text = t.log.read_text("utf-8")
    truth = _truth(world, t.agency)
    for row in list(truth.values())[:200]:
        for k in ("family_name", "date_of_birth"):
            if isinstance(row.get(k), str) and len(row[k]) >= 5:
                assert row[k] not in text
    # the same key and a well-formed request under the agreed protocol still works: the
    # refusals above are the controls, not a broken service
    ok = t.send(forged(t))
    assert ok.status_code == 200 and ok.json()["identities"][0]["found"]


def _burst(t: Target, users: list[str], n: int) -> list[int]:
    statuses = []
    for i in range(n):
        r = t.send(
            forged(t, requesting_user=users[i % len(users)], record_ref=t.refs[i % len(t.refs)])
        )
        statuses.append(r.status_code)
    return statuses


def test_burst_as_one_user_is_capped_at_the_per_user_limit(target: Target) -> None:
    t = target
    start = time.monotonic()
    statuses = _burst(t, ["insider"], 1000)
    took = time.monotonic() - start
    assert statuses.count(200) == PER_USER
    assert statuses.count(429) == 1000 - PER_USER
    entries = t.log_entries()
    assert sum(e["outcome"] == "answered" for e in entries) == PER_USER
    refused = [e for e in entries if e["outcome"] == "refused"]
    assert len(refused) == 1000 - PER_USER
    assert {e["detail"] for e in refused} == {"rate_limited_user"}
    assert verify_audit_chain(t.log) == 1000
    print(
        f"\n1,000 forged one-subject requests as one user: {PER_USER} answered, "
        f"{took:.1f} s ({took / 1000 * 1000:.1f} ms a request)"
    )
    # another user is not blocked by this one's limit
    assert t.send(forged(t, requesting_user="sw.other")).status_code == 200


def test_burst_as_many_users_is_capped_at_the_total_limit(target: Target) -> None:
    t = target
    users = [f"user{i:04d}" for i in range(1000)]
    statuses = _burst(t, users, 1000)
    assert statuses.count(200) == TOTAL
    assert statuses.count(429) == 1000 - TOTAL
    refused = [e for e in t.log_entries() if e["outcome"] == "refused"]
    assert len(refused) == 1000 - TOTAL
    assert {e["detail"] for e in refused} == {"rate_limited_total"}
    # a restart does not reset the window: the answers are counted again from the log
    again = ReidService(
        t.agency,
        t.service.keys,
        t.service.hub_key,
        t.service.lookup,
        t.log,
        agreed=t.service.agreed,
        limits=SlidingWindowLimiter(PER_USER, TOTAL, 3600, clock=time.time),
    )
    status, body = again.handle(
        json.dumps(
            {
                "request": (req := forged(t, requesting_user="x")),
                "signature": sign_request(req, t.stolen_key),
            }
        ).encode()
    )
    assert (status, body) == (429, {"error": "rate_limited_total"})


def test_unauthenticated_flood_writes_nothing_per_request(target: Target) -> None:
    """Without the key: bad signatures, garbage, oversized bodies. Nothing is written per
    request (only a counter), and an oversized body is refused before it is read."""
    t = target
    impostor = Ed25519PrivateKey.generate()
    for i in range(600):
        if i % 3 == 0:
            r = t.send(forged(t), key=impostor)
            assert (r.status_code, r.json()) == (403, {"error": "bad_signature"})
        elif i % 3 == 1:
            r = t.http.post(
                f"{t.url}/reidentify",
                content=b"{" * 100,
                headers={"Content-Type": "application/json"},
            )
            assert r.status_code == 400
        else:
            r = t.http.post(f"{t.url}/reidentify", content=b"x" * (MAX_BODY + 1))
            assert (r.status_code, r.json()) == (413, {"error": "body_too_large"})
    assert not t.log.exists() or t.log.read_text() == ""
    t.service.close()  # at shutdown (or once a minute) the counters become one line
    [summary] = t.log_entries()
    assert summary["outcome"] == "unauthenticated_refusals"
    assert summary["counts"] == {"bad_signature": 200, "malformed_json": 200, "body_too_large": 200}
    assert verify_audit_chain(t.log) == 1


def test_appends_and_replay_checks_do_not_reread_the_log(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long log (20,000 chained lines) costs nothing per request: the service reads it once
    at start, then each request reads a few KB from the end of the file at most."""
    t = target
    prev = "0" * 64
    lines = []
    old = (dt.datetime.now(dt.UTC) - dt.timedelta(days=30)).isoformat(timespec="seconds")
    for i in range(20_000):
        line = json.dumps(
            {
                "at": old,
                "agency": t.agency,
                "outcome": "refused",
                "detail": "expired",
                "request_id": f"{i:032x}",
                "prev_sha256": prev,
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        prev = hashlib.sha256(line.encode()).hexdigest()
        lines.append(line)
    t.log.write_text("\n".join(lines) + "\n")
    t.log.chmod(0o600)
    size = t.log.stat().st_size
    svc = ReidService(
        t.agency,
        t.service.keys,
        t.service.hub_key,
        t.service.lookup,
        t.log,
        agreed=t.service.agreed,
        limits=SlidingWindowLimiter(100, 100, 3600, clock=time.time),
    )
    read = {"bytes": 0, "full_reads": 0}
    real_pread = controls.os.pread

    def counting_pread(fd: int, n: int, off: int) -> bytes:
        data = real_pread(fd, n, off)
        read["bytes"] += len(data)
        return data

    monkeypatch.setattr(controls.os, "pread", counting_pread)
    monkeypatch.setattr(
        reid_service,
        "read_audit",
        lambda *a: read.__setitem__("full_reads", read["full_reads"] + 1) or [],
    )
    for _ in range(20):
        req = forged(t)
        env = json.dumps({"request": req, "signature": sign_request(req, t.stolen_key)})
        assert svc.handle(env.encode())[0] == 200
        assert svc.handle(env.encode())[1] == {"error": "replayed_request"}
    assert read["full_reads"] == 0
    assert read["bytes"] < 40 * 16 * 1024  # <= a few KB per append, against a
    assert size > 2_000_000  # log of megabytes
    assert verify_audit_chain(t.log) == 20_000 + 40
