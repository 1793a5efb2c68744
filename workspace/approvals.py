"""Workspace pages for break-glass approval and a manager's team allocations.

GET /approvals: a team manager sees the requests waiting from the members of the teams they
manage (what was asked, under which protocol, for which household, for how long, and the
screened justification) with Approve and Decline buttons, and the team's current allocations;
a practitioner sees their own requests and, once approved, a link that opens the view with the
grant. POST /approvals/{request_id}: approve or decline (CSRF-checked); the decision is
governance.approvals.ApprovalStore.decide (one audit entry, refused and audited for anyone who
does not manage the requester). Nothing here decides access.
"""

# No `from __future__ import annotations`: FastAPI must see the real parameter types.

import re
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from governance.access import TeamRelationships
from governance.approvals import ApprovalRefused, ApprovalStore

REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")
REFUSAL_TEXT = {
    "self_approval": "you cannot approve your own request",
    "not_manager_of_requester": "you do not manage the team of the person who asked",
    "unknown_request": "there is no such request",
    "approver_not_assigned_to_protocol": "this protocol is not assigned to you",
    "request_already_approved": "this request has already been approved",
    "request_already_declined": "this request has already been declined",
    "approvals_not_configured": "approvals are not configured at this hub",
}


def router(
    ws: Any,
    render: Callable[..., Response],
    session_of: Callable[[Request], Any],
    posted: Callable[[Request, str], Any],
) -> APIRouter:
    r = APIRouter()

    def store() -> ApprovalStore:
        return ApprovalStore(ws.gov.audit.engine)

    def page(request: Request, user: Any, status: int = 200, error: str | None = None) -> Response:
        s = store()
        rels = ws.gov.relationships
        team = (
            rels.team_allocations(user.user_id, ws.clock().date())
            if isinstance(rels, TeamRelationships)
            else []
        )
        protocols = ws.gov.protocols
        return render(
            request,
            "approvals.html",
            status,
            awaiting=s.awaiting(ws.gov, user),
            mine=s.for_requester(user.user_id),
            team=team,
            protocols=protocols,
            error=error,
        )

    @r.get("/approvals", response_class=HTMLResponse)
    def approvals(request: Request) -> Response:
        return page(request, session_of(request).user)

    @r.post("/approvals/{request_id}", response_class=HTMLResponse)
    def decide(
        request: Request, request_id: str, decision: str = Form(""), csrf_token: str = Form("")
    ) -> Response:
        s = posted(request, csrf_token)
        if not REQUEST_ID.fullmatch(request_id) or decision not in ("approve", "decline"):
            raise StarletteHTTPException(404)
        try:
            store().decide(ws.gov, s.user, request_id, decision == "approve", ws.clock())
        except ApprovalRefused as exc:
            return page(request, s.user, 403, REFUSAL_TEXT.get(exc.code, exc.code))
        return RedirectResponse("/approvals", 303)

    return r
