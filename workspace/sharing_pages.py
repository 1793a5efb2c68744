"""The decision log in the workspace: record what the protocol rules never see.

Pages (GOV.UK form patterns, CSRF on every POST, nothing decided here: governance.sharing
records and screens, one audit entry per record):
    /sharing                         what you can record; offers waiting for your agency;
                                     challenges waiting for a decision (IG lead)
    /sharing/off-system              sharing done outside the system (meeting, phone call)
    /sharing/offer                   information your agency offers to another
    /sharing/not-shared              a decision not to offer, or not to request
    /sharing/offers/{offer_id}       accept or refuse an offer made to your agency
    /sharing/challenge               challenge a refusal to the IG lead or Caldicott guardian
    /sharing/challenges/{id}         uphold or overturn it (IG lead)
A justification is never shown back, even on an error: it may be what was refused.
"""

# No `from __future__ import annotations`: FastAPI must see the real parameter types.

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from governance.policy import AGENCY_CODES, LEGAL_GATEWAYS
from governance.sharing import SharingLog
from governance.sharing_model import (
    CHANNELS,
    NOT_OFFERED_REASONS,
    NOT_REQUESTED_REASONS,
    OFFER_REFUSED_REASONS,
    About,
    BadSharingRecord,
    Recorded,
    SharingConflict,
    SharingNotFound,
    SharingRefused,
)

HEX32 = re.compile(r"^[0-9a-f]{32}$")
AGENCIES = sorted(AGENCY_CODES)
CATEGORIES = (
    "case_notes",
    "safeguarding_concerns",
    "health_notes",
    "attendance",
    "incidents",
    "housing",
    "social_care_plan",
    "family_support_plan",
)
BASES = [
    ("consent", "Consent of the person or family"),
    *((k, v) for k, v in sorted(LEGAL_GATEWAYS.items())),
    ("significant_harm", "Risk of significant harm (no consent sought)"),
    ("vital_interests", "Vital interests"),
]
REFUSAL_TEXT = {
    "justification_contains_identifier": "Your justification looked like it contained a "
    "name, date, address or number. Describe the reason only. Your text was not kept.",
    "no_legitimate_relationship": "You are not allocated to this child or family.",
    "recorder_has_no_agency": "Your account is not linked to an agency.",
    "not_a_refusal_you_can_challenge": "That entry is not a refusal you can challenge.",
    "role_may_not_decide_challenges": "Only the IG lead or Caldicott guardian decides.",
    "may_not_decide_own_challenge": "You cannot decide a challenge you raised.",
    "challenge_addressed_to_other_role": "This challenge was addressed to someone else.",
    "not_a_named_decider": "You are not named to decide challenges for this partnership.",
    "decided_as_not_your_role": "You can only decide in your own role.",
}


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    kind: str  # text | number | textarea | select | radios | checkboxes | date
    hint: str = ""
    options: tuple[tuple[str, str], ...] = ()


def _opts(codes: Any) -> tuple[tuple[str, str], ...]:
    return tuple((c, c.replace("_", " ").capitalize()) for c in sorted(codes))


