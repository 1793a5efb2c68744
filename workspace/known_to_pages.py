"""The "known to" pages: which agencies are involved with a child or family, before the detail.

`/people/{id}/known-to` and `/households/{id}/known-to` (`?protocol=P`, chosen from those
assigned to the worker) show, per member, the agencies the protocol's `known_to` stage lets a
worker know are involved: no content, dates or reasons. One decision by the governance engine
(governance.known_to, the same decision function as every view), one audit entry. The detail is
a separate, separately decided page (the family view), linked from here.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from governance.known_to import KnownToService
from workspace import pages
from workspace.page_support import PageSupport

if TYPE_CHECKING:
    from workspace.app import Workspace

ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
PROTO = re.compile(r"^[a-z][a-z0-9_]{2,63}$")
AGENCY_NAMES = {
    "CSC": "Children's social care",
    "POL": "Police",
    "SCH": "School",
    "HV": "Health visiting",
    "GP": "GP practice",
    "HSG": "Housing",
    "EH": "Early Help",
}


def agency_name(code: str) -> str:
    return AGENCY_NAMES.get(code, code)


def known_to_router(ws: Workspace) -> APIRouter:
    router = APIRouter()
    kit = PageSupport(ws)
    kit.templates.env.globals.update(agency_name=agency_name)

    def page(request: Request, kind: str, subject: str, protocol: str | None) -> Response:
        s = kit.session(request)
        if not ID.fullmatch(subject):
            raise StarletteHTTPException(404)
        assigned = pages.assigned_protocols(ws.gov.protocols, s.user, ws.clock().date())
        chosen = (
            protocol
            if protocol and PROTO.fullmatch(protocol)
            else assigned[0].id
            if len(assigned) == 1
            else None
        )
        if chosen is None:
            return kit.render(
                request, "choose_protocol.html", action=request.url.path, protocols=assigned
            )
        service = KnownToService(ws.views())
        known = (service.household if kind == "household" else service.person)(
            s.user, chosen, subject
        )
        return kit.render(
            request,
            "known_to.html",
            known=known,
            kind=kind,
            protocol=ws.gov.protocols[chosen],
            protocols=assigned,
        )

    @router.get("/people/{person_id}/known-to", response_class=HTMLResponse)
    def person(request: Request, person_id: str, protocol: str | None = None) -> Response:
        return page(request, "person", person_id, protocol)

    @router.get("/households/{household_id}/known-to", response_class=HTMLResponse)
    def household(request: Request, household_id: str, protocol: str | None = None) -> Response:
        return page(request, "household", household_id, protocol)

    return router
