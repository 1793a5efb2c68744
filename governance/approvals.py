"""Manager approval of break-glass where the protocol requires it (break_glass.requires_approval).

A practitioner's override under such a protocol discloses nothing: the refused decision is
audited, the IG lead alerted, and a pending request is stored in the same transaction. A
manager of a team the requester belongs to (schemas/assignments.yaml) approves or declines it
in the workspace; either is one audit entry. Approval stores a break-glass grant (starting at
the approval, for the hours asked, within the protocol's maximum) in the approval's own
transaction; the practitioner then opens the view with that grant, and the decision re-checks
everything, including that the approver still manages the requester
(governance.access.AccessControl.break_glass_problems). Nobody approves their own request, nor
one from outside the teams they manage; a refused attempt is audited too and changes nothing.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, Connection, Engine, Integer, String, Text, insert, select, update
from sqlalchemy.orm import Mapped, mapped_column

from governance.access import NEEDS_APPROVAL
from governance.breakglass import Grant, GrantStore
from governance.decision_records import BreakGlass, Decision
from governance.decisions import Governance, User, screen_justification
from governance.models import Base

if TYPE_CHECKING:
    from governance.service import BreakGlassAsk

PENDING, APPROVED, DECLINED = "pending", "approved", "declined"


class ApprovalRefused(PermissionError):
    """The approver may not decide this request; `code` says why (audited)."""

    def __init__(self, code: str, audit_seq: int | None) -> None:
        super().__init__(code)
        self.code, self.audit_seq = code, audit_seq


class BreakGlassRequestRow(Base):
    __tablename__ = "gov_break_glass_requests"
    request_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    audit_seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    user_id: Mapped[str] = mapped_column(String(128), nullable=False, index=True)
    role: Mapped[str] = mapped_column(String(32), nullable=False)
    agency: Mapped[str | None] = mapped_column(String(8), nullable=True)
    protocol_id: Mapped[str] = mapped_column(String(64), nullable=False)
    subject_kind: Mapped[str] = mapped_column(String(16), nullable=False)
    subject_id: Mapped[str] = mapped_column(String(128), nullable=False)
    category: Mapped[str] = mapped_column(String(40), nullable=False)
    justification: Mapped[str] = mapped_column(Text, nullable=False)  # screened
    hours: Mapped[int] = mapped_column(Integer, nullable=False)
    requested_at: Mapped[str] = mapped_column(String(40), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, index=True)
    decided_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    decided_at: Mapped[str | None] = mapped_column(String(40), nullable=True)
    decision_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    grant_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)


@dataclass(frozen=True)
class ApprovalRequest:
    request_id: str
    audit_seq: int
    user_id: str
    role: str
    agency: str | None
    protocol_id: str
    subject_kind: str
    subject_id: str
    category: str
    justification: str
    hours: int
    requested_at: str
    status: str = PENDING
    decided_by: str | None = None
    decided_at: str | None = None
    grant_id: str | None = None


def pending_request(
    gov: Governance,
    user: User,
    protocol_id: str,
    ask: BreakGlassAsk | None,
    decisions: list[Decision],
    at: dt.datetime,
    subject_kind: str,
    subject_id: str | None,
) -> ApprovalRequest | None:
    """The request to store when a new override's only problem is the missing approval."""
    if ask is None or ask.grant_id is not None or gov.access is None or not decisions:
        return None
    problems = {p for d in decisions for p in d.break_glass_problems}
    if problems != {NEEDS_APPROVAL}:
        return None
    return ApprovalRequest(
        uuid.uuid4().hex,
        0,
        user.user_id,
        user.role,
        user.agency,
        protocol_id,
        subject_kind,
        subject_id or "",
        ask.category or "",
        (ask.justification or "").strip(),
        int(ask.hours or 0),
        at.isoformat(),
    )


def approver_of(conn: Connection, grant_id: str) -> str | None:
    """Who approved the request a grant came from (None: not from an approval)."""
    r = conn.execute(
        select(BreakGlassRequestRow.decided_by).where(
            BreakGlassRequestRow.grant_id == grant_id, BreakGlassRequestRow.status == APPROVED
        )
    ).first()
    return None if r is None else r[0]


class ApprovalStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        Base.metadata.create_all(engine, tables=[BreakGlassRequestRow.__table__])
        self.grants = GrantStore(engine)

    @staticmethod
    def insert(conn: Connection, req: ApprovalRequest) -> None:
        conn.execute(
            insert(BreakGlassRequestRow).values(
                request_id=req.request_id,
                audit_seq=req.audit_seq,
                user_id=req.user_id,
                role=req.role,
                agency=req.agency,
                protocol_id=req.protocol_id,
                subject_kind=req.subject_kind,
                subject_id=req.subject_id,
                category=req.category,
                justification=req.justification,
                hours=req.hours,
                requested_at=req.requested_at,
                status=PENDING,
            )
        )

    def _rows(self, *where: object) -> list[ApprovalRequest]:
        c = BreakGlassRequestRow
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    c.request_id,
                    c.audit_seq,
                    c.user_id,
                    c.role,
                    c.agency,
                    c.protocol_id,
                    c.subject_kind,
                    c.subject_id,
                    c.category,
                    c.justification,
                    c.hours,
                    c.requested_at,
                    c.status,
                    c.decided_by,
                    c.decided_at,
                    c.grant_id,
                )
                .where(*where)
                .order_by(c.requested_at, c.request_id)
            ).all()
        return [ApprovalRequest(*r) for r in rows]

    def get(self, request_id: str) -> ApprovalRequest | None:
        rows = self._rows(BreakGlassRequestRow.request_id == request_id)
        return rows[0] if rows else None

    def for_requester(self, user_id: str) -> list[ApprovalRequest]:
        return self._rows(BreakGlassRequestRow.user_id == user_id)

    def awaiting(self, gov: Governance, manager: User) -> list[ApprovalRequest]:
        """Pending requests from members of the teams this user manages."""
        if gov.access is None:
            return []
        a = gov.access.assignments
        return [
            r
            for r in self._rows(BreakGlassRequestRow.status == PENDING)
            if a.manages(manager.user_id, r.user_id)
        ]

    def decide(
        self, gov: Governance, manager: User, request_id: str, approve: bool, at: dt.datetime
    ) -> ApprovalRequest:
        """Approve or decline; one audit entry either way, and one for a refused attempt."""
        req = self.get(request_id)
        code = _refusal(gov, manager, req)
        outcome = (APPROVED if approve else DECLINED) if code is None else "refused"
        body = {
            "type": "break_glass_approval",
            "at": at.isoformat(),
            "user_id": manager.user_id,
            "role": manager.role,
            "request_id": request_id,
            "outcome": outcome,
        }
        if req is not None:
            body |= {
                "protocol_id": req.protocol_id,
                "requester": req.user_id,
                "subject": {"kind": req.subject_kind, "id": req.subject_id},
                "request_audit_seq": req.audit_seq,
            }
        if code is not None:
            body["refusal_reason"] = code
            rec = gov.audit.append("decision", body)
            raise ApprovalRefused(code, rec.seq)
        assert req is not None
        grant: Grant | None = None
        if approve:
            proto = gov.protocols[req.protocol_id]
            hours = max(1, min(req.hours, proto.break_glass.max_hours or 0))
            bg = BreakGlass(req.category, req.justification, at, hours, manager.user_id)
            grant = Grant(
                uuid.uuid4().hex,
                0,
                req.user_id,
                req.protocol_id,
                req.subject_kind,
                req.subject_id,
                bg,
                at + dt.timedelta(hours=hours),
            )
            body |= {"grant_id": grant.grant_id, "expires_at": grant.expires_at.isoformat()}

        def also(conn: Connection, seq: int) -> None:
            c = BreakGlassRequestRow
            moved = conn.execute(
                update(c)
                .where(c.request_id == request_id, c.status == PENDING)
                .values(
                    status=outcome,
                    decided_by=manager.user_id,
                    decided_at=at.isoformat(),
                    decision_seq=seq,
                    grant_id=grant.grant_id if grant else None,
                )
            )
            if moved.rowcount != 1:
                raise RuntimeError("request decided concurrently")  # rolls back the entry
            if grant is not None:
                GrantStore.insert(conn, replace(grant, audit_seq=seq))

        gov.audit.append("decision", body, also=also)
        out = self.get(request_id)
        assert out is not None
        return out


def _refusal(gov: Governance, manager: User, req: ApprovalRequest | None) -> str | None:
    if req is None:
        return "unknown_request"
    if gov.access is None:
        return "approvals_not_configured"
    if manager.user_id == req.user_id:
        return "self_approval"
    if not gov.access.assignments.manages(manager.user_id, req.user_id):
        return "not_manager_of_requester"
    if not gov.access.assignments.may_act(manager, req.protocol_id):
        return "approver_not_assigned_to_protocol"
    if req.status != PENDING:
        return f"request_already_{req.status}"
    proto = gov.protocols.get(req.protocol_id)
    if proto is None or not proto.break_glass.requires_approval:
        return "protocol_does_not_use_approval"
    if not screen_justification(req.justification):
        return "justification_contains_identifier"
    return None
