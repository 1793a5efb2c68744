"""Append-only, hash-chained audit log with Ed25519-signed checkpoints.

entry_hash = SHA-256 over the canonical JSON (sorted keys, no whitespace, UTF-8) of
{seq, prev_hash, recorded_at, kind, body}, where body is the canonical JSON text stored verbatim.
Appends are serialised: a single-row chain head is locked (SELECT ... FOR UPDATE on PostgreSQL,
BEGIN IMMEDIATE on SQLite), and UNIQUE(seq), UNIQUE(prev_hash) refuse a fork if that ever fails.

CLI:  python -m governance.audit verify --db URL [--schema S] [--public-key FILE]
      python -m governance.audit keygen --out FILE
      python -m governance.audit checkpoint --db URL --key FILE
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Connection, Engine, create_engine, event, func, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from governance.models import GENESIS_HASH, AuditEntry, Base, ChainHead, Checkpoint

DEFAULT_DB_URL = "sqlite:///var/governance/governance.db"


class AuditError(RuntimeError):
    """The audit log could not be written; callers must fail closed (disclose nothing)."""


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def entry_hash(seq: int, prev_hash: str, recorded_at: str, kind: str, body_text: str) -> str:
    material = canonical_json(
        {"seq": seq, "prev_hash": prev_hash, "recorded_at": recorded_at, "kind": kind,
         "body": body_text}
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def _checkpoint_message(seq: int, entry_hash_: str, signed_at: str, key_id: str) -> bytes:
    return canonical_json(
        {"type": "joinedup-audit-checkpoint", "seq": seq, "entry_hash": entry_hash_,
         "signed_at": signed_at, "key_id": key_id}
    ).encode("utf-8")


def _raw_public(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(pub: Ed25519PublicKey) -> str:
    return hashlib.sha256(_raw_public(pub)).hexdigest()[:16]


# --- hub signing key ---------------------------------------------------------------------------

def generate_hub_key(path: Path) -> Ed25519PrivateKey:
    """Write a new Ed25519 key (PKCS8 PEM, mode 0600) and its public key next to it (.pub)."""
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
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


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise AuditError(f"{path}: not an Ed25519 public key")
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


@dataclass
class VerifyReport:
    ok: bool
    entries: int
    last_seq: int
    checkpoints: int
    first_bad_seq: int | None = None
    problem: str | None = None
    all_problems: list[tuple[int, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.ok:
            return (f"OK: {self.entries} entries, chain intact to entry {self.last_seq}; "
                    f"{self.checkpoints} signed checkpoint(s) verified")
        return f"TAMPERED: first bad entry is {self.first_bad_seq}. {self.problem}"


class AuditLog:
    def __init__(
        self,
        db: str | Engine = DEFAULT_DB_URL,
        *,
        schema: str | None = None,
        signing_key: Ed25519PrivateKey | None = None,
        checkpoint_every: int = 100,
        create: bool = True,
    ) -> None:
        self.engine = make_engine(db, schema) if isinstance(db, str) else db
        self.signing_key = signing_key
        self.checkpoint_every = checkpoint_every
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
                select(ChainHead.seq, ChainHead.entry_hash).where(ChainHead.id == 1)
                .with_for_update()
            ).one()
            seq, prev = head.seq + 1, head.entry_hash
            recorded_at = _now()
            h = entry_hash(seq, prev, recorded_at, kind, body_text)
            conn.execute(insert(AuditEntry).values(
                seq=seq, prev_hash=prev, entry_hash=h, recorded_at=recorded_at, kind=kind,
                body=body_text,
            ))
            moved = conn.execute(
                update(ChainHead).where(ChainHead.id == 1, ChainHead.seq == head.seq)
                .values(seq=seq, entry_hash=h)
            )
            if moved.rowcount != 1:
                raise AuditError("chain head moved during append")
            if also is not None:
                also(conn, seq)
            if self.signing_key is not None and seq % self.checkpoint_every == 0:
                self._sign(conn, seq, h)
            return AuditRecord(seq, prev, h, recorded_at, kind, body_text)

    def _sign(self, conn: Connection, seq: int, h: str) -> None:
        assert self.signing_key is not None
        pub = self.signing_key.public_key()
        kid, signed_at = key_id(pub), _now()
        sig = self.signing_key.sign(_checkpoint_message(seq, h, signed_at, kid))
        conn.execute(insert(Checkpoint).values(
            seq=seq, entry_hash=h, signed_at=signed_at, key_id=kid,
            public_key=base64.b64encode(_raw_public(pub)).decode(),
            signature=base64.b64encode(sig).decode(),
        ))

    def checkpoint(self) -> int | None:
        """Sign the current head now (e.g. at the end of a run); returns its seq, or None."""
        if self.signing_key is None:
            raise AuditError("no hub signing key configured")
        with self.engine.begin() as conn:
            head = conn.execute(
                select(ChainHead.seq, ChainHead.entry_hash).where(ChainHead.id == 1)
                .with_for_update()
            ).one()
            if head.seq == 0:
                return None
            exists = conn.execute(select(Checkpoint.seq).where(Checkpoint.seq == head.seq)).first()
            if exists is None:
                self._sign(conn, head.seq, head.entry_hash)
            return int(head.seq)

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(AuditEntry)).scalar_one())

    def get(self, seq: int) -> AuditRecord | None:
        with self.engine.connect() as conn:
            r = conn.execute(
                select(AuditEntry.seq, AuditEntry.prev_hash, AuditEntry.entry_hash,
                       AuditEntry.recorded_at, AuditEntry.kind, AuditEntry.body)
                .where(AuditEntry.seq == seq)
            ).first()
        if r is None:
            return None
        return AuditRecord(int(r.seq), r.prev_hash, r.entry_hash, r.recorded_at, r.kind, r.body)

    def entries(self, batch: int = 1000) -> Iterator[AuditRecord]:
        with self.engine.connect() as conn:
            rows = conn.execution_options(yield_per=batch).execute(
                select(AuditEntry.seq, AuditEntry.prev_hash, AuditEntry.entry_hash,
                       AuditEntry.recorded_at, AuditEntry.kind, AuditEntry.body)
                .order_by(AuditEntry.seq)
            )
            for r in rows:
                yield AuditRecord(int(r.seq), r.prev_hash, r.entry_hash, r.recorded_at, r.kind,
                                  r.body)

    def verify(
        self,
        public_key: Ed25519PublicKey | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> VerifyReport:
        """Check the whole chain, the head and every checkpoint. Stops the chain walk at the
        first break; reports the lowest bad seq found by any check."""
        problems: list[tuple[int, str]] = []
        notes: list[str] = []
        expected, prev = 1, GENESIS_HASH
        hashes: dict[int, str] = {}
        n = 0
        for e in self.entries():
            n += 1
            if progress is not None:
                progress(n)
            if e.seq != expected:
                problems.append((expected, f"entry {expected} is missing (next present is "
                                           f"{e.seq}): deleted"))
                break
            if e.prev_hash != prev:
                problems.append((e.seq, f"entry {e.seq}: prev_hash does not match entry "
                                        f"{e.seq - 1} (entry deleted, inserted or reordered here)"))
                break
            if entry_hash(e.seq, e.prev_hash, e.recorded_at, e.kind, e.body) != e.entry_hash:
                problems.append((e.seq, f"entry {e.seq}: content does not match its hash "
                                        f"(edited, inserted or moved)"))
                break
            hashes[e.seq] = e.entry_hash
            prev = e.entry_hash
            expected += 1
        last_seq = expected - 1

        with self.engine.connect() as conn:
            head = conn.execute(
                select(ChainHead.seq, ChainHead.entry_hash).where(ChainHead.id == 1)
            ).first()
            cps = conn.execute(select(*Checkpoint.__table__.c).order_by(Checkpoint.seq)).all()
        if not problems:
            if head is None:
                problems.append((1, "chain head row is missing"))
            elif head.seq != last_seq or head.entry_hash != prev:
                problems.append((min(head.seq, last_seq) + 1,
                                 f"chain head names entry {head.seq} but the log ends at entry "
                                 f"{last_seq}: tail truncated or head altered"))

        good_cps, prev_cp = 0, 0
        if cps and public_key is None:
            notes.append("checkpoint signatures checked against the key stored with them; "
                         "pass --public-key for a check against the hub's trusted key")
        for cp in cps:
            try:
                stored = Ed25519PublicKey.from_public_bytes(base64.b64decode(cp.public_key))
                pub = public_key or stored
                if public_key is not None and key_id(public_key) != cp.key_id:
                    raise InvalidSignature
                pub.verify(base64.b64decode(cp.signature),
                           _checkpoint_message(cp.seq, cp.entry_hash, cp.signed_at, cp.key_id))
            except (InvalidSignature, ValueError):
                problems.append((cp.seq, f"checkpoint at entry {cp.seq}: bad signature"))
                continue
            if cp.seq > last_seq and not problems:
                problems.append((last_seq + 1,
                                 f"log ends at entry {last_seq} but a signed checkpoint covers "
                                 f"entry {cp.seq}: tail truncated"))
            elif cp.seq in hashes and hashes[cp.seq] != cp.entry_hash:
                problems.append((prev_cp + 1,
                                 f"entries {prev_cp + 1}..{cp.seq} differ from the signed "
                                 f"checkpoint at entry {cp.seq}: chain rewritten"))
            else:
                good_cps += 1
            prev_cp = cp.seq
        if not cps and last_seq:
            notes.append("no signed checkpoints: truncation of the tail cannot be detected")
        elif cps and cps[-1].seq < last_seq:
            notes.append(f"entries after {cps[-1].seq} are not yet covered by a checkpoint")

        if problems:
            first = min(problems, key=lambda p: p[0])
            return VerifyReport(False, n, last_seq, good_cps, first[0], first[1],
                                sorted(problems), notes)
        return VerifyReport(True, n, last_seq, good_cps, notes=notes)


# --- CLI ---------------------------------------------------------------------------------------

def _cmd_verify(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = Console()
    if args.db.startswith("sqlite:///") and not Path(args.db.split("///", 1)[1]).exists():
        raise AuditError(f"no governance store at {args.db.split('///', 1)[1]}")
    log = AuditLog(args.db, schema=args.schema, create=False)
    pub = load_public_key(Path(args.public_key)) if args.public_key else None
    total = log.count()
    with Progress(TextColumn("verifying audit chain"), BarColumn(), MofNCompleteColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("verify", total=total)
        report = log.verify(pub, progress=lambda i: bar.update(task, completed=i)
                            if i % 500 == 0 or i == total else None)
    style = "bold green" if report.ok else "bold red"
    console.print(report.summary(), style=style)
    for seq, msg in report.all_problems[1:]:
        console.print(f"  also: entry {seq}: {msg}")
    for note in report.notes:
        console.print(f"  note: {note}", style="yellow")
    return 0 if report.ok else 1


def _cmd_keygen(args: argparse.Namespace) -> int:
    key = generate_hub_key(Path(args.out))
    print(f"wrote {args.out} (0600) and {Path(args.out).with_suffix('.pub')}; "
          f"key id {key_id(key.public_key())}")
    return 0


def _cmd_checkpoint(args: argparse.Namespace) -> int:
    log = AuditLog(args.db, schema=args.schema, signing_key=load_hub_key(Path(args.key)))
    seq = log.checkpoint()
    print("log is empty; nothing to sign" if seq is None else f"signed checkpoint at entry {seq}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m governance.audit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("verify", help="verify the hash chain and signed checkpoints")
    v.add_argument("--db", default=DEFAULT_DB_URL, help="SQLAlchemy URL of the governance store")
    v.add_argument("--schema", default=None, help="database schema (PostgreSQL)")
    v.add_argument("--public-key", default=None, help="hub public key (PEM) to trust")
    v.set_defaults(func=_cmd_verify)
    k = sub.add_parser("keygen", help="create the hub's Ed25519 checkpoint-signing key")
    k.add_argument("--out", required=True)
    k.set_defaults(func=_cmd_keygen)
    c = sub.add_parser("checkpoint", help="sign a checkpoint at the current head")
    c.add_argument("--db", default=DEFAULT_DB_URL)
    c.add_argument("--schema", default=None)
    c.add_argument("--key", required=True)
    c.set_defaults(func=_cmd_checkpoint)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (AuditError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        # The URL may carry a password: name the failure, not the URL.
        print(f"error: cannot read the governance store ({type(exc).__name__}); "
              f"is --db right and the log created?", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
