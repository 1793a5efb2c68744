"""Production sign-in: OpenID Connect (authorisation code + PKCE) against the authority's
identity provider, with Authlib for the OAuth client and joserfc (Authlib's JOSE library) for
the ID token. MFA is the provider's; role, agency and team come from claims.

The ID token must be signed by a key in the provider's JWKS, name the configured issuer and this
client as audience, carry the nonce this sign-in sent, and be unexpired; its role claim must be
a known role. Anything else refuses the sign-in (an `auth_failure` audit entry with the reason;
never a token). The pending state (state, nonce, PKCE verifier) is held for ten minutes in the
server-side store (workspace.oidc_pending: every worker sees it, a restart keeps it, it is used
once) under a random id in a SameSite=Lax cookie, as the provider redirects back cross-site.

Configuration (environment): JOINEDUP_OIDC_ISSUER (discovery at
<issuer>/.well-known/openid-configuration), JOINEDUP_OIDC_CLIENT_ID, JOINEDUP_OIDC_CLIENT_SECRET,
JOINEDUP_OIDC_REDIRECT_URI (https://<workspace>/sign-in/oidc/callback), and optionally
JOINEDUP_OIDC_ROLE_CLAIM / _AGENCY_CLAIM / _TEAM_CLAIM (default joinedup_role, joinedup_agency,
joinedup_team).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from typing import Any

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from governance.decisions import User
from governance.policy import ROLE_NAMES
from workspace.oidc_pending import Pending, PendingSignIns


class OidcRefused(Exception):  # noqa: N818 - an outcome, not a fault
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    client_id: str
    client_secret: str
    redirect_uri: str
    role_claim: str = "joinedup_role"
    agency_claim: str = "joinedup_agency"
    team_claim: str = "joinedup_team"

    @classmethod
    def from_env(cls) -> OidcConfig | None:
        env = os.environ
        if not env.get("JOINEDUP_OIDC_ISSUER"):
            return None
        try:
            return cls(
                env["JOINEDUP_OIDC_ISSUER"].rstrip("/"),
                env["JOINEDUP_OIDC_CLIENT_ID"],
                env["JOINEDUP_OIDC_CLIENT_SECRET"],
                env["JOINEDUP_OIDC_REDIRECT_URI"],
                env.get("JOINEDUP_OIDC_ROLE_CLAIM", "joinedup_role"),
                env.get("JOINEDUP_OIDC_AGENCY_CLAIM", "joinedup_agency"),
                env.get("JOINEDUP_OIDC_TEAM_CLAIM", "joinedup_team"),
            )
        except KeyError as exc:
            raise ValueError(
                f"environment: {exc.args[0]} missing (OIDC is configured by JOINEDUP_OIDC_ISSUER)"
            ) from None


class OidcSignIn:
    def __init__(
        self, config: OidcConfig, pending: PendingSignIns, http: requests.Session | None = None
    ) -> None:
        self.config = config
        self.pending = pending  # server-side, shared by every worker
        self.http = http or requests.Session()
        self.http.trust_env = False  # no proxy from the environment sees tokens
        self._metadata: dict[str, Any] | None = None

    def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            r = self.http.get(f"{self.config.issuer}/.well-known/openid-configuration", timeout=10)
            r.raise_for_status()
            meta = r.json()
            if meta.get("issuer", "").rstrip("/") != self.config.issuer:
                raise OidcRefused("issuer_mismatch_in_discovery")
            self._metadata = meta
        return self._metadata

    def _client(self) -> OAuth2Session:
        c = self.config
        return OAuth2Session(
            c.client_id,
            c.client_secret,
            scope="openid profile",
            redirect_uri=c.redirect_uri,
            code_challenge_method="S256",
        )

    def start(self) -> tuple[str, str]:
        """(pending id for the cookie, the provider's authorisation URL)."""
        state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
        url, _ = self._client().create_authorization_url(
            self.metadata()["authorization_endpoint"],
            state=state,
            nonce=nonce,
            code_verifier=verifier,
        )
        return self.pending.put(Pending(state, nonce, verifier)), url

    def finish(
        self, pending_id: str | None, state: str | None, code: str | None
    ) -> tuple[User, str | None]:
        """The signed-in user (and team) from the provider's answer, or OidcRefused."""
        pending = self.pending.take(pending_id)
        if pending is None:
            raise OidcRefused("no_pending_sign_in")
        want_state, nonce, verifier = pending.state, pending.nonce, pending.verifier
        if not state or not secrets.compare_digest(state, want_state):
            raise OidcRefused("state_mismatch")
        if not code:
            raise OidcRefused("no_code")
        meta = self.metadata()
        try:
            token = self._client().fetch_token(
                meta["token_endpoint"], code=code, code_verifier=verifier
            )
        except Exception:  # noqa: BLE001 - any failure at the provider refuses the sign-in
            raise OidcRefused("token_exchange_failed") from None
        claims = self._verify(str(token.get("id_token", "")), nonce)
        role = claims.get(self.config.role_claim)
        if role not in ROLE_NAMES:
            raise OidcRefused("unknown_role_claim")
        agency = claims.get(self.config.agency_claim)
        return (
            User(str(claims["sub"]), str(role), str(agency) if agency else None),
            claims.get(self.config.team_claim),
        )

    def _verify(self, id_token: str, nonce: str) -> dict[str, Any]:
        r = self.http.get(self.metadata()["jwks_uri"], timeout=10)
        r.raise_for_status()
        try:
            tok = jwt.decode(
                id_token, KeySet.import_key_set(r.json()), algorithms=["RS256", "ES256", "PS256"]
            )
            jwt.JWTClaimsRegistry(
                leeway=60,
                iss={"essential": True, "value": self.config.issuer},
                aud={"essential": True, "value": self.config.client_id},
                nonce={"essential": True, "value": nonce},
                sub={"essential": True},
                exp={"essential": True},
            ).validate(tok.claims)
        except (JoseError, ValueError):
            raise OidcRefused("id_token_invalid") from None
        return dict(tok.claims)
