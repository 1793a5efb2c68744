"""What a decision is made of: the interaction and reason codes, the user, a break-glass
request, and the decision with its audit body (ids, codes and field names only).

The decision function that produces them is governance.decisions.Governance.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from governance.relationships import Subject


class Interaction(StrEnum):
    """The eight information-sharing interactions: four that share, four that withhold."""

    OFFER = "offer"
    REQUEST = "request"
    DISCLOSE_ON_REQUEST = "disclose_on_request"
    ACCEPT = "accept"
    WITHHOLD_OFFER = "withhold_offer"
    WITHHOLD_REQUEST = "withhold_request"
    REFUSE_REQUEST = "refuse_request"
    DECLINE_OFFER = "decline_offer"


class Reason(StrEnum):
    UNKNOWN_PROTOCOL = "unknown_protocol"
    PROTOCOL_NOT_IN_FORCE = "protocol_not_in_force"
    UNKNOWN_ROLE = "unknown_role"
    ROLE_NOT_IN_PROTOCOL = "role_not_in_protocol"
    ROLE_NOT_ROW_LEVEL = "role_not_row_level"
    NO_RELATIONSHIP = "no_legitimate_relationship"
    AGENCY_NOT_IN_PROTOCOL = "agency_not_in_protocol"
    FIELD_NOT_IN_DATASET = "field_not_in_minimum_dataset"
    NO_CONSENT = "no_consent"
    CONSENT_REFUSED = "consent_refused"
    CONSENT_WITHDRAWN = "consent_withdrawn"
    CONSENT_EXPIRED = "consent_expired"
    CONSENT_OUT_OF_SCOPE = "consent_out_of_scope"
    # granted reasons
    CONSENT_GIVEN = "consent_given"
    STATUTORY_GATEWAY = "statutory_gateway"
    BREAK_GLASS_OVERRIDE = "break_glass_override"


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    role: str
    agency: str | None = None  # employing agency, for reports only


@dataclass(frozen=True, slots=True)
class BreakGlass:
    category: str
    justification: str
    started_at: dt.datetime
    hours: int
    approved_by: str | None = None  # the manager who approved it (governance.approvals)


@dataclass(frozen=True, slots=True)
class FieldDecision:
    agency: str
    field: str
    allowed: bool
    reasons: tuple[str, ...]
    legal_basis: str | None
    consent: str


@dataclass(frozen=True, slots=True)
class InteractionRecord:
    kind: Interaction
    agency: str | None
    fields: tuple[str, ...]
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    decision_id: str
    at: dt.datetime
    mode: Literal["request", "offer"]
    user_id: str
    role: str
    protocol_id: str
    purpose: str | None
    legal_gateway: str | None
    subject: Subject
    fields: tuple[FieldDecision, ...]
    interactions: tuple[InteractionRecord, ...]
    break_glass_requested: bool = False
    break_glass_used: bool = False
    break_glass_problems: tuple[str, ...] = ()
    break_glass_expires_at: dt.datetime | None = None
    alert_raised: bool = False
    notification_due_by: dt.date | None = None
    audit_seq: int | None = None
    audit_hash: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def allowed(self, agency: str, field_name: str) -> bool:
        return any(f.allowed for f in self.fields if f.agency == agency and f.field == field_name)

    def allowed_fields(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for f in self.fields:
            if f.allowed:
                out.setdefault(f.agency, []).append(f.field)
        return out

    def audit_body(self, justification: str | None) -> dict[str, Any]:
        """What goes into the chained entry: ids, codes and field names only."""
        return {
            "type": "decision",
            "decision_id": self.decision_id,
            "at": self.at.isoformat(),
            "mode": self.mode,
            "user_id": self.user_id,
            "role": self.role,
            "protocol_id": self.protocol_id,
            "purpose": self.purpose,
            "legal_gateway": self.legal_gateway,
            "subject": {
                "person_id": self.subject.person_id,
                "household_id": self.subject.household_id,
            },
            "fields": [
                {
                    "agency": f.agency,
                    "field": f.field,
                    "allowed": f.allowed,
                    "reasons": list(f.reasons),
                    "legal_basis": f.legal_basis,
                    "consent": f.consent,
                }
                for f in self.fields
            ],
            "interactions": [
                {
                    "kind": i.kind.value,
                    "agency": i.agency,
                    "fields": list(i.fields),
                    "reasons": list(i.reasons),
                }
                for i in self.interactions
            ],
            "break_glass": None
            if not self.break_glass_requested
            else {
                "used": self.break_glass_used,
                "problems": list(self.break_glass_problems),
                "justification": justification,
                "expires_at": (
                    self.break_glass_expires_at.isoformat() if self.break_glass_expires_at else None
                ),
                "alert_raised": self.alert_raised,
                "notification_due_by": (
                    self.notification_due_by.isoformat() if self.notification_due_by else None
                ),
            },
        }
