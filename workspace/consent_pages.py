"""Consent pages of the workspace: see a person's consent records, record one, withdraw one.

    GET  /people/{person_id}/consent        the records (for the purposes of the worker's
                                            protocols) and the form to record a consent
    POST /people/{person_id}/consent        record it (given, refused or not sought)
    POST /consents/{record_id}/withdraw     withdraw it at once; the agencies are sent notices

The rules are governance.consent_service's (the API uses the same): the workspace only shows
and forwards. Every POST carries the session's CSRF token, checked before anything else; every
action is one audit entry (and the page view another, as for every page).
"""

# No `from __future__ import annotations`: FastAPI must see the real parameter types.

import datetime as dt
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from governance.consent_records import (
    CAPACITIES,
    CONSENTERS,
    METHODS,
    NOT_SOUGHT_REASONS,
    WITHDRAWAL_WAYS,
    ConsentRecordError,
    NewConsent,
)
from governance.consent_scope import Scope, categories
from governance.consent_service import ConsentService
from governance.policy import AGENCY_CODES
from linkage.publish import current

TEXT = {
    "given": "Consent given",
    "refused": "Consent refused",
    "not_sought": "Consent not sought",
    "parent": "A parent",
    "carer": "A carer",
    "adult": "The person (an adult)",
    "gillick_competent_child": "The child (Gillick competent)",
    "young_person_16_plus": "The young person (16 or over)",
    "parental_responsibility": "Has parental responsibility",
    "delegated_by_parent": "Delegated by a parent with parental responsibility",
    "assessed_gillick_competent": "Assessed as Gillick competent",
    "presumed_capacity": "Capacity presumed (Mental Capacity Act 2005)",
    "assessed_capacity": "Capacity assessed",
    "written_in_person": "In person, signed form",
    "verbal_in_person": "In person, verbally",
    "phone": "By phone",
    "digital_form": "Online form",
    "in_person": "In person",
    "in_writing": "In writing",
    "risk_of_significant_harm": "Seeking it would put a child at risk of significant harm",
    "would_prejudice_enquiry": "Seeking it would prejudice an enquiry",
    "person_not_contactable": "The person could not be contacted",
    "statutory_gateway_applies": "A statutory gateway applies instead",
}


def _text(code: str | None) -> str:
    return "" if code is None else TEXT.get(code, code.replace("_", " "))


def _date(day: str, month: str, year: str) -> dt.date | None:
    try:
        return dt.date(int(year), int(month), int(day))
    except ValueError:
        return None


def register(
    app: FastAPI,
    ws: Any,
    render: Callable[..., HTMLResponse],
    session_of: Callable[[Request], Any],
    posted: Callable[[Request, str], Any],
    check_id: Callable[[str], str],
) -> ConsentService:
    """Add the consent pages to the workspace app; consent records then count in its views."""
    service = ConsentService(
        ws.gov,
        lambda: current(ws.paths),
        hub_key=ws.hub_key,
        outbox=ws.paths.hub / "consent_outbox",
        clock=ws.clock,
    )
    cats = categories()

    def page(
        request: Request,
        person_id: str,
        status: int = 200,
        errors: list[str] | None = None,
        form: dict[str, Any] | None = None,
        notice: str | None = None,
    ) -> HTMLResponse:
        s = session_of(request)
        records = service.list(s.user, person_id)
        today = ws.clock().date()
        return render(
            request,
            "consent.html",
            status,
            person_id=person_id,
            records=records,
            purposes=service.purposes_for(s.user, today),
            agencies=sorted(AGENCY_CODES),
            categories=sorted(cats.titles.items()),
            consenters=CONSENTERS,
            capacities=CAPACITIES,
            methods=METHODS,
            not_sought_reasons=NOT_SOUGHT_REASONS,
            ways=WITHDRAWAL_WAYS,
            text=_text,
            errors=errors or [],
            form=form or {},
            notice=notice,
            today=today,
            review_default=today + dt.timedelta(days=182),
        )

    @app.get("/people/{person_id}/consent", response_class=HTMLResponse)
    def consent_page(request: Request, person_id: str, done: str | None = None) -> Response:
        notice = {
            "recorded": "Consent recorded.",
            "withdrawn": "Consent withdrawn. It no longer counts anywhere, and the "
            "agencies have been sent notice.",
        }.get(done or "")
        return page(request, check_id(person_id), notice=notice)

    @app.post("/people/{person_id}/consent", response_class=HTMLResponse)
    async def record_consent(
        request: Request, person_id: str, csrf_token: str = Form("")
    ) -> Response:
        s = posted(request, csrf_token)
        person_id = check_id(person_id)
        f = await request.form()
        form = {
            k: f.get(k)
            for k in (
                "purpose",
                "status",
                "consenter",
                "capacity",
                "method",
                "not_sought_reason",
                "evidence_ref",
                "given_day",
                "given_month",
                "given_year",
                "review_day",
                "review_month",
                "review_year",
            )
        }
        form["agencies"] = [str(a) for a in f.getlist("agencies")]
        form["categories"] = [str(c) for c in f.getlist("categories")]
        errors: list[str] = []
        given = _date(
            str(form["given_day"] or ""),
            str(form["given_month"] or ""),
            str(form["given_year"] or ""),
        )
        review = _date(
            str(form["review_day"] or ""),
            str(form["review_month"] or ""),
            str(form["review_year"] or ""),
        )
        if given is None:
            errors.append("given_on: enter the date consent was given or sought")
        if review is None:
            errors.append("review_by: enter the date it must be reviewed by")
        try:
            scope = Scope.of(form["agencies"], form["categories"])
        except ValueError as exc:
            errors.append(str(exc))
            scope = None
        if not errors and scope is not None and given is not None and review is not None:
            new = NewConsent(
                person_id,
                str(form["purpose"] or ""),
                scope,
                str(form["status"] or ""),
                str(form["consenter"] or ""),
                str(form["capacity"] or ""),
                given,
                review,
                str(form["method"]) if form["method"] else None,
                str(form["not_sought_reason"]) if form["not_sought_reason"] else None,
                str(form["evidence_ref"]).strip() if form["evidence_ref"] else None,
            )
            try:
                service.record(s.user, new)
                return RedirectResponse(f"/people/{person_id}/consent?done=recorded", 303)
            except ConsentRecordError as exc:
                errors = str(exc).split("; ")
        form["evidence_ref"] = None  # never echoed: it may be what was refused
        return page(request, person_id, 422, errors=errors, form=form)

    @app.post("/consents/{record_id}/withdraw", response_class=HTMLResponse)
    def withdraw_consent(
        request: Request,
        record_id: str,
        withdrawal_way: str = Form(""),
        person_id: str = Form(""),
        csrf_token: str = Form(""),
    ) -> Response:
        s = posted(request, csrf_token)
        person_id = check_id(person_id)
        try:
            service.withdraw(s.user, check_id(record_id), withdrawal_way)
        except ConsentRecordError as exc:
            return page(request, person_id, 422, errors=str(exc).split("; "))
        return RedirectResponse(f"/people/{person_id}/consent?done=withdrawn", 303)

    return service
