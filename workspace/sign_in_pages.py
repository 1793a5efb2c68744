"""Sign-in and sign-out pages of the workspace (workspace.app): local argon2 accounts
(workspace.accounts) or OIDC (workspace.oidc). The session cookie is set only once a sign-in
succeeds; every failed sign-in is an audit entry, never with the password."""

# No `from __future__ import annotations`: FastAPI must see the real parameter types.
import secrets
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from governance.api_safety import AuthFailureLog
from governance.decisions import User
from workspace.oidc import OidcRefused


def router(
    ws: Any,
    render: Callable[..., HTMLResponse],
    posted: Callable[..., Any],
    auth_failures: AuthFailureLog,
) -> APIRouter:
    """/sign-in, /sign-in/oidc, /sign-out over the workspace's own render and CSRF helpers."""
    from workspace.app import OIDC_COOKIE, PRE_COOKIE, SESSION_COOKIE, BadCsrf  # app imports us

    routes = APIRouter()

    def sign_in_page(request: Request, status: int = 200, error: str | None = None) -> Response:
        token = secrets.token_urlsafe(32)
        r = render(
            request, "sign_in.html", status, pre_csrf=token, error=error, oidc=ws.oidc is not None
        )
        r.set_cookie(
            PRE_COOKIE,
            token,
            httponly=True,
            secure=ws.secure_cookies,
            samesite="strict",
            max_age=1800,
        )
        return r

    @routes.get("/sign-in", response_class=HTMLResponse)
    def sign_in_form(request: Request) -> Response:
        return sign_in_page(request)

    @routes.post("/sign-in")
    def sign_in(
        request: Request,
        username: str = Form(""),
        password: str = Form(""),
        csrf_token: str = Form(""),
    ) -> Response:
        pre = request.cookies.get(PRE_COOKIE)
        if not pre or not secrets.compare_digest(pre, csrf_token):
            raise BadCsrf()
        user, team, why = ws.accounts.verify(username.strip(), password)
        if user is None:
            # The fact, the route and a hash prefix of the name typed: never the password.
            auth_failures.record(why, username.strip() or None, "POST", "/sign-in")
            return sign_in_page(request, 401, "Enter a correct username and password")
        r = RedirectResponse("/", 303)
        r.delete_cookie(PRE_COOKIE)
        return start_session(request, user, team, r)

    def start_session(
        request: Request, user: User, team: str | None, response: Response
    ) -> Response:
        s = ws.sessions.start(user, team)
        request.scope["ws_user"] = user
        response.set_cookie(
            SESSION_COOKIE, s.session_id, httponly=True, secure=ws.secure_cookies, samesite="strict"
        )
        return response

    @routes.get("/sign-in/oidc")
    def oidc_start(request: Request) -> Response:
        if ws.oidc is None:
            raise StarletteHTTPException(404)
        pending, url = ws.oidc.start()
        r = RedirectResponse(url, 303)
        # Lax, not Strict: the provider sends the browser back here from its own site.
        r.set_cookie(
            OIDC_COOKIE,
            pending,
            httponly=True,
            secure=ws.secure_cookies,
            samesite="lax",
            max_age=600,
        )
        return r

    @routes.get("/sign-in/oidc/callback", response_class=HTMLResponse)
    def oidc_callback(
        request: Request, state: str | None = None, code: str | None = None
    ) -> Response:
        if ws.oidc is None:
            raise StarletteHTTPException(404)
        try:
            user, team = ws.oidc.finish(request.cookies.get(OIDC_COOKIE), state, code)
        except OidcRefused as exc:
            auth_failures.record(f"oidc_{exc.reason}", None, "GET", "/sign-in/oidc/callback")
            r = sign_in_page(request, 401, "Your organisation's sign-in did not complete")
            r.delete_cookie(OIDC_COOKIE)
            return r
        # A page, not a redirect: the browser arrived from the provider's site, and a
        # SameSite=Strict session cookie is only sent on a navigation started here.
        r = render(request, "signed_in.html")
        r.delete_cookie(OIDC_COOKIE)
        return start_session(request, user, team, r)

    @routes.post("/sign-out")
    def sign_out(request: Request, csrf_token: str = Form("")) -> Response:
        s = posted(request, csrf_token)
        ws.sessions.end(s.session_id)
        r = RedirectResponse("/signed-out", 303)
        r.delete_cookie(SESSION_COOKIE)
        return r

    @routes.get("/signed-out", response_class=HTMLResponse)
    def signed_out(request: Request) -> Response:
        return render(request, "signed_out.html")

    return routes
