"""Consent through the governance API: record, read and withdraw consent records.

    GET  /persons/{person_id}/consents          the person's consent records for the purposes
                                                of the caller's protocols (audited)
    POST /persons/{person_id}/consents          record a consent given, refused or not sought
    POST /consents/{record_id}/withdraw         withdraw it, at once; the agencies are sent
                                                signed notices (governance.consent_notices)

Same rules as the workspace (governance.consent_service): a row-level role in a protocol that
relies on the purpose, and a current relationship with the person or their household. 403
bodies are the API's uniform refusals; 422 names the fields, never the values.
"""

# No `from __future__ import annotations`: FastAPI must see the real Annotated types.

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from governance.api_safety import NO_STORE
from governance.consent_records import (
    CONSENTERS,
    METHODS,
    NOT_SOUGHT_REASONS,
    STATUSES,
    WITHDRAWAL_WAYS,
    ConsentRecordError,
    NewConsent,
)
from governance.consent_scope import Scope
from governance.consent_service import ConsentService
from governance.identity import IdentityService
from governance.service import ViewService

ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
CODE_PATTERN = r"^[a-z][a-z0-9_]{1,63}$"


class ConsentIn(BaseModel):
    purpose: str = Field(pattern=CODE_PATTERN, description="the protocol's consent purpose")
    agencies: list[str] = Field(min_length=1, description="agencies the consent covers")
    categories: list[str] = Field(
        min_length=1, description="categories of information (schemas/consent_categories.yaml)"
    )
    status: str = Field(description=f"one of {', '.join(STATUSES)}")
    consenter: str = Field(description=f"one of {', '.join(CONSENTERS)}")
    capacity: str = Field(pattern=CODE_PATTERN)
    method: str | None = Field(None, description=f"one of {', '.join(METHODS)}")
    not_sought_reason: str | None = Field(
        None, description=f"when not sought: one of {', '.join(NOT_SOUGHT_REASONS)}"
    )
    evidence_ref: str | None = Field(
        None, max_length=64, description="document reference in the agency's files"
    )
    given_on: dt.date
    review_by: dt.date


class WithdrawIn(BaseModel):
    withdrawal_way: str = Field(description=f"one of {', '.join(WITHDRAWAL_WAYS)}")


class ConsentOut(BaseModel):
    record: dict[str, Any]
    notices_sent_to: list[str] = []


def consent_router(
    views: ViewService,
    current_user: Any,
    identity: IdentityService | None = None,
    outbox: Path | None = None,
) -> APIRouter:
    """`current_user`: the API's authenticated-user dependency (an Annotated type)."""
    service = ConsentService(
        views.gov,
        views.warehouse,
        hub_key=identity.key if identity is not None else None,
        outbox=outbox or views.warehouse.parent / "consent_outbox",
        clock=views.clock,
    )
    router = APIRouter(tags=["consent"])
    PersonId = Annotated[str, PathParam(pattern=ID_PATTERN)]  # noqa: N806
    RecordId = Annotated[str, PathParam(pattern=r"^[0-9a-f]{32}$")]  # noqa: N806

    def _new(person_id: str, body: ConsentIn) -> NewConsent:
        try:
            scope = Scope.of(body.agencies, body.categories)
        except ValueError as exc:
            raise HTTPException(422, str(exc), headers=NO_STORE) from None
        return NewConsent(
            person_id,
            body.purpose,
            scope,
            body.status,
            body.consenter,
            body.capacity,
            body.given_on,
            body.review_by,
            body.method,
            body.not_sought_reason,
            body.evidence_ref,
        )

    @router.get("/persons/{person_id}/consents")
    def list_consents(user: current_user, person_id: PersonId) -> dict[str, Any]:
        return {"records": [r.public() for r in service.list(user, person_id)]}

    @router.post("/persons/{person_id}/consents", status_code=201, response_model=ConsentOut)
    def record_consent(
        user: current_user, person_id: PersonId, body: Annotated[ConsentIn, Body()]
    ) -> ConsentOut:
        try:
            rec = service.record(user, _new(person_id, body))
        except ConsentRecordError as exc:
            raise HTTPException(422, str(exc), headers=NO_STORE) from None
        return ConsentOut(record=rec.public())

    @router.post("/consents/{record_id}/withdraw", response_model=ConsentOut)
    def withdraw_consent(
        user: current_user, record_id: RecordId, body: Annotated[WithdrawIn, Body()]
    ) -> ConsentOut:
        try:
            rec, files = service.withdraw(user, record_id, body.withdrawal_way)
        except ConsentRecordError as exc:
            raise HTTPException(422, str(exc), headers=NO_STORE) from None
        return ConsentOut(record=rec.public(), notices_sent_to=sorted(f.parent.name for f in files))

    return router
