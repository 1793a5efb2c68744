"""Bearer tokens of the governance API (the embedded default authentication).

Opaque tokens issued by `TokenStore.issue`, stored only as SHA-256 hashes in the governance
store (table gov_api_tokens), each mapped to a user id, a role and an employing agency, each
expiring (12 h by default). Production can swap in any `Authenticator` (docs/api.md).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from typing import Any, Protocol

from sqlalchemy import (
    Column,
    Engine,
    MetaData,
    String,
    Table,
    insert,
    inspect,
    select,
    text,
    update,
)

from governance.decisions import User
from governance.policy import ROLE_NAMES

_meta = MetaData()
api_tokens = Table(
    "gov_api_tokens",
    _meta,
    Column("token_sha256", String(64), primary_key=True),
    Column("user_id", String(128), nullable=False),
    Column("role", String(32), nullable=False),
    Column("agency", String(8), nullable=True),
    Column("created_at", String(40), nullable=False),
    Column("revoked_at", String(40), nullable=True),
    Column("expires_at", String(40), nullable=True),  # NULL (older rows): created_at + TTL
)
DEFAULT_TOKEN_TTL = dt.timedelta(hours=12)  # one working shift; issue again for the next


def _hash_token(token: str) -> str:
    # Tokens are 256-bit random, so a plain SHA-256 is enough (no password-style KDF needed).
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Authenticator(Protocol):
    def authenticate(self, token: str) -> User | None: ...


class TokenStore:
    """Hashed bearer tokens in the governance store (SQLite by default, PostgreSQL in prod)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        _meta.create_all(engine)
        self._add_expiry_column()

    def _add_expiry_column(self) -> None:
        """A store created before tokens expired: add the column (older rows then expire
        DEFAULT_TOKEN_TTL after they were created)."""
        schema = (self.engine.get_execution_options().get("schema_translate_map") or {}).get(None)
        cols = {
            c["name"] for c in inspect(self.engine).get_columns("gov_api_tokens", schema=schema)
        }
        if "expires_at" not in cols:
            q = self.engine.dialect.identifier_preparer.quote
            table = f"{q(schema)}.{q('gov_api_tokens')}" if schema else q("gov_api_tokens")
            with self.engine.begin() as conn:
                conn.execute(text(f"ALTER TABLE {table} ADD COLUMN expires_at VARCHAR(40)"))

    def issue(
        self,
        user_id: str,
        role: str,
        agency: str | None = None,
        ttl: dt.timedelta = DEFAULT_TOKEN_TTL,
    ) -> str:
        """A new token valid for `ttl`; the only time its plaintext exists is in this return
        value."""
        if role not in ROLE_NAMES:
            raise ValueError(f"role: unknown role {role!r}; known: {sorted(ROLE_NAMES)}")
        token = secrets.token_urlsafe(32)
        self.add_hashed(
            _hash_token(token), user_id, role, agency, expires_at=dt.datetime.now(dt.UTC) + ttl
        )
        return token

    def add_hashed(
        self,
        token_sha256: str,
        user_id: str,
        role: str,
        agency: str | None = None,
        expires_at: dt.datetime | None = None,
    ) -> None:
        now = dt.datetime.now(dt.UTC)
        if expires_at is not None and expires_at.tzinfo is None:
            raise ValueError("expires_at must be timezone-aware")
        with self.engine.begin() as conn:
            conn.execute(
                insert(api_tokens).values(
                    token_sha256=token_sha256,
                    user_id=user_id,
                    role=role,
                    agency=agency,
                    created_at=now.isoformat(),
                    expires_at=(expires_at or now + DEFAULT_TOKEN_TTL).isoformat(),
                )
            )

    @staticmethod
    def _expired(row: Any, now: dt.datetime) -> bool:
        end = (
            dt.datetime.fromisoformat(row.expires_at)
            if row.expires_at
            else dt.datetime.fromisoformat(row.created_at) + DEFAULT_TOKEN_TTL
        )
        return now >= end

    def known(self, token_sha256: str) -> bool:
        with self.engine.connect() as conn:
            return (
                conn.execute(
                    select(api_tokens.c.user_id).where(api_tokens.c.token_sha256 == token_sha256)
                ).first()
                is not None
            )

    def revoke(self, token: str) -> bool:
        with self.engine.begin() as conn:
            res = conn.execute(
                update(api_tokens)
                .where(
                    api_tokens.c.token_sha256 == _hash_token(token),
                    api_tokens.c.revoked_at.is_(None),
                )
                .values(revoked_at=dt.datetime.now(dt.UTC).isoformat())
            )
        return res.rowcount == 1

    def authenticate(self, token: str) -> User | None:
        return self.check(token)[0]

    def check(self, token: str) -> tuple[User | None, str]:
        """(user, "ok") or (None, unknown_token | revoked_token | expired_token)."""
        h = _hash_token(token)
        with self.engine.connect() as conn:
            row = conn.execute(select(api_tokens).where(api_tokens.c.token_sha256 == h)).first()
        if row is None or not hmac.compare_digest(row.token_sha256, h):
            return None, "unknown_token"
        if row.revoked_at is not None:
            return None, "revoked_token"
        if self._expired(row, dt.datetime.now(dt.UTC)):
            return None, "expired_token"
        return User(row.user_id, row.role, row.agency), "ok"


# --- response models (they are the OpenAPI contract) -------------------------------------------
