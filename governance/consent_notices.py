"""Withdrawal notices to the agencies: signed by the hub, applied by each agency's bridge.

When a consent is withdrawn at the hub, every agency it covered (and the agency that recorded
it) is told, so the withdrawal takes effect in their own systems too. A notice names only that
agency's own record refs (which only it can decrypt), the purpose, the categories and the time;
it is signed with the hub's Ed25519 request key (the key the bridges already trust for identity
requests, docs/keys.md) over the canonical JSON, and its `kind` keeps it from ever being read
as an identity request. Notices are stored in the governance store in the withdrawal's own
transaction (so none is lost) and written to the agency's outbox folder
(`<outbox>/<AGENCY>/<notice_id>.json`, 0600) after it commits; `flush` writes any not yet
written. The bridge side is ig_bridge.consent_notice.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import BigInteger, Connection, Engine, String, Text, insert, select, update
from sqlalchemy.orm import Mapped, mapped_column

from governance.audit import canonical_json, key_id
from governance.consent_records import ConsentRecord
from governance.models import Base

NOTICE_VERSION = 1
NOTICE_KIND = "consent_withdrawal"


class ConsentNoticeRow(Base):
    __tablename__ = "gov_consent_notices"
    notice_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    agency: Mapped[str] = mapped_column(String(8), nullable=False)
    record_id: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    audit_seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    envelope: Mapped[str] = mapped_column(Text, nullable=False)  # signed JSON, as sent
    written_at: Mapped[str | None] = mapped_column(String(40), nullable=True)


def sign_notice(notice: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    sig = key.sign(canonical_json(notice).encode("utf-8"))
    return {"notice": notice, "signature": base64.b64encode(sig).decode()}


def withdrawal_notices(
    rec: ConsentRecord,
    refs_now: Iterable[tuple[str, str]],
    key: Ed25519PrivateKey,
    audit_seq: int,
    at: dt.datetime,
) -> list[dict[str, Any]]:
    """One signed notice per agency told: the agencies in scope and the recording agency,
    each with only its own refs (those stored with the consent and the person's now)."""
    by_agency: dict[str, set[str]] = {}
    for a, r in set(refs_now) | rec.all_refs:
        by_agency.setdefault(a, set()).add(r)
    told = (set(rec.scope.agencies) | {rec.recorded_agency}) & set(by_agency)
    kid = key_id(key.public_key())
    out = []
    for agency in sorted(told):
        notice = {
            "notice_version": NOTICE_VERSION,
            "kind": NOTICE_KIND,
            "notice_id": uuid.uuid4().hex,
            "agency": agency,
            "record_refs": sorted(by_agency[agency]),
            "purpose": rec.purpose,
            "categories": sorted(rec.scope.categories),
            "agencies_in_scope": sorted(rec.scope.agencies),
            "consent_record_id": rec.record_id,
            "withdrawn_at": at.isoformat(),
            "hub_audit_seq": audit_seq,
            "issued_at": at.isoformat(),
            "hub_key_id": kid,
        }
        out.append(sign_notice(notice, key))
    return out


def store_notices(conn: Connection, envelopes: list[dict[str, Any]], audit_seq: int) -> None:
    if envelopes:
        conn.execute(
            insert(ConsentNoticeRow),
            [
                {
                    "notice_id": e["notice"]["notice_id"],
                    "agency": e["notice"]["agency"],
                    "record_id": e["notice"]["consent_record_id"],
                    "audit_seq": audit_seq,
                    "envelope": json.dumps(e, sort_keys=True),
                }
                for e in envelopes
            ],
        )


class NoticeOutbox:
    """The notices in the store, and the per-agency folders the bridges collect them from."""

    def __init__(self, engine: Engine, folder: Path | None) -> None:
        self.engine = engine
        self.folder = folder
        Base.metadata.create_all(engine, tables=[ConsentNoticeRow.__table__])

    def for_record(self, record_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(ConsentNoticeRow.envelope)
                .where(ConsentNoticeRow.record_id == record_id)
                .order_by(ConsentNoticeRow.agency)
            ).all()
        return [json.loads(r.envelope) for r in rows]

    def flush(self) -> list[Path]:
        """Write every notice not yet written (never overwriting); returns the files."""
        if self.folder is None:
            return []
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(ConsentNoticeRow).where(ConsentNoticeRow.written_at.is_(None))
            ).all()
        written = []
        for row in rows:
            folder = self.folder / row.agency
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = folder / f"{row.notice_id}.json"
            if not path.exists():
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(row.envelope)
            with self.engine.begin() as conn:
                conn.execute(
                    update(ConsentNoticeRow)
                    .where(ConsentNoticeRow.notice_id == row.notice_id)
                    .values(written_at=dt.datetime.now(dt.UTC).isoformat())
                )
            written.append(path)
        return written
