"""A withdrawal the agency's bridge applied is carried in its next extract: the real Early Help
extract bridged twice, the hub's signed notice applied in between; the second batch (opened
with the hub's key, as only the hub can) says withdrawn for that record and nothing else
changed."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sealed_batches import open_batch

from governance.consent_notices import sign_notice
from ig_bridge.consent_notice import apply_notices
from ig_bridge.keys import KeyStore, decrypt_record_ref
from ig_bridge.reid_service import load_hub_public_key
from ig_bridge.split import run_bridge
from synthetic_data.generate import generate_population
from synthetic_data.parties import provision_partnership

MAPPINGS = Path(__file__).resolve().parent.parent / "schemas" / "agencies"


def _payload(res, dest: Path) -> pd.DataFrame:  # noqa: ANN001 - BatchResult
    return pd.read_parquet(open_batch(res.landed_path, dest) / "payload.parquet")


def test_applied_withdrawal_is_carried_in_the_next_extract(tmp_path: Path) -> None:
    summary = generate_population(tmp_path / "population", seed=20261203, people=120)
    provision_partnership(tmp_path, ["EH"], passphrase="consent carry test, synthetic only")
    extract = tmp_path / "population" / summary.agencies["EH"].file
    agency_dir = tmp_path / "agency" / "EH"
    first = _payload(
        run_bridge(extract, MAPPINGS / "eh.yaml", agency_dir, tmp_path / "landing"),
        tmp_path / "open1",
    )
    given = first[(first["consent_status"] == "given") & (first["consent_purpose"] == "early_help")]
    assert len(given) >= 2, "the synthetic Early Help extract has consent given"
    ref = given["record_ref"].iloc[0]
    ref_keys = KeyStore(agency_dir / "keys", "EH").ref_keys()
    local = decrypt_record_ref(ref, ref_keys)
    when = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)
    hub = Ed25519PrivateKey.generate()
    pem = tmp_path / "hub.pem"
    pem.write_bytes(
        hub.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    notice = {
        "notice_version": 1,
        "kind": "consent_withdrawal",
        "notice_id": "c" * 32,
        "agency": "EH",
        "record_refs": [ref],
        "purpose": "early_help",
        "categories": ["involvement"],
        "agencies_in_scope": ["EH"],
        "consent_record_id": "d" * 32,
        "withdrawn_at": when.isoformat(),
        "hub_audit_seq": 7,
        "issued_at": when.isoformat(),
        "hub_key_id": "x",
    }
    (inbox / "n.json").write_text(json.dumps(sign_notice(notice, hub)))
    [o] = apply_notices(inbox, agency_dir, "EH", load_hub_public_key(pem))
    assert o.outcome == "applied"
    second = _payload(
        run_bridge(extract, MAPPINGS / "eh.yaml", agency_dir, tmp_path / "landing"),
        tmp_path / "open2",
    )
    a = first.drop(columns=["batch_id"]).set_index("record_ref").sort_index()
    b = second.drop(columns=["batch_id"]).set_index("record_ref").sort_index()
    changed = [r for r in a.index if not a.loc[[r]].equals(b.loc[[r]])]
    assert changed == [ref]
    row = b.loc[ref]
    assert row["consent_status"] == "withdrawn"
    assert pd.Timestamp(row["consent_date"]).date() == when.date()
    assert decrypt_record_ref(ref, ref_keys) == local
