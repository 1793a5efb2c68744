"""The owning agency's restrictions screen: mark one of its own records restricted, or lift it.

    GET  /restrictions                 the agency's active markers and the form to add one
    POST /restrictions                 mark the record with this case reference restricted
    POST /restrictions/{marker}/lift   lift one of the agency's markers

The worker names the record by their own agency's case reference: the hub asks the agency's
service for the record ref (workspace.caseref, the same signed request as finding a child), so
the case reference passes through memory only and the hub marks what it already holds. The
marker is keyed by (agency, record ref), never by person, so it follows the record through
every re-link. The rules (own agency only, a reason code, one audit entry each) are
governance.restricted's; every POST carries the session's CSRF token.
"""

# No `from __future__ import annotations`: FastAPI must see the real parameter types.

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from governance.identity import BridgeUnavailable
from governance.restricted import MARKING_ROLES, REASONS, RestrictionError, RestrictionStore

REASON_TEXT = {
    "adoption": "Adoption",
    "refuge": "Living in a refuge",
    "confidential_address": "Confidential address",
    "witness_protection": "Witness protection",
    "other": "Another reason recorded in our own files",
}


def router(
    ws: Any,
    render: Callable[..., Response],
    session_of: Callable[[Request], Any],
    posted: Callable[[Request, str], Any],
) -> APIRouter:
    r = APIRouter()

    def store() -> RestrictionStore:
        return RestrictionStore(ws.gov.audit.engine)

    def page(
        request: Request,
        user: Any,
        status: int = 200,
        error: str | None = None,
        notice: str | None = None,
    ) -> Response:
        may = user.role in MARKING_ROLES and bool(user.agency)
        return render(
            request,
            "restrictions.html",
            status if may else 403,
            may=may,
            markers=store().active_for(user.agency) if may else [],
            reasons=[(k, REASON_TEXT[k]) for k in sorted(REASONS)],
            error=error,
            notice=notice,
        )

    @r.get("/restrictions", response_class=HTMLResponse)
    def restrictions(request: Request, done: str | None = None) -> Response:
        notice = {"marked": "Record marked restricted.", "lifted": "Restriction lifted."}
        return page(request, session_of(request).user, notice=notice.get(done or ""))

    @r.post("/restrictions", response_class=HTMLResponse)
    def mark(
        request: Request,
        case_reference: str = Form(""),
        reason: str = Form(""),
        csrf_token: str = Form(""),
    ) -> Response:
        s = posted(request, csrf_token)
        ref = case_reference.strip()
        if s.user.role not in MARKING_ROLES or not s.user.agency:
            return page(request, s.user)
        if not ref or len(ref) > 64:
            return page(request, s.user, 422, "Enter your agency's case reference")
        if reason not in REASONS:
            return page(request, s.user, 422, "Choose why the record is restricted")
        try:
            found = ws.finder().find(s.user, ref, ws.warehouse())
        except BridgeUnavailable:
            return page(request, s.user, 503, "Your agency's service did not answer; try again")
        if found.record_ref is None:
            return page(request, s.user, 404, "Your agency has no case with that reference.")
        try:
            store().mark(ws.gov.audit, s.user, s.user.agency, found.record_ref, reason, ws.clock())
        except RestrictionError:
            return page(request, s.user, 403, "You may not mark this record restricted.")
        return RedirectResponse("/restrictions?done=marked", 303)

    @r.post("/restrictions/{marker_id}/lift", response_class=HTMLResponse)
    def lift(request: Request, marker_id: int, csrf_token: str = Form("")) -> Response:
        s = posted(request, csrf_token)
        held = store().ref_of(marker_id)
        if held is None:
            raise StarletteHTTPException(404)
        try:
            store().lift(ws.gov.audit, s.user, held[0], held[1], ws.clock())
        except RestrictionError:
            return page(request, s.user, 403, "Only the agency that holds the record lifts it.")
        return RedirectResponse("/restrictions?done=lifted", 303)

    return r
