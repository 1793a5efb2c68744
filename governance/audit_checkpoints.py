"""Signed checkpoints of the audit log, and its verification against the IG lead's trusted key.

A checkpoint signs {cp_seq, prev_cp_hash, entry_seq, entry_hash, entry_count, signed_at, key_id,
origin} (canonical JSON) with the hub's audit key; cp_hash = SHA-256 of that message, and the
next checkpoint names it as prev_cp_hash, so checkpoints are a chain of their own. Before
signing, the entries since the last checkpoint are re-hashed from it: a broken chain is never
signed. `verify_log` needs the trusted public keys (never the ones stored with the log), checks
every checkpoint and that the chain still reaches each checkpointed hash, and names the first
divergence. An IG lead's receipt (the last checkpoint they verified, kept by them) also catches
a rollback or a re-signed history by someone holding the hub's private key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from sqlalchemy import Connection, Engine, insert, select

from governance.audit import (
    AuditError,
    _now,
    canonical_json,
    entry_hash,
)
from governance.audit_keys import HubAuditKey, TrustedKeys
from governance.models import GENESIS_HASH, AuditEntry, ChainHead, Checkpoint

MESSAGE_TYPE = "joinedup-audit-checkpoint/2"
RECEIPT_FORMAT = "joinedup-audit-receipt/1"
NO_TRUSTED_KEY = (
    "no trusted public key given: refusing to answer. Give the hub audit public "
    "key record the IG lead keeps (--trusted-key FILE or folder); the key stored "
    "next to the log is never trusted"
)
_FIELDS = (
    "cp_seq",
    "prev_cp_hash",
    "entry_seq",
    "entry_hash",
    "entry_count",
    "signed_at",
    "key_id",
    "origin",
)


def checkpoint_message(cp: Any) -> bytes:
    """The signed bytes of a checkpoint row (or mapping with the same fields)."""
    get = cp.get if isinstance(cp, dict) else lambda k: getattr(cp, k)
    doc = {k: get(k) for k in _FIELDS}
    for k in ("cp_seq", "entry_seq", "entry_count"):
        doc[k] = int(doc[k])
    return canonical_json({"type": MESSAGE_TYPE, **doc}).encode("utf-8")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_chain(
    conn: Connection, start: int, prev: str, head_seq: int, head_hash: str, at: dict[int, Any]
) -> None:
    """Re-hash entries start+1..head from `prev` (the hash of entry `start`, already checked)
    and compare the checkpoints in `at` (entry seq -> row) on the way; raise if broken."""
    rows = conn.execute(  # streamed; the option is on the statement, not the connection
        select(
            AuditEntry.seq,
            AuditEntry.prev_hash,
            AuditEntry.entry_hash,
            AuditEntry.recorded_at,
            AuditEntry.kind,
            AuditEntry.body,
        )
        .where(AuditEntry.seq > start, AuditEntry.seq <= head_seq)
        .order_by(AuditEntry.seq)
        .execution_options(yield_per=1000)
    )
    expected = start + 1
    for e in rows:
        ok = (
            e.seq == expected
            and e.prev_hash == prev
            and entry_hash(e.seq, e.prev_hash, e.recorded_at, e.kind, e.body) == e.entry_hash
        )
        if not ok:
            raise AuditError(f"refusing to sign: the chain is broken at entry {expected}")
        cp = at.get(e.seq)
        if cp is not None and cp.entry_hash != e.entry_hash:
            raise AuditError(
                f"refusing to sign: entry {e.seq} no longer matches checkpoint #{cp.cp_seq}; "
                f"run verify"
            )
        prev, expected = e.entry_hash, expected + 1
    if expected - 1 != head_seq or prev != head_hash:
        raise AuditError(f"refusing to sign: the chain head does not match entry {expected - 1}")


def last_checkpoint(conn: Connection) -> Any:
    return conn.execute(select(Checkpoint).order_by(Checkpoint.cp_seq.desc()).limit(1)).first()


def sign_head(
    conn: Connection,
    key: HubAuditKey,
    head_seq: int,
    head_hash: str,
    origin: str,
    *,
    full: bool = False,
) -> dict[str, Any] | None:
    """Sign the chain head in the caller's transaction, which holds the chain-head lock (so
    checkpoints are serialised like appends). Returns the new checkpoint, or None if the last
    one already covers the head. Re-hashes the entries since the last checkpoint first, or with
    `full` the whole chain against every earlier checkpoint (hub run end, API start-up)."""
    last = last_checkpoint(conn)
    if full:
        cps = {int(c.entry_seq): c for c in conn.execute(select(Checkpoint))}
        _check_chain(conn, 0, GENESIS_HASH, head_seq, head_hash, cps)
    if head_seq == 0 or (last is not None and int(last.entry_seq) == head_seq):
        return None
    if not full:
        start, prev = (0, GENESIS_HASH) if last is None else (int(last.entry_seq), last.entry_hash)
        at = conn.execute(select(AuditEntry.entry_hash).where(AuditEntry.seq == start))
        if start and at.scalar_one_or_none() != prev:
            raise AuditError(
                f"refusing to sign: entry {start} no longer matches checkpoint #{last.cp_seq}; "
                f"run verify"
            )
        _check_chain(conn, start, prev, head_seq, head_hash, {})
    cp: dict[str, Any] = {
        "cp_seq": 1 if last is None else int(last.cp_seq) + 1,
        "prev_cp_hash": GENESIS_HASH if last is None else last.cp_hash,
        "entry_seq": head_seq,
        "entry_hash": head_hash,
        "entry_count": head_seq,
        "signed_at": _now(),
        "key_id": key.key_id,
        "origin": origin[:128],
    }
    msg = checkpoint_message(cp)
    cp.update(cp_hash=_sha(msg), signature=base64.b64encode(key.sign(msg)).decode("ascii"))
    conn.execute(insert(Checkpoint).values(**cp))
    return cp


# --- verification ------------------------------------------------------------------------------


@dataclass
class VerifyReport:
    ok: bool
    entries: int
    last_seq: int
    checkpoints: int
    first_bad_seq: int | None = None
    first_bad_checkpoint: int | None = None
    problem: str | None = None
    all_problems: list[tuple[int, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    refused: bool = False  # no trusted key: no answer at all
    trusted_keys: str = ""
    last_checkpoint: dict[str, Any] | None = None  # the newest verified checkpoint
    uncovered: int = 0  # entries after it, not yet signed

    def summary(self) -> str:
        if self.refused:
            return f"REFUSED: {self.problem}"
        if self.ok:
            cp = self.last_checkpoint or {}
            tail = (
                f"; {self.uncovered} later entr{'y' if self.uncovered == 1 else 'ies'} not "
                f"yet checkpointed"
                if self.uncovered
                else ""
            )
            return (
                f"OK: {self.entries} entries, chain intact to entry {self.last_seq}; "
                f"{self.checkpoints} signed checkpoint(s) verified against the trusted key; "
                f"reaches checkpoint #{cp.get('cp_seq')} (entry {cp.get('entry_seq')}, "
                f"signed {cp.get('signed_at')} by {cp.get('key_id')}, {cp.get('origin')})"
                f"{tail}"
            )
        where = []
        if self.first_bad_seq is not None:
            where.append(f"first bad entry is {self.first_bad_seq}")
        if self.first_bad_checkpoint is not None:
            where.append(f"first bad checkpoint is #{self.first_bad_checkpoint}")
        return f"TAMPERED: {', '.join(where) or 'divergence'}. {self.problem}"


def _check_history(cps: list[Any], trusted: TrustedKeys) -> tuple[list[Any], tuple | None]:
    """Checkpoints in order; stops at the first that is missing, altered, untrusted or badly
    signed. Returns the valid prefix and (cp_seq, message) of the first problem."""
    good: list[Any] = []
    prev_hash, last_entry = GENESIS_HASH, 0
    for n, cp in enumerate(cps, start=1):
        msg = checkpoint_message(cp)
        if int(cp.cp_seq) != n:
            return good, (
                n,
                f"checkpoint #{n} is missing (next present is #{cp.cp_seq}): "
                f"checkpoint history cut",
            )
        if cp.prev_cp_hash != prev_hash or _sha(msg) != cp.cp_hash:
            return good, (
                n,
                f"checkpoint #{n} does not follow checkpoint #{n - 1} or was "
                f"altered: checkpoint history rewritten",
            )
        pub = trusted.get(cp.key_id)
        if pub is None:
            return good, (
                n,
                f"checkpoint #{n} is signed by key {cp.key_id!r}, which is not a "
                f"trusted key ({trusted.describe()})",
            )
        try:
            pub.verify(base64.b64decode(cp.signature), msg)
        except (InvalidSignature, ValueError):
            return good, (n, f"checkpoint #{n}: bad signature under trusted key {cp.key_id}")
        if int(cp.entry_seq) <= last_entry or int(cp.entry_count) != int(cp.entry_seq):
            return good, (n, f"checkpoint #{n} does not cover more entries than the one before it")
        good.append(cp)
        prev_hash, last_entry = cp.cp_hash, int(cp.entry_seq)
    return good, None


def verify_log(
    log: Any,
    trusted: TrustedKeys | None,
    *,
    receipt: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Verify `log` (an AuditLog) against the trusted keys; see the module docstring."""
    if trusted is None or len(trusted) == 0:
        return VerifyReport(False, 0, 0, 0, problem=NO_TRUSTED_KEY, refused=True)
    engine: Engine = log.engine
    with engine.connect() as conn:
        cps = conn.execute(select(Checkpoint).order_by(Checkpoint.cp_seq)).all()
    good, cp_problem = _check_history(cps, trusted)
    by_entry = {int(cp.entry_seq): cp for cp in good}
    bad_entries: list[tuple[int, str]] = []  # (entry seq, finding)
    bad_cps: list[tuple[int, str]] = []  # (checkpoint number, finding)
    expected, prev, prev_cp_entry, n = 1, GENESIS_HASH, 0, 0
    reached: list[Any] = []
    for e in log.entries():
        n += 1
        if progress is not None:
            progress(n)
        if e.seq != expected:
            bad_entries.append((expected, f"entry {expected} is missing (next is {e.seq})"))
            break
        if e.prev_hash != prev:
            msg = f"entry {e.seq}: prev_hash does not match entry {e.seq - 1}"
            bad_entries.append((e.seq, msg + " (entry deleted, inserted or reordered)"))
            break
        if entry_hash(e.seq, e.prev_hash, e.recorded_at, e.kind, e.body) != e.entry_hash:
            msg = f"entry {e.seq}: content does not match its hash"
            bad_entries.append((e.seq, msg + " (edited, inserted or moved)"))
            break
        cp = by_entry.get(e.seq)
        if cp is not None:
            if cp.entry_hash != e.entry_hash:
                msg = f"entries {prev_cp_entry + 1}..{e.seq} differ from signed checkpoint"
                bad_entries.append((prev_cp_entry + 1, f"{msg} #{cp.cp_seq}: chain rewritten"))
                break
            reached.append(cp)
            prev_cp_entry = e.seq
        prev, expected = e.entry_hash, expected + 1
    last_seq = expected - 1

    missed = [cp for cp in good if cp not in reached]
    if missed:
        cp = missed[0]
        where = f"signed checkpoint #{cp.cp_seq} (entry {cp.entry_seq})"
        if not bad_entries:
            msg = f"log ends at entry {last_seq} but {where} covers more: tail truncated"
            bad_entries.append((last_seq + 1, msg))
        bad_cps.append((int(cp.cp_seq), f"the chain no longer reaches {where}"))
    if not bad_entries:
        with engine.connect() as conn:
            head = conn.execute(select(ChainHead.seq, ChainHead.entry_hash)).first()
        if head is None:
            bad_entries.append((1, "chain head row is missing"))
        elif head.seq != last_seq or head.entry_hash != prev:
            msg = f"chain head names entry {head.seq} but the log ends at entry {last_seq}"
            bad_entries.append((min(head.seq, last_seq) + 1, msg + ": tail truncated or altered"))
    if cp_problem is not None:
        bad_cps.append(cp_problem)
    if not cps and last_seq:
        bad_entries.append((1, "no signed checkpoint covers the log: it cannot be verified"))
    if receipt is not None:
        rc = receipt.get("checkpoint", {})
        rc_seq = int(rc.get("cp_seq", 0))
        kept = next((cp for cp in reached if int(cp.cp_seq) == rc_seq), None)
        if kept is None or kept.cp_hash != rc.get("cp_hash"):
            msg = (
                f"checkpoint #{rc_seq} (entry {rc.get('entry_seq')}), which the IG lead "
                f"verified on {receipt.get('verified_at')}, is missing or different"
            )
            bad_cps.append((rc_seq, msg + ": log rolled back or re-signed"))
    last = reached[-1] if reached else None
    report = VerifyReport(
        not (bad_entries or bad_cps),
        n,
        last_seq,
        len(reached),
        trusted_keys=trusted.describe(),
        last_checkpoint=None if last is None else _cp_dict(last),
        uncovered=last_seq - (int(last.entry_seq) if last is not None else 0),
    )
    if not report.ok:
        bad_entries.sort(key=lambda p: p[0])
        bad_cps.sort(key=lambda p: p[0])
        report.first_bad_seq = bad_entries[0][0] if bad_entries else None
        report.first_bad_checkpoint = bad_cps[0][0] if bad_cps else None
        report.problem = (bad_entries or bad_cps)[0][1]
        report.all_problems = [*bad_entries, *bad_cps]
    elif report.uncovered:
        first = last_seq - report.uncovered + 1
        report.notes.append(f"entries from {first} on are not yet covered by a checkpoint")
    return report


