"""The decision log's vocabulary: closed code lists, index tables, errors and value types.

The log itself is governance.sharing.SharingLog; this module holds what its callers (the API,
the workspace pages, the report) need to name without the recording logic.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import BigInteger, Column, MetaData, String, Table

from governance.decision_records import Interaction
from governance.policy import LEGAL_GATEWAYS
from governance.relationships import Subject

AUDIT_KIND = "sharing"
MAX_JUSTIFICATION = 500
CODE = re.compile(r"^[a-z][a-z0-9_]{1,63}$")
ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
HEX_ID = re.compile(r"^[0-9a-f]{32}$")

# Closed lists, so the report can count them and no free text hides in a code.
BASES = frozenset({"consent", "significant_harm", "vital_interests", *LEGAL_GATEWAYS})
NOT_OFFERED_REASONS = frozenset(
    {
        "not_necessary",
        "not_proportionate",
        "not_relevant",
        "consent_refused",
        "no_lawful_basis",
        "would_increase_risk",
        "already_known",
        "other",
    }
)
NOT_REQUESTED_REASONS = frozenset(
    {
        "not_necessary",
        "not_proportionate",
        "not_relevant",
        "consent_refused",
        "no_lawful_basis",
        "already_known",
        "other",
    }
)
OFFER_REFUSED_REASONS = frozenset(
    {
        "not_necessary",
        "not_proportionate",
        "not_relevant",
        "no_lawful_basis",
        "already_known",
        "other",
    }
)
CHANNELS = frozenset({"strategy_meeting", "phone_call", "meeting", "email", "letter", "other"})
CHALLENGE_TO = frozenset({"ig_lead", "caldicott_guardian"})
OUTCOMES = frozenset({"upheld", "overturned"})  # of the challenged refusal: it stands / it falls
WITHHOLDING = frozenset(
    {
        Interaction.WITHHOLD_OFFER,
        Interaction.REFUSE_REQUEST,
        Interaction.WITHHOLD_REQUEST,
        Interaction.DECLINE_OFFER,
    }
)

metadata = MetaData()  # created by SharingRecorder
offers = Table(
    "gov_sharing_offers",
    metadata,
    Column("offer_id", String(32), primary_key=True),
    Column("audit_seq", BigInteger, nullable=False),
    Column("from_agency", String(8), nullable=False),
    Column("to_agency", String(8), nullable=False),
    Column("to_user", String(128), nullable=True),
    Column("person_id", String(128), nullable=True),
    Column("household_id", String(128), nullable=True),
    Column("made_at", String(40), nullable=False),
    Column("status", String(16), nullable=False),  # open | accepted | refused
    Column("response_seq", BigInteger, nullable=True),
)
challenges = Table(
    "gov_sharing_challenges",
    metadata,
    Column("challenge_id", String(32), primary_key=True),
    Column("audit_seq", BigInteger, nullable=False),
    Column("target_seq", BigInteger, nullable=False),
    Column("raised_by", String(128), nullable=False),
    Column("to_role", String(32), nullable=False),
    Column("raised_at", String(40), nullable=False),
    Column("status", String(16), nullable=False),  # open | upheld | overturned
    Column("decided_by", String(128), nullable=True),
    Column("decision_seq", BigInteger, nullable=True),
)


class SharingError(Exception):
    """Base of the sharing log's refusals. Messages hold codes and field names, never text."""


class BadSharingRecord(SharingError):
    """Malformed input: `field` names what is wrong, `problem` says how (never the value)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


class SharingRefused(SharingError):
    """Not allowed (reasons are codes); the attempt is in the audit log as `audit_seq`."""

    def __init__(self, reasons: list[str], audit_seq: int | None = None) -> None:
        super().__init__("refused: " + ", ".join(reasons))
        self.reasons, self.audit_seq = reasons, audit_seq


class SharingNotFound(SharingError):
    def __init__(self, kind: str) -> None:
        super().__init__(f"unknown {kind}")
        self.kind = kind


class SharingConflict(SharingError):
    """The offer was already answered or the challenge already decided."""


@dataclass(frozen=True, slots=True)
class About:
    """Whom a record is about: a person (with their household if known) or a household."""

    person_id: str | None = None
    household_id: str | None = None

    def subject(self) -> Subject:
        return Subject(self.person_id or "", self.household_id)

    def body(self) -> dict[str, str | None]:
        return {"person_id": self.person_id, "household_id": self.household_id}


@dataclass(frozen=True, slots=True)
class Recorded:
    record_id: str
    audit_seq: int
    entry_hash: str


Resolve = Callable[[About], About | None]  # adds the household of a person; None: unknown id
