"""Attacks on the signed checkpoints of the audit log, end to end on real stores and keys.

A hub insider with database access (SQLite file or PostgreSQL, plain SQL) rewrites, deletes,
truncates and re-signs; the IG lead verifies with the CLI against their own copy of the hub's
audit public key (tmp/ig_lead/trusted_keys), never a key found beside the log. Every attack
must make `verify` fail (exit 1), or refuse (exit 2) when no trusted key is given."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select, update

from governance.audit import AuditError, AuditLog, entry_hash, main
from governance.audit_checkpointer import attach_checkpointer, process_origin
from governance.audit_keys import (
    AuditKeyError,
    HubAuditKey,
    TrustedKeys,
    create_audit_key,
    export_public_record,
    load_audit_key,
    load_trusted_keys,
)
from governance.models import AuditEntry, ChainHead, Checkpoint

PG_SCHEMA_PREFIX = "gov_cp"  # schema names of the shared `backend` fixture (conftest)


@pytest.fixture
def log(backend: tuple[str, str | None], hub_key: HubAuditKey) -> Iterator[AuditLog]:
    """12 decisions; checkpoints #1 (entry 5), #2 (entry 10) and #3 (entry 12, end of run)."""
    url, schema = backend
    lg = AuditLog(
        url, schema=schema, signing_key=hub_key, checkpoint_every=5, origin="hub_run:test"
    )
    for i in range(12):
        lg.append(
            "decision",
            {
                "decision_id": f"d{i}",
                "user_id": f"u{i % 3}",
                "subject": {"person_id": f"P-{i:04d}"},
                "fields": ["risk_level"],
            },
        )
    assert lg.checkpoint("end_of_run")["cp_seq"] == 3
    yield lg
    lg.engine.dispose()


def _cli(backend: tuple[str, str | None], *extra: str) -> list[str]:
    url, schema = backend
    return ["verify", "--db", url, *extra, *(["--schema", schema] if schema else [])]


def _trusted_arg(tmp_path: Path) -> tuple[str, str]:
    return "--trusted-key", str(tmp_path / "ig_lead" / "trusted_keys")


def _rewrite_from(conn, seq: int, body: str) -> str:
    """Replace entry `seq`'s body and recompute every later hash and the head, as an insider
    who knows the hash construction would. Returns the new head hash."""
    rows = conn.execute(
        select(AuditEntry).where(AuditEntry.seq >= seq - 1).order_by(AuditEntry.seq)
    ).all()
    prev = rows[0].entry_hash if rows[0].seq == seq - 1 else "0" * 64
    for r in rows if rows[0].seq == seq else rows[1:]:
        b = body if r.seq == seq else r.body
        h = entry_hash(r.seq, prev, r.recorded_at, r.kind, b)
        conn.execute(
            update(AuditEntry)
            .where(AuditEntry.seq == r.seq)
            .values(prev_hash=prev, entry_hash=h, body=b)
        )
        prev = h
    last = rows[-1].seq
    conn.execute(update(ChainHead).where(ChainHead.id == 1).values(seq=last, entry_hash=prev))
    return prev


def _truncate_after(conn, seq: int) -> None:
    conn.execute(delete(AuditEntry).where(AuditEntry.seq > seq))
    h = conn.execute(select(AuditEntry.entry_hash).where(AuditEntry.seq == seq)).scalar_one()
    conn.execute(update(ChainHead).where(ChainHead.id == 1).values(seq=seq, entry_hash=h))


def test_rewrite_with_every_later_hash_and_the_head_recomputed_fails(
    log: AuditLog, trusted: TrustedKeys, backend, tmp_path: Path, capsys
) -> None:
    with log.engine.begin() as conn:
        _rewrite_from(conn, 7, '{"decision_id":"d6","fields":["case_notes"]}')
    r = log.verify(trusted)
    assert not r.ok and not r.refused
    assert r.first_bad_seq == 6 and r.first_bad_checkpoint == 2  # entries 6..10 vs checkpoint #2
    assert "differ from signed checkpoint #2" in (r.problem or "")
    assert main(_cli(backend, *_trusted_arg(tmp_path))) == 1
    assert "TAMPERED: first bad entry is 6" in capsys.readouterr().out


def test_deleting_the_tail_fails(
    log: AuditLog, trusted: TrustedKeys, backend, tmp_path: Path, capsys
) -> None:
    with log.engine.begin() as conn:
        _truncate_after(conn, 8)  # a careful insider also moves the head
    r = log.verify(trusted)
    assert not r.ok and r.first_bad_seq == 9 and r.first_bad_checkpoint == 2
    assert "signed checkpoint #2 (entry 10) covers more: tail truncated" in (r.problem or "")
    assert main(_cli(backend, *_trusted_arg(tmp_path))) == 1
    assert "TAMPERED" in capsys.readouterr().out


