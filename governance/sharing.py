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
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, insert, select, update

from governance.decision_records import Interaction
from governance.decisions import User
from governance.sharing_challenges import ChallengeLog
from governance.sharing_model import (
    BASES,
    CHANNELS,
    HEX_ID,
    ID,
    NOT_OFFERED_REASONS,
    NOT_REQUESTED_REASONS,
    OFFER_REFUSED_REASONS,
    About,
    BadSharingRecord,
    Recorded,
    SharingConflict,
    SharingNotFound,
    offers,
)


class SharingLog(ChallengeLog):
    """Records the interactions the rules never see, each as one audit entry. The shared
    checks are in governance.sharing_recorder; challenges in governance.sharing_challenges."""

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
