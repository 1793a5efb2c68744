"""The "known to" stage: which agencies are involved with a person, before the detail.

A protocol may name agencies (its `known_to` rule) whose involvement a worker may learn before
any detail is decided: *that* police hold records about a child, never what they say, when or
why. The stage is decided by the one decision function (Governance.evaluate): the protocol is
restated as a protocol whose minimum dataset is the single pseudo-field `known_to` for each of
those agencies, on the stage's own legal gateway, with no break-glass. So rules 1-3 (protocol
in force, role named, a current legitimate relationship) hold exactly as for the detail; only
the dataset and the lawful basis are the stage's. Every request is one audit entry
(`stage: known_to`), allowed or refused.

Nothing is said about an agency the stage does not cover, not even that it is withheld: the
page lists the agencies the protocol can show, so silence about the others reveals nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from governance.decision_records import Decision, Reason
from governance.decisions import User
from governance.policy import BreakGlassRule, ConsentRule, Protocol
from governance.relationships import Subject
from governance.service import Forbidden, NotFound, ViewService

KNOWN_TO = "known_to"  # the stage's only "field": names no payload column
_ASKER = frozenset(
    r.value
    for r in (
        Reason.UNKNOWN_PROTOCOL,
        Reason.PROTOCOL_NOT_IN_FORCE,
        Reason.UNKNOWN_ROLE,
        Reason.ROLE_NOT_IN_PROTOCOL,
        Reason.ROLE_NOT_ROW_LEVEL,
        Reason.NO_RELATIONSHIP,
    )
)


def stage_protocol(proto: Protocol) -> Protocol:
    """The protocol as the decision function sees it for the known-to stage."""
    rule = proto.known_to
    return proto.model_copy(
        update={
            "agencies": {a: (KNOWN_TO,) for a in rule.agencies},
            "consent_rule": ConsentRule.NOT_REQUIRED_UNDER_GATEWAY,
            "legal_gateway": rule.legal_gateway or proto.legal_gateway,
            "break_glass": BreakGlassRule(allowed=False),
        }
    )


@dataclass(frozen=True)
class KnownTo:
    protocol_id: str
    subject_kind: str  # person | household
    subject_id: str
    audit_seq: int
    legal_gateway: str | None
    covers: tuple[str, ...]  # the agencies this protocol's stage can show
    members: dict[str, list[str]] = field(default_factory=dict)  # person -> agencies known

    @property
    def agencies(self) -> list[str]:
        return sorted({a for ags in self.members.values() for a in ags})


class KnownToService:
    def __init__(self, views: ViewService) -> None:
        self.views = views
        self.gov = views.gov

    def person(self, user: User, protocol_id: str, person_id: str) -> KnownTo:
        exists, household_id = self.views.person_household(person_id)
        return self._decide(
            user, protocol_id, "person", person_id, exists, [Subject(person_id, household_id)]
        )

    def household(self, user: User, protocol_id: str, household_id: str) -> KnownTo:
        exists, members = self.views.household_members(household_id)
        subjects = [Subject(p, household_id) for p in members] or [
            Subject(household_id, household_id)
        ]
        return self._decide(
            user, protocol_id, "household", household_id, exists and bool(members), subjects
        )

    def _decide(
        self,
        user: User,
        protocol_id: str,
        kind: str,
        subject_id: str,
        exists: bool,
        subjects: list[Subject],
    ) -> KnownTo:
        at = self.views.clock()
        proto = self.gov.protocols.get(protocol_id)
        stage: Protocol | str = stage_protocol(proto) if proto is not None else protocol_id
        covers = tuple(proto.known_to.agencies) if proto is not None else ()
        holders = self.views.agencies_holding([s.person_id for s in subjects]) if exists else {}
        decisions: list[Decision] = []
        for s in subjects:
            # an unknown subject is asked about every covered agency: not an oracle
            agencies = holders.get(s.person_id, []) if exists else list(covers)
            decisions.append(
                self.gov.evaluate(user, stage, s, [(a, KNOWN_TO) for a in agencies], at)
            )
        context: dict[str, Any] = {"stage": KNOWN_TO}
        if len(decisions) == 1:
            body = {**decisions[0].audit_body(None), **context}
        else:
            body = {
                "type": "household_decision",
                "at": at.isoformat(),
                "user_id": user.user_id,
                "role": user.role,
                "protocol_id": protocol_id,
                "household_id": subject_id,
                **context,
                "decisions": [d.audit_body(None) for d in decisions],
            }
        seq = self.gov.audit.append("decision", body).seq
        asker = sorted({r for d in decisions for f in d.fields for r in f.reasons if r in _ASKER})
        if proto is None:
            asker = asker or [Reason.UNKNOWN_PROTOCOL.value]
        elif not any(d.fields for d in decisions):
            # nothing held to ask about: the asker-side rules still decide (same function,
            # same moment; this probe names no agency and is not a second entry)
            probe = self.gov.evaluate(user, stage, subjects[0], [("-", KNOWN_TO)], at)
            asker = sorted({r for f in probe.fields for r in f.reasons if r in _ASKER})
        if asker:
            raise Forbidden(decisions[0], asker, seq)
        if not exists:
            raise NotFound(kind, subject_id, seq)
        members = {
            d.subject.person_id: sorted(f.agency for f in d.fields if f.allowed) for d in decisions
        }
        return KnownTo(
            protocol_id,
            kind,
            subject_id,
            seq,
            stage.legal_gateway if isinstance(stage, Protocol) else None,
            covers,
            members,
        )
