"""Checkpoints for a long-running process (the governance API): one at start-up, one every
`every_seconds` while entries are appended, one at shutdown, all with the hub's audit key.

`attach_checkpointer(app, log)` wraps a FastAPI/Starlette app's lifespan, so the app factory
needs one line and any lifespan of its own keeps working.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from governance.audit import AuditError, AuditLog

log_ = logging.getLogger(__name__)


def process_origin(kind: str = "api") -> str:
    """A name for this process in its checkpoints (host and pid; no user data)."""
    return f"{kind}:{socket.gethostname()[:64]}:{os.getpid()}"


class PeriodicCheckpointer:
    def __init__(self, log: AuditLog, every_seconds: float = 300.0) -> None:
        if log.signing_key is None:
            raise AuditError("the API process needs the hub audit signing key to checkpoint")
        self.log = log
        self.every = every_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        # The whole chain is re-checked first: a tampered log stops the process starting.
        self.log.checkpoint("start", full=True)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="audit-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.log.checkpoint("periodic")
            except AuditError as exc:  # our own message: entry numbers only
                log_.error("audit checkpoint refused: %s", exc)
            except Exception as exc:  # noqa: BLE001 - keep serving; the next verify reports it
                # A driver error may carry the database URL: name its type only.
                log_.error("audit checkpoint failed: %s", type(exc).__name__)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.log.checkpoint("stop")


def attach_checkpointer(
    app: Any, log: AuditLog, every_seconds: float = 300.0
) -> PeriodicCheckpointer:
    """Checkpoint at the app's start-up, periodically, and at its shutdown."""
    cp = PeriodicCheckpointer(log, every_seconds)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        cp.start()
        try:
            async with inner(a) as state:
                yield state
        finally:
            cp.stop()

    app.router.lifespan_context = lifespan
    return cp