PERSON = Field(
    "person_id",
    "Child or family member (hub person reference)",
    "text",
    "As shown on the family view, for example the member heading.",
)
CATS = Field("categories", "Information", "checkboxes", "Select all that apply.", _opts(CATEGORIES))
JUSTIFY = Field(
    "justification",
    "Justification",
    "textarea",
    "At least 20 characters. Describe the reason only: no names, dates, "
    "addresses, postcodes or numbers.",
)
FORMS: dict[str, tuple[str, list[Field]]] = {
    "off-system": (
        "Record sharing done outside the system",
        [
            PERSON,
            Field("channel", "How was it shared", "radios", "", _opts(CHANNELS)),
            Field("occurred_on", "When", "date", "For example, 27 3 2026"),
            Field("from_agency", "Shared by", "select", "", tuple((a, a) for a in AGENCIES)),
            Field("to_agency", "Shared with", "select", "", tuple((a, a) for a in AGENCIES)),
            Field(
                "asked",
                "Was it asked for",
                "radios",
                "",
                (("yes", "Yes, the other agency asked"), ("no", "No, it was offered")),
            ),
            CATS,
            Field("basis", "Lawful basis", "select", "", tuple(BASES)),
            JUSTIFY,
        ],
    ),
    "offer": (
        "Offer information to another agency",
        [
            PERSON,
            Field("to_agency", "Offer to", "select", "", tuple((a, a) for a in AGENCIES)),
            CATS,
            Field("basis", "Lawful basis", "select", "", tuple(BASES)),
            JUSTIFY,
        ],
    ),
    "not-shared": (
        "Record a decision not to share",
        [
            Field(
                "kind",
                "What did you decide",
                "radios",
                "",
                (
                    ("not_offered", "Not to offer information we hold"),
                    ("not_requested", "Not to request information another agency holds"),
                ),
            ),
            PERSON,
            Field(
                "agency",
                "The other agency",
                "select",
                "",
                (("", "Any agency"), *((a, a) for a in AGENCIES)),
            ),
            CATS,
            Field(
                "reason", "Reason", "select", "", _opts(NOT_OFFERED_REASONS | NOT_REQUESTED_REASONS)
            ),
            JUSTIFY,
        ],
    ),
    "respond": (
        "Answer an offer of information",
        [
            Field(
                "accept",
                "Your answer",
                "radios",
                "",
                (("yes", "Accept the information"), ("no", "Refuse the information")),
            ),
            Field(
                "reason",
                "If you refuse, the reason",
                "select",
                "",
                (("", "Not refusing"), *_opts(OFFER_REFUSED_REASONS)),
            ),
            Field(
                "justification",
                "Justification",
                "textarea",
                "Needed if you refuse. At least 20 characters, no names, dates or numbers.",
            ),
        ],
    ),
    "challenge": (
        "Challenge a refusal",
        [
            Field(
                "target_seq",
                "Audit entry number of the refusal",
                "number",
                "Shown on the refusal page, or on the record you were told about.",
            ),
            Field(
                "to",
                "Challenge to",
                "radios",
                "",
                (("ig_lead", "IG lead"), ("caldicott_guardian", "Caldicott guardian")),
            ),
            Field(
                "grounds",
                "Grounds",
                "textarea",
                "Why the refusal should be reviewed. At least 20 characters, no names, dates "
                "or numbers.",
            ),
        ],
    ),
    "decide": (
        "Decide a challenge",
        [
            Field(
                "outcome",
                "Outcome",
                "radios",
                "",
                (("upheld", "Uphold the refusal"), ("overturned", "Overturn the refusal")),
            ),
            Field(
                "reasons",
                "Reasons",
                "textarea",
                "At least 20 characters, no names, dates or numbers.",
            ),
        ],
    ),
}
FREE_TEXT = {"justification", "grounds", "reasons"}


