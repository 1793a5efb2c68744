"""Recording, withdrawing and reading consent records: the rules the API and workspace share.

Who may act on a person's consent: a worker whose role is row-level and named by a protocol in
force that relies on that consent purpose, with a current legitimate relationship with the
person or their household (the same relationship a view needs). Anyone else is refused with
the reasons, and the refusal is an audit entry. Every record, withdrawal and reading of a
person's consent records is one audit entry; a withdrawal also stores one signed notice per
agency told (governance.consent_notices) in the same transaction, and writes them to the
outbox after it commits.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection

from governance.consent_notices import NoticeOutbox, store_notices, withdrawal_notices
from governance.consent_records import ConsentRecord, NewConsent
from governance.consent_scoped import install
from governance.decisions import Governance, User
from governance.relationships import Subject
from governance.service import Forbidden, NotFound


class ConsentService:
    def __init__(
        self,
        gov: Governance,
        warehouse: Path | str | Callable[[], Path | None] | None,
        hub_key: Ed25519PrivateKey | None = None,
        outbox: Path | None = None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.gov = gov
        self.scoped = install(gov, warehouse)
        self.store = self.scoped.store
        self.refs = self.scoped.refs
        self.hub_key = hub_key
        self.outbox = NoticeOutbox(gov.audit.engine, outbox)
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))

    def purposes_for(self, user: User, on: dt.date) -> list[str]:
        """Consent purposes of the protocols in force that name the user's role."""
        return sorted(
            {
                p.consent_purpose
                for p in self.gov.protocols.values()
                if user.role in p.roles and p.in_force(on)
            }
        )

    def _why_not(
        self, user: User, person_id: str, purpose: str | None, at: dt.datetime
    ) -> list[str]:
        reasons = []
        role = self.gov.roles.get(user.role)
        if role is None or not role.row_level:
            reasons.append("role_not_row_level")
        if purpose is not None and purpose not in self.purposes_for(user, at.date()):
            reasons.append("purpose_not_in_any_protocol_of_role")
        subject = Subject(person_id, self.refs.household_of(person_id))
        if self.gov.relationships.current(user.user_id, subject, at) is None:
            reasons.append("no_legitimate_relationship")
        return reasons

    def _check(
        self, user: User, action: str, person_id: str, purpose: str | None, at: dt.datetime
    ) -> None:
        reasons = self._why_not(user, person_id, purpose, at)
        if reasons:
            rec = self.gov.audit.append(
                "consent",
                {
                    "type": "consent_action_refused",
                    "action": action,
                    "at": at.isoformat(),
                    "user_id": user.user_id,
                    "role": user.role,
                    "person_id": person_id,
                    "purpose": purpose,
                    "reasons": reasons,
                },
            )
            raise Forbidden(None, reasons, rec.seq)

    def record(self, user: User, new: NewConsent) -> ConsentRecord:
        now = self.clock()
        self._check(user, "record", new.person_id, new.purpose, now)
        return self.store.add(
            new, self.refs.refs_of(new.person_id), user.user_id, user.agency, self.gov.audit, now
        )

    def withdraw(self, user: User, record_id: str, way: str) -> tuple[ConsentRecord, list[Path]]:
        """Withdraw at once; returns the record and the notice files written."""
        now = self.clock()
        rec = self.store.get(record_id)
        if rec is None:
            raise NotFound("consent record", record_id, None)
        # Withdrawal is about the person as linked now (they may have been re-linked).
        person = self._current_person(rec) or rec.person_id
        self._check(user, "withdraw", person, rec.purpose, now)
        refs_now = self.refs.refs_of(person)
        key = self.hub_key

        def notices(conn: Connection, seq: int) -> None:
            if key is not None:
                store_notices(conn, withdrawal_notices(rec, refs_now, key, seq, now), seq)

        done = self.store.withdraw(record_id, user.user_id, way, self.gov.audit, now, also=notices)
        return done, self.outbox.flush()

    def list(self, user: User, person_id: str) -> list[ConsentRecord]:
        now = self.clock()
        self._check(user, "read", person_id, None, now)
        mine = set(self.purposes_for(user, now.date()))
        recs = [r for r in self.scoped.records_for(person_id) if r.purpose in mine]
        self.gov.audit.append(
            "consent",
            {
                "type": "consent_records_read",
                "at": now.isoformat(),
                "user_id": user.user_id,
                "role": user.role,
                "person_id": person_id,
                "record_ids": [r.record_id for r in recs],
            },
        )
        return recs

    def _current_person(self, rec: ConsentRecord) -> str | None:
        held = self.refs.holders(rec.anchors or rec.all_refs)
        people = sorted(set(held.values()))
        return people[0] if len(people) == 1 else None
