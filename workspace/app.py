"""The practitioner workspace: server-rendered pages on the governance decisions and audit log.

Every page about a child or family is one call into governance.service.ViewService (the same
object the JSON API calls: one decision, one audit entry; nothing here decides access), over the
latest *published* copy of the warehouse (linkage.publish), so a hub stage holding the
warehouse never makes a page fail. Identity comes only from the originating agency's bridge
(governance.identity), case references only through the worker's own agency (workspace.caseref).

Security: sign-in with local argon2 accounts (workspace.accounts) or OIDC (workspace.oidc);
server-side sessions in Secure/HttpOnly/SameSite=Strict cookies with an idle timeout; a CSRF
token on every POST form (checked before anything else); `Cache-Control: no-store` on every
page; every page view and every failed sign-in is an audit entry. Pages work without
JavaScript (none is served); styles are GOV.UK Frontend, installed at build time.
"""

# No `from __future__ import annotations`: FastAPI must see the real parameter types.

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from governance.api_safety import (
    NO_STORE,
    AuthFailureLog,
    uniform_refusal,
    validation_problems,
)
from governance.audit import AuditError
from governance.breakglass import GrantStore
from governance.decisions import Governance
from governance.identity import BadIdentityRequest, BridgeUnavailable, IdentityService
from governance.relationships import RelationshipRegistry
from governance.restricted import restricted_contacts, without_restricted
from governance.service import BreakGlassAsk, Forbidden, NotFound, ViewService
from linkage.config import HubPaths
from linkage.publish import current
from workspace import (
    approvals,
    consent_pages,
    pages,
    restriction_pages,
    sharing_pages,
    sign_in_pages,
)
from workspace.accounts import AccountStore, Session, SessionStore, csrf_ok
from workspace.caseload import caseload_router
from workspace.caseref import CaseRefFinder
from workspace.known_to_pages import known_to_router
from workspace.oidc import OidcSignIn

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
PROTO = re.compile(r"^[a-z][a-z0-9_]{2,63}$")
SESSION_COOKIE = "ws_session"
PRE_COOKIE = "ws_signin_csrf"
OIDC_COOKIE = "ws_oidc_pending"
SECURITY_HEADERS = {
    **NO_STORE,
    "Content-Security-Policy": "default-src 'self'; script-src 'none'; object-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


@dataclass
class Workspace:
    """What the pages need. `bridges`: agency code -> its service URL (case references and
    identity); `hub_key` signs those requests."""

    paths: HubPaths
    gov: Governance
    accounts: AccountStore
    sessions: SessionStore
    hub_key: Ed25519PrivateKey | None = None
    bridges: dict[str, str] = field(default_factory=dict)
    secure_cookies: bool = True
    oidc: OidcSignIn | None = None  # production sign-in (workspace.oidc); None: local only
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10.0, trust_env=False))

    def __post_init__(self) -> None:
        self.grants = GrantStore(self.gov.audit.engine)

    def warehouse(self) -> Path:
        path = current(self.paths)
        if path is None:
            raise NoSnapshot()
        return path

    def views(self) -> ViewService:
        return ViewService(self.warehouse(), self.gov, clock=self.clock, grants=self.grants)

    def identity(self, views: ViewService) -> IdentityService:
        if self.hub_key is None:
            raise BridgeUnavailable("identity requests are not configured at this hub")
        return IdentityService(views, self.hub_key, self.bridges, http=self.http)

    def finder(self) -> CaseRefFinder:
        if self.hub_key is None:
            raise BridgeUnavailable("case reference look-up is not configured at this hub")
        return CaseRefFinder(self.hub_key, self.bridges, self.gov.audit, http=self.http)


class NoSnapshot(Exception):  # noqa: N818 - a state, not a fault
    """The hub has not published a warehouse yet."""


class SignInRequired(Exception):  # noqa: N818
    pass


class BadCsrf(Exception):  # noqa: N818
    pass


