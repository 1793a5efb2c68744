"""Tamper tests for the hash-chained audit log, on SQLite and on a real PostgreSQL.

Each kind of tampering (edit, delete, insert, reorder, truncate, rewrite, forged checkpoint) is
done with ordinary SQL on the real store, as an insider with database access would; verify
always runs against the IG lead's copy of the hub audit public key (tmp/ig_lead/trusted_keys),
never a key found beside the log. The signed-checkpoint attacks are in
test_audit_checkpoints.py."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from governance.audit import AuditLog, entry_hash, main
from governance.audit_keys import (
    HubAuditKey,
    TrustedKeys,
    create_audit_key,
    export_public_record,
)
from governance.models import AuditEntry, ChainHead

PG_SCHEMA_PREFIX = "gov_test"  # schema names of the shared `backend` fixture (conftest)
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def log(backend: tuple[str, str | None], hub_key: HubAuditKey) -> Iterator[AuditLog]:
    url, schema = backend
    lg = AuditLog(url, schema=schema, signing_key=hub_key, checkpoint_every=5)
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
    yield lg
    lg.engine.dispose()


def _hash_of(log: AuditLog, seq: int) -> str:
    rec = log.get(seq)
    assert rec is not None
    return rec.entry_hash


def _set_head(conn, seq: int, h: str) -> None:
    conn.execute(update(ChainHead).where(ChainHead.id == 1).values(seq=seq, entry_hash=h))


def _hash_of_conn(conn, seq: int) -> str:
    return conn.execute(select(AuditEntry.entry_hash).where(AuditEntry.seq == seq)).scalar_one()


def test_intact_chain_verifies(log: AuditLog, trusted: TrustedKeys) -> None:
    r = log.verify(trusted)
    assert r.ok and r.entries == 12 and r.last_seq == 12 and r.checkpoints == 2
    assert r.uncovered == 2 and r.last_checkpoint and r.last_checkpoint["entry_seq"] == 10
    cp = log.checkpoint("end_of_run")
    assert cp is not None and cp["cp_seq"] == 3 and cp["entry_seq"] == 12
    assert log.checkpoint("again") == cp  # nothing new to sign: the last one is returned
    r = log.verify(trusted)
    assert r.ok and r.checkpoints == 3 and r.uncovered == 0
    assert "reaches checkpoint #3 (entry 12" in r.summary()


def test_edit_is_detected_at_the_entry(log: AuditLog, trusted: TrustedKeys) -> None:
    with log.engine.begin() as conn:
        conn.execute(
            update(AuditEntry)
            .where(AuditEntry.seq == 7)
            .values(body='{"decision_id":"d6","fields":["case_notes"]}')
        )
    r = log.verify(trusted)
    assert not r.ok and r.first_bad_seq == 7 and "content does not match" in (r.problem or "")


def test_delete_is_detected(log: AuditLog, trusted: TrustedKeys) -> None:
    with log.engine.begin() as conn:
        conn.execute(delete(AuditEntry).where(AuditEntry.seq == 4))
    r = log.verify(trusted)
    assert not r.ok and r.first_bad_seq == 4 and "missing" in (r.problem or "")


def test_delete_and_renumber_is_detected(log: AuditLog, trusted: TrustedKeys) -> None:
    with log.engine.begin() as conn:
        conn.execute(delete(AuditEntry).where(AuditEntry.seq == 4))
        for s in range(5, 13):
            conn.execute(update(AuditEntry).where(AuditEntry.seq == s).values(seq=s - 1))
        _set_head(conn, 11, _hash_of_conn(conn, 11))
    r = log.verify(trusted)
    assert not r.ok and r.first_bad_seq == 4 and "prev_hash" in (r.problem or "")


def test_insert_is_detected(log: AuditLog, trusted: TrustedKeys) -> None:
    with log.engine.begin() as conn:
        for s in range(12, 5, -1):
            conn.execute(update(AuditEntry).where(AuditEntry.seq == s).values(seq=s + 1))
        prev, at, body = secrets.token_hex(32), "2026-01-01T00:00:00+00:00", '{"fake":true}'
        conn.execute(
            insert(AuditEntry).values(
                seq=6,
                prev_hash=prev,
                entry_hash=entry_hash(6, prev, at, "decision", body),
                recorded_at=at,
                kind="decision",
                body=body,
            )
        )
        _set_head(conn, 13, _hash_of_conn(conn, 13))
    r = log.verify(trusted)
    assert not r.ok and r.first_bad_seq == 6


def test_fork_is_refused_by_the_database(log: AuditLog, trusted: TrustedKeys) -> None:
    """The UNIQUE backstop: a second successor of entry 11, or a reused seq, cannot be stored."""
    h11 = _hash_of(log, 11)
    at, body = "2026-01-01T00:00:00+00:00", '{"fork":true}'
    with pytest.raises(IntegrityError), log.engine.begin() as conn:
        conn.execute(
            insert(AuditEntry).values(
                seq=13,
                prev_hash=h11,
                entry_hash=entry_hash(13, h11, at, "decision", body),
                recorded_at=at,
                kind="decision",
                body=body,
            )
        )
    with pytest.raises(IntegrityError), log.engine.begin() as conn:
        conn.execute(
            insert(AuditEntry).values(
                seq=12,
                prev_hash=secrets.token_hex(32),
                entry_hash=secrets.token_hex(32),
                recorded_at=at,
                kind="decision",
                body=body,
            )
        )
    assert log.verify(trusted).ok


def test_reorder_is_detected(log: AuditLog, trusted: TrustedKeys) -> None:
    with log.engine.begin() as conn:
        conn.execute(update(AuditEntry).where(AuditEntry.seq == 3).values(seq=-1))
        conn.execute(update(AuditEntry).where(AuditEntry.seq == 4).values(seq=3))
        conn.execute(update(AuditEntry).where(AuditEntry.seq == -1).values(seq=4))
    r = log.verify(trusted)
    assert not r.ok and r.first_bad_seq == 3


def test_truncation_without_moving_head_is_detected(log: AuditLog, trusted: TrustedKeys) -> None:
    with log.engine.begin() as conn:
        conn.execute(delete(AuditEntry).where(AuditEntry.seq > 11))
    r = log.verify(trusted)
    assert not r.ok and r.first_bad_seq == 12 and "head" in (r.problem or "")


def test_cli_verify_exit_codes(log: AuditLog, backend, tmp_path: Path, capsys) -> None:
    url, schema = backend
    args = ["verify", "--db", url, "--trusted-key", str(tmp_path / "ig_lead" / "trusted_keys")]
    if schema:
        args += ["--schema", schema]
    assert main(args) == 0
    assert "OK: 12 entries" in capsys.readouterr().out
    with log.engine.begin() as conn:
        conn.execute(update(AuditEntry).where(AuditEntry.seq == 2).values(kind="edited"))
    assert main(args) == 1
    assert "first bad entry is 2" in capsys.readouterr().out


def test_cli_as_a_module(tmp_path: Path) -> None:
    key = create_audit_key(tmp_path / "hub" / "keys")
    record = export_public_record(key, tmp_path / "ig_lead")
    url = f"sqlite:///{tmp_path}/hub/g.db"
    lg = AuditLog(url, signing_key=key)
    lg.append("decision", {"decision_id": "x"})
    cp = subprocess.run(
        [
            sys.executable,
            "-m",
            "governance.audit",
            "checkpoint",
            "--db",
            url,
            "--key",
            str(tmp_path / "hub" / "keys"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert cp.returncode == 0 and "checkpoint #1 covers entries 1..1" in cp.stdout, cp.stderr
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "governance.audit",
            "verify",
            "--db",
            url,
            "--trusted-key",
            str(record),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert "chain intact to entry 1" in ok.stdout
    lg.engine.dispose()


def test_cli_missing_store(tmp_path: Path, hub_key: HubAuditKey, capsys) -> None:
    args = [
        "verify",
        "--db",
        f"sqlite:///{tmp_path}/none/none.db",
        "--trusted-key",
        str(tmp_path / "ig_lead" / "trusted_keys"),
    ]
    assert main(args) == 2
    assert "no governance store" in capsys.readouterr().err
    assert not (tmp_path / "none" / "none.db").exists()
