"""A withdrawal at the hub reaches the agencies: signed notices their bridges verify and apply.
Each attack on a notice (forged, tampered, misaddressed, replayed, another kind of signed
message, another agency's record) is performed end to end and refused, with nothing applied."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from governance.consent_notices import sign_notice
from governance.identity import sign_request
from ig_bridge.cli import main as bridge_cli
from ig_bridge.consent_notice import REGISTER, apply_notices, withdrawn
from ig_bridge.reid_controls import read_audit
from ig_bridge.reid_service import load_hub_public_key
from tests.consent_world import EH_WORKER, ConsentWorld, make_world


@pytest.fixture
def w(tmp_path: Path) -> ConsentWorld:
    return make_world(tmp_path, f"sqlite:///{tmp_path}/hub/governance.db", None)


def _withdraw(w: ConsentWorld) -> tuple[str, list[Path]]:
    rec = w.service.record(
        EH_WORKER, w.consent(agencies=("SCH", "HV"), categories=("education", "health"))
    )
    w.tick()
    done, files = w.service.withdraw(EH_WORKER, rec.record_id, "phone")
    return done.record_id, files


def _apply(w: ConsentWorld, agency: str, inbox: Path) -> list:
    return apply_notices(inbox, w.root / "agency" / agency, agency, load_hub_public_key(w.hub_pem))


def _applied(w: ConsentWorld, agency: str) -> list[dict]:
    return [
        e for e in read_audit(w.root / "agency" / agency / REGISTER) if e["outcome"] == "applied"
    ]


def test_each_agency_told_gets_only_its_own_refs_and_applies_it(w: ConsentWorld, capsys) -> None:
    record_id, files = _withdraw(w)
    assert sorted(f.parent.name for f in files) == ["EH", "HV", "SCH"]
    for f in files:
        assert f.stat().st_mode & 0o077 == 0
        notice = json.loads(f.read_text())["notice"]
        assert notice["record_refs"] == [w.ref(f.parent.name, "1001")]
        assert notice["consent_record_id"] == record_id
    inbox = w.root / "hub" / "outbox" / "SCH"
    rc = bridge_cli(
        [
            "consent",
            "apply",
            "--agency-dir",
            str(w.root / "agency" / "SCH"),
            "--agency",
            "SCH",
            "--hub-public-key",
            str(w.hub_pem),
            "--inbox",
            str(inbox),
        ]
    )
    assert rc == 0 and "applied" in capsys.readouterr().out
    [entry] = _applied(w, "SCH")
    assert entry["local_id"] == "SCH-1001" and entry["purpose"] == "early_help"
    assert entry["categories"] == ["education", "health"]
    assert set(withdrawn(w.root / "agency" / "SCH")) == {"SCH-1001"}
    # applying again changes nothing
    assert [o.outcome for o in _apply(w, "SCH", inbox)] == ["already_applied"]
    assert len(_applied(w, "SCH")) == 1
    # the store keeps every notice; the outbox is not written twice
    assert w.service.outbox.flush() == []
    assert len(w.service.outbox.for_record(record_id)) == 3


def _one_notice(w: ConsentWorld, agency: str) -> dict:
    _withdraw(w)
    [f] = (w.root / "hub" / "outbox" / agency).glob("*.json")
    return json.loads(f.read_text())


def _attack(w: ConsentWorld, agency: str, envelope: dict, tmp: Path) -> list:
    inbox = tmp / f"inbox_{agency}"
    inbox.mkdir(exist_ok=True)
    (inbox / "planted.json").write_text(json.dumps(envelope))
    return _apply(w, agency, inbox)


def test_forged_notice_signed_with_another_key_is_refused(w: ConsentWorld, tmp_path) -> None:
    env = _one_notice(w, "SCH")
    forged = sign_notice({**env["notice"], "notice_id": "f" * 32}, Ed25519PrivateKey.generate())
    [o] = _attack(w, "SCH", forged, tmp_path)
    assert (o.outcome, o.code) == ("refused", "bad_signature")
    assert _applied(w, "SCH") == []
    refused = [e for e in read_audit(w.root / "agency" / "SCH" / REGISTER)]
    assert refused == [
        {**refused[0], "outcome": "refused", "code": "bad_signature", "file": "planted.json"}
    ]


@pytest.mark.parametrize(
    "field, value",
    [
        ("purpose", "mash"),
        ("categories", ["education", "health", "case_notes"]),
        ("withdrawn_at", "2020-01-01T00:00:00+00:00"),
        ("record_refs", None),  # swapped for another of this agency's refs below
    ],
)
def test_tampered_notice_is_refused(w: ConsentWorld, tmp_path, field: str, value) -> None:
    env = _one_notice(w, "SCH")
    if field == "record_refs":
        value = [w.ref("SCH", "1002")]
    env["notice"][field] = value
    [o] = _attack(w, "SCH", env, tmp_path)
    assert (o.outcome, o.code) == ("refused", "bad_signature")
    assert _applied(w, "SCH") == []


def test_truncated_or_garbled_signature_is_refused(w: ConsentWorld, tmp_path) -> None:
    env = _one_notice(w, "SCH")
    sig = base64.b64decode(env["signature"])
    for bad in (base64.b64encode(sig[:-1]).decode(), "not base64!", ""):
        [o] = _attack(w, "SCH", {**env, "signature": bad}, tmp_path)
        assert o.code == "bad_signature"
    assert _applied(w, "SCH") == []


def test_notice_for_another_agency_is_refused(w: ConsentWorld, tmp_path) -> None:
    env = _one_notice(w, "HV")  # a genuine notice, dropped in the school's inbox
    [o] = _attack(w, "SCH", env, tmp_path)
    assert (o.outcome, o.code) == ("refused", "wrong_agency")


def test_hub_signed_message_of_another_kind_is_not_a_notice(w: ConsentWorld, tmp_path) -> None:
    request = {
        "request_version": 2,
        "request_id": "a" * 32,
        "agency": "SCH",
        "record_ref": w.ref("SCH", "1001"),
        "protocol_id": "mash_information_sharing",
    }
    env = {"notice": request, "signature": sign_request(request, w.hub_key)}
    [o] = _attack(w, "SCH", env, tmp_path)
    assert (o.outcome, o.code) == ("refused", "not_a_withdrawal_notice")


def test_hub_signed_notice_naming_another_agencys_record_is_refused(
    w: ConsentWorld, tmp_path
) -> None:
    env = _one_notice(w, "SCH")
    notice = {**env["notice"], "notice_id": "b" * 32, "record_refs": [w.ref("EH", "1001")]}
    [o] = _attack(w, "SCH", sign_notice(notice, w.hub_key), tmp_path)
    assert (o.outcome, o.code) == ("refused", "record_ref_not_this_agency")
    assert _applied(w, "SCH") == []


def test_replayed_notice_under_a_new_name_is_not_applied_twice(w: ConsentWorld, tmp_path) -> None:
    _withdraw(w)
    inbox = w.root / "hub" / "outbox" / "SCH"
    [f] = inbox.glob("*.json")
    assert [o.outcome for o in _apply(w, "SCH", inbox)] == ["applied"]
    shutil.copy(f, inbox / "zz-replayed.json")
    outcomes = _apply(w, "SCH", inbox)
    assert [o.outcome for o in outcomes] == ["already_applied", "already_applied"]
    assert len(_applied(w, "SCH")) == 1


def test_refused_notice_makes_the_cli_fail(w: ConsentWorld, tmp_path, capsys) -> None:
    env = _one_notice(w, "HV")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    env["notice"]["purpose"] = "mash"
    (inbox / "n.json").write_text(json.dumps(env))
    rc = bridge_cli(
        [
            "consent",
            "apply",
            "--agency-dir",
            str(w.root / "agency" / "HV"),
            "--agency",
            "HV",
            "--hub-public-key",
            str(w.hub_pem),
            "--inbox",
            str(inbox),
        ]
    )
    assert rc == 2 and "bad_signature" in capsys.readouterr().out