def router(
    ws: Any,
    render: Callable[..., HTMLResponse],
    session_of: Callable[..., Any],
    posted: Callable[..., Any],
) -> APIRouter:
    """The /sharing pages over the workspace's own session, CSRF and render helpers."""
    r = APIRouter()

    def resolve(about: About) -> About | None:
        exists, household = ws.views().person_household(str(about.person_id))
        return About(about.person_id, household) if exists else None

    log = SharingLog(ws.gov, resolve=resolve, clock=ws.clock)

    def form(
        request: Request,
        key: str,
        action: str,
        status: int = 200,
        values: dict[str, Any] | None = None,
        errors: dict[str, str] | None = None,
        intro: str | None = None,
    ) -> HTMLResponse:
        title, fields = FORMS[key]
        kept = {k: v for k, v in (values or {}).items() if k not in FREE_TEXT}
        return render(
            request,
            "sharing_form.html",
            status,
            title=title,
            fields=fields,
            action=action,
            values=kept,
            errors=errors or {},
            intro=intro,
        )

    async def fields_of(request: Request) -> dict[str, Any]:
        data = await request.form()
        out: dict[str, Any] = {k: str(v) for k, v in data.items() if k != "categories"}
        out["categories"] = [str(v) for v in data.getlist("categories")]
        return out

    def recorded(request: Request, rec: Recorded, what: str) -> HTMLResponse:
        return render(request, "sharing_done.html", what=what, rec=rec)

    def attempt(
        request: Request,
        key: str,
        action: str,
        values: dict[str, Any],
        fn: Callable[[], Recorded],
        what: str,
    ) -> Response:
        try:
            return recorded(request, fn(), what)
        except BadSharingRecord as exc:
            name = exc.field.split("[")[0]
            return form(
                request,
                key,
                action,
                422,
                values,
                {name: f"{exc.field.replace('_', ' ')}: {exc.problem}"},
            )
        except SharingRefused as exc:
            name = (
                "justification"
                if key not in ("challenge", "decide")
                else ("grounds" if key == "challenge" else "reasons")
            )
            text = " ".join(REFUSAL_TEXT.get(x, x.replace("_", " ")) for x in exc.reasons)
            return form(request, key, action, 403, values, {name: text})
        except SharingNotFound as exc:
            return render(
                request,
                "error.html",
                404,
                title="Not found",
                message=f"There is no current {exc.kind} with that reference.",
            )
        except SharingConflict as exc:
            return render(request, "error.html", 409, title="Already done", message=str(exc))

    def need(values: dict[str, Any], name: str) -> str:
        v = str(values.get(name) or "").strip()
        if not v:
            raise BadSharingRecord(name, "this is required")
        return v

    # -- the start page ---------------------------------------------------------------------

    @r.get("/sharing", response_class=HTMLResponse)
    def start(request: Request, person_id: str = "") -> Response:
        s = session_of(request)
        pending = [
            o for o in log.open_offers(s.user.agency) if o["to_user"] in (None, s.user.user_id)
        ]
        challenges = [c for c in log.open_challenges() if c["to_role"] == s.user.role]
        return render(
            request,
            "sharing.html",
            offers=pending,
            challenges=challenges,
            person_id=person_id if re.fullmatch(r"[A-Za-z0-9_.:-]{1,128}", person_id) else "",
        )

    # -- forms --------------------------------------------------------------------------------

    def show(key: str, action: str) -> Callable[..., Response]:
        def page(request: Request) -> Response:
            session_of(request)
            return form(request, key, action, values=dict(request.query_params))

        return page

    for key, path in (
        ("off-system", "/sharing/off-system"),
        ("offer", "/sharing/offer"),
        ("not-shared", "/sharing/not-shared"),
        ("challenge", "/sharing/challenge"),
    ):
        r.add_api_route(path, show(key, path), methods=["GET"], response_class=HTMLResponse)

    @r.post("/sharing/off-system", response_class=HTMLResponse)
    async def off_system(request: Request) -> Response:
        v = await fields_of(request)
        s = posted(request, v.get("csrf_token", ""))

        def run() -> Recorded:
            try:
                on = dt.date(
                    int(v.get("occurred_on-year") or 0),
                    int(v.get("occurred_on-month") or 0),
                    int(v.get("occurred_on-day") or 0),
                )
            except ValueError:
                raise BadSharingRecord("occurred_on", "enter a real date") from None
            return log.off_system(
                s.user,
                About(need(v, "person_id")),
                channel=need(v, "channel"),
                occurred_on=on,
                from_agency=need(v, "from_agency"),
                to_agency=need(v, "to_agency"),
                asked=need(v, "asked") == "yes",
                categories=v["categories"],
                basis=need(v, "basis"),
                justification=v.get("justification", ""),
                team=s.team,
            )

        return attempt(
            request,
            "off-system",
            "/sharing/off-system",
            v,
            run,
            "The sharing outside the system is recorded",
        )

    @r.post("/sharing/offer", response_class=HTMLResponse)
    async def offer(request: Request) -> Response:
        v = await fields_of(request)
        s = posted(request, v.get("csrf_token", ""))
        return attempt(
            request,
            "offer",
            "/sharing/offer",
            v,
            lambda: log.offer(
                s.user,
                About(need(v, "person_id")),
                need(v, "to_agency"),
                v["categories"],
                need(v, "basis"),
                v.get("justification", ""),
                team=s.team,
            ),
            "The offer is recorded and sent",
        )

    @r.post("/sharing/not-shared", response_class=HTMLResponse)
    async def not_shared(request: Request) -> Response:
        v = await fields_of(request)
        s = posted(request, v.get("csrf_token", ""))

        def run() -> Recorded:
            kind = need(v, "kind")
            fn = log.not_offered if kind == "not_offered" else log.not_requested
            if kind not in ("not_offered", "not_requested"):
                raise BadSharingRecord("kind", "choose one")
            return fn(
                s.user,
                About(need(v, "person_id")),
                v.get("agency") or None,
                v["categories"],
                need(v, "reason"),
                v.get("justification", ""),
                team=s.team,
            )

        return attempt(
            request,
            "not-shared",
            "/sharing/not-shared",
            v,
            run,
            "Your decision not to share is recorded",
        )

    @r.get("/sharing/offers/{offer_id}", response_class=HTMLResponse)
    def respond_form(request: Request, offer_id: str) -> Response:
        session_of(request)
        if not HEX32.fullmatch(offer_id):
            raise StarletteHTTPException(404)
        return form(request, "respond", f"/sharing/offers/{offer_id}")

    @r.post("/sharing/offers/{offer_id}", response_class=HTMLResponse)
    async def respond(request: Request, offer_id: str) -> Response:
        v = await fields_of(request)
        s = posted(request, v.get("csrf_token", ""))
        if not HEX32.fullmatch(offer_id):
            raise StarletteHTTPException(404)
        return attempt(
            request,
            "respond",
            f"/sharing/offers/{offer_id}",
            v,
            lambda: log.respond(
                s.user,
                offer_id,
                need(v, "accept") == "yes",
                reason=v.get("reason") or None,
                justification=v.get("justification") or None,
                team=s.team,
            ),
            "Your answer to the offer is recorded",
        )

    @r.post("/sharing/challenge", response_class=HTMLResponse)
    async def challenge(request: Request) -> Response:
        v = await fields_of(request)
        s = posted(request, v.get("csrf_token", ""))

        def run() -> Recorded:
            seq = need(v, "target_seq")
            if not seq.isdigit() or len(seq) > 18:
                raise BadSharingRecord("target_seq", "enter the entry number")
            return log.challenge(s.user, int(seq), need(v, "to"), v.get("grounds", ""), team=s.team)

        return attempt(
            request,
            "challenge",
            "/sharing/challenge",
            v,
            run,
            "Your challenge is recorded and sent",
        )

    @r.get("/sharing/challenges/{challenge_id}", response_class=HTMLResponse)
    def decide_form(request: Request, challenge_id: str) -> Response:
        s = session_of(request)
        found = [
            c
            for c in log.open_challenges()
            if c["challenge_id"] == challenge_id and c["to_role"] == s.user.role
        ]
        if not found:  # only for the role it was addressed to (governance.challenges)
            raise StarletteHTTPException(404)
        c = found[0]
        intro = (
            f"Challenge of the refusal in audit entry {c['target_seq']}, raised by "
            f"{c['raised_by']} to the {c['to_role'].replace('_', ' ')}: {c['grounds']}"
        )
        return form(request, "decide", f"/sharing/challenges/{challenge_id}", intro=intro)

    @r.post("/sharing/challenges/{challenge_id}", response_class=HTMLResponse)
    async def decide(request: Request, challenge_id: str) -> Response:
        v = await fields_of(request)
        s = posted(request, v.get("csrf_token", ""))
        return attempt(
            request,
            "decide",
            f"/sharing/challenges/{challenge_id}",
            v,
            lambda: log.decide(
                s.user,
                challenge_id,
                need(v, "outcome"),
                s.user.role,  # decided as the role the decider holds
                v.get("reasons", ""),
                team=s.team,
            ),
            "The decision on the challenge is recorded",
        )

    return r