def _cp_dict(cp: Any) -> dict[str, Any]:
    return {
        k: (int(getattr(cp, k)) if k in ("cp_seq", "entry_seq", "entry_count") else getattr(cp, k))
        for k in (*_FIELDS, "cp_hash", "signature")
    }


# --- the IG lead's receipt ----------------------------------------------------------------------


def read_receipt(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text("utf-8"))
        if doc.get("format") != RECEIPT_FORMAT or "cp_hash" not in doc.get("checkpoint", {}):
            raise ValueError("format")
    except ValueError:
        raise AuditError(f"{path}: not an audit receipt ({RECEIPT_FORMAT})") from None
    return doc


def write_receipt(path: Path, report: VerifyReport) -> None:
    """After a successful verify: keep the newest verified checkpoint (the IG lead's copy)."""
    if not report.ok or report.last_checkpoint is None:
        return
    doc = {
        "format": RECEIPT_FORMAT,
        "verified_at": _now(),
        "trusted_keys": report.trusted_keys,
        "checkpoint": report.last_checkpoint,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=1), "utf-8")
    os.replace(tmp, path)


def report_line(report: VerifyReport | None) -> dict[str, Any]:
    """What the IG report says about the audit chain (ids, counts and times only)."""
    if report is None:
        return {
            "status": "not_checked",
            "text": "not checked: no trusted hub audit key was "
            "given to the report; the IG lead runs `python -m governance.audit verify "
            "--trusted-key ...`",
        }
    status = "verified" if report.ok else ("refused" if report.refused else "failed")
    return {"status": status, "text": report.summary(), **asdict(report)}
