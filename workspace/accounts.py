"""Workspace sign-in, embedded default: local accounts (argon2id hashes) and server-side sessions.

Both live in the governance store (SQLite by default, PostgreSQL in production), beside the
audit log they are audited in. A session id is 256-bit random and only its SHA-256 is stored;
the browser holds the id in a Secure, HttpOnly, SameSite=Strict cookie. Each session carries
its own CSRF token (checked on every POST), ends after `idle` without a request and after
`absolute` in any case, and is deleted at sign-out. Production signs in through the
authority's identity provider instead (workspace.oidc); the sessions are the same.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Column, Engine, MetaData, String, Table, delete, insert, select, update

from governance.decisions import User
from governance.policy import ROLE_NAMES

IDLE = dt.timedelta(minutes=15)
ABSOLUTE = dt.timedelta(hours=10)
_meta = MetaData()
accounts = Table(
    "ws_accounts",
    _meta,
    Column("user_id", String(128), primary_key=True),
    Column("password_hash", String(256), nullable=True),  # NULL: signs in by OIDC only
    Column("role", String(32), nullable=False),
    Column("agency", String(8), nullable=True),
    Column("team", String(64), nullable=True),
    Column("display_name", String(128), nullable=True),  # a staff name, never a client's
    Column("disabled_at", String(40), nullable=True),
)
sessions = Table(
    "ws_sessions",
    _meta,
    Column("session_sha256", String(64), primary_key=True),
    Column("user_id", String(128), nullable=False),
    Column("role", String(32), nullable=False),
    Column("agency", String(8), nullable=True),
    Column("team", String(64), nullable=True),
    Column("csrf", String(64), nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("last_seen", String(40), nullable=False),
)
_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# Verified against when the account is unknown, so an unknown name costs the same time.
_DUMMY = _hasher.hash(secrets.token_urlsafe(16))


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Session:
    session_id: str  # only in the cookie and this object, never stored
    user: User
    team: str | None
    csrf: str


class AccountStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        _meta.create_all(engine)

    def create(
        self,
        user_id: str,
        password: str | None,
        role: str,
        agency: str | None,
        team: str | None = None,
        display_name: str | None = None,
    ) -> None:
        if role not in ROLE_NAMES:
            raise ValueError(f"role: unknown role {role!r}; known: {sorted(ROLE_NAMES)}")
        if password is not None and len(password) < 12:
            raise ValueError("password: at least 12 characters")
        row = {
            "password_hash": _hasher.hash(password) if password else None,
            "role": role,
            "agency": agency,
            "team": team,
            "display_name": display_name,
            "disabled_at": None,
        }
        with self.engine.begin() as conn:
            if conn.execute(
                select(accounts.c.user_id).where(accounts.c.user_id == user_id)
            ).first():
                conn.execute(update(accounts).where(accounts.c.user_id == user_id).values(**row))
            else:
                conn.execute(insert(accounts).values(user_id=user_id, **row))

    def verify(self, user_id: str, password: str) -> tuple[User | None, str | None, str]:
        """(user, team, "ok") or (None, None, unknown_account | bad_password | disabled)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(accounts).where(accounts.c.user_id == user_id)).first()
        try:
            _hasher.verify(row.password_hash if row and row.password_hash else _DUMMY, password)
            ok = row is not None and row.password_hash is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            ok = False
        if row is None:
            return None, None, "unknown_account"
        if not ok:
            return None, None, "bad_password"
        if row.disabled_at is not None:
            return None, None, "disabled_account"
        if _hasher.check_needs_rehash(row.password_hash):
            with self.engine.begin() as conn:
                conn.execute(
                    update(accounts)
                    .where(accounts.c.user_id == user_id)
                    .values(password_hash=_hasher.hash(password))
                )
        return User(row.user_id, row.role, row.agency), row.team, "ok"

    def get(self, user_id: str) -> tuple[User, str | None] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(accounts).where(accounts.c.user_id == user_id)).first()
        if row is None or row.disabled_at is not None:
            return None
        return User(row.user_id, row.role, row.agency), row.team


class SessionStore:
    def __init__(
        self, engine: Engine, idle: dt.timedelta = IDLE, absolute: dt.timedelta = ABSOLUTE
    ) -> None:
        self.engine, self.idle, self.absolute = engine, idle, absolute
        _meta.create_all(engine)

    def start(self, user: User, team: str | None) -> Session:
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = _now().isoformat()
        with self.engine.begin() as conn:
            conn.execute(
                insert(sessions).values(
                    session_sha256=_sha(sid),
                    user_id=user.user_id,
                    role=user.role,
                    agency=user.agency,
                    team=team,
                    csrf=csrf,
                    created_at=now,
                    last_seen=now,
                )
            )
        return Session(sid, user, team, csrf)

    def get(self, session_id: str | None) -> tuple[Session | None, str]:
        """(session, "ok") and the idle clock restarted, or (None, why)."""
        if not session_id:
            return None, "no_session"
        h = _sha(session_id)
        with self.engine.connect() as conn:
            row = conn.execute(select(sessions).where(sessions.c.session_sha256 == h)).first()
        if row is None or not hmac.compare_digest(row.session_sha256, h):
            return None, "unknown_session"
        now = _now()
        if (
            now - dt.datetime.fromisoformat(row.last_seen) > self.idle
            or now - dt.datetime.fromisoformat(row.created_at) > self.absolute
        ):
            self.end(session_id)
            return None, "session_timed_out"
        with self.engine.begin() as conn:
            conn.execute(
                update(sessions)
                .where(sessions.c.session_sha256 == h)
                .values(last_seen=now.isoformat())
            )
        return Session(
            session_id, User(row.user_id, row.role, row.agency), row.team, row.csrf
        ), "ok"

    def end(self, session_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(sessions).where(sessions.c.session_sha256 == _sha(session_id)))


def csrf_ok(session: Session, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(session.csrf, str(presented))
