"""Pending OpenID Connect sign-ins (state, nonce, PKCE verifier) in the server-side store.

Between the redirect to the identity provider and its callback the workspace must remember
what it sent. Held in one process's memory, a callback that reaches another worker, or the
same worker after a restart, would fail; so it lives in the governance store beside the
sessions (SQLite by default, PostgreSQL in production), where every worker sees it.

The browser holds only a random 256-bit pending id (workspace.app's SameSite=Lax cookie); the
store keeps its SHA-256. A pending sign-in is used at most once: `take` deletes it and only the
caller whose delete removed the row gets it, so two workers racing on one callback cannot
both finish it. It expires after ten minutes; expired rows are swept on each start.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import Column, Engine, Float, MetaData, String, Table, delete, insert, select

PENDING_SECONDS = 600
_meta = MetaData()
pending = Table(
    "ws_oidc_pending",
    _meta,
    Column("pending_sha256", String(64), primary_key=True),
    Column("state", String(128), nullable=False),
    Column("nonce", String(128), nullable=False),
    Column("verifier", String(256), nullable=False),  # PKCE: single use, ten minutes
    Column("created", Float, nullable=False),  # POSIX seconds: comparable across processes
)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _now() -> float:
    return dt.datetime.now(dt.UTC).timestamp()


@dataclass(frozen=True)
class Pending:
    state: str
    nonce: str
    verifier: str


class PendingSignIns:
    def __init__(self, engine: Engine, lifetime: float = PENDING_SECONDS) -> None:
        self.engine, self.lifetime = engine, lifetime
        _meta.create_all(engine)

    def put(self, p: Pending) -> str:
        """Store a pending sign-in; returns the id for the browser's cookie."""
        pid = secrets.token_urlsafe(32)
        now = _now()
        with self.engine.begin() as conn:
            conn.execute(delete(pending).where(pending.c.created < now - self.lifetime))
            conn.execute(
                insert(pending).values(
                    pending_sha256=_sha(pid),
                    state=p.state,
                    nonce=p.nonce,
                    verifier=p.verifier,
                    created=now,
                )
            )
        return pid

    def take(self, pending_id: str | None) -> Pending | None:
        """The pending sign-in, removed from the store, or None if unknown, already taken
        (by this or another worker) or expired."""
        if not pending_id:
            return None
        h = _sha(pending_id)
        with self.engine.begin() as conn:
            row = conn.execute(select(pending).where(pending.c.pending_sha256 == h)).first()
            if row is None:
                return None
            gone = conn.execute(delete(pending).where(pending.c.pending_sha256 == h))
        if gone.rowcount != 1 or _now() - row.created > self.lifetime:
            return None
        return Pending(row.state, row.nonce, row.verifier)
