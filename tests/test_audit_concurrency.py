"""Concurrent appenders must never fork the chain: several processes (and threads) append at once
to one real store; the chain must then be linear, complete and verify, with signed checkpoints."""

from __future__ import annotations

import json
import multiprocessing as mp
import queue
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from governance.audit import AuditLog
from governance.audit_keys import create_audit_key, export_public_record, load_trusted_keys
from governance.testing import append_worker

PG_SCHEMA_PREFIX = "gov_conc"  # schema names of the shared `backend` fixture (conftest)
WRITERS, PER_WRITER = 4, 25


def _trusted(tmp_path: Path):
    """The hub's audit key in tmp/hub/keys; verify uses the IG lead's copy of its record."""
    key = create_audit_key(tmp_path / "hub" / "keys")
    export_public_record(key, tmp_path / "ig_lead")
    return key, load_trusted_keys(tmp_path / "ig_lead")


def _check_linear_and_complete(log: AuditLog, trusted, expected: set[tuple[str, int]]) -> None:
    report = log.verify(trusted)
    assert report.ok, report.summary()
    entries = list(log.entries())
    assert [e.seq for e in entries] == list(range(1, len(expected) + 1))
    assert all(b.prev_hash == a.entry_hash for a, b in zip(entries, entries[1:], strict=False))
    got = {(json.loads(e.body)["writer"], json.loads(e.body)["i"]) for e in entries}
    assert got == expected
    assert report.checkpoints == len(expected) // 10


def test_concurrent_processes_append_linearly(backend, tmp_path: Path) -> None:
    url, schema = backend
    _, trusted = _trusted(tmp_path)
    log = AuditLog(url, schema=schema)  # creates tables and the chain head once
    # spawn, not fork: a forked child of a busy xdist worker can inherit a held lock and hang
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(WRITERS), ctx.Queue()
    procs = [
        ctx.Process(
            target=append_worker,
            args=((url, schema, f"w{w}", PER_WRITER, str(tmp_path / "hub" / "keys")), barrier, out),
        )
        for w in range(WRITERS)
    ]
    log.engine.dispose()  # no pooled connection may be shared with the children
    for p in procs:
        p.start()
    results: list[list[int]] = []
    deadline = time.monotonic() + 90
    while len(results) < WRITERS and time.monotonic() < deadline:
        try:
            results.append(out.get(timeout=0.5)[1])
        except queue.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            assert not dead, f"a writer failed (exit code {dead[0].exitcode})"
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    seqs = sorted(s for r in results for s in r)
    assert seqs == list(range(1, WRITERS * PER_WRITER + 1))  # no seq handed out twice
    expected = {(f"w{w}", i) for w in range(WRITERS) for i in range(PER_WRITER)}
    _check_linear_and_complete(log, trusted, expected)
    log.engine.dispose()


def test_concurrent_threads_append_linearly(backend, tmp_path: Path) -> None:
    url, schema = backend
    key, trusted = _trusted(tmp_path)
    log = AuditLog(url, schema=schema, signing_key=key, checkpoint_every=10)

    def work(w: int) -> list[int]:
        return [log.append("test", {"writer": f"t{w}", "i": i}).seq for i in range(PER_WRITER)]

    with ThreadPoolExecutor(WRITERS) as ex:
        seqs = sorted(s for r in ex.map(work, range(WRITERS)) for s in r)
    assert seqs == list(range(1, WRITERS * PER_WRITER + 1))
    expected = {(f"t{w}", i) for w in range(WRITERS) for i in range(PER_WRITER)}
    _check_linear_and_complete(log, trusted, expected)
    log.engine.dispose()
