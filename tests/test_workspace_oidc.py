"""OpenID Connect sign-in (workspace.oidc) against a real identity provider on a local port: a
small provider serving discovery, authorisation, token (PKCE checked) and JWKS endpoints,
signing ID tokens with a real RSA key (joserfc). The workspace runs under TestClient over HTTPS.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from governance.audit import AuditLog, make_engine
from governance.decisions import Governance
from linkage.config import HubPaths
from workspace.accounts import AccountStore, SessionStore
from workspace.app import Workspace, create_app
from workspace.oidc import OidcConfig, OidcSignIn
from workspace.oidc_pending import Pending, PendingSignIns

CLIENT_ID, CLIENT_SECRET = "joinedup-workspace", "test-client-secret"
REDIRECT = "https://testserver/sign-in/oidc/callback"


class Provider:
    """A minimal OpenID provider: one user, claims adjustable per test."""

    def __init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig"})
        self.codes: dict[str, dict[str, Any]] = {}
        self.claims: dict[str, Any] = {
            "sub": "sw.oidc",
            "joinedup_role": "practitioner",
            "joinedup_agency": "CSC",
            "joinedup_team": "MASH",
        }
        self.app = FastAPI()
        self.issuer = ""
        app = self.app

        @app.get("/.well-known/openid-configuration")
        def discovery() -> dict[str, str]:
            return {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
            }

        @app.get("/jwks")
        def jwks() -> dict[str, Any]:
            return KeySet([self.key]).as_dict(private=False)

        @app.get("/authorize")
        def authorize(request: Request) -> RedirectResponse:
            q = request.query_params
            assert q["client_id"] == CLIENT_ID and q["code_challenge_method"] == "S256"
            code = secrets.token_urlsafe(16)
            self.codes[code] = {
                "nonce": q["nonce"],
                "challenge": q["code_challenge"],
                "redirect_uri": q["redirect_uri"],
            }
            query = urlencode({"code": code, "state": q["state"]})
            return RedirectResponse(f"{q['redirect_uri']}?{query}", 302)

        @app.post("/token")
        def token(
            request: Request,
            code: str = Form(...),
            code_verifier: str = Form(...),
            redirect_uri: str = Form(...),
        ) -> JSONResponse:
            auth = base64.b64decode(request.headers["authorization"].split()[1]).decode()
            got = self.codes.pop(code, None)
            challenge = (
                base64.urlsafe_b64encode(hashlib.sha256(code_verifier.encode()).digest())
                .rstrip(b"=")
                .decode()
            )
            if (
                auth != f"{CLIENT_ID}:{CLIENT_SECRET}"
                or got is None
                or got["challenge"] != challenge
                or got["redirect_uri"] != redirect_uri
            ):
                return JSONResponse({"error": "invalid_grant"}, 400)
            now = int(time.time())
            claims = {
                "iss": self.issuer,
                "aud": CLIENT_ID,
                "iat": now,
                "exp": now + 300,
                "nonce": got["nonce"],
                **self.claims,
            }
            id_token = jwt.encode({"alg": "RS256", "kid": "k1"}, claims, self.key)
            return JSONResponse(
                {
                    "access_token": "at",
                    "token_type": "Bearer",
                    "id_token": id_token,
                    "expires_in": 300,
                }
            )


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[TestClient, Provider, AuditLog]]:
    idp = Provider()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    idp.issuer = f"http://127.0.0.1:{port}"
    server = uvicorn.Server(
        uvicorn.Config(idp.app, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    engine = make_engine(f"sqlite:///{tmp_path / 'governance.db'}")
    audit = AuditLog(engine)
    ws = Workspace(
        HubPaths.for_run(tmp_path),
        Governance(audit),
        AccountStore(engine),
        SessionStore(engine),
        oidc=OidcSignIn(
            OidcConfig(idp.issuer, CLIENT_ID, CLIENT_SECRET, REDIRECT), PendingSignIns(engine)
        ),
    )
    try:
        yield (
            TestClient(create_app(ws), base_url="https://testserver", follow_redirects=False),
            idp,
            audit,
        )
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _via_provider(c: TestClient) -> httpx.Response:
    start = c.get("/sign-in/oidc")
    assert start.status_code == 303
    back = httpx.get(start.headers["location"], follow_redirects=False)
    assert back.status_code == 302 and back.headers["location"].startswith(REDIRECT)
    u = urlsplit(back.headers["location"])
    return c.get(f"{u.path}?{u.query}")


def _failures(audit: AuditLog) -> list[str]:
    return [r.data().get("reason") for r in audit.entries() if r.kind == "auth_failure"]


def test_sign_in_through_the_identity_provider_takes_role_and_agency_from_claims(env) -> None:
    c, _idp, audit = env
    assert "sign in with your organisation" in c.get("/sign-in").text
    r = _via_provider(c)
    assert r.status_code == 200 and 'http-equiv="refresh"' in r.text
    assert r.headers["cache-control"] == "no-store"
    home = c.get("/")
    assert home.status_code == 200
    assert "Signed in as sw.oidc (practitioner, CSC)" in home.text
    assert _failures(audit) == []


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"aud": "another-client"}, "oidc_id_token_invalid"),
        ({"iss": "https://evil.example"}, "oidc_id_token_invalid"),
        ({"nonce": "replayed-nonce"}, "oidc_id_token_invalid"),
        ({"exp": 1_000_000_000}, "oidc_id_token_invalid"),
        ({"joinedup_role": "superuser"}, "oidc_unknown_role_claim"),
    ],
)
def test_a_token_that_does_not_verify_refuses_the_sign_in_and_is_audited(
    env, claims: dict, reason: str
) -> None:
    c, idp, audit = env
    idp.claims.update(claims)
    r = _via_provider(c)
    assert r.status_code == 401 and "did not complete" in r.text
    assert "ws_session" not in r.cookies
    assert c.get("/").status_code == 303
    assert _failures(audit)[-1] == reason


def test_a_callback_without_the_pending_sign_in_or_with_another_state_is_refused(env) -> None:
    c, _idp, audit = env
    start = c.get("/sign-in/oidc")
    back = httpx.get(start.headers["location"], follow_redirects=False)
    q = parse_qs(urlsplit(back.headers["location"]).query)
    r = c.get(f"/sign-in/oidc/callback?code={q['code'][0]}&state=forged")
    assert r.status_code == 401 and _failures(audit)[-1] == "oidc_state_mismatch"
    # the pending sign-in was used up: the right state now finds nothing either
    r = c.get(f"/sign-in/oidc/callback?code={q['code'][0]}&state={q['state'][0]}")
    assert r.status_code == 401 and _failures(audit)[-1] == "oidc_no_pending_sign_in"


# --- the pending sign-in lives in the server-side store, not in a process ------------------

PG_SCHEMA_PREFIX = "ws19_oidc"


def test_a_sign_in_started_on_one_worker_finishes_on_another_after_a_restart(
    env, tmp_path: Path
) -> None:
    c, idp, audit = env
    start = c.get("/sign-in/oidc")  # worker 1 sends the browser to the provider
    back = httpx.get(start.headers["location"], follow_redirects=False)
    pid = c.cookies.get("ws_oidc_pending")
    stored = (
        sqlite3.connect(tmp_path / "governance.db")
        .execute("SELECT pending_sha256, state FROM ws_oidc_pending")
        .fetchall()
    )
    assert len(stored) == 1 and pid not in str(stored)  # only the id's hash is kept
    assert stored[0][0] == hashlib.sha256(pid.encode()).hexdigest()
    # worker 2: another process's objects over the same store (a restart looks the same)
    engine = make_engine(f"sqlite:///{tmp_path / 'governance.db'}")
    ws2 = Workspace(
        HubPaths.for_run(tmp_path),
        Governance(AuditLog(engine)),
        AccountStore(engine),
        SessionStore(engine),
        oidc=OidcSignIn(
            OidcConfig(idp.issuer, CLIENT_ID, CLIENT_SECRET, REDIRECT), PendingSignIns(engine)
        ),
    )
    c2 = TestClient(create_app(ws2), base_url="https://testserver", follow_redirects=False)
    c2.cookies.set("ws_oidc_pending", pid)
    u = urlsplit(back.headers["location"])
    r = c2.get(f"{u.path}?{u.query}")
    assert r.status_code == 200 and 'http-equiv="refresh"' in r.text, r.text
    assert "Signed in as sw.oidc" in c2.get("/").text
    # used once: replaying the callback on worker 1 finds nothing
    assert c.get(f"{u.path}?{u.query}").status_code == 401
    assert _failures(audit)[-1] == "oidc_no_pending_sign_in"
    assert sqlite3.connect(tmp_path / "governance.db").execute(
        "SELECT count(*) FROM ws_oidc_pending"
    ).fetchone() == (0,)


def test_an_expired_pending_sign_in_is_refused(env, tmp_path: Path) -> None:
    c, _idp, audit = env
    start = c.get("/sign-in/oidc")
    back = httpx.get(start.headers["location"], follow_redirects=False)
    with sqlite3.connect(tmp_path / "governance.db") as db:  # eleven minutes at the provider
        db.execute("UPDATE ws_oidc_pending SET created = created - 660")
    u = urlsplit(back.headers["location"])
    r = c.get(f"{u.path}?{u.query}")
    assert r.status_code == 401 and _failures(audit)[-1] == "oidc_no_pending_sign_in"


def test_pending_sign_ins_are_shared_used_once_and_raced_safely(backend) -> None:
    url, schema = backend
    worker1, worker2 = (PendingSignIns(make_engine(url, schema)) for _ in range(2))
    pid = worker1.put(Pending("state-1", "nonce-1", "verifier-1"))
    assert worker2.take(pid) == Pending("state-1", "nonce-1", "verifier-1")
    assert worker1.take(pid) is None and worker2.take(pid) is None
    assert worker1.take(None) is None and worker1.take("not-an-id") is None
    # many workers answering the same callback at once: exactly one gets the pending state
    pid = worker1.put(Pending("state-2", "nonce-2", "verifier-2"))
    stores = [PendingSignIns(make_engine(url, schema)) for _ in range(6)]
    got: list[Pending | None] = []
    threads = [threading.Thread(target=lambda s=s: got.append(s.take(pid))) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [g for g in got if g is not None] == [Pending("state-2", "nonce-2", "verifier-2")]
    assert len(got) == 6
