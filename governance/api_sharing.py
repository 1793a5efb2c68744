"""The decision log through the governance API: the sharing interactions the rules never see.

    POST /sharing/offers                       information offered to another agency
    GET  /sharing/offers                       offers waiting for the caller's agency
    POST /sharing/offers/{offer_id}/response   accepted, or refused with why
    POST /sharing/not-offered                  held, and decided not to offer (why)
    POST /sharing/not-requested                decided not to ask another agency (why)
    POST /sharing/off-system                   shared at a meeting or by phone (basis, why)
    POST /sharing/challenges                   a refusal challenged to the IG lead / Caldicott
    GET  /sharing/challenges                   open challenges (IG lead)
    POST /sharing/challenges/{id}/decision     upheld or overturned, by whom, why

Every record is one audit entry (governance.sharing). Errors: 403 refused (codes only; the
attempt is recorded), 404 unknown offer/challenge/subject, 409 already answered/decided, 422
bad input (field and problem, never the value: a justification may hold a name).
"""

# No `from __future__ import annotations`: FastAPI must see the real Annotated types.

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from governance.challenges import DECIDER_ROLES
from governance.decisions import User
from governance.service import ViewService
from governance.sharing import SharingLog
from governance.sharing_model import (
    About,
    BadSharingRecord,
    Recorded,
    SharingConflict,
    SharingError,
    SharingNotFound,
    SharingRefused,
)
from governance.staff import staff_directory

ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
HEX32 = r"^[0-9a-f]{32}$"
CODE = r"^[a-z][a-z0-9_]{1,63}$"
AGENCY = r"^[A-Z]{2,8}$"
Text = Annotated[
    str,
    Field(
        min_length=1,
        max_length=500,
        description="At least 20 characters; no names, dates, addresses, "
        "postcodes or numbers (screened, refused if it looks "
        "like an identifier)",
    ),
]


class AboutIn(BaseModel):
    person_id: str | None = Field(default=None, pattern=ID_PATTERN)
    household_id: str | None = Field(
        default=None, pattern=ID_PATTERN, description="for a record about a whole household"
    )


class OfferIn(AboutIn):
    to_agency: str = Field(pattern=AGENCY)
    to_user: str | None = Field(default=None, pattern=ID_PATTERN)
    categories: list[Annotated[str, Field(pattern=CODE)]] = Field(min_length=1, max_length=20)
    basis: str = Field(
        pattern=r"^[A-Za-z0-9_]{3,32}$",
        description="consent, significant_harm, vital_interests or a gateway",
    )
    justification: Text
    protocol_id: str | None = Field(default=None, pattern=CODE)


class ResponseIn(BaseModel):
    accept: bool
    reason: str | None = Field(
        default=None, pattern=CODE, description="required when refusing (a code)"
    )
    justification: Text | None = None


class NotSharedIn(AboutIn):
    agency: str | None = Field(
        default=None, pattern=AGENCY, description="the other agency (none: any)"
    )
    categories: list[Annotated[str, Field(pattern=CODE)]] = Field(min_length=1, max_length=20)
    reason: str = Field(pattern=CODE)
    justification: Text
    protocol_id: str | None = Field(default=None, pattern=CODE)


class OffSystemIn(AboutIn):
    channel: str = Field(pattern=CODE, description="strategy_meeting, phone_call, ...")
    occurred_on: dt.date
    from_agency: str = Field(pattern=AGENCY)
    to_agency: str = Field(pattern=AGENCY)
    asked: bool = Field(description="shared because the recipient asked (else offered)")
    categories: list[Annotated[str, Field(pattern=CODE)]] = Field(min_length=1, max_length=20)
    basis: str = Field(pattern=r"^[A-Za-z0-9_]{3,32}$")
    justification: Text
    protocol_id: str | None = Field(default=None, pattern=CODE)


class ChallengeIn(BaseModel):
    target_seq: int = Field(ge=1, description="the audit entry that recorded the refusal")
    to: str = Field(pattern=r"^(ig_lead|caldicott_guardian)$")
    grounds: Text


class DecisionIn(BaseModel):
    outcome: str = Field(
        pattern=r"^(upheld|overturned)$",
        description="upheld: the refusal stands; overturned: it falls",
    )
    decided_as: str | None = Field(
        None, pattern=r"^(ig_lead|caldicott_guardian)$", description="default: the caller's role"
    )
    reasons: Text


class RecordedOut(BaseModel):
    record_id: str
    audit_seq: int


def _out(r: Recorded) -> RecordedOut:
    return RecordedOut(record_id=r.record_id, audit_seq=r.audit_seq)


def _about(body: AboutIn) -> About:
    return About(body.person_id, body.household_id)


