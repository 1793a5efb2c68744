"""Helpers for tests that run the governance store on a real PostgreSQL.

`JOINEDUP_TEST_PG` overrides the URL; otherwise 127.0.0.1:5432 db `test` as postgres or root
(trust auth). Each test gets its own schema, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

_CANDIDATES = (
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg://root@127.0.0.1:5432/test",
)


def postgres_url() -> tuple[str | None, str]:
    """(url, reason): the first reachable test URL, or None and why none was."""
    candidates = (
        [os.environ["JOINEDUP_TEST_PG"]] if "JOINEDUP_TEST_PG" in os.environ else list(_CANDIDATES)
    )
    why = "no candidate URL"
    for url in candidates:
        engine = create_engine(url, connect_args={"connect_timeout": 2})
        try:
            with engine.connect() as conn:
                conn.execute(text("select 1"))
            return url, "ok"
        except SQLAlchemyError as exc:
            why = f"PostgreSQL not reachable at 127.0.0.1:5432 db test ({type(exc).__name__})"
        finally:
            engine.dispose()
    return None, why


@contextmanager
def temp_schema(url: str, prefix: str = "gov_test") -> Iterator[str]:
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        yield schema
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


def append_worker(
    args: tuple[str, str | None, str, int, str | None], barrier: Any = None, out: Any = None
) -> list[int]:
    """Process entry point for concurrency tests: append n entries as `writer`, starting
    together with the other workers at `barrier`; puts (writer, seqs) on `out` if given."""
    from pathlib import Path

    from governance.audit import AuditLog
    from governance.audit_keys import load_audit_key

    url, schema, writer, n, key_path = args
    key = load_audit_key(Path(key_path)) if key_path else None
    log = AuditLog(url, schema=schema, signing_key=key, checkpoint_every=10, create=False)
    with log.engine.connect():
        pass  # connect before the barrier so all workers start appending at once
    if barrier is not None:
        barrier.wait(timeout=60)
    seqs = [log.append("test", {"writer": writer, "i": i}).seq for i in range(n)]
    log.engine.dispose()
    if out is not None:
        out.put((writer, seqs))
    return seqs


def signed_and_verified(log: Any, directory: Any) -> Any:
    """For tests of code that appends without the hub's key: make a hub audit key under
    `directory` (keys/ and ig_lead/), checkpoint the head with it, and verify the whole chain
    against the exported public record. Returns the VerifyReport."""
    from pathlib import Path

    from governance.audit import AuditLog
    from governance.audit_keys import create_audit_key, export_public_record, load_trusted_keys

    key = create_audit_key(Path(directory) / "keys")
    export_public_record(key, Path(directory) / "ig_lead")
    AuditLog(log.engine, signing_key=key, create=False, origin="test").checkpoint("test")
    return log.verify(load_trusted_keys(Path(directory) / "ig_lead"))


def partnership_set_up(engine: Any) -> int:
    """What a deployment does before its first decision, for tests of the shipped hub
    processes (whose access control is always on): each agency's IG lead signs off every
    protocol it is party to (governance.signoff.sign_off_all: real sign-offs, one audit entry
    each). The shipped schemas/assignments.yaml is the processes' default and needs no step.
    Returns the number of sign-offs recorded."""
    from governance.audit import AuditLog
    from governance.signoff import sign_off_all

    return len(sign_off_all(AuditLog(engine)))


def deployed_access(
    engine: Any, folder: Any, teams: dict[str, dict[str, Any]] | None = None
) -> Any:
    """Access control as a deployment runs it, for tests that build a Governance directly:
    the shipped schemas/assignments.yaml with the test's own teams added (written to
    <folder>/assignments.yaml, as a partnership writes its own file), every protocol signed
    off by each controller (partnership_set_up), and governance.access.configured_access over
    both, exactly as the API and the workspace load them."""
    from pathlib import Path

    import yaml

    from governance.access import ASSIGNMENTS_FILE, configured_access

    doc = yaml.safe_load(ASSIGNMENTS_FILE.read_text("utf-8"))
    doc["teams"] = {**doc.get("teams", {}), **(teams or {})}
    path = Path(folder) / "assignments.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), "utf-8")
    partnership_set_up(engine)
    return configured_access(engine, path, source=str(path))
