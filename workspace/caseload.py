"""My caseload: the worker's current allocations, as their agencies' case systems sent them.

Allocations reach the hub from each agency's bridge, keyed by record refs (the case
references stay at the agency), and land as legitimate relationships in the governance store
(governance.allocations); allocations typed at the hub are listed too, marked as such. From
each line the worker goes first to the "known to" stage, then to the detail: both decided
afresh by the governance engine when opened. The page itself discloses only hub ids and the
allocation's own dates and source.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from governance.relationships import RelationshipRegistry
from workspace.known_to_pages import agency_name
from workspace.page_support import PageSupport

if TYPE_CHECKING:
    from workspace.app import Workspace


def source_of(reason: str) -> str:
    """Who sent an allocation: governance.allocations marks it allocation_<AGENCY>."""
    if reason.startswith("allocation_"):
        return f"{agency_name(reason.removeprefix('allocation_'))} case system"
    return "recorded at the hub"


def caseload_router(ws: Workspace) -> APIRouter:
    router = APIRouter()
    kit = PageSupport(ws)

    @router.get("/caseload", response_class=HTMLResponse)
    def caseload(request: Request) -> Response:
        s = kit.session(request)
        today = ws.clock().date()
        rels = ws.gov.relationships
        mine = sorted(
            (
                r
                for r in (rels.all() if isinstance(rels, RelationshipRegistry) else [])
                if r.user_id == s.user.user_id and r.current(today)
            ),
            key=lambda r: (r.start, r.subject_id),
        )
        rows = [
            {
                "kind": r.kind.value,
                "subject_id": r.subject_id,
                "path": ("households" if r.kind.value == "household" else "people"),
                "start": r.start.isoformat(),
                "end": r.end.isoformat() if r.end else None,
                "source": source_of(r.reason),
            }
            for r in mine
        ]
        return kit.render(request, "caseload.html", rows=rows)

    return router
