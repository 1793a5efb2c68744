"""Restricted records: adoption, refuge, a confidential address.

A record is restricted when its agency says so, in either of two ways:
- at the bridge: the agency maps its own confidentiality flag to the `restricted` payload field
  (schemas/canonical_fields.yaml; e.g. `{source: "ConfidentialAddress", field: "restricted",
  class: "payload"}`), so the marker travels with the record's latest batch;
- at the hub, by the owning agency: one of its own workers marks the record (agency, record
  ref) restricted, as an audit entry (RestrictionStore.mark), and only that agency lifts it.

A person is restricted while any record currently linked to them is. It is honoured
everywhere a view is built (governance.service: person, household and involvement views, the
workspace pages on them, the API) and by identity requests (governance.identity): a decision
that would have shown something about a restricted person shows nothing, with the reason
`restricted_record` and whom to contact (the owning agency's contact in
schemas/assignments.yaml). A household or family view leaves the restricted member out
entirely (not even a "restricted" notice), so it never places them at an address. A user
whom the rules refuse anyway is refused for those reasons alone: restriction is never an
oracle for someone without a legitimate relationship.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, Engine, Integer, String, insert, select, update
from sqlalchemy.orm import Mapped, mapped_column

from governance.audit import AuditLog
from governance.decision_records import Decision
from governance.decisions import User, _interactions
from governance.models import Base

if TYPE_CHECKING:
    from governance.service import ViewService

RESTRICTED = "restricted_record"
MARKING_ROLES = frozenset({"practitioner", "team_manager", "ig_lead", "data_officer"})


class RestrictionError(PermissionError):
    """A marker that may not be set or lifted by this user (codes only)."""


class RestrictionRow(Base):
    __tablename__ = "gov_restrictions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    agency: Mapped[str] = mapped_column(String(8), nullable=False)
    record_ref: Mapped[str] = mapped_column(String(256), nullable=False, index=True)
    reason: Mapped[str] = mapped_column(String(32), nullable=False)  # a code, never free text
    set_by: Mapped[str] = mapped_column(String(128), nullable=False)
    set_at: Mapped[str] = mapped_column(String(40), nullable=False)
    audit_seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    lifted_at: Mapped[str | None] = mapped_column(String(40), nullable=True)
    lifted_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


REASONS = frozenset({"adoption", "refuge", "confidential_address", "witness_protection", "other"})


@dataclass(frozen=True)
class Marker:
    agency: str
    record_ref: str
    reason: str


class RestrictionStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        Base.metadata.create_all(engine, tables=[RestrictionRow.__table__])

    def active(self) -> list[Marker]:
        c = RestrictionRow
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(c.agency, c.record_ref, c.reason).where(c.lifted_at.is_(None)).order_by(c.id)
            ).all()
        return [Marker(*r) for r in rows]

    def active_for(self, agency: str) -> list[dict[str, Any]]:
        """The agency's own active hub markers (what its restrictions screen lists)."""
        c = RestrictionRow
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(c.id, c.record_ref, c.reason, c.set_by, c.set_at, c.audit_seq)
                .where(c.agency == agency, c.lifted_at.is_(None))
                .order_by(c.id)
            ).all()
        return [r._asdict() for r in rows]

    def ref_of(self, marker_id: int) -> tuple[str, str] | None:
        """(agency, record ref) of an active marker."""
        c = RestrictionRow
        with self.engine.connect() as conn:
            row = conn.execute(
                select(c.agency, c.record_ref).where(c.id == marker_id, c.lifted_at.is_(None))
            ).first()
        return (row[0], row[1]) if row else None

    def mark(
        self,
        audit: AuditLog,
        user: User,
        agency: str,
        record_ref: str,
        reason: str,
        at: dt.datetime | None = None,
    ) -> int:
        """The owning agency marks one of its records restricted; returns the audit seq."""
        _may_mark(user, agency, reason)
        at = at or dt.datetime.now(dt.UTC)
        body = {
            "type": "restriction_marked",
            "at": at.isoformat(),
            "user_id": user.user_id,
            "role": user.role,
            "agency": agency,
            "record_ref": record_ref,
            "reason": reason,
        }
        rec = audit.append(
            "restriction",
            body,
            also=lambda conn, seq: conn.execute(
                insert(RestrictionRow).values(
                    agency=agency,
                    record_ref=record_ref,
                    reason=reason,
                    set_by=user.user_id,
                    set_at=at.isoformat(),
                    audit_seq=seq,
                )
            ),
        )
        return rec.seq

    def lift(
        self,
        audit: AuditLog,
        user: User,
        agency: str,
        record_ref: str,
        at: dt.datetime | None = None,
    ) -> int:
        _may_mark(user, agency, "other")
        at = at or dt.datetime.now(dt.UTC)
        body = {
            "type": "restriction_lifted",
            "at": at.isoformat(),
            "user_id": user.user_id,
            "role": user.role,
            "agency": agency,
            "record_ref": record_ref,
        }
        c = RestrictionRow
        rec = audit.append(
            "restriction",
            body,
            also=lambda conn, seq: conn.execute(
                update(c)
                .where(c.agency == agency, c.record_ref == record_ref, c.lifted_at.is_(None))
                .values(lifted_at=at.isoformat(), lifted_seq=seq)
            ),
        )
        return rec.seq


