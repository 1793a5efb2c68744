"""What every decision-log record shares: the input checks and how an entry is built.

SharingRecorder is the base of governance.sharing.SharingLog. Its checks refuse malformed input
with field names only, and screen free text with the bridge's identifier recogniser: a text that
looks like an identifier is never stored, and the refused attempt is recorded with codes only.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Connection

from governance.decision_records import Interaction
from governance.decisions import MIN_JUSTIFICATION, Governance, User, screen_justification
from governance.policy import AGENCY_CODES
from governance.sharing_model import (
    AUDIT_KIND,
    CODE,
    ID,
    MAX_JUSTIFICATION,
    About,
    BadSharingRecord,
    Recorded,
    Resolve,
    SharingNotFound,
    SharingRefused,
    metadata,
)
from governance.staff import staff_directory


class SharingRecorder:
    """Construction, checks and entry building shared by every kind of sharing record."""

    def __init__(
        self,
        gov: Governance,
        resolve: Resolve | None = None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.gov = gov
        self.audit = gov.audit
        self.resolve = resolve
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        metadata.create_all(self.audit.engine)

    # -- checks ---------------------------------------------------------------------------

    def _text(
        self, kind: str, user: User, field: str, text: str | None, required: bool = True
    ) -> str | None:
        text = (text or "").strip()
        if not text and not required:
            return None
        if len(text) < MIN_JUSTIFICATION:
            raise BadSharingRecord(field, f"at least {MIN_JUSTIFICATION} characters")
        if len(text) > MAX_JUSTIFICATION:
            raise BadSharingRecord(field, f"at most {MAX_JUSTIFICATION} characters")
        if not screen_justification(text):
            # Refused and not kept: the entry says what was attempted, by whom, never the text.
            seq = self._refusal(kind, user, ["justification_contains_identifier"])
            raise SharingRefused(["justification_contains_identifier"], seq)
        return text

    def _refusal(self, kind: str, user: User, reasons: list[str]) -> int:
        return self.audit.append(
            AUDIT_KIND,
            {
                "type": "sharing_record_refused",
                "attempted": kind,
                "at": self.clock().isoformat(),
                "user_id": user.user_id,
                "role": user.role,
                "agency": user.agency,
                "reasons": reasons,
            },
        ).seq

    @staticmethod
    def _code(field: str, value: str, allowed: Iterable[str]) -> str:
        allowed = frozenset(allowed)
        if value not in allowed:
            raise BadSharingRecord(field, "not one of " + ", ".join(sorted(allowed)))
        return value

    @staticmethod
    def _agency(field: str, value: str | None) -> str:
        if value not in AGENCY_CODES:
            raise BadSharingRecord(field, "not a partnership agency code")
        return str(value)

    @staticmethod
    def _categories(values: Iterable[str]) -> list[str]:
        out = list(dict.fromkeys(v.strip() for v in values if v and v.strip()))
        if not out:
            raise BadSharingRecord("categories", "name at least one information category")
        if len(out) > 20:
            raise BadSharingRecord("categories", "at most 20")
        for i, c in enumerate(out):
            if not CODE.fullmatch(c):
                raise BadSharingRecord(f"categories[{i}]", "not a category code")
        return out

    def _protocol(self, protocol_id: str | None) -> str | None:
        if protocol_id in (None, ""):
            return None
        if protocol_id not in self.gov.protocols:
            raise BadSharingRecord("protocol_id", "not a protocol of this partnership")
        return protocol_id

    def _about(self, kind: str, user: User, about: About, at: dt.datetime) -> About:
        """The recorder must have a current legitimate relationship with whom it is about;
        without one every refusal looks the same, whether or not the id exists."""
        for name, v in (("person_id", about.person_id), ("household_id", about.household_id)):
            if v is not None and not ID.fullmatch(v):
                raise BadSharingRecord(name, "not a hub id")
        if about.person_id is None and about.household_id is None:
            raise BadSharingRecord("person_id", "name a person or a household")
        found = about if self.resolve is None else self.resolve(about)
        # A person's household comes from the linkage, never from the caller.
        checked = found or About(about.person_id, None if about.person_id else about.household_id)
        if self.gov.relationships.current(user.user_id, checked.subject(), at) is None:
            seq = self._refusal(kind, user, ["no_legitimate_relationship"])
            raise SharingRefused(["no_legitimate_relationship"], seq)
        if found is None:
            raise SharingNotFound("person" if about.person_id else "household")
        return found

    def _base(
        self,
        kind: str,
        user: User,
        team: str | None,
        about: About | None,
        at: dt.datetime,
        protocol_id: str | None,
    ) -> dict[str, Any]:
        if user.agency is not None and user.agency not in AGENCY_CODES:
            raise BadSharingRecord("agency", "the recorder's agency is not a partnership code")
        if team is None:  # the recorder's team from the accounts, when the store has them
            team = (staff_directory(self.audit.engine).get(user.user_id) or (None, None))[1]
        return {
            "type": kind,
            "record_id": uuid.uuid4().hex,
            "at": at.isoformat(),
            "user_id": user.user_id,
            "role": user.role,
            "agency": user.agency,
            "team": team,
            "protocol_id": protocol_id,
            "subject": about.body() if about else None,
        }

    def _append(
        self, body: dict[str, Any], also: Callable[[Connection, int], None] | None = None
    ) -> Recorded:
        rec = self.audit.append(AUDIT_KIND, body, also=also)
        return Recorded(body["record_id"], rec.seq, rec.entry_hash)

    @staticmethod
    def _ix(
        kind: Interaction, agency: str | None, fields: list[str], reasons: Iterable[str] = ()
    ) -> dict[str, Any]:
        return {
            "kind": kind.value,
            "agency": agency,
            "fields": list(fields),
            "reasons": list(reasons),
        }

    def _own_agency(self, user: User, kind: str) -> str:
        if user.agency not in AGENCY_CODES:
            seq = self._refusal(kind, user, ["recorder_has_no_agency"])
            raise SharingRefused(["recorder_has_no_agency"], seq)
        return str(user.agency)