def create_app(ws: Workspace) -> FastAPI:
    app = FastAPI(title="joinedup workspace", docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(
        label=pages.label, reason_text=pages.reason_text, basis_text=pages.basis_text
    )
    auth_failures = AuthFailureLog(ws.gov.audit)
    if STATIC.exists():  # copied from node_modules by `make workspace-assets`
        app.mount("/assets", StaticFiles(directory=str(STATIC)), name="assets")

    @app.middleware("http")
    async def headers_and_audit(request: Request, call_next: Callable) -> Response:
        response = await call_next(request)
        if not request.url.path.startswith("/assets/"):
            response.headers.update(SECURITY_HEADERS)
            route = getattr(request.scope.get("route"), "path", None)
            if route is not None and route != "/health":  # the template, never the URL
                user = request.scope.get("ws_user")
                try:
                    ws.gov.audit.append(
                        "page_view",
                        {
                            "type": "workspace_page_view",
                            "at": dt.datetime.now(dt.UTC).isoformat(),
                            "user_id": user.user_id if user else None,
                            "method": request.method,
                            "route": route,
                            "status": response.status_code,
                        },
                    )
                except AuditError:  # fail closed: no page goes out unrecorded
                    return HTMLResponse("audit log unavailable", 503, headers=SECURITY_HEADERS)
        return response

    def render(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        s: Session | None = request.scope.get("ws_session")
        return templates.TemplateResponse(
            request,
            name,
            {"session": s, "user": s.user if s else None, "csrf": s.csrf if s else "", **ctx},
            status_code=status,
        )

    def session_of(request: Request) -> Session:
        s, why = ws.sessions.get(request.cookies.get(SESSION_COOKIE))
        if s is None:
            if request.cookies.get(SESSION_COOKIE):
                auth_failures.record(
                    why,
                    request.cookies.get(SESSION_COOKIE),
                    request.method,
                    getattr(request.scope.get("route"), "path", "?"),
                )
            raise SignInRequired()
        request.scope["ws_session"], request.scope["ws_user"] = s, s.user
        return s

    def posted(request: Request, csrf_token: str) -> Session:
        s = session_of(request)
        if not csrf_ok(s, csrf_token):
            raise BadCsrf()
        return s

    def check_id(value: str) -> str:
        if not ID.fullmatch(value):
            raise StarletteHTTPException(404)
        return value

    def protocol_choice(request: Request, s: Session, protocol: str | None) -> Any:
        assigned = pages.assigned_protocols(
            ws.gov.protocols, s.user, ws.clock().date(), ws.gov.access
        )
        ids = [p.id for p in assigned]
        if protocol and PROTO.fullmatch(protocol):
            return protocol, assigned
        return (ids[0] if len(ids) == 1 else None), assigned

    # -- errors -----------------------------------------------------------------------------

    @app.exception_handler(SignInRequired)
    def _sign_in(request: Request, _: Exception) -> Response:
        r = RedirectResponse("/sign-in", 303)
        r.delete_cookie(SESSION_COOKIE)
        return r

    @app.exception_handler(BadCsrf)
    def _csrf(request: Request, _: Exception) -> Response:
        return render(
            request,
            "error.html",
            403,
            title="Form expired",
            message="This form was not sent from your current session. Go back, "
            "reload the page and try again.",
        )

    @app.exception_handler(Forbidden)
    def _forbidden(request: Request, exc: Forbidden) -> Response:
        body = uniform_refusal(exc.reasons, exc.audit_seq)
        return render(
            request,
            "refused.html",
            403,
            reasons=body["reasons"],
            audit_seq=body.get("audit_seq"),
            contacts=restricted_contacts(exc),
        )

    @app.exception_handler(NotFound)
    def _not_found(request: Request, exc: NotFound) -> Response:
        return render(
            request,
            "error.html",
            404,
            title="Not found",
            message=f"There is no current {exc.kind} with that reference.",
        )

    @app.exception_handler(BridgeUnavailable)
    def _bridge(request: Request, exc: BridgeUnavailable) -> Response:
        return render(
            request, "error.html", 502, title="Agency service unavailable", message=str(exc)
        )

    @app.exception_handler(NoSnapshot)
    def _no_snapshot(request: Request, _: Exception) -> Response:
        return render(
            request,
            "error.html",
            503,
            title="Not available yet",
            message="The hub has not published its first linked data yet.",
        )

    @app.exception_handler(AuditError)
    def _audit(request: Request, _: Exception) -> Response:
        return render(
            request,
            "error.html",
            503,
            title="Service unavailable",
            message="Nothing can be shown while the audit log is unavailable.",
        )

    @app.exception_handler(RequestValidationError)
    def _invalid(request: Request, exc: RequestValidationError) -> Response:
        # Which field, never the value sent (a justification may hold a name).
        problems = validation_problems(exc.errors())
        return render(
            request,
            "error.html",
            422,
            title="Check what you entered",
            message="; ".join(f"{p['field'].split('.')[-1]}: {p['problem']}" for p in problems),
        )

    @app.exception_handler(StarletteHTTPException)
    def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return render(
            request,
            "error.html",
            exc.status_code,
            title="Page not found" if exc.status_code == 404 else "Error",
            message="",
        )

    # -- sign-in ----------------------------------------------------------------------------

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(sign_in_pages.router(ws, render, posted, auth_failures))

    # -- home: find a child, my caseload ----------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request) -> Response:
        s = session_of(request)
        today = ws.clock().date()
        rels = ws.gov.relationships
        mine = [
            r
            for r in (rels.all() if isinstance(rels, RelationshipRegistry) else [])
            if r.user_id == s.user.user_id and r.current(today)
        ]
        return render(
            request,
            "home.html",
            caseload=sorted(mine, key=lambda r: r.start),
            protocols=pages.assigned_protocols(ws.gov.protocols, s.user, today, ws.gov.access),
        )

    @app.post("/find")
    def find(
        request: Request, case_reference: str = Form(""), csrf_token: str = Form("")
    ) -> Response:
        s = posted(request, csrf_token)
        ref = case_reference.strip()
        if not ref or len(ref) > 64:
            return render(
                request,
                "home.html",
                422,
                caseload=[],
                protocols=[],
                find_error="Enter your agency's case reference (up to 64 characters)",
            )
        found = ws.finder().find(s.user, ref, ws.warehouse())
        if found.person_id is None:
            msg = (
                "Your agency has no case with that reference."
                if found.outcome == "not_found_at_agency"
                else "That case is not linked to anyone at the hub yet."
            )
            return render(request, "home.html", 404, caseload=[], protocols=[], find_error=msg)
        return RedirectResponse(f"/people/{found.person_id}", 303)

    # -- the family view --------------------------------------------------------------------

    def family(
        request: Request,
        kind: str,
        subject: str,
        protocol: str | None,
        break_glass_id: str | None = None,
        ask: BreakGlassAsk | None = None,
        status: int = 200,
    ) -> Response:
        s = session_of(request)
        subject = check_id(subject)
        chosen, assigned = protocol_choice(request, s, protocol)
        if chosen is None:
            return render(
                request, "choose_protocol.html", action=request.url.path, protocols=assigned
            )
        views = ws.views()
        if break_glass_id and re.fullmatch(r"[0-9a-f]{32}", break_glass_id):
            ask = BreakGlassAsk(grant_id=break_glass_id)
        view = (views.household_view if kind == "household" else views.person_view)(
            s.user, chosen, subject, break_glass=ask
        )
        proto = ws.gov.protocols[chosen]
        members = pages.members(view, ws.gov.audit)
        return render(
            request,
            "family.html",
            status,
            kind=kind,
            subject=subject,
            view=view,
            protocol=proto,
            protocols=assigned,
            members=members,
            wider=without_restricted(views, pages.wider_family(views.warehouse, members)),
            household_id=view.extra.get("household_id"),
            break_glass=view.extra.get("break_glass"),
        )

    @app.get("/people/{person_id}", response_class=HTMLResponse)
    def person(
        request: Request,
        person_id: str,
        protocol: str | None = None,
        break_glass_id: str | None = None,
    ) -> Response:
        return family(request, "person", person_id, protocol, break_glass_id)

    @app.get("/households/{household_id}", response_class=HTMLResponse)
    def household(
        request: Request,
        household_id: str,
        protocol: str | None = None,
        break_glass_id: str | None = None,
    ) -> Response:
        return family(request, "household", household_id, protocol, break_glass_id)

    @app.get("/{kind}/{subject}/summary", response_class=HTMLResponse)
    def summary(request: Request, kind: str, subject: str, protocol: str | None = None) -> Response:
        s = session_of(request)
        if kind not in ("people", "households"):
            raise StarletteHTTPException(404)
        subject = check_id(subject)
        chosen, assigned = protocol_choice(request, s, protocol)
        if chosen is None:
            return render(
                request, "choose_protocol.html", action=request.url.path, protocols=assigned
            )
        views = ws.views()
        view = (
            views.household_view(s.user, chosen, subject)
            if kind == "households"
            else views.person_view(s.user, chosen, subject)
        )
        return render(
            request,
            "summary.html",
            view=view,
            protocol=ws.gov.protocols[chosen],
            sections=pages.case_summary(view, ws.gov.audit),
            kind=kind,
            chronology=pages.chronology(view),
        )

    @app.get("/households/{household_id}/involvement", response_class=HTMLResponse)
    def involvement(request: Request, household_id: str) -> Response:
        s = session_of(request)
        view = ws.views().involvement(s.user, check_id(household_id))
        return render(request, "involvement.html", view=view, agencies=view.extra["agencies"])

    # -- break-glass ------------------------------------------------------------------------

    @app.get("/households/{household_id}/break-glass", response_class=HTMLResponse)
    def break_glass_form(request: Request, household_id: str, protocol: str = "") -> Response:
        session_of(request)
        proto = ws.gov.protocols.get(protocol)
        return render(
            request,
            "break_glass.html",
            household_id=check_id(household_id),
            protocol=proto,
            error=None,
        )

    @app.post("/households/{household_id}/break-glass", response_class=HTMLResponse)
    def break_glass(
        request: Request,
        household_id: str,
        protocol: str = Form(""),
        category: str = Form(""),
        justification: str = Form(""),
        hours: int = Form(1),
        csrf_token: str = Form(""),
    ) -> Response:
        posted(request, csrf_token)
        ask = BreakGlassAsk(category, justification.strip(), hours)
        try:
            return family(request, "household", household_id, protocol, ask=ask)
        except Forbidden as exc:  # the decision screened and recorded it; say why, keep no text
            shown = uniform_refusal(exc.reasons, exc.audit_seq)["reasons"]
            return render(
                request,
                "break_glass.html",
                403,
                household_id=household_id,
                protocol=ws.gov.protocols.get(protocol),
                error=shown,
            )

    # -- identity (only from the originating agency) ----------------------------------------

    @app.get("/people/{person_id}/identity", response_class=HTMLResponse)
    def identity_form(request: Request, person_id: str, protocol: str = "") -> Response:
        s = session_of(request)
        chosen, assigned = protocol_choice(request, s, protocol)
        return render(
            request,
            "identity.html",
            person_id=check_id(person_id),
            protocol=ws.gov.protocols.get(chosen or ""),
            protocols=assigned,
            agencies=sorted(ws.bridges),
            identities=None,
            error=None,
        )

    @app.post("/people/{person_id}/identity", response_class=HTMLResponse)
    def identity(
        request: Request,
        person_id: str,
        protocol: str = Form(""),
        agency: str = Form(""),
        reason: str = Form(""),
        csrf_token: str = Form(""),
    ) -> Response:
        s = posted(request, csrf_token)
        views = ws.views()
        ctx = {
            "person_id": check_id(person_id),
            "protocol": ws.gov.protocols.get(protocol),
            "protocols": [],
            "agencies": sorted(ws.bridges),
        }
        try:
            r = ws.identity(views).request(s.user, protocol, person_id, agency, reason)
        except BadIdentityRequest as exc:
            return render(request, "identity.html", 422, identities=None, error=str(exc), **ctx)
        return render(
            request, "identity.html", identities=r.identities, agency=r.agency, error=None, **ctx
        )

    app.include_router(sharing_pages.router(ws, render, session_of, posted))  # decision log
    app.include_router(caseload_router(ws))  # /caseload
    app.include_router(known_to_router(ws))  # /people|households/{id}/known-to
    app.include_router(approvals.router(ws, render, session_of, posted))
    app.include_router(restriction_pages.router(ws, render, session_of, posted))
    consent_pages.register(app, ws, render, session_of, posted, check_id)
    return app
