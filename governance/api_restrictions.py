"""Restricted records through the governance API: the owning agency marks or lifts them.

    GET  /restrictions                      the caller's agency's active markers
    POST /restrictions                      mark one of the agency's records (by record ref)
    POST /restrictions/{marker_id}/lift     lift one of the agency's markers

An agency's own systems hold their records' refs (the bridge writes them), so the API takes
the ref; the workspace screen takes a case reference instead (workspace.restriction_pages).
The rules are governance.restricted's: only the owning agency's staff (practitioner, team
manager, data officer, IG lead), a reason code, one audit entry each. 403 bodies carry codes.
"""

# No `from __future__ import annotations`: FastAPI must see the real Annotated types.

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from governance.api_safety import NO_STORE
from governance.restricted import MARKING_ROLES, REASONS, RestrictionError, RestrictionStore
from governance.service import ViewService

REF_PATTERN = r"^[A-Za-z0-9_=:.-]{8,256}$"


class MarkIn(BaseModel):
    record_ref: str = Field(pattern=REF_PATTERN, description="the agency's own record ref")
    reason: str = Field(description=f"one of {', '.join(sorted(REASONS))}")


class MarkerOut(BaseModel):
    agency: str
    record_ref: str
    reason: str | None = None
    audit_seq: int


def restrictions_router(views: ViewService, current_user: Any) -> APIRouter:
    """`current_user`: the API's authenticated-user dependency (an Annotated type)."""
    router = APIRouter(tags=["restrictions"])
    MarkerId = Annotated[int, PathParam(ge=1)]  # noqa: N806

    def store() -> RestrictionStore:
        return RestrictionStore(views.gov.audit.engine)

    def refused(code: str) -> HTTPException:
        return HTTPException(403, {"reasons": [code]}, headers=NO_STORE)

    @router.get("/restrictions")
    def list_markers(user: current_user) -> dict[str, Any]:
        if user.role not in MARKING_ROLES or not user.agency:
            raise refused("role_may_not_mark_restricted")
        return {"agency": user.agency, "markers": store().active_for(user.agency)}

    @router.post("/restrictions", status_code=201, response_model=MarkerOut)
    def mark(user: current_user, body: Annotated[MarkIn, Body()]) -> MarkerOut:
        if body.reason not in REASONS:
            raise HTTPException(422, "reason: not a restriction reason code", headers=NO_STORE)
        with views._con() as con:  # a ref of another agency's never matches: refuse it
            held = con.execute(
                "SELECT 1 FROM record_person WHERE agency = ? AND record_ref = ? LIMIT 1",
                [user.agency or "", body.record_ref],
            ).fetchone()
        if held is None:
            raise refused("not_the_owning_agency")
        try:
            seq = store().mark(
                views.gov.audit,
                user,
                user.agency or "",
                body.record_ref,
                body.reason,
                views.clock(),
            )
        except RestrictionError:
            raise refused("not_the_owning_agency") from None
        return MarkerOut(
            agency=user.agency, record_ref=body.record_ref, reason=body.reason, audit_seq=seq
        )

    @router.post("/restrictions/{marker_id}/lift", response_model=MarkerOut)
    def lift(user: current_user, marker_id: MarkerId) -> MarkerOut:
        held = store().ref_of(marker_id)
        if held is None:
            raise HTTPException(404, "no such active marker", headers=NO_STORE)
        try:
            seq = store().lift(views.gov.audit, user, held[0], held[1], views.clock())
        except RestrictionError:
            raise refused("not_the_owning_agency") from None
        return MarkerOut(agency=held[0], record_ref=held[1], audit_seq=seq)

    return router
