"""The governance HTTP API (FastAPI): scoped views, involvement index, identity requests.

Authentication (embedded default): opaque bearer tokens issued by `TokenStore.issue`, stored
only as SHA-256 hashes in the governance store (table gov_api_tokens), each mapped to a user id,
a role and an employing agency, each expiring (12 h by default); every failed authentication is
an audit entry (never the token: a hash prefix at most). Production can swap in any
`Authenticator` (e.g. OIDC JWT validation; see docs/api.md). Errors: 401 no/bad/expired token;
403 refused (reasons recorded in the audit log by the decision; without a legitimate
relationship always the same body); 404 unknown person/household; 422 bad input (field and
problem, never the value); 502 bridge failure. Every response carries Cache-Control: no-store
and Pragma: no-cache.

    uvicorn --factory governance.api:app_from_env   # JOINEDUP_API_CONFIG=hub_api.yaml
    python -m governance.api issue-token --db URL --user U --role practitioner
"""

# No `from __future__ import annotations`: FastAPI must see the real Annotated types.

import argparse
import datetime as dt
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import yaml
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from governance.api_consent import consent_router
from governance.api_docs import serve_docs_locally
from governance.api_models import (
    FIELD_PATTERN,
    ID_PATTERN,
    PROTOCOL_PATTERN,
    BreakGlassIn,
    ErrorOut,
    IdentityIn,
    IdentityOut,
    InvolvedAgency,
    InvolvementOut,
    ViewOut,
    view_out,
)
from governance.api_restrictions import restrictions_router
from governance.api_safety import (
    NO_STORE,
    AuthFailureLog,
    no_store,
    uniform_refusal,
    validation_response,
)
from governance.api_sharing import sharing_router
from governance.api_tokens import DEFAULT_TOKEN_TTL, Authenticator, TokenStore
from governance.audit import AuditError, AuditLog, load_hub_key, make_engine
from governance.audit_checkpointer import attach_checkpointer, process_origin
from governance.audit_keys import load_audit_key
from governance.decisions import Governance, User
from governance.identity import BadIdentityRequest, BridgeUnavailable, IdentityService
from governance.policy import ROLE_NAMES
from governance.service import (
    BreakGlassAsk,
    Forbidden,
    NotFound,
    ViewService,
)

# --- the app -----------------------------------------------------------------------------------

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "No or bad bearer token"},
    403: {"model": ErrorOut, "description": "Refused; reasons recorded in the audit log"},
    404: {"model": ErrorOut, "description": "Unknown person or household"},
}


