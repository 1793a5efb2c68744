"""What a page module's router needs from the workspace app: the signed-in session (or a
redirect to sign in), the CSRF check, and rendering with the app's templates and globals.

Routers in their own modules (workspace.caseload, workspace.known_to_pages) are registered by
workspace.app.create_app with one line each; errors they raise (SignInRequired, BadCsrf,
Forbidden, NotFound, NoSnapshot, AuditError) are handled by the app's own handlers, and every
page view is audited by the app's middleware, which reads the user this module puts on the
request.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from governance.api_safety import AuthFailureLog
from workspace import pages
from workspace.accounts import Session, csrf_ok

if TYPE_CHECKING:
    from workspace.app import Workspace

TEMPLATES = Path(__file__).resolve().parent / "templates"
SESSION_COOKIE = "ws_session"  # workspace.app's


class PageSupport:
    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.templates = Jinja2Templates(directory=str(TEMPLATES))
        self.templates.env.globals.update(
            label=pages.label, reason_text=pages.reason_text, basis_text=pages.basis_text
        )
        self.auth_failures = AuthFailureLog(ws.gov.audit)

    def session(self, request: Request) -> Session:
        from workspace.app import SignInRequired  # the app imports this module's users

        cookie = request.cookies.get(SESSION_COOKIE)
        s, why = self.ws.sessions.get(cookie)
        if s is None:
            if cookie:
                self.auth_failures.record(
                    why, cookie, request.method, getattr(request.scope.get("route"), "path", "?")
                )
            raise SignInRequired()
        request.scope["ws_session"], request.scope["ws_user"] = s, s.user
        return s

    def posted(self, request: Request, csrf_token: str) -> Session:
        from workspace.app import BadCsrf

        s = self.session(request)
        if not csrf_ok(s, csrf_token):
            raise BadCsrf()
        return s

    def render(self, request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        s: Session | None = request.scope.get("ws_session")
        return self.templates.TemplateResponse(
            request,
            name,
            {"session": s, "user": s.user if s else None, "csrf": s.csrf if s else "", **ctx},
            status_code=status,
        )