def _may_mark(user: User, agency: str, reason: str) -> None:
    if user.role not in MARKING_ROLES:
        raise RestrictionError(f"role {user.role} may not mark records restricted")
    if user.agency != agency:
        raise RestrictionError(f"only {agency}'s own staff mark or lift its records' restriction")
    if reason not in REASONS:
        raise RestrictionError(f"reason must be one of {sorted(REASONS)}")


def _store(views: ViewService) -> RestrictionStore:
    store = getattr(views, "_restriction_store", None)
    if store is None:
        store = RestrictionStore(views.gov.audit.engine)
        views._restriction_store = store  # type: ignore[attr-defined]
    return store


def restricted_people(views: ViewService, person_ids: Iterable[str]) -> dict[str, list[str]]:
    """person_id -> agencies holding a restricted record currently linked to them: flagged in
    the record's latest payload row (bridge) or marked at the hub by the owning agency."""
    ids = sorted(set(person_ids))
    if not ids:
        return {}
    markers = _store(views).active()
    out: dict[str, set[str]] = {}
    with views._con() as con:
        has_flag = (
            con.execute("""SELECT count(*) FROM information_schema.columns
            WHERE table_name = 'payload' AND column_name = 'restricted'""").fetchone()[0]
            > 0
        )
        if has_flag:
            rows = con.execute(
                """
                SELECT rp.person_id, p.agency FROM payload p
                JOIN record_person rp ON rp.record_ref = p.record_ref AND rp.agency = p.agency
                JOIN batch b ON b.batch_id = p.batch_id
                WHERE list_contains(?, rp.person_id)
                QUALIFY row_number() OVER (PARTITION BY p.agency, p.record_ref
                                           ORDER BY b.sequence DESC) = 1
                    AND coalesce(p.restricted, false)""",
                [ids],
            ).fetchall()
            for pid, agency in rows:
                out.setdefault(pid, set()).add(agency)
        if markers:
            refs = [m.record_ref for m in markers]
            rows = con.execute(
                """SELECT person_id, agency, record_ref FROM record_person
                WHERE list_contains(?, person_id) AND list_contains(?, record_ref)""",
                [ids, refs],
            ).fetchall()
            marked = {(m.agency, m.record_ref) for m in markers}
            for pid, agency, ref in rows:
                if (agency, ref) in marked:
                    out.setdefault(pid, set()).add(agency)
    return {p: sorted(a) for p, a in out.items()}


def contacts(views: ViewService, agencies: Iterable[str]) -> list[str]:
    access = views.gov.access
    return [
        access.assignments.contact_for(a)
        if access is not None
        else f"the {a} information governance lead"
        for a in sorted(set(agencies))
    ]


def apply_restrictions(views: ViewService, decisions: list[Decision]) -> list[Decision]:
    """Refuse everything about a restricted person to a user who would otherwise have seen
    something, with the reason and whom to contact (in the decision's `extra`)."""
    candidates = [d.subject.person_id for d in decisions if any(f.allowed for f in d.fields)]
    if not candidates:
        return decisions
    restricted = restricted_people(views, candidates)
    out = []
    for d in decisions:
        agencies = restricted.get(d.subject.person_id)
        if not agencies or not any(f.allowed for f in d.fields):
            out.append(d)
            continue
        fields = tuple(
            replace(f, allowed=False, legal_basis=None, reasons=(RESTRICTED,)) for f in d.fields
        )
        user = User(d.user_id, d.role)
        out.append(
            replace(
                d,
                fields=fields,
                interactions=tuple(_interactions(d.mode, user, list(fields))),
                break_glass_used=False,
                notification_due_by=None,
                extra={**d.extra, "restricted_contacts": contacts(views, agencies)},
            )
        )
    return out


def restricted_contacts(exc: Any) -> list[str]:
    """Whom to contact, for a refusal that was a restriction (else nothing)."""
    d = getattr(exc, "decision", None)
    if d is None or RESTRICTED not in getattr(exc, "reasons", ()):
        return []
    return list(d.extra.get("restricted_contacts") or [])


def without_restricted(views: ViewService, people: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop restricted people from a family network listing (wider family): a network never
    places a restricted person, not even as living elsewhere."""
    hidden = restricted_people(views, [p["person_id"] for p in people])
    return [p for p in people if p["person_id"] not in hidden]


def hide_restricted(views: ViewService, decisions: list[Decision]) -> set[str]:
    """The members a household view leaves out: every restricted member (whether or not
    anything about them was requested), once the view shows anything at all."""
    if not any(f.allowed for d in decisions for f in d.fields):
        return set()
    return set(restricted_people(views, [d.subject.person_id for d in decisions]))
