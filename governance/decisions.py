"""The one decision function: may this user see these fields about this subject, now?

Deny by default. A field is allowed only if every rule holds:
1. the protocol exists and is in force (effective_from <= date <= review_date);
2. the user's role is named by the protocol (and is a row-level role);
3. the user has a current legitimate relationship with the person or their household;
4. the (agency, field) is in the protocol's minimum dataset;
5. a lawful basis: consent given (consent_rule required), the protocol's statutory gateway
   (not_required_under_gateway), or consent given / a valid break-glass override
   (override_on_significant_harm).
Break-glass overrides rule 5 only, never 1-4. Every decision, allowed or withheld, is appended to
the audit log as exactly one entry, described as information-sharing interactions.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

from sqlalchemy import Connection, insert, select

from governance.access import NOT_ASSIGNED, NOT_SIGNED_OFF, AccessControl
from governance.audit import AuditLog
from governance.consent import ConsentRegistry, ConsentStatus
from governance.decision_records import (  # User: re-exported, ~40 importers
    BreakGlass,
    Decision,
    FieldDecision,
    Interaction,
    InteractionRecord,
    Reason,
    User,
)
from governance.models import Alert, NotificationDue
from governance.policy import (
    BreakGlassCategory,
    ConsentRule,
    Protocol,
    Role,
    load_protocols,
    load_roles,
)
from governance.relationships import RelationshipRegistry, Subject
from ig_bridge.recognise import has_identifier

NOTIFY_WITHIN_DAYS = 30  # tell the person of an override unless that would increase risk
MIN_JUSTIFICATION = 20

_CONSENT_DENIAL = {
    ConsentStatus.NONE: Reason.NO_CONSENT,
    ConsentStatus.REFUSED: Reason.CONSENT_REFUSED,
    ConsentStatus.WITHDRAWN: Reason.CONSENT_WITHDRAWN,
    ConsentStatus.EXPIRED: Reason.CONSENT_EXPIRED,
    ConsentStatus.OUT_OF_SCOPE: Reason.CONSENT_OUT_OF_SCOPE,
}
# Recipient-side reasons: about who is asking, not about the information.
_RECIPIENT_SIDE = frozenset(
    {
        Reason.UNKNOWN_PROTOCOL,
        Reason.PROTOCOL_NOT_IN_FORCE,
        Reason.UNKNOWN_ROLE,
        Reason.ROLE_NOT_IN_PROTOCOL,
        Reason.ROLE_NOT_ROW_LEVEL,
        Reason.NO_RELATIONSHIP,
        NOT_ASSIGNED,
        NOT_SIGNED_OFF,
    }
)

# Justification text is the only free text that reaches the audit log. It is screened with the
# bridge's own recogniser (ig_bridge.recognise: unicode normalised, Presidio's UK recognisers,
# dates and numbers in words, "at"/"dot" e-mails, addresses, titled names) and a request whose
# text looks like an identifier is refused, never stored. Untitled names cannot be detected
# reliably: see docs/governance.md.


def screen_justification(text: str) -> bool:
    """True if the text contains nothing that looks like an identifier."""
    return not has_identifier(text)


def _check_break_glass(
    bg: BreakGlass, protocol: Protocol, role: Role | None, at: dt.datetime
) -> tuple[list[str], dt.datetime]:
    problems: list[str] = []
    if not protocol.break_glass.allowed:
        problems.append("break_glass_not_permitted_by_protocol")
    if role is None or not role.may_break_glass:
        problems.append("role_may_not_break_glass")
    if bg.category not in {c.value for c in protocol.break_glass.categories} or (
        bg.category not in {c.value for c in BreakGlassCategory}
    ):
        problems.append("break_glass_category_not_permitted")
    if len(bg.justification.strip()) < MIN_JUSTIFICATION:
        problems.append("justification_missing_or_too_short")
    if not screen_justification(bg.justification):
        problems.append("justification_contains_identifier")
    max_hours = protocol.break_glass.max_hours or 0
    if not 0 < bg.hours <= max_hours:
        problems.append("break_glass_duration_exceeds_protocol")
    if bg.started_at.tzinfo is None:
        raise ValueError("break_glass.started_at must be timezone-aware")
    expires = bg.started_at + dt.timedelta(hours=max(0, min(bg.hours, max_hours)))
    if at < bg.started_at:
        problems.append("break_glass_not_started")
    elif at > expires:
        problems.append("break_glass_expired")
    return problems, expires


class Governance:
    """Hub governance service: holds the policy, registries and audit log; decides and records."""

    def __init__(
        self,
        audit: AuditLog,
        consent: ConsentRegistry | None = None,
        relationships: RelationshipRegistry | None = None,
        protocols: Mapping[str, Protocol] | None = None,
        roles: Mapping[str, Role] | None = None,
        access: AccessControl | None = None,
    ) -> None:
        self.audit = audit
        self.consent = consent if consent is not None else ConsentRegistry()
        self.relationships = relationships if relationships is not None else RelationshipRegistry()
        self.protocols = dict(protocols) if protocols is not None else load_protocols()
        self.roles = dict(roles) if roles is not None else load_roles()
        # Assignment, team managers, sign-off and approval (governance.access); None: role only.
        self.access = access
        if access is not None:
            self.relationships = access.wrap_relationships(self.relationships)
        audit.protocol_stamp = self.protocol_stamp

    def protocol_stamp(self, protocol_id: str) -> dict[str, Any]:
        """The version and content hash every audit entry naming a protocol carries."""
        p = self.protocols.get(protocol_id)
        return {
            "protocol_version": p.version if p else None,
            "protocol_sha256": (p.document_sha256 or None) if p else None,
        }

    # -- evaluation without recording -----------------------------------------------------------

    def evaluate(
        self,
        user: User,
        protocol: Protocol | str,
        subject: Subject,
        requested_fields: Iterable[tuple[str, str]],
        at: dt.datetime,
        break_glass: BreakGlass | None = None,
        *,
        mode: Literal["request", "offer"] = "request",
    ) -> Decision:
        """Evaluate without recording. Callers that do not use `decide` (e.g. a view over a
        whole household) must append exactly one audit entry before disclosing anything."""
        if at.tzinfo is None:
            raise ValueError("`at` must be timezone-aware")
        if mode not in ("request", "offer"):
            raise ValueError("mode must be 'request' or 'offer'")
        proto = protocol if isinstance(protocol, Protocol) else self.protocols.get(protocol)
        proto_id = protocol.id if isinstance(protocol, Protocol) else str(protocol)
        requested = list(dict.fromkeys((str(a), str(f)) for a, f in requested_fields))
        role = self.roles.get(user.role)
        on = at.date()

        who: list[str] = []  # recipient-side reasons, apply to every field
        if proto is None:
            who.append(Reason.UNKNOWN_PROTOCOL)
        elif not proto.in_force(on):
            who.append(Reason.PROTOCOL_NOT_IN_FORCE)
        if role is None:
            who.append(Reason.UNKNOWN_ROLE)
        else:
            if proto is not None and user.role not in proto.roles:
                who.append(Reason.ROLE_NOT_IN_PROTOCOL)
            if not role.row_level:
                who.append(Reason.ROLE_NOT_ROW_LEVEL)
        if self.access is not None:
            who.extend(self.access.refusal_reasons(user, proto))
        if self.relationships.current(user.user_id, subject, at) is None:
            who.append(Reason.NO_RELATIONSHIP)

        bg_problems: list[str] = []
        bg_expires: dt.datetime | None = None
        if break_glass is not None:
            if proto is None:
                bg_problems = ["break_glass_not_permitted_by_protocol"]
            else:
                bg_problems, bg_expires = _check_break_glass(break_glass, proto, role, at)
                if self.access is not None:
                    bg_problems += self.access.break_glass_problems(user, proto, break_glass)
        bg_valid = break_glass is not None and not bg_problems

        consent_of = (
            self.consent.for_subject(subject.person_id, proto.consent_purpose, at)
            if proto is not None
            else None
        )  # (agency, field) -> scoped state
        decisions: list[FieldDecision] = []
        bg_used = False
        for agency, fname in requested:
            reasons: list[str] = list(who)
            basis: str | None = None
            consent_status = ConsentStatus.NONE.value
            if proto is not None:
                if agency not in proto.agencies:
                    reasons.append(Reason.AGENCY_NOT_IN_PROTOCOL)
                elif fname not in proto.minimum_dataset(agency):
                    reasons.append(Reason.FIELD_NOT_IN_DATASET)
                assert consent_of is not None
                state = consent_of(agency, fname)
                consent_status = state.status.value
                rule = proto.consent_rule
                override = False
                if rule is ConsentRule.NOT_REQUIRED_UNDER_GATEWAY:
                    basis = proto.legal_gateway
                elif state.given:
                    basis = "consent"
                elif rule is ConsentRule.OVERRIDE_ON_SIGNIFICANT_HARM and bg_valid:
                    basis, override = proto.legal_gateway, True
                else:
                    reasons.append(_CONSENT_DENIAL[state.status])
                allowed = not reasons
                if allowed and override:
                    bg_used = True
                    reasons = [Reason.BREAK_GLASS_OVERRIDE]
                elif allowed:
                    reasons = [
                        Reason.CONSENT_GIVEN if basis == "consent" else Reason.STATUTORY_GATEWAY
                    ]
            else:
                allowed = False
            decisions.append(
                FieldDecision(
                    agency,
                    fname,
                    allowed,
                    tuple(str(r) for r in reasons),
                    basis if allowed else None,
                    consent_status,
                )
            )

        interactions = _interactions(mode, user, decisions)
        notify_by = (on + dt.timedelta(days=NOTIFY_WITHIN_DAYS)) if bg_used else None
        return Decision(
            decision_id=uuid.uuid4().hex,
            at=at,
            mode=mode,
            user_id=user.user_id,
            role=user.role,
            protocol_id=proto_id,
            purpose=proto.consent_purpose if proto else None,
            legal_gateway=proto.legal_gateway if proto else None,
            subject=subject,
            fields=tuple(decisions),
            interactions=tuple(interactions),
            break_glass_requested=break_glass is not None,
            break_glass_used=bg_used,
            break_glass_problems=tuple(bg_problems),
            break_glass_expires_at=bg_expires,
            alert_raised=break_glass is not None,
            notification_due_by=notify_by,
        )

    # -- the decision function ----------------------------------------------------------------

    def decide(
        self,
        user: User,
        protocol: Protocol | str,
        subject: Subject,
        requested_fields: Iterable[tuple[str, str]],
        at: dt.datetime,
        break_glass: BreakGlass | None = None,
        *,
        mode: Literal["request", "offer"] = "request",
    ) -> Decision:
        """Decide and record: exactly one audit entry per call. If the audit append fails the
        caller gets an AuditError and must disclose nothing (fail closed)."""
        d = self.evaluate(user, protocol, subject, requested_fields, at, break_glass, mode=mode)
        return self.record(d, break_glass)

    def record(self, d: Decision, break_glass: BreakGlass | None = None) -> Decision:
        """Append one audit entry for an evaluated decision, with its break-glass alert and
        notification rows in the same transaction. Returns the decision with its audit seq."""
        rec = self.audit.append(
            "decision",
            d.audit_body(justification_for_audit(break_glass)),
            also=lambda conn, seq: record_side_effects(conn, seq, [d]),
        )
        return replace(d, audit_seq=rec.seq, audit_hash=rec.entry_hash)

    def record_withheld_request(
        self,
        user: User,
        protocol: Protocol | str,
        subject: Subject,
        reason: str,
        at: dt.datetime,
    ) -> int:
        """A practitioner's decision *not* to request (e.g. judged disproportionate) is
        recorded too. `reason` must be a short code, not free text."""
        if not re.fullmatch(r"[a-z][a-z0-9_]{2,63}", reason):
            raise ValueError("reason must be a short lower-case code, e.g. not_proportionate")
        pid = protocol.id if isinstance(protocol, Protocol) else str(protocol)
        rec = self.audit.append(
            "decision",
            {
                "type": "withheld_request",
                "at": at.isoformat(),
                "user_id": user.user_id,
                "role": user.role,
                "protocol_id": pid,
                "subject": {"person_id": subject.person_id, "household_id": subject.household_id},
                "interactions": [
                    {
                        "kind": Interaction.WITHHOLD_REQUEST.value,
                        "agency": None,
                        "fields": [],
                        "reasons": [reason],
                    }
                ],
            },
        )
        return rec.seq


def justification_for_audit(break_glass: BreakGlass | None) -> str | None:
    """The break-glass text as it may enter the audit log: screened for identifiers."""
    if break_glass is None:
        return None
    text = (
        break_glass.justification.strip()
        if screen_justification(break_glass.justification)
        else "[withheld: looked like an identifier]"
    )
    return f"{break_glass.category}: {text}"


def record_side_effects(
    conn: Connection, seq: int, decisions: Sequence[Decision], subject_id: str | None = None
) -> None:
    """One alert row for the IG lead per request with a break-glass (used or attempted; for a
    household request `subject_id` is the household id) and notification-due rows (every
    person whose information was shown under an override), in the audit entry's own
    transaction."""
    raised = [d for d in decisions if d.alert_raised]
    if raised:
        d = raised[0]
        used = any(x.break_glass_used for x in raised)
        conn.execute(
            insert(Alert).values(
                audit_seq=seq,
                raised_at=d.at.isoformat(),
                to_role="ig_lead",
                kind="break_glass_used" if used else "break_glass_attempted",
                protocol_id=d.protocol_id,
                user_id=d.user_id,
                person_id=subject_id or d.subject.person_id,
                detail=",".join(d.break_glass_problems) or "override_valid",
            )
        )
    for d in decisions:
        if (
            d.notification_due_by is not None
            and conn.execute(
                select(NotificationDue.id).where(
                    NotificationDue.person_id == d.subject.person_id,
                    NotificationDue.protocol_id == d.protocol_id,
                    NotificationDue.done_at.is_(None),
                )
            ).first()
            is None
        ):  # one pending notification per person and protocol is enough
            conn.execute(
                insert(NotificationDue).values(
                    audit_seq=seq,
                    person_id=d.subject.person_id,
                    protocol_id=d.protocol_id,
                    due_by=d.notification_due_by.isoformat(),
                    reason="break_glass_override",
                )
            )


def refused_break_glass(d: Decision) -> Decision:
    """A break-glass request that is not valid discloses nothing, even fields the protocol's
    gateway would allow: the practitioner asked for an override, not for an ordinary view.
    Every field is refused with the break-glass problems as its reasons."""
    problems = tuple(d.break_glass_problems) or ("break_glass_invalid",)
    fields = tuple(
        replace(
            f,
            allowed=False,
            legal_basis=None,
            reasons=tuple(
                dict.fromkeys([r for r in f.reasons if r not in _GRANTED] + list(problems))
            ),
        )
        for f in d.fields
    )
    user = User(d.user_id, d.role)
    return replace(
        d,
        fields=fields,
        interactions=tuple(_interactions(d.mode, user, list(fields))),
        break_glass_used=False,
        notification_due_by=None,
    )


_GRANTED = frozenset({Reason.CONSENT_GIVEN, Reason.STATUTORY_GATEWAY, Reason.BREAK_GLASS_OVERRIDE})


def _interactions(mode: str, user: User, decisions: list[FieldDecision]) -> list[InteractionRecord]:
    by_agency: dict[str, list[FieldDecision]] = {}
    for f in decisions:
        by_agency.setdefault(f.agency, []).append(f)
    out: list[InteractionRecord] = []
    if mode == "request":
        out.append(
            InteractionRecord(
                Interaction.REQUEST, None, tuple(f"{f.agency}.{f.field}" for f in decisions)
            )
        )
        for agency, fs in by_agency.items():
            ok = tuple(f.field for f in fs if f.allowed)
            no = [f for f in fs if not f.allowed]
            if ok:
                out.append(InteractionRecord(Interaction.DISCLOSE_ON_REQUEST, agency, ok))
            if no:
                out.append(
                    InteractionRecord(
                        Interaction.REFUSE_REQUEST,
                        agency,
                        tuple(f.field for f in no),
                        tuple(sorted({r for f in no for r in f.reasons})),
                    )
                )
        return out
    # offer: the holder offers (or withholds) on information grounds; the hub accepts (or
    # declines) on the recipient's behalf on recipient grounds.
    for agency, fs in by_agency.items():
        holder_no = [
            f for f in fs if any(r not in _RECIPIENT_SIDE for r in f.reasons) and not f.allowed
        ]
        offered = [f for f in fs if f not in holder_no]
        if holder_no:
            out.append(
                InteractionRecord(
                    Interaction.WITHHOLD_OFFER,
                    agency,
                    tuple(f.field for f in holder_no),
                    tuple(
                        sorted(
                            {r for f in holder_no for r in f.reasons if r not in _RECIPIENT_SIDE}
                        )
                    ),
                )
            )
        if offered:
            out.append(
                InteractionRecord(Interaction.OFFER, agency, tuple(f.field for f in offered))
            )
            acc = tuple(f.field for f in offered if f.allowed)
            dec = [f for f in offered if not f.allowed]
            if acc:
                out.append(InteractionRecord(Interaction.ACCEPT, agency, acc))
            if dec:
                out.append(
                    InteractionRecord(
                        Interaction.DECLINE_OFFER,
                        agency,
                        tuple(f.field for f in dec),
                        tuple(sorted({r for f in dec for r in f.reasons})),
                    )
                )
    return out
