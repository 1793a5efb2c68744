"""Re-identification at the originating agency."""

import json
import stat

import pandas as pd
import pytest

from ig_bridge.keys import RecordRefError, generate_ref_key
from ig_bridge.reidentify import (
    ReidentificationRequest,
    frame_lookup,
    reidentify,
    verify_audit_chain,
)

# Record ids long enough that no ciphertext or request id in the audit log can contain
# one by chance (two-character ids did, in ~5% of runs).
EXTRACT = pd.DataFrame(
    {
        "record_id": ["LRN-000001", "LRN-000002", "LRN-000003"],
        "given_name": ["Ada", "D'Arcy", "Cleo"],
        "family_name": ["Lovelace", "Okri", "Ng"],
        "date_of_birth": ["2015-01-02", "2016-03-04", None],
        "address": ["1 Test Road", "2 Test Road", "3 Test Road"],
        "case_notes": ["never returned", "x", "y"],
    }
)


def _request():
    return ReidentificationRequest("P-CP-01", "sw.jones", "s47 strategy discussion")


def test_reidentify_roundtrip_and_audit(tmp_path):
    key = generate_ref_key("SCH")
    refs = [key.encrypt("LRN-000002"), key.encrypt("LRN-000001"), key.encrypt("LRN-000009")]
    log = tmp_path / "agency" / "audit.log"
    got = reidentify(refs, _request(), ref_keys=key, lookup=frame_lookup(EXTRACT), audit_log=log)
    assert [g.found for g in got] == [True, True, False]
    assert got[0].display["given_name"] == "D'Arcy" and got[1].display["family_name"] == "Lovelace"
    assert "case_notes" not in got[0].display
    assert "D'Arcy" not in repr(got[0])
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    text = log.read_text()
    entry = json.loads(text.splitlines()[-1])
    assert entry["outcome"] == "answered" and entry["found"] == 2 and entry["not_found"] == 1
    assert entry["protocol_id"] == "P-CP-01" and entry["record_refs"] == refs
    for secret in ("LRN-000001", "LRN-000002", "D'Arcy", "Lovelace", "Test Road"):
        assert secret not in text


def test_other_agencys_ref_fails_and_is_audited(tmp_path):
    mine, theirs = generate_ref_key("SCH"), generate_ref_key("GP")
    log = tmp_path / "audit.log"
    calls = []

    def lookup(ids):
        calls.append(ids)
        return {}

    with pytest.raises(RecordRefError, match=r"record_refs\[1\]"):
        reidentify(
            [mine.encrypt("LRN-000001"), theirs.encrypt("LRN-000001")],
            _request(),
            ref_keys=mine,
            lookup=lookup,
            audit_log=log,
        )
    assert calls == []  # nothing looked up for a refused request
    assert json.loads(log.read_text().splitlines()[-1])["outcome"] == "refused"


def test_audit_log_is_hash_chained(tmp_path):
    key = generate_ref_key("SCH")
    log = tmp_path / "audit.log"
    for rid in ("LRN-000001", "LRN-000002", "LRN-000003"):
        reidentify(
            [key.encrypt(rid)],
            _request(),
            ref_keys=key,
            lookup=frame_lookup(EXTRACT),
            audit_log=log,
        )
    assert verify_audit_chain(log) == 3
    lines = log.read_text().splitlines()
    lines[1] = lines[1].replace("s47", "s17")
    log.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="line 3"):
        verify_audit_chain(log)


def test_request_needs_context():
    with pytest.raises(ValueError, match="reason"):
        ReidentificationRequest("P1", "user", " ")
