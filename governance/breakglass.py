"""Break-glass grants: a valid override is stored with its expiry, so the practitioner can
reopen the view (`break_glass_id`) until it expires, and not a minute after.

A grant is written in the same transaction as the audit entry that granted it: it exists if and
only if the decision was recorded. Each later use is decided again (the protocol, role,
relationship and expiry are re-checked) and recorded as its own audit entry with an IG alert.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, insert, select

from governance.decision_records import BreakGlass
from governance.models import Base, BreakGlassGrant


@dataclass(frozen=True, slots=True)
class Grant:
    grant_id: str
    audit_seq: int
    user_id: str
    protocol_id: str
    subject_kind: str  # person | household
    subject_id: str
    break_glass: BreakGlass
    expires_at: dt.datetime


class GrantStore:
    def __init__(self, engine: Engine) -> None:
        from governance.approvals import BreakGlassRequestRow

        self.engine = engine
        Base.metadata.create_all(
            engine, tables=[BreakGlassGrant.__table__, BreakGlassRequestRow.__table__]
        )

    @staticmethod
    def insert(conn: Connection, grant: Grant) -> None:
        bg = grant.break_glass
        conn.execute(
            insert(BreakGlassGrant).values(
                grant_id=grant.grant_id,
                audit_seq=grant.audit_seq,
                user_id=grant.user_id,
                protocol_id=grant.protocol_id,
                subject_kind=grant.subject_kind,
                subject_id=grant.subject_id,
                category=bg.category,
                justification=bg.justification,
                started_at=bg.started_at.isoformat(),
                hours=bg.hours,
                expires_at=grant.expires_at.isoformat(),
            )
        )

    def get(self, grant_id: str) -> Grant | None:
        from governance.approvals import approver_of

        with self.engine.connect() as conn:
            r = conn.execute(
                select(*BreakGlassGrant.__table__.c).where(BreakGlassGrant.grant_id == grant_id)
            ).first()
            if r is None:
                return None
            bg = BreakGlass(
                r.category,
                r.justification,
                dt.datetime.fromisoformat(r.started_at),
                r.hours,
                approver_of(conn, r.grant_id),
            )
            return Grant(
                r.grant_id,
                r.audit_seq,
                r.user_id,
                r.protocol_id,
                r.subject_kind,
                r.subject_id,
                bg,
                dt.datetime.fromisoformat(r.expires_at),
            )

    def grant_for_seq(self, audit_seq: int) -> str | None:
        with self.engine.connect() as conn:
            r = conn.execute(
                select(BreakGlassGrant.grant_id).where(BreakGlassGrant.audit_seq == audit_seq)
            ).first()
        return None if r is None else r[0]
