"""The whole decision log: the information-sharing interactions the protocol rules never see.

The decision function (governance.decisions) records what the rules decided when someone asks
through the hub. Practice holds more than that, and the partnership's model of appropriate
sharing needs all of it:
- an agency *offers* information about a person to a worker or another agency, and the
  recipient *accepts* it or *refuses* it (with why);
- a worker decides *not to offer* what they hold, or *not to request* what another agency
  holds, and says why;
- a refusal is *challenged* to the IG lead or the Caldicott guardian, who upholds it or
  overturns it, and says why;
- sharing done *outside the system* (a strategy meeting, a phone call) is recorded after the
  event with its lawful basis and why.

Each record is one entry in the tamper-evident audit log (kind "sharing"), carrying the same
`interactions` list a decision entry carries, so the IG report reads every entry one way
(governance.reports.appropriateness). Justifications are the only free text: screened with the
bridge's identifier recogniser (decisions.screen_justification); a text that looks like an
identifier is refused and never stored, and the refused attempt is recorded with codes only.
Small index tables (open offers, open challenges) are written in the audit entry's own
transaction, so an offer or challenge exists if and only if its entry does.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    MetaData,
    String,
    Table,
    insert,
    select,
    update,
)

from governance.challenges import DECIDER_ROLES, decider_refusal
from governance.decisions import (
    MIN_JUSTIFICATION,
    Governance,
    Interaction,
    User,
    screen_justification,
)
from governance.policy import AGENCY_CODES, LEGAL_GATEWAYS
from governance.relationships import Subject
from governance.staff import staff_directory

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

_meta = MetaData()
offers = Table(
    "gov_sharing_offers",
    _meta,
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
    _meta,
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


class SharingLog:
    """Records the interactions the rules never see, each as one audit entry."""

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
        _meta.create_all(self.audit.engine)

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

    # -- information offered, and the answer to an offer -----------------------------------

    def offer(
        self,
        user: User,
        about: About,
        to_agency: str,
        categories: Iterable[str],
        basis: str,
        justification: str,
        *,
        to_user: str | None = None,
        team: str | None = None,
        protocol_id: str | None = None,
    ) -> Recorded:
        """The user's agency offers information it holds to another agency (or one of its
        workers). The offer stays open until the recipient accepts or refuses it."""
        kind = "sharing_offer"
        at = self.clock()
        cats, to = self._categories(categories), self._agency("to_agency", to_agency)
        basis = self._code("basis", basis, BASES)
        if to_user is not None and not ID.fullmatch(to_user):
            raise BadSharingRecord("to_user", "not a user id")
        proto = self._protocol(protocol_id)
        own = self._own_agency(user, kind)
        if to == own:
            raise BadSharingRecord("to_agency", "an offer goes to another agency")
        text = self._text(kind, user, "justification", justification)
        about = self._about(kind, user, about, at)
        body = {
            **self._base(kind, user, team, about, at, proto),
            "to_agency": to,
            "to_user": to_user,
            "categories": cats,
            "basis": basis,
            "justification": text,
            "interactions": [self._ix(Interaction.OFFER, own, cats)],
        }

        def index(conn: Connection, seq: int) -> None:
            conn.execute(
                insert(offers).values(
                    offer_id=body["record_id"],
                    audit_seq=seq,
                    from_agency=own,
                    to_agency=to,
                    to_user=to_user,
                    person_id=about.person_id,
                    household_id=about.household_id,
                    made_at=at.isoformat(),
                    status="open",
                )
            )

        return self._append(body, index)

    def open_offers(self, agency: str | None) -> list[dict[str, Any]]:
        """Offers waiting for an answer from `agency` (ids and codes; the text is in the log)."""
        with self.audit.engine.connect() as conn:
            rows = (
                conn.execute(
                    select(offers)
                    .where(offers.c.to_agency == agency, offers.c.status == "open")
                    .order_by(offers.c.audit_seq)
                )
                .mappings()
                .all()
            )
        return [dict(r) for r in rows]

    def respond(
        self,
        user: User,
        offer_id: str,
        accept: bool,
        *,
        reason: str | None = None,
        justification: str | None = None,
        team: str | None = None,
    ) -> Recorded:
        """Accept or refuse an offer made to the user's agency. A refusal needs a reason code
        and a justification; an acceptance may say why."""
        kind = "sharing_offer_response"
        at = self.clock()
        if not HEX_ID.fullmatch(offer_id or ""):
            raise BadSharingRecord("offer_id", "not an offer id")
        own = self._own_agency(user, kind)
        if not accept:
            reason = self._code("reason", reason or "", OFFER_REFUSED_REASONS)
        text = self._text(kind, user, "justification", justification, required=not accept)
        with self.audit.engine.connect() as conn:
            row = conn.execute(select(offers).where(offers.c.offer_id == offer_id)).first()
        if row is None or row.to_agency != own or (row.to_user not in (None, user.user_id)):
            raise SharingNotFound("offer")  # an offer to someone else is not an oracle
        if row.status != "open":
            raise SharingConflict("the offer was already answered")
        about = About(row.person_id, row.household_id)
        cats = self._offer_categories(row.audit_seq)
        ix = (
            self._ix(Interaction.ACCEPT, own, cats)
            if accept
            else self._ix(Interaction.DECLINE_OFFER, own, cats, [reason or "other"])
        )
        body = {
            **self._base(kind, user, team, about, at, None),
            "offer_id": offer_id,
            "offer_seq": row.audit_seq,
            "from_agency": row.from_agency,
            "accepted": accept,
            "reason": None if accept else reason,
            "justification": text,
            "interactions": [ix],
        }

        def close(conn: Connection, seq: int) -> None:
            moved = conn.execute(
                update(offers)
                .where(offers.c.offer_id == offer_id, offers.c.status == "open")
                .values(status="accepted" if accept else "refused", response_seq=seq)
            )
            if moved.rowcount != 1:  # answered by someone else meanwhile: nothing recorded
                raise SharingConflict("the offer was already answered")

        return self._append(body, close)

    def _offer_categories(self, seq: int) -> list[str]:
        rec = self.audit.get(seq)
        return list(rec.data().get("categories") or []) if rec else []

    # -- decisions not to offer, not to request --------------------------------------------

    def not_offered(
        self,
        user: User,
        about: About,
        to_agency: str | None,
        categories: Iterable[str],
        reason: str,
        justification: str,
        *,
        team: str | None = None,
        protocol_id: str | None = None,
    ) -> Recorded:
        """The user's agency holds information and decided not to offer it (to `to_agency`,
        or to anyone when None)."""
        kind = "sharing_not_offered"
        at = self.clock()
        cats = self._categories(categories)
        to = None if to_agency in (None, "") else self._agency("to_agency", to_agency)
        reason = self._code("reason", reason, NOT_OFFERED_REASONS)
        proto = self._protocol(protocol_id)
        own = self._own_agency(user, kind)
        text = self._text(kind, user, "justification", justification)
        about = self._about(kind, user, about, at)
        return self._append(
            {
                **self._base(kind, user, team, about, at, proto),
                "to_agency": to,
                "categories": cats,
                "reason": reason,
                "justification": text,
                "interactions": [self._ix(Interaction.WITHHOLD_OFFER, own, cats, [reason])],
            }
        )

    def not_requested(
        self,
        user: User,
        about: About,
        from_agency: str | None,
        categories: Iterable[str],
        reason: str,
        justification: str,
        *,
        team: str | None = None,
        protocol_id: str | None = None,
    ) -> Recorded:
        """The user decided not to ask another agency (`from_agency`, or any) for what it
        holds."""
        kind = "sharing_not_requested"
        at = self.clock()
        cats = self._categories(categories)
        frm = None if from_agency in (None, "") else self._agency("from_agency", from_agency)
        reason = self._code("reason", reason, NOT_REQUESTED_REASONS)
        proto = self._protocol(protocol_id)
        own = self._own_agency(user, kind)
        text = self._text(kind, user, "justification", justification)
        about = self._about(kind, user, about, at)
        return self._append(
            {
                **self._base(kind, user, team, about, at, proto),
                "from_agency": frm,
                "categories": cats,
                "reason": reason,
                "justification": text,
                "interactions": [self._ix(Interaction.WITHHOLD_REQUEST, own, cats, [reason])],
            }
        )

    # -- sharing outside the system --------------------------------------------------------

    def off_system(
        self,
        user: User,
        about: About,
        *,
        channel: str,
        occurred_on: dt.date,
        from_agency: str,
        to_agency: str,
        asked: bool,
        categories: Iterable[str],
        basis: str,
        justification: str,
        team: str | None = None,
        protocol_id: str | None = None,
    ) -> Recorded:
        """Sharing that happened outside the hub (a strategy meeting, a phone call), recorded
        after the event by a worker of one of the two agencies. `asked`: shared because the
        recipient asked (request + share when asked) or offered (offer + accept)."""
        kind = "sharing_off_system"
        at = self.clock()
        channel = self._code("channel", channel, CHANNELS)
        frm, to = self._agency("from_agency", from_agency), self._agency("to_agency", to_agency)
        if frm == to:
            raise BadSharingRecord("to_agency", "sharing is between two agencies")
        if not isinstance(occurred_on, dt.date) or occurred_on > at.date():
            raise BadSharingRecord("occurred_on", "a date not in the future")
        cats = self._categories(categories)
        basis = self._code("basis", basis, BASES)
        proto = self._protocol(protocol_id)
        own = self._own_agency(user, kind)
        if own not in (frm, to):
            raise BadSharingRecord("from_agency", "the recorder's agency must be one side")
        text = self._text(kind, user, "justification", justification)
        about = self._about(kind, user, about, at)
        ixs = (
            [
                self._ix(Interaction.REQUEST, to, cats),
                self._ix(Interaction.DISCLOSE_ON_REQUEST, frm, cats),
            ]
            if asked
            else [self._ix(Interaction.OFFER, frm, cats), self._ix(Interaction.ACCEPT, to, cats)]
        )
        return self._append(
            {
                **self._base(kind, user, team, about, at, proto),
                "channel": channel,
                "occurred_on": occurred_on.isoformat(),
                "from_agency": frm,
                "to_agency": to,
                "asked": asked,
                "categories": cats,
                "basis": basis,
                "justification": text,
                "interactions": ixs,
            }
        )

    # -- challenges of a refusal -----------------------------------------------------------

    def challenge(
        self, user: User, target_seq: int, to: str, grounds: str, *, team: str | None = None
    ) -> Recorded:
        """Challenge a refusal (an audit entry that withheld: a refused request, an offer
        not made or refused, a request not made) to the IG lead or the Caldicott guardian."""
        kind = "sharing_challenge"
        at = self.clock()
        to = self._code("to", to, CHALLENGE_TO)
        if not isinstance(target_seq, int) or target_seq < 1:
            raise BadSharingRecord("target_seq", "not an audit entry number")
        text = self._text(kind, user, "grounds", grounds)
        target = self.audit.get(target_seq)
        body = target.data() if target is not None else {}
        withheld = _withholding(body)
        subject = body.get("subject") or {}
        if target is not None and body.get("household_id") and not subject.get("household_id"):
            subject = {"person_id": None, "household_id": body.get("household_id")}
        about = About(subject.get("person_id") or None, subject.get("household_id"))
        mine = target is not None and body.get("user_id") == user.user_id
        related = (
            target is not None
            and (about.person_id or about.household_id)
            and self.gov.relationships.current(user.user_id, about.subject(), at)
        )
        if not withheld or not (mine or related):
            # the same answer whether the entry is missing, not a refusal, or not the user's
            seq = self._refusal(kind, user, ["not_a_refusal_you_can_challenge"])
            raise SharingRefused(["not_a_refusal_you_can_challenge"], seq)
        by = body.get("user_id")
        home = staff_directory(self.audit.engine).get(by) or (None, None)
        target_team = body.get("team") or home[1]
        summary = [
            {
                **w,
                "agency": w["agency"] or home[0],
                "user_id": by,
                "team": target_team if w["side"] == "actor" else None,
            }
            for w in withheld
        ]
        out = {
            **self._base(kind, user, team, about, at, body.get("protocol_id")),
            "target_seq": target_seq,
            "target_type": body.get("type"),
            "to": to,
            "grounds": text,
            "challenged": summary,
            "interactions": [],
        }

        def index(conn: Connection, seq: int) -> None:
            if (
                conn.execute(
                    select(challenges.c.challenge_id).where(
                        challenges.c.target_seq == target_seq, challenges.c.status == "open"
                    )
                ).first()
                is not None
            ):
                raise SharingConflict("this refusal already has an open challenge")
            conn.execute(
                insert(challenges).values(
                    challenge_id=out["record_id"],
                    audit_seq=seq,
                    target_seq=target_seq,
                    raised_by=user.user_id,
                    to_role=to,
                    raised_at=at.isoformat(),
                    status="open",
                )
            )

        return self._append(out, index)

    def open_challenges(self) -> list[dict[str, Any]]:
        with self.audit.engine.connect() as conn:
            rows = (
                conn.execute(
                    select(challenges)
                    .where(challenges.c.status == "open")
                    .order_by(challenges.c.audit_seq)
                )
                .mappings()
                .all()
            )
        out = []
        for r in rows:
            rec = self.audit.get(int(r["audit_seq"]))
            out.append({**dict(r), "grounds": rec.data().get("grounds") if rec else None})
        return out

    def decide(
        self,
        user: User,
        challenge_id: str,
        outcome: str,
        as_: str,
        reasons: str,
        *,
        team: str | None = None,
    ) -> Recorded:
        """The IG lead or Caldicott guardian (`as_`) upholds or overturns a challenged
        refusal, and says why. Not by the person who raised it; once only."""
        kind = "sharing_challenge_decision"
        at = self.clock()
        if not HEX_ID.fullmatch(challenge_id or ""):
            raise BadSharingRecord("challenge_id", "not a challenge id")
        outcome = self._code("outcome", outcome, OUTCOMES)
        as_ = self._code("as", as_, CHALLENGE_TO)
        if user.role not in DECIDER_ROLES:
            seq = self._refusal(kind, user, ["role_may_not_decide_challenges"])
            raise SharingRefused(["role_may_not_decide_challenges"], seq)
        text = self._text(kind, user, "reasons", reasons)
        with self.audit.engine.connect() as conn:
            row = conn.execute(
                select(challenges).where(challenges.c.challenge_id == challenge_id)
            ).first()
        if row is None:
            raise SharingNotFound("challenge")
        if row.raised_by == user.user_id:
            seq = self._refusal(kind, user, ["may_not_decide_own_challenge"])
            raise SharingRefused(["may_not_decide_own_challenge"], seq)
        if row.status != "open":
            raise SharingConflict("the challenge was already decided")
        why = decider_refusal(self.gov, user, as_, row.to_role)  # governance.challenges
        if why is not None:
            seq = self._refusal(kind, user, [why])
            raise SharingRefused([why], seq)
        body = {
            **self._base(kind, user, team, None, at, None),
            "challenge_id": challenge_id,
            "challenge_seq": int(row.audit_seq),
            "target_seq": int(row.target_seq),
            "outcome": outcome,
            "decided_as": as_,
            "reasons": text,
            "interactions": [],
        }

        def close(conn: Connection, seq: int) -> None:
            moved = conn.execute(
                update(challenges)
                .where(challenges.c.challenge_id == challenge_id, challenges.c.status == "open")
                .values(status=outcome, decided_by=user.user_id, decision_seq=seq)
            )
            if moved.rowcount != 1:
                raise SharingConflict("the challenge was already decided")

        return self._append(body, close)


_RECIPIENT_KINDS = frozenset(
    {
        Interaction.REQUEST,
        Interaction.ACCEPT,
        Interaction.WITHHOLD_REQUEST,
        Interaction.DECLINE_OFFER,
    }
)


def _withholding(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The withholding interactions of an entry (a household decision has one per member).
    `side`: "actor" when the recording user's own agency withheld (not offering, not asking,
    refusing an offer), "rules" when the protocol's rules refused a request."""
    items = list(body.get("interactions") or [])
    for d in body.get("decisions") or []:
        items.extend(d.get("interactions") or [])
    out: dict[tuple[str, str | None], dict[str, Any]] = {}
    rules = body.get("type") in ("decision", "household_decision")
    for i in items:
        if i.get("kind") in WITHHOLDING:
            kind = Interaction(i["kind"])
            agency = i.get("agency")
            if kind in _RECIPIENT_KINDS and agency is None:
                agency = body.get("agency")
            side = "rules" if rules and kind is Interaction.REFUSE_REQUEST else "actor"
            out.setdefault(
                (kind.value, agency), {"kind": kind.value, "agency": agency, "side": side}
            )
    return list(out.values())