def create_app(
    views: ViewService, auth: Authenticator, identity: IdentityService | None = None
) -> FastAPI:
    app = FastAPI(
        title="joinedup governance API",
        version="1",
        description="Scoped, audited, pseudonymous views under data-sharing "
        "protocols; identity only via the originating agency.",
        docs_url=None,
        redoc_url=None,
    )  # /docs from local assets, never a CDN
    serve_docs_locally(app)
    bearer = HTTPBearer(auto_error=False)
    auth_failures = AuthFailureLog(views.gov.audit)
    app.state.auth_failures = auth_failures
    app.middleware("http")(no_store)  # no response of this API may be cached anywhere
    app.add_exception_handler(RequestValidationError, validation_response)  # type: ignore[arg-type]

    def current_user(
        request: Request,
        cred: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> User:
        token = cred.credentials if cred is not None else None
        user, why = None, "missing_token"
        if token is not None:
            check = getattr(auth, "check", None)
            user, why = check(token) if check else (auth.authenticate(token), "rejected_token")
        if user is None:
            route = getattr(request.scope.get("route"), "path", "?")  # the template, not the URL
            auth_failures.record(why, token, request.method, route)
            raise HTTPException(
                401,
                "missing or invalid bearer token",
                headers={"WWW-Authenticate": "Bearer", **NO_STORE},
            )
        return user

    CurrentUser = Annotated[User, Depends(current_user)]  # noqa: N806
    app.include_router(consent_router(views, CurrentUser, identity))  # governance.api_consent
    ProtocolQ = Annotated[str, Query(pattern=PROTOCOL_PATTERN, description="protocol id")]  # noqa: N806
    FieldsQ = Annotated[
        list[str] | None,
        Query(  # noqa: N806
            description="ask for fewer fields than the protocol allows (minimum necessary)"
        ),
    ]

    @app.exception_handler(Forbidden)
    def _forbidden(_: Request, exc: Forbidden) -> JSONResponse:
        return JSONResponse(status_code=403, content=uniform_refusal(exc.reasons, exc.audit_seq))

    @app.exception_handler(NotFound)
    def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse(
            status_code=404, content={"detail": f"unknown {exc.kind}", "audit_seq": exc.audit_seq}
        )

    @app.exception_handler(BadIdentityRequest)
    def _bad(_: Request, exc: BadIdentityRequest) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    @app.exception_handler(BridgeUnavailable)
    def _bridge(_: Request, exc: BridgeUnavailable) -> JSONResponse:
        return JSONResponse(status_code=502, content={"detail": str(exc)})

    @app.exception_handler(AuditError)
    def _audit(_: Request, exc: AuditError) -> JSONResponse:
        # Fail closed: nothing is disclosed when the decision could not be recorded.
        return JSONResponse(status_code=503, content={"detail": "audit log unavailable"})

    def _check_fields(fields: list[str] | None) -> None:
        import re

        for i, f in enumerate(fields or []):
            if not re.fullmatch(FIELD_PATTERN, f):
                raise HTTPException(422, f"fields[{i}]: not a field name")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    GrantQ = Annotated[
        str | None,
        Query(  # noqa: N806
            pattern=r"^[0-9a-f]{32}$",
            description="reopen the view under an earlier, unexpired break-glass grant",
        ),
    ]

    def _grant(grant_id: str | None) -> BreakGlassAsk | None:
        return None if grant_id is None else BreakGlassAsk(grant_id=grant_id)

    def _ask(body: BreakGlassIn) -> BreakGlassAsk:
        _check_fields(body.fields)
        return BreakGlassAsk(body.category, body.justification, body.hours)

    @app.get("/persons/{person_id}", response_model=ViewOut, responses=_ERRORS)
    def person_view(
        user: CurrentUser,
        protocol: ProtocolQ,
        person_id: Annotated[str, PathParam(pattern=ID_PATTERN)],
        fields: FieldsQ = None,
        break_glass_id: GrantQ = None,
    ) -> ViewOut:
        """A person's linked records under a protocol: allowed fields only, pseudonymous."""
        _check_fields(fields)
        return view_out(
            views.person_view(user, protocol, person_id, fields, break_glass=_grant(break_glass_id))
        )

    @app.post("/persons/{person_id}/break-glass", response_model=ViewOut, responses=_ERRORS)
    def person_break_glass(
        user: CurrentUser,
        person_id: Annotated[str, PathParam(pattern=ID_PATTERN)],
        body: BreakGlassIn,
    ) -> ViewOut:
        """Break-glass view of a person: only under a protocol that allows override on risk
        of significant harm, for a practitioner with a legitimate relationship. Time-limited;
        the IG lead is alerted and a notification to the person is recorded as due. Refused
        (403, reasons audited and alerted) anywhere else."""
        return view_out(
            views.person_view(
                user, body.protocol_id, person_id, body.fields, break_glass=_ask(body)
            )
        )

    @app.get("/households/{household_id}", response_model=ViewOut, responses=_ERRORS)
    def household_view(
        user: CurrentUser,
        protocol: ProtocolQ,
        household_id: Annotated[str, PathParam(pattern=ID_PATTERN)],
        fields: FieldsQ = None,
        break_glass_id: GrantQ = None,
    ) -> ViewOut:
        """Every member's linked records under a protocol (one audit entry for the request)."""
        _check_fields(fields)
        return view_out(
            views.household_view(
                user, protocol, household_id, fields, break_glass=_grant(break_glass_id)
            )
        )

    @app.post("/households/{household_id}/break-glass", response_model=ViewOut, responses=_ERRORS)
    def household_break_glass(
        user: CurrentUser,
        household_id: Annotated[str, PathParam(pattern=ID_PATTERN)],
        body: BreakGlassIn,
    ) -> ViewOut:
        """Break-glass view of a household (same rules as for a person; one audit entry, one
        notification due per member shown under the override)."""
        return view_out(
            views.household_view(
                user, body.protocol_id, household_id, body.fields, break_glass=_ask(body)
            )
        )

    @app.get(
        "/households/{household_id}/involvement", response_model=InvolvementOut, responses=_ERRORS
    )
    def involvement(
        user: CurrentUser,
        household_id: Annotated[str, PathParam(pattern=ID_PATTERN)],
    ) -> InvolvementOut:
        """Who holds what: agencies involved, since when, lead practitioner contact."""
        v = views.involvement(user, household_id)
        return InvolvementOut(
            household_id=household_id,
            audit_seq=v.audit_seq,
            members=v.members,
            agencies=[InvolvedAgency(**a) for a in v.extra["agencies"]],
        )

    @app.post(
        "/persons/{person_id}/identity",
        response_model=IdentityOut,
        responses={**_ERRORS, 502: {"model": ErrorOut}},
    )
    def identity_request(
        user: CurrentUser,
        person_id: Annotated[str, PathParam(pattern=ID_PATTERN)],
        body: IdentityIn,
    ) -> Any:
        """Ask the originating agency who this is. Returned to this session only; the hub
        never stores it."""
        if identity is None:
            raise HTTPException(503, "identity requests are not configured at this hub")
        r = identity.request(user, body.protocol_id, person_id, body.agency, body.reason)
        resp = JSONResponse(
            IdentityOut(
                request_id=r.request_id,
                agency=r.agency,
                audit_seq=r.audit_seq,
                identities=r.identities,
            ).model_dump()
        )
        resp.headers["Cache-Control"] = "no-store"
        return resp

    app.include_router(sharing_router(views, current_user))  # the decision log (/sharing)
    app.include_router(restrictions_router(views, CurrentUser))  # owning agency's markers
    return app


# --- configuration -----------------------------------------------------------------------------


def app_from_config(path: str | Path) -> FastAPI:
    """Build the app from a hub config YAML:

    warehouse: var/run/hub/warehouse.duckdb
    governance_db: sqlite:///var/run/hub/governance.db   # PostgreSQL URL in production
    governance_schema: null                              # optional (PostgreSQL)
    relationships_csv: var/run/hub/allocations.csv      # user_id,kind,subject_id,start,end
    hub_signing_key: var/run/hub/keys/hub_request.pem    # Ed25519, 0600
    audit_signing_key: var/run/hub/keys                 # required: hub audit key (folder/file)
    audit_checkpoint_seconds: 300                        # checkpoint at start, this often, stop
    bridges: {CSC: "https://reid.csc.example"}
    assignments: schemas/assignments.yaml                # the default; access control is
    require_sign_off: true                               # always on (cannot be turned off)
    tokens:                                              # optional, hashed only
      - {token_sha256: "...", user_id: sw1, role: practitioner, agency: CSC,
         expires_at: "2026-06-01T18:00:00+00:00"}           # default: 12 h after first load
    """
    import pandas as pd

    from governance.access import configured_access
    from governance.consent import SqlConsentRegistry
    from governance.hub_stage import refresh_consent
    from governance.relationships import SqlRelationshipRegistry

    path = Path(path)
    cfg = yaml.safe_load(path.read_text("utf-8")) or {}
    # Every API process checkpoints the audit log with the hub's audit key: it is required.
    for key in ("warehouse", "governance_db", "audit_signing_key"):
        if key not in cfg:
            raise ValueError(f"{path}: {key}: missing")
    from linkage.publish import reader

    engine = make_engine(cfg["governance_db"], cfg.get("governance_schema"))
    # The hub's live warehouse is named; requests read the latest copy each hub run publishes
    # from it (linkage.publish), so a running hub stage does not fail them.
    warehouse = reader(Path(cfg["warehouse"]))
    # Relationships and consent live in the governance store, read on every decision, so an
    # allocation ended or a consent withdrawn (by any process) takes effect at once.
    rels = SqlRelationshipRegistry(engine)
    rel_csv = cfg.get("relationships_csv")
    if rel_csv:  # an allocations export from case management: adds what is not yet stored
        rels.load_frame(pd.read_csv(rel_csv, dtype=str), source=str(rel_csv))
    consent = SqlConsentRegistry(engine)
    if not consent.has_warehouse_events():  # normally refreshed by the hub run's report stage
        refresh_consent(engine, warehouse())
    audit = AuditLog(
        engine, signing_key=load_audit_key(cfg["audit_signing_key"]), origin=process_origin("api")
    )
    gov = Governance(
        audit,
        consent=consent,
        relationships=rels,
        access=configured_access(
            engine, cfg.get("assignments"), cfg.get("require_sign_off"), source=str(path)
        ),
    )
    views = ViewService(warehouse, gov)
    store = TokenStore(engine)
    for i, t in enumerate(cfg.get("tokens") or []):
        try:
            if not store.known(t["token_sha256"]):
                exp = t.get("expires_at")  # ISO time with offset; default DEFAULT_TOKEN_TTL
                exp = dt.datetime.fromisoformat(str(exp)) if exp is not None else None
                store.add_hashed(
                    t["token_sha256"], t["user_id"], t["role"], t.get("agency"), expires_at=exp
                )
        except KeyError as exc:
            raise ValueError(f"{path}: tokens.{i}.{exc.args[0]}: missing") from None
    ident = None
    if cfg.get("hub_signing_key"):
        ident = IdentityService(
            views, load_hub_key(Path(cfg["hub_signing_key"])), cfg.get("bridges") or {}
        )
    app = create_app(views, store, ident)
    attach_checkpointer(app, audit, float(cfg.get("audit_checkpoint_seconds", 300)))
    return app


def app_from_env() -> FastAPI:
    return app_from_config(os.environ["JOINEDUP_API_CONFIG"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m governance.api")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("issue-token", help="issue a bearer token (printed once, stored hashed)")
    t.add_argument("--db", required=True, help="SQLAlchemy URL of the governance store")
    t.add_argument("--user", required=True)
    t.add_argument("--role", required=True, choices=sorted(ROLE_NAMES))
    t.add_argument("--agency", default=None)
    t.add_argument(
        "--hours",
        type=float,
        default=DEFAULT_TOKEN_TTL.total_seconds() / 3600,
        help="how long the token is valid (default 12)",
    )
    a = p.parse_args(argv)
    store = TokenStore(make_engine(a.db))
    print(store.issue(a.user, a.role, a.agency, ttl=dt.timedelta(hours=a.hours)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