def test_cutting_the_checkpoint_history_fails(log: AuditLog, trusted: TrustedKeys) -> None:
    with log.engine.begin() as conn:
        conn.execute(delete(Checkpoint).where(Checkpoint.cp_seq == 2))
    r = log.verify(trusted)
    assert not r.ok and r.first_bad_checkpoint == 2 and "checkpoint #2 is missing" in r.problem
    with log.engine.begin() as conn:  # restore nothing; now also edit a kept checkpoint
        conn.execute(
            update(Checkpoint).where(Checkpoint.cp_seq == 1).values(entry_seq=4, entry_count=4)
        )
    r = log.verify(trusted)
    assert not r.ok and r.first_bad_checkpoint == 1


@pytest.mark.parametrize("label", ["same key id", "new key id"])
def test_truncate_and_resign_with_a_key_of_their_own_fails(
    log: AuditLog, trusted: TrustedKeys, backend, tmp_path: Path, capsys, label: str
) -> None:
    """The insider holds the database, not the hub's key nor the IG lead's trusted record:
    they cut the tail, delete every checkpoint, make their own key (with the hub key's id, or
    a new version) and re-sign the truncated chain, leaving their public record beside the
    log. The IG lead's copy of the key refuses it."""
    own_dir = tmp_path / "insider" / "keys"
    own = create_audit_key(own_dir, version=1 if label == "same key id" else 2)
    export_public_record(own, tmp_path / "hub" / "keys")  # "the key next to the log"
    with log.engine.begin() as conn:
        _truncate_after(conn, 8)
        conn.execute(delete(Checkpoint))
    url, schema = backend
    forger = AuditLog(url, schema=schema, signing_key=own, create=False, origin="hub_run:x")
    assert forger.checkpoint("end_of_run")["entry_seq"] == 8
    forger.engine.dispose()
    r = log.verify(trusted)
    assert not r.ok and r.first_bad_checkpoint == 1
    assert ("bad signature" if label == "same key id" else "not a trusted key") in r.problem
    assert main(_cli(backend, *_trusted_arg(tmp_path))) == 1
    assert "TAMPERED" in capsys.readouterr().out
    if schema is None:  # the insider's record beside the SQLite log is never accepted
        beside = str(tmp_path / "hub" / "keys" / f"{own.key_id}.json")
        assert main(_cli(backend, "--trusted-key", beside)) == 2
        assert "beside the governance store" in capsys.readouterr().err


def test_verify_without_a_trusted_key_refuses(log: AuditLog, backend, capsys) -> None:
    r = log.verify(None)
    assert r.refused and not r.ok and "no trusted public key" in (r.problem or "")
    assert r.summary().startswith("REFUSED")
    assert main(_cli(backend)) == 2
    assert "REFUSED: no trusted public key given" in capsys.readouterr().out


def test_a_broken_chain_is_never_signed(log: AuditLog, trusted: TrustedKeys) -> None:
    """A naive edit after the last checkpoint: the next checkpoint (hub run end, API start)
    refuses to sign it, and nothing is added to the checkpoint history."""
    log.append("decision", {"decision_id": "d12"})
    with log.engine.begin() as conn:
        conn.execute(update(AuditEntry).where(AuditEntry.seq == 13).values(kind="edited"))
    with pytest.raises(AuditError, match="broken at entry 13"):
        log.checkpoint("end_of_run")
    with log.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Checkpoint)).scalar_one() == 3
    assert not log.verify(trusted).ok


def test_an_edit_under_an_old_checkpoint_stops_the_api_and_the_hub_run_signing(
    log: AuditLog, trusted: TrustedKeys
) -> None:
    """An insider edits entry 2 (covered long ago) and leaves the hashes: the API process's
    start-up and the hub run's end re-check the whole chain, refuse to sign, and the API does
    not start."""
    log.append("decision", {"decision_id": "d12"})
    with log.engine.begin() as conn:
        conn.execute(update(AuditEntry).where(AuditEntry.seq == 2).values(body='{"x":1}'))
    with pytest.raises(AuditError, match="broken at entry 2"):
        log.checkpoint("end_of_run", full=True)
    app = FastAPI()
    attach_checkpointer(app, log, every_seconds=3600)
    with pytest.raises(AuditError, match="broken at entry 2"), TestClient(app):
        pass
    with log.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Checkpoint)).scalar_one() == 3
    r = log.verify(trusted)
    assert not r.ok and r.first_bad_seq == 2


