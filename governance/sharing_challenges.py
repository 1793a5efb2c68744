"""Challenges of a refusal in the decision log, and their decision by the IG lead or the
Caldicott guardian (who may decide: governance.challenges).

A challenge names an audit entry that withheld (a refused request, an offer not made or
refused, a request not made); it stays open in gov_sharing_challenges until decided, once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, insert, select, update

from governance.challenges import DECIDER_ROLES, decider_refusal
from governance.decision_records import Interaction
from governance.decisions import User
from governance.sharing_model import (
    CHALLENGE_TO,
    HEX_ID,
    OUTCOMES,
    WITHHOLDING,
    About,
    BadSharingRecord,
    Recorded,
    SharingConflict,
    SharingNotFound,
    SharingRefused,
    challenges,
)
from governance.sharing_recorder import SharingRecorder
from governance.staff import staff_directory


class ChallengeLog(SharingRecorder):
    """Raises, lists and decides challenges of a refusal, each as one audit entry."""

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
