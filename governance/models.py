"""SQLAlchemy 2 models of the governance store (SQLite by default, PostgreSQL in production).

Tables carry no schema: production or tests pick one with `schema_translate_map`
(see `governance.audit.make_engine`). Nothing here may ever hold a plaintext identifier:
only hub ids (person_id, household_id), user ids, protocol ids, field names and codes.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, Index, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

GENESIS_HASH = "0" * 64


class Base(DeclarativeBase):
    metadata = MetaData()


class AuditEntry(Base):
    """One append-only, hash-chained entry. `seq` and `prev_hash` are unique: a fork is refused."""

    __tablename__ = "gov_audit_entries"
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    entry_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    recorded_at: Mapped[str] = mapped_column(String(40), nullable=False)
    kind: Mapped[str] = mapped_column(String(40), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)  # canonical JSON, hashed verbatim


class ChainHead(Base):
    """Single row naming the last entry; locked to serialise appends (FOR UPDATE on PostgreSQL)."""

    __tablename__ = "gov_audit_head"
    __table_args__ = (CheckConstraint("id = 1", name="gov_audit_head_single_row"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    entry_hash: Mapped[str] = mapped_column(String(64), nullable=False)


class Checkpoint(Base):
    """A hub-signed checkpoint: entries 1..entry_seq end in entry_hash. Checkpoints form their
    own hash chain (prev_cp_hash), so the checkpoint history is append-only and verifiable.
    No public key is stored here: verify trusts only the IG lead's copy of the hub's key."""

    __tablename__ = "gov_audit_signed_checkpoints"
    cp_seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    prev_cp_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    cp_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    entry_seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    entry_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    entry_count: Mapped[int] = mapped_column(BigInteger, nullable=False)
    signed_at: Mapped[str] = mapped_column(String(40), nullable=False)
    key_id: Mapped[str] = mapped_column(String(64), nullable=False)
    origin: Mapped[str] = mapped_column(String(128), nullable=False)  # hub run / API process
    signature: Mapped[str] = mapped_column(String(128), nullable=False)  # base64 Ed25519


class Alert(Base):
    """Alert for the IG lead (break-glass use or attempt). Not chained; the audit entry is."""

    __tablename__ = "gov_alerts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    audit_seq: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)
    raised_at: Mapped[str] = mapped_column(String(40), nullable=False)
    to_role: Mapped[str] = mapped_column(String(32), nullable=False)
    kind: Mapped[str] = mapped_column(String(40), nullable=False)
    protocol_id: Mapped[str] = mapped_column(String(64), nullable=False)
    user_id: Mapped[str] = mapped_column(String(128), nullable=False)
    person_id: Mapped[str] = mapped_column(String(128), nullable=False)  # or household id
    detail: Mapped[str] = mapped_column(String(200), nullable=False)  # codes only
    acknowledged_at: Mapped[str | None] = mapped_column(String(40), nullable=True)


class NotificationDue(Base):
    """The person (or parent) must be told of an override unless doing so would increase risk."""

    __tablename__ = "gov_notifications_due"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    audit_seq: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)
    person_id: Mapped[str] = mapped_column(String(128), nullable=False)
    protocol_id: Mapped[str] = mapped_column(String(64), nullable=False)
    due_by: Mapped[str] = mapped_column(String(10), nullable=False)  # ISO date
    reason: Mapped[str] = mapped_column(String(64), nullable=False)
    done_at: Mapped[str | None] = mapped_column(String(40), nullable=True)


class RelationshipRow(Base):
    """A legitimate relationship: user allocated to a person or household for a period."""

    __tablename__ = "gov_relationships"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(128), nullable=False, index=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # person | household
    subject_id: Mapped[str] = mapped_column(String(128), nullable=False)
    start: Mapped[str] = mapped_column(String(10), nullable=False)  # ISO date
    end: Mapped[str | None] = mapped_column(String(10), nullable=True)
    reason: Mapped[str] = mapped_column(String(64), nullable=False)
    recorded_at: Mapped[str] = mapped_column(String(40), nullable=False)


class ConsentEventRow(Base):
    """One consent event. `source` is `warehouse` (replaced on each hub refresh from the
    agencies' payload consent records) or `direct` (e.g. a withdrawal received by phone;
    kept across refreshes)."""

    __tablename__ = "gov_consent_events"
    __table_args__ = (Index("ix_gov_consent_person_purpose", "person_id", "purpose"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    person_id: Mapped[str] = mapped_column(String(128), nullable=False)
    purpose: Mapped[str] = mapped_column(String(64), nullable=False)
    agency: Mapped[str] = mapped_column(String(8), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    on_date: Mapped[str] = mapped_column(String(10), nullable=False)  # ISO date
    source: Mapped[str] = mapped_column(String(16), nullable=False, index=True)
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    recorded_at: Mapped[str] = mapped_column(String(40), nullable=False)


class BreakGlassGrant(Base):
    """A valid break-glass override, usable by its user on its subject until it expires."""

    __tablename__ = "gov_break_glass_grants"
    grant_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    audit_seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    user_id: Mapped[str] = mapped_column(String(128), nullable=False)
    protocol_id: Mapped[str] = mapped_column(String(64), nullable=False)
    subject_kind: Mapped[str] = mapped_column(String(16), nullable=False)
    subject_id: Mapped[str] = mapped_column(String(128), nullable=False)
    category: Mapped[str] = mapped_column(String(40), nullable=False)
    justification: Mapped[str] = mapped_column(Text, nullable=False)  # screened, no identifiers
    started_at: Mapped[str] = mapped_column(String(40), nullable=False)
    hours: Mapped[int] = mapped_column(Integer, nullable=False)
    expires_at: Mapped[str] = mapped_column(String(40), nullable=False)
