"""The governance API's request and response models: they are its OpenAPI contract."""

# No `from __future__ import annotations`: FastAPI must see the real types.

from typing import Any

from pydantic import BaseModel, Field

from governance.service import ViewResult

ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
PROTOCOL_PATTERN = r"^[a-z][a-z0-9_]{2,63}$"
FIELD_PATTERN = r"^[a-z][a-z0-9_]{1,63}$"


class RecordOut(BaseModel):
    agency: str
    person_id: str
    fields: dict[str, Any]


class WithheldOut(BaseModel):
    agency: str
    field: str
    reasons: list[str]


class BreakGlassOut(BaseModel):
    grant_id: str | None = Field(
        description="Reopen the view with ?break_glass_id= until expires_at"
    )
    expires_at: str | None
    used: bool = Field(description="True if any field was shown only because of the override")
    alert_raised: bool = Field(description="The IG lead is alerted to every break-glass")
    notification_due_by: str | None = Field(
        description="Date by which the person must be told, unless that would increase risk"
    )


class BreakGlassIn(BaseModel):
    """A break-glass request, where the protocol allows override on risk of significant harm.
    Recorded and alerted to the IG lead whether or not it is allowed."""

    protocol_id: str = Field(pattern=PROTOCOL_PATTERN)
    category: str = Field(
        pattern=r"^[a-z][a-z_]{2,40}$",
        description="risk_of_significant_harm or immediate_danger (as the protocol permits)",
    )
    justification: str = Field(
        min_length=1,
        max_length=500,
        description="Why, in at least 20 characters; no names, dates, "
        "postcodes or numbers (screened)",
    )
    hours: int = Field(ge=1, le=72, description="How long the override lasts (protocol maximum)")
    fields: list[str] | None = Field(
        default=None, description="fewer fields than the protocol allows (minimum necessary)"
    )


class ViewOut(BaseModel):
    protocol_id: str
    subject_kind: str
    subject_id: str
    audit_seq: int = Field(description="The audit entry that recorded this request")
    decision_ids: list[str]
    members: list[str]
    records: list[RecordOut]
    withheld: list[WithheldOut]
    household_id: str | None = None
    break_glass: BreakGlassOut | None = None


class InvolvedAgency(BaseModel):
    agency: str
    since: str | None
    members: list[str]
    record_types: list[str]
    lead_practitioner_contacts: list[str]


class InvolvementOut(BaseModel):
    household_id: str
    audit_seq: int
    members: list[str]
    agencies: list[InvolvedAgency]


class IdentityIn(BaseModel):
    protocol_id: str = Field(pattern=PROTOCOL_PATTERN)
    agency: str = Field(pattern=r"^[A-Z]{2,8}$")
    reason: str = Field(
        min_length=20,
        max_length=500,
        description="Why identity is needed; no identifiers (screened)",
    )


class IdentityOut(BaseModel):
    request_id: str
    agency: str
    audit_seq: int
    identities: list[dict[str, Any]]


class ErrorOut(BaseModel):
    detail: str
    reasons: list[str] | None = None
    audit_seq: int | None = None


def view_out(v: ViewResult) -> ViewOut:
    return ViewOut(
        protocol_id=v.protocol_id,
        subject_kind=v.subject_kind,
        subject_id=v.subject_id,
        audit_seq=v.audit_seq,
        decision_ids=v.decision_ids,
        members=v.members,
        records=[
            RecordOut(agency=r.agency, person_id=r.person_id, fields=r.fields) for r in v.records
        ],
        withheld=[
            WithheldOut(agency=w.agency, field=w.field, reasons=w.reasons) for w in v.withheld
        ],
        household_id=v.extra.get("household_id"),
        break_glass=(
            BreakGlassOut(**v.extra["break_glass"]) if v.extra.get("break_glass") else None
        ),
    )
