"""Append-only, hash-chained audit log with Ed25519-signed checkpoints.

entry_hash = SHA-256 over the canonical JSON (sorted keys, no whitespace, UTF-8) of
{seq, prev_hash, recorded_at, kind, body}, where body is the canonical JSON text stored verbatim.
Appends are serialised: a single-row chain head is locked (SELECT ... FOR UPDATE on PostgreSQL,
BEGIN IMMEDIATE on SQLite), and UNIQUE(seq), UNIQUE(prev_hash) refuse a fork if that ever fails.

Checkpoints (signed with the hub's audit key, governance.audit_keys) and verification against
the IG lead's trusted key are in governance.audit_checkpoints; the CLI in governance.audit_cli:
      python -m governance.audit verify --db URL [--schema S] --trusted-key FILE|DIR [--receipt F]
      python -m governance.audit keygen --keys-dir HUB_KEYS --export IG_LEAD_DIR
      python -m governance.audit checkpoint --db URL --key HUB_KEYS
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Connection, Engine, create_engine, event, func, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from governance.models import GENESIS_HASH, AuditEntry, Base, ChainHead

if TYPE_CHECKING:
    from governance.audit_checkpoints import VerifyReport
    from governance.audit_keys import HubAuditKey, TrustedKeys

DEFAULT_DB_URL = "sqlite:///var/governance/governance.db"


class AuditError(RuntimeError):
    """The audit log could not be written; callers must fail closed (disclose nothing)."""


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def entry_hash(seq: int, prev_hash: str, recorded_at: str, kind: str, body_text: str) -> str:
    material = canonical_json(
        {
            "seq": seq,
            "prev_hash": prev_hash,
            "recorded_at": recorded_at,
            "kind": kind,
            "body": body_text,
        }
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


# --- the hub's identity-request key (PEM; the audit key is governance.audit_keys) ---------------


def key_id(pub: Ed25519PublicKey) -> str:
    """Short id of an identity-request public key (SHA-256 of the raw key, 16 hex)."""
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_hub_key(path: Path) -> Ed25519PrivateKey:
    """Write a new Ed25519 key (PKCS8 PEM, mode 0600) and its public key next to it (.pub)."""
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    pub_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path.with_suffix(".pub").write_bytes(pub_pem)
    return key


def load_hub_key(path: Path) -> Ed25519PrivateKey:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AuditError(f"{path}: hub signing key must not be group/world accessible (chmod 600)")
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditError(f"{path}: not an Ed25519 private key")
    return key


# --- engine ------------------------------------------------------------------------------------


def make_engine(url: str, schema: str | None = None) -> Engine:
    """Engine for the governance store. On SQLite every transaction is BEGIN IMMEDIATE."""
    if url.startswith("sqlite"):
        db_path = url.split("///", 1)[-1]
        if db_path and db_path != ":memory:" and not url.endswith("://"):
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _no_implicit_tx(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not pysqlite, decide when a transaction starts.
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn: Connection) -> None:
            # Take the write lock up front: two appenders can never read the same head.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        engine = create_engine(url, pool_pre_ping=True)
    if schema is not None:
        engine = engine.execution_options(schema_translate_map={None: schema})
    return engine


# --- log ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    prev_hash: str
    entry_hash: str
    recorded_at: str
    kind: str
    body: str

    def data(self) -> dict[str, Any]:
        return json.loads(self.body)


class AuditLog:
    def __init__(
        self,
        db: str | Engine = DEFAULT_DB_URL,
        *,
        schema: str | None = None,
        signing_key: HubAuditKey | None = None,
        checkpoint_every: int = 100,
        create: bool = True,
        origin: str = "hub",
    ) -> None:
        """`signing_key`: the hub's audit key; with it, every `checkpoint_every`-th append is
        checkpointed in its own transaction. `origin` names this process in its checkpoints."""
        self.engine = make_engine(db, schema) if isinstance(db, str) else db
        self.signing_key = signing_key
        self.checkpoint_every = checkpoint_every
        self.origin = origin
        # protocol id -> {protocol_version, protocol_sha256}: set by governance.decisions so
        # every entry naming a protocol also names the exact version it was decided under.
        self.protocol_stamp: Callable[[str], dict[str, Any]] | None = None
        if create:
            self.create()

    def create(self) -> None:
        Base.metadata.create_all(self.engine)
        try:
            with self.engine.begin() as conn:
                if conn.execute(select(ChainHead.id)).first() is None:
                    conn.execute(insert(ChainHead).values(id=1, seq=0, entry_hash=GENESIS_HASH))
        except IntegrityError:
            pass  # another process created the head at the same moment

    def append(
        self,
        kind: str,
        body: Mapping[str, Any],
        *,
        also: Callable[[Connection, int], None] | None = None,
        attempts: int = 5,
    ) -> AuditRecord:
        """Append one entry; `also(conn, seq)` runs in the same transaction (alerts etc.)."""
        pid = body.get("protocol_id")
        if (
            self.protocol_stamp is not None
            and isinstance(pid, str)
            and ("protocol_sha256" not in body)
        ):
            body = {**body, **self.protocol_stamp(pid)}
        body_text = canonical_json(body)
        last_exc: Exception | None = None
        for attempt in range(attempts):
            try:
                return self._append_once(kind, body_text, also)
            except (IntegrityError, OperationalError) as exc:
                # Lock timeout or the UNIQUE backstop: the transaction rolled back; try again.
                last_exc = exc
                time.sleep(0.05 * (attempt + 1))
        raise AuditError(f"audit append failed after {attempts} attempts") from last_exc

    def _append_once(
        self, kind: str, body_text: str, also: Callable[[Connection, int], None] | None
    ) -> AuditRecord:
        with self.engine.begin() as conn:
            head = conn.execute(
                select(ChainHead.seq, ChainHead.entry_hash)
                .where(ChainHead.id == 1)
                .with_for_update()
            ).one()
            seq, prev = head.seq + 1, head.entry_hash
            recorded_at = _now()
            h = entry_hash(seq, prev, recorded_at, kind, body_text)
            conn.execute(
                insert(AuditEntry).values(
                    seq=seq,
                    prev_hash=prev,
                    entry_hash=h,
                    recorded_at=recorded_at,
                    kind=kind,
                    body=body_text,
                )
            )
            moved = conn.execute(
                update(ChainHead)
                .where(ChainHead.id == 1, ChainHead.seq == head.seq)
                .values(seq=seq, entry_hash=h)
            )
            if moved.rowcount != 1:
                raise AuditError("chain head moved during append")
            if also is not None:
                also(conn, seq)
            if self.signing_key is not None and seq % self.checkpoint_every == 0:
                self._sign(conn, seq, h, f"every_{self.checkpoint_every}")
            return AuditRecord(seq, prev, h, recorded_at, kind, body_text)

    def _sign(
        self, conn: Connection, seq: int, h: str, reason: str, full: bool = False
    ) -> dict[str, Any] | None:
        from governance.audit_checkpoints import sign_head

        assert self.signing_key is not None
        return sign_head(conn, self.signing_key, seq, h, f"{self.origin}/{reason}", full=full)

    def checkpoint(self, reason: str = "on_demand", *, full: bool = False) -> dict[str, Any] | None:
        """Sign the current head now (end of a hub run, API start/stop, periodically). Returns
        the new checkpoint, the last one if it already covers the head, or None if empty.
        Raises AuditError, signing nothing, if the chain since the last checkpoint (with `full`:
        the whole chain, against every earlier checkpoint) is broken."""
        from governance.audit_checkpoints import _cp_dict, last_checkpoint

        if self.signing_key is None:
            raise AuditError("no hub audit signing key configured")
        with self.engine.begin() as conn:
            head = conn.execute(
                select(ChainHead.seq, ChainHead.entry_hash)
                .where(ChainHead.id == 1)
                .with_for_update()
            ).one()
            made = self._sign(conn, int(head.seq), head.entry_hash, reason, full)
            if made is not None:
                return made
            last = last_checkpoint(conn)
            return None if last is None else _cp_dict(last)

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(AuditEntry)).scalar_one())

    def get(self, seq: int) -> AuditRecord | None:
        with self.engine.connect() as conn:
            r = conn.execute(
                select(
                    AuditEntry.seq,
                    AuditEntry.prev_hash,
                    AuditEntry.entry_hash,
                    AuditEntry.recorded_at,
                    AuditEntry.kind,
                    AuditEntry.body,
                ).where(AuditEntry.seq == seq)
            ).first()
        if r is None:
            return None
        return AuditRecord(int(r.seq), r.prev_hash, r.entry_hash, r.recorded_at, r.kind, r.body)

    def entries(self, batch: int = 1000) -> Iterator[AuditRecord]:
        with self.engine.connect() as conn:
            rows = conn.execution_options(yield_per=batch).execute(
                select(
                    AuditEntry.seq,
                    AuditEntry.prev_hash,
                    AuditEntry.entry_hash,
                    AuditEntry.recorded_at,
                    AuditEntry.kind,
                    AuditEntry.body,
                ).order_by(AuditEntry.seq)
            )
            for r in rows:
                yield AuditRecord(
                    int(r.seq), r.prev_hash, r.entry_hash, r.recorded_at, r.kind, r.body
                )

    def verify(
        self,
        trusted: TrustedKeys | None,
        *,
        receipt: dict[str, Any] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> VerifyReport:
        """Check the chain, the head and every checkpoint against the IG lead's trusted keys;
        without them the report is `refused` (never ok). See governance.audit_checkpoints."""
        from governance.audit_checkpoints import verify_log

        return verify_log(self, trusted, receipt=receipt, progress=progress)


# --- CLI (governance.audit_cli) ------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    from governance.audit_cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