def sharing_router(views: ViewService, current_user: Callable[..., User]) -> APIRouter:
    """The /sharing routes, authenticated by the API's own `current_user` dependency."""
    router = APIRouter(prefix="/sharing", tags=["decision log"])
    CurrentUser = Annotated[User, Depends(current_user)]  # noqa: N806

    def resolve(about: About) -> About | None:
        if about.person_id is not None:
            exists, household = views.person_household(about.person_id)
            return About(about.person_id, household) if exists else None
        exists, _ = views.household_members(str(about.household_id))
        return about if exists else None

    log = SharingLog(views.gov, resolve=resolve, clock=views.clock)

    def team(user: User) -> str | None:
        return (staff_directory(views.gov.audit.engine).get(user.user_id) or (None, None))[1]

    def run(fn: Callable[[], Recorded]) -> RecordedOut:
        try:
            return _out(fn())
        except BadSharingRecord as exc:
            raise HTTPException(422, {"field": exc.field, "problem": exc.problem}) from None
        except SharingRefused as exc:
            # As for views: without a relationship (or a refusal of one's own), no audit seq,
            # which would count requests; the same body whether or not the subject exists.
            hide = {"no_legitimate_relationship", "not_a_refusal_you_can_challenge"}
            seq = None if hide & set(exc.reasons) else exc.audit_seq
            raise HTTPException(403, {"reasons": exc.reasons, "audit_seq": seq}) from None
        except SharingNotFound as exc:
            raise HTTPException(404, f"unknown {exc.kind}") from None
        except SharingConflict as exc:
            raise HTTPException(409, str(exc)) from None
        except SharingError as exc:  # pragma: no cover - every subclass is mapped above
            raise HTTPException(400, type(exc).__name__) from None

    @router.post("/offers", response_model=RecordedOut, status_code=201)
    def offer(user: CurrentUser, body: OfferIn) -> RecordedOut:
        """Information offered by the caller's agency to another agency about a person."""
        return run(
            lambda: log.offer(
                user,
                _about(body),
                body.to_agency,
                body.categories,
                body.basis,
                body.justification,
                to_user=body.to_user,
                team=team(user),
                protocol_id=body.protocol_id,
            )
        )

    @router.get("/offers")
    def open_offers(user: CurrentUser) -> list[dict[str, Any]]:
        """Offers made to the caller's agency, not yet answered."""
        return [o for o in log.open_offers(user.agency) if o["to_user"] in (None, user.user_id)]

    @router.post("/offers/{offer_id}/response", response_model=RecordedOut, status_code=201)
    def respond(
        user: CurrentUser, offer_id: Annotated[str, PathParam(pattern=HEX32)], body: ResponseIn
    ) -> RecordedOut:
        """Accept an offer, or refuse it with a reason code and a justification."""
        return run(
            lambda: log.respond(
                user,
                offer_id,
                body.accept,
                reason=body.reason,
                justification=body.justification,
                team=team(user),
            )
        )

    @router.post("/not-offered", response_model=RecordedOut, status_code=201)
    def not_offered(user: CurrentUser, body: NotSharedIn) -> RecordedOut:
        """The caller's agency holds information and decided not to offer it."""
        return run(
            lambda: log.not_offered(
                user,
                _about(body),
                body.agency,
                body.categories,
                body.reason,
                body.justification,
                team=team(user),
                protocol_id=body.protocol_id,
            )
        )

    @router.post("/not-requested", response_model=RecordedOut, status_code=201)
    def not_requested(user: CurrentUser, body: NotSharedIn) -> RecordedOut:
        """The caller decided not to ask another agency for what it holds."""
        return run(
            lambda: log.not_requested(
                user,
                _about(body),
                body.agency,
                body.categories,
                body.reason,
                body.justification,
                team=team(user),
                protocol_id=body.protocol_id,
            )
        )

    @router.post("/off-system", response_model=RecordedOut, status_code=201)
    def off_system(user: CurrentUser, body: OffSystemIn) -> RecordedOut:
        """Sharing done outside the system (strategy meeting, phone call), recorded after."""
        return run(
            lambda: log.off_system(
                user,
                _about(body),
                channel=body.channel,
                occurred_on=body.occurred_on,
                from_agency=body.from_agency,
                to_agency=body.to_agency,
                asked=body.asked,
                categories=body.categories,
                basis=body.basis,
                justification=body.justification,
                team=team(user),
                protocol_id=body.protocol_id,
            )
        )

    @router.post("/challenges", response_model=RecordedOut, status_code=201)
    def challenge(user: CurrentUser, body: ChallengeIn) -> RecordedOut:
        """Challenge a refusal to the IG lead or the Caldicott guardian."""
        return run(
            lambda: log.challenge(user, body.target_seq, body.to, body.grounds, team=team(user))
        )

    @router.get("/challenges")
    def open_challenges(user: CurrentUser) -> list[dict[str, Any]]:
        """Challenges waiting for a decision, addressed to the caller's role (IG lead or
        Caldicott guardian)."""
        if user.role not in DECIDER_ROLES:
            raise HTTPException(403, {"reasons": ["role_may_not_decide_challenges"]})
        return [c for c in log.open_challenges() if c["to_role"] == user.role]

    @router.post("/challenges/{challenge_id}/decision", response_model=RecordedOut, status_code=201)
    def decide(
        user: CurrentUser, challenge_id: Annotated[str, PathParam(pattern=HEX32)], body: DecisionIn
    ) -> RecordedOut:
        """Uphold or overturn a challenged refusal (IG lead / Caldicott guardian)."""
        return run(
            lambda: log.decide(
                user,
                challenge_id,
                body.outcome,
                body.decided_as or user.role,
                body.reasons,
                team=team(user),
            )
        )

    return router
