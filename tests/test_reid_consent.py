"""The agency's bridge honours the consent withdrawals it has applied (#20), end to end on real
keys: a consent recorded and withdrawn at the hub, the signed notice applied by the school's
bridge, and then signed identity requests to the school's real re-identification service
over HTTP: refused under MASH (consent, unless the hub overrode it for significant harm),
answered under s.47 (a statutory gateway), each refusal a line in the agency's own log."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from governance.identity import sign_request
from governance.policy import load_protocols
from ig_bridge.consent_notice import apply_notices
from ig_bridge.keys import KeyStore
from ig_bridge.reid_controls import AgreedProtocols, agree_protocol, read_audit
from ig_bridge.reid_service import ReidService, load_hub_public_key, make_server
from ig_bridge.reidentify import frame_lookup
from tests.consent_world import EH_WORKER, ConsentWorld, make_world

PROTOCOL_DIR = Path(__file__).resolve().parents[1] / "schemas" / "protocols"
POLICY = load_protocols()
S47 = "s47_child_protection_enquiry"
MASH = "mash_information_sharing"


@pytest.fixture
def w(tmp_path: Path) -> Iterator[tuple[ConsentWorld, str, ReidService]]:
    w = make_world(tmp_path, f"sqlite:///{tmp_path}/hub/governance.db", None)
    agency_dir = w.root / "agency" / "SCH"
    for pid in (S47, MASH):  # the school's IG lead agreed both (identity allowed in each)
        agree_protocol(agency_dir, "SCH", PROTOCOL_DIR / f"{pid}.yaml", agreed_by="ig.lead.sch")
    extract = pd.DataFrame(
        {
            "record_id": ["SCH-1001", "SCH-1002"],
            "given_name": ["Amira", "Bo"],
            "family_name": ["Example", "Sample"],
            "date_of_birth": ["2015-03-02", "2016-07-09"],
            "postcode": ["ZZ99 1AA", "ZZ99 2BB"],
        }
    )
    service = ReidService(
        "SCH",
        KeyStore(agency_dir / "keys", "SCH"),
        load_hub_public_key(w.hub_pem),
        frame_lookup(extract),
        agency_dir / "audit.log",
        agreed=AgreedProtocols.load(agency_dir, "SCH"),
    )
    server = make_server(service)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield w, f"http://127.0.0.1:{server.server_address[1]}", service
    finally:
        server.shutdown()
        server.server_close()


def _ask(w: ConsentWorld, url: str, protocol: str, local: str, **extra: object) -> httpx.Response:
    """What governance.identity sends after a hub decision (signed with the hub's real key)."""
    now = dt.datetime.now(dt.UTC)
    proto = POLICY[protocol]
    req = {
        "request_version": 2,
        "request_id": uuid.uuid4().hex,
        "hub_request_id": uuid.uuid4().hex,
        "hub_decision_id": uuid.uuid4().hex,
        "hub_audit_seq": 7,
        "hub_audit_hash": "ab" * 32,
        "protocol_id": protocol,
        "protocol_version": proto.version,
        "protocol_sha256": proto.document_sha256,
        "requesting_user": "mash.worker.1",
        "reason": "Strategy discussion must confirm which child the referral concerns",
        "agency": "SCH",
        "record_ref": w.ref("SCH", local),
        "issued_at": now.isoformat(),
        "expires_at": (now + dt.timedelta(minutes=2)).isoformat(),
        "consent_override": False,
        **extra,
    }
    envelope = {"request": req, "signature": sign_request(req, w.hub_key)}
    return httpx.post(f"{url}/reidentify", json=envelope, timeout=10, trust_env=False)


def test_applied_withdrawal_stops_identity_where_the_protocol_relies_on_consent(w) -> None:  # noqa: ANN001
    w, url, service = w
    agreed = service.agreed.protocols
    assert (agreed[MASH].consent_purpose, agreed[MASH].consent_rule) == (
        "mash",
        "override_on_significant_harm",
    )
    assert agreed[S47].consent_rule == "not_required_under_gateway"
    assert _ask(w, url, MASH, "1001").status_code == 200  # nothing withdrawn yet

    rec = w.service.record(
        EH_WORKER,
        w.consent(purpose="mash", agencies=("SCH",), categories=("education",)),
    )
    w.tick()
    _, files = w.service.withdraw(EH_WORKER, rec.record_id, "phone")
    [sch] = [f for f in files if f.parent.name == "SCH"]  # (and the recording agency, EH)
    # before the school's bridge applies the notice it does not know: the hub's own refusal
    # is what stands then (governance tests); once applied, the bridge refuses by itself
    assert _ask(w, url, MASH, "1001").status_code == 200
    [applied] = apply_notices(
        sch.parent, w.root / "agency" / "SCH", "SCH", load_hub_public_key(w.hub_pem)
    )
    assert applied.outcome == "applied"

    r = _ask(w, url, MASH, "1001")
    assert r.status_code == 403 and r.json() == {"error": "consent_withdrawn"}
    assert "Amira" not in r.text
    last = list(read_audit(w.root / "agency" / "SCH" / "audit.log"))[-1]
    assert last["outcome"] == "refused" and last["detail"] == "consent_withdrawn"
    # the other child's consent was not withdrawn
    assert _ask(w, url, MASH, "1002").json()["identities"][0]["display"]["given_name"] == "Bo"
    # significant harm: the hub's decision overrode consent (break-glass), so it answers
    r = _ask(w, url, MASH, "1001", consent_override=True)
    assert r.status_code == 200 and r.json()["identities"][0]["found"]
    # a statutory enquiry does not rest on consent
    r = _ask(w, url, S47, "1001")
    assert r.status_code == 200 and r.json()["identities"][0]["display"]["given_name"] == "Amira"


def test_protocol_agreed_before_rules_were_recorded_is_not_checked(w, tmp_path: Path) -> None:  # noqa: ANN001
    import yaml

    w, url, service = w
    path = w.root / "agency" / "SCH" / "agreed_protocols.yaml"
    doc = yaml.safe_load(path.read_text())
    for body in doc["protocols"].values():  # as an older bridge wrote it
        body.pop("consent_purpose", None)
        body.pop("consent_rule", None)
    path.write_text(yaml.safe_dump(doc))
    older = AgreedProtocols.load(path.parent, "SCH")
    assert older.protocols[MASH].consent_rule is None
    agree_protocol(path.parent, "SCH", PROTOCOL_DIR / f"{MASH}.yaml", agreed_by="ig.lead.sch")
    assert AgreedProtocols.load(path.parent, "SCH").protocols[MASH].consent_rule == (
        "override_on_significant_harm"
    )