def test_the_ig_leads_receipt_catches_a_rollback_and_a_resigned_history(
    log: AuditLog, trusted: TrustedKeys, hub_key: HubAuditKey, backend, tmp_path: Path, capsys
) -> None:
    """The residual case: an insider who also deletes the checkpoints over the tail, or who
    holds the hub's private key and re-signs a rewritten history, leaves a log that verifies
    on its own. The receipt the IG lead kept from the last verify (outside the hub) does not
    match, and verify fails."""
    receipt = tmp_path / "ig_lead" / "audit_receipt.json"
    assert main(_cli(backend, *_trusted_arg(tmp_path), "--receipt", str(receipt))) == 0
    assert json.loads(receipt.read_text())["checkpoint"]["cp_seq"] == 3
    capsys.readouterr()
    # rollback: cut the tail and the checkpoints over it; the log alone still verifies
    with log.engine.begin() as conn:
        _truncate_after(conn, 5)
        conn.execute(delete(Checkpoint).where(Checkpoint.cp_seq > 1))
    assert log.verify(trusted).ok  # documented residual without the receipt
    assert main(_cli(backend, *_trusted_arg(tmp_path), "--receipt", str(receipt))) == 1
    assert "which the IG lead verified" in capsys.readouterr().out
    # re-signed with the real hub key after rewriting entry 2
    with log.engine.begin() as conn:
        _rewrite_from(conn, 2, '{"decision_id":"d1","fields":[]}')
        conn.execute(delete(Checkpoint))
    assert log.checkpoint("end_of_run")["cp_seq"] == 1
    assert log.verify(trusted).ok
    assert main(_cli(backend, *_trusted_arg(tmp_path), "--receipt", str(receipt))) == 1
    assert json.loads(receipt.read_text())["checkpoint"]["cp_seq"] == 3  # kept as it was


def test_key_files_and_rotation(tmp_path: Path, backend) -> None:
    keys = tmp_path / "hub" / "keys"
    v1 = create_audit_key(keys)
    path = keys / "audit_signing.v1.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.stat().st_mode) & 0o077 == 0
    assert "secret" not in repr(v1) and "redacted" in repr(v1)
    os.chmod(path, 0o644)
    with pytest.raises(AuditKeyError, match="owner only"):
        load_audit_key(keys)
    os.chmod(path, 0o600)
    ig = tmp_path / "ig_lead" / "trusted_keys"
    export_public_record(v1, ig)
    url, schema = backend
    lg = AuditLog(url, schema=schema, signing_key=load_audit_key(keys))
    lg.append("decision", {"i": 1})
    lg.checkpoint()
    v2 = create_audit_key(keys)  # rotation: the newest version signs from now on
    assert load_audit_key(keys).key_id == v2.key_id == "hub-audit-ed25519-v2"
    only_v1 = load_trusted_keys(ig)
    export_public_record(v2, ig)
    lg.signing_key = load_audit_key(keys)
    lg.append("decision", {"i": 2})
    assert lg.checkpoint()["key_id"] == "hub-audit-ed25519-v2"
    assert lg.verify(load_trusted_keys(ig)).ok
    r = lg.verify(only_v1)
    assert not r.ok and r.first_bad_checkpoint == 2 and "not a trusted key" in r.problem
    lg.engine.dispose()


def test_api_process_checkpoints_at_start_periodically_and_at_shutdown(
    backend, hub_key: HubAuditKey, trusted: TrustedKeys
) -> None:
    url, schema = backend
    lg = AuditLog(url, schema=schema, signing_key=hub_key, origin=process_origin("api"))
    lg.append("decision", {"before": "start"})
    app = FastAPI()

    @app.post("/decide")
    def decide() -> dict[str, int]:
        return {"seq": lg.append("decision", {"via": "api"}).seq}

    ticker = attach_checkpointer(app, lg, every_seconds=0.2)
    with TestClient(app) as client:
        with lg.engine.connect() as conn:
            assert [c.origin.rsplit("/", 1)[1] for c in conn.execute(select(Checkpoint))] == [
                "start"
            ]
        client.post("/decide")
        deadline = time.monotonic() + 10
        while lg.verify(trusted).uncovered and time.monotonic() < deadline:
            time.sleep(0.1)
        ticker.every = 3600  # no further periodic tick: the next entry is left to shutdown
        time.sleep(0.5)
        client.post("/decide")
    with lg.engine.connect() as conn:
        origins = [c.origin for c in conn.execute(select(Checkpoint).order_by(Checkpoint.cp_seq))]
    assert [o.rsplit("/", 1)[1] for o in origins] == ["start", "periodic", "stop"]
    assert all(o.startswith("api:") and f":{os.getpid()}/" in o for o in origins)
    r = lg.verify(trusted)
    assert r.ok and r.uncovered == 0 and r.last_seq == 3
    lg.engine.dispose()
