"""The agency's own controls on identity requests: the bridge is the last line of defence.

Whoever holds the hub's request-signing key can sign anything, so the bridge checks for itself:
- the protocols this agency itself agreed (a file in the agency folder, written by the agency's
  IG lead with `joinedup-bridge protocols agree`): id, version, SHA-256 of the protocol
  document as agreed, and whether that protocol allows identity to be revealed;
- rate limits per requesting user and in total over a sliding window;
- an append-only, hash-chained JSONL audit log whose appends cost O(1) (the last line is read
  from the end of the file, not by re-reading the whole log), under an exclusive file lock.
Nothing here holds or writes an identifier: refs, ids, codes and counts only.
"""

from __future__ import annotations

import collections
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import stat
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

AGREED_FILE = "agreed_protocols.yaml"
AGREED_VERSION = 1
GENESIS = "0" * 64
_PROTOCOL_ID = re.compile(r"^[a-z][a-z0-9_]{2,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class AgreementError(ValueError):
    """The agreed-protocols file or a protocol document is unusable (message names the file)."""


# --- agreed protocols ----------------------------------------------------------------------


@dataclass(frozen=True)
class AgreedProtocol:
    protocol_id: str
    version: int
    sha256: str
    identity_allowed: bool
    agreed_at: str
    agreed_by: str
    # What the protocol says of consent (ig_bridge.reid_consent); None: agreed before the
    # bridge recorded it (agree again to have withdrawals honoured under it).
    consent_purpose: str | None = None
    consent_rule: str | None = None


def protocol_document_sha256(path: str | Path) -> str:
    """SHA-256 of the protocol document's bytes: the agency agrees to exactly this text, and
    the hub names the same digest of the file it loaded."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _read_protocol(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text("utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise AgreementError(f"{path}: cannot read the protocol ({type(exc).__name__})") from None
    if not isinstance(doc, dict) or not _PROTOCOL_ID.fullmatch(str(doc.get("id", ""))):
        raise AgreementError(f"{path}: id: missing or not a protocol id")
    return doc


def _opt(value: Any) -> str | None:
    return str(value) if isinstance(value, str) and value else None


def _check_private_file(path: Path) -> None:
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise AgreementError(f"{path}: must be a regular file (not a link or device)")
    if st.st_mode & 0o022:
        raise AgreementError(f"{path}: must not be writable by group or others")


class AgreedProtocols:
    """The agency's own list of agreed protocols (`<agency dir>/agreed_protocols.yaml`)."""

    def __init__(self, agency: str, protocols: Mapping[str, AgreedProtocol]) -> None:
        self.agency = agency
        self.protocols = dict(protocols)

    @classmethod
    def load(cls, agency_dir: str | Path, agency: str) -> AgreedProtocols:
        path = Path(agency_dir) / AGREED_FILE
        if not path.exists():
            return cls(agency, {})  # nothing agreed: every identity request is refused
        _check_private_file(path)
        doc = yaml.safe_load(path.read_text("utf-8")) or {}
        if doc.get("agreed_protocols_version") != AGREED_VERSION or doc.get("agency") != agency:
            raise AgreementError(
                f"{path}: not an agreed-protocols file (version "
                f"{AGREED_VERSION}) for agency {agency}"
            )
        out: dict[str, AgreedProtocol] = {}
        for pid, body in (doc.get("protocols") or {}).items():
            try:
                ap = AgreedProtocol(
                    str(pid),
                    int(body["version"]),
                    str(body["sha256"]),
                    body["identity_allowed"] is True,
                    str(body["agreed_at"]),
                    str(body["agreed_by"]),
                    _opt(body.get("consent_purpose")),
                    _opt(body.get("consent_rule")),
                )
            except (KeyError, TypeError, ValueError):
                raise AgreementError(
                    f"{path}: protocols.{pid}: needs version, sha256, "
                    "identity_allowed, agreed_at, agreed_by"
                ) from None
            if not _PROTOCOL_ID.fullmatch(ap.protocol_id) or not _SHA256.fullmatch(ap.sha256):
                raise AgreementError(f"{path}: protocols.{pid}: bad id or sha256")
            out[ap.protocol_id] = ap
        return cls(agency, out)

    def check(self, protocol_id: Any, version: Any, sha256: Any) -> str | None:
        """None if identity may be revealed under this protocol as the agency agreed it; else
        the refusal code."""
        ap = self.protocols.get(protocol_id) if isinstance(protocol_id, str) else None
        if ap is None:
            return "protocol_not_agreed"
        if version != ap.version or sha256 != ap.sha256:
            return "protocol_version_not_agreed"
        if not ap.identity_allowed:
            return "identity_not_allowed_by_protocol"
        return None


def agree_protocol(
    agency_dir: str | Path,
    agency: str,
    protocol_path: str | Path,
    agreed_by: str,
    at: dt.datetime | None = None,
) -> AgreedProtocol:
    """Record that the agency agreed this protocol document (what its IG lead signs off).

    The protocol must name the agency; identity is allowed only if the document says
    `identity: {allowed: true}`. Re-agreeing a protocol replaces its entry (a new version)."""
    protocol_path = Path(protocol_path)
    doc = _read_protocol(protocol_path)
    if agency not in (doc.get("agencies") or {}):
        raise AgreementError(f"{protocol_path}: agencies: {agency} is not a party to it")
    ident = doc.get("identity") or {}
    entry = AgreedProtocol(
        protocol_id=str(doc["id"]),
        version=int(doc.get("version", 1)),
        sha256=protocol_document_sha256(protocol_path),
        identity_allowed=isinstance(ident, dict) and ident.get("allowed") is True,
        agreed_at=(at or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds"),
        agreed_by=agreed_by,
        consent_purpose=_opt(doc.get("consent_purpose")),
        consent_rule=_opt(doc.get("consent_rule")),
    )
    path = Path(agency_dir) / AGREED_FILE
    current = AgreedProtocols.load(agency_dir, agency) if path.exists() else None
    protocols = dict(current.protocols if current else {})
    protocols[entry.protocol_id] = entry
    body = {
        "agreed_protocols_version": AGREED_VERSION,
        "agency": agency,
        "protocols": {
            p.protocol_id: {
                "version": p.version,
                "sha256": p.sha256,
                "identity_allowed": p.identity_allowed,
                "agreed_at": p.agreed_at,
                "agreed_by": p.agreed_by,
                **({"consent_purpose": p.consent_purpose} if p.consent_purpose else {}),
                **({"consent_rule": p.consent_rule} if p.consent_rule else {}),
            }
            for p in sorted(protocols.values(), key=lambda p: p.protocol_id)
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(
            "# The protocols this agency's IG lead agreed; the re-identification service\n"
            "# answers only requests under these (joinedup-bridge protocols agree).\n"
        )
        yaml.safe_dump(body, fh, sort_keys=False)
    os.replace(tmp, path)
    return entry


# --- rate limits ---------------------------------------------------------------------------


class SlidingWindowLimiter:
    """At most `per_user` answered requests per user and `total` in all within `window`
    seconds (sliding). `admit` records the request when it is within both limits."""

    def __init__(
        self, per_user: int, total: int, window: float, clock: Any = time.monotonic
    ) -> None:
        if per_user < 1 or total < 1 or window <= 0:
            raise ValueError("rate limits must be positive")
        self.per_user, self.total, self.window = per_user, total, window
        self.clock = clock
        self._all: collections.deque[float] = collections.deque()
        self._users: dict[str, collections.deque[float]] = {}

    def _trim(self, q: collections.deque[float], now: float) -> None:
        while q and q[0] <= now - self.window:
            q.popleft()

    def record(self, user: str, at: float) -> None:
        """Count an earlier answer (from the audit log at start), whatever the limits."""
        self._all.append(at)
        self._users.setdefault(user, collections.deque()).append(at)

    def admit(self, user: str, now: float | None = None) -> str | None:
        """None if admitted (and counted); else `rate_limited_user` / `rate_limited_total`."""
        now = self.clock() if now is None else now
        self._trim(self._all, now)
        q = self._users.setdefault(user, collections.deque())
        self._trim(q, now)
        if len(self._all) >= self.total:
            return "rate_limited_total"
        if len(q) >= self.per_user:
            return "rate_limited_user"
        self._all.append(now)
        q.append(now)
        if len(self._users) > 4 * self.total:  # forget idle users: memory stays bounded
            self._users = {u: d for u, d in self._users.items() if d}
        return None


# --- the audit log ---------------------------------------------------------------------------


def _last_line(fd: int) -> bytes:
    """The last non-empty line of an open file, read backwards from its end."""
    end = os.fstat(fd).st_size
    block, buf = 4096, b""
    pos = end
    while pos > 0:
        step = min(block, pos)
        pos -= step
        buf = os.pread(fd, step, pos) + buf
        stripped = buf.rstrip(b"\n")
        nl = stripped.rfind(b"\n")
        if nl >= 0:
            return stripped[nl + 1 :]
        block *= 2
    return buf.rstrip(b"\n")


def append_audit(path: str | Path, entry: Mapping[str, Any]) -> str:
    """Append one JSON line chained to the previous line's SHA-256 (file created 0600, refused
    if others can read it). O(1) in the log's length; an exclusive lock serialises writers.
    Returns the new line's SHA-256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077:
            raise PermissionError(f"{path}: audit log must be a file readable by its owner only")
        fcntl.flock(fd, fcntl.LOCK_EX)
        last = _last_line(fd)
        prev = hashlib.sha256(last).hexdigest() if last else GENESIS
        line = json.dumps(
            {**entry, "prev_sha256": prev}, sort_keys=True, separators=(",", ":")
        ).encode("utf-8")
        os.write(fd, line + b"\n")
        os.fsync(fd)
        return hashlib.sha256(line).hexdigest()
    finally:
        os.close(fd)


def read_audit(path: str | Path) -> Iterator[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


class UnauthenticatedCounter:
    """Refusals of requests nobody signed are counted, not logged one by one: at most one
    summary line per `interval` seconds, so an unauthenticated flood cannot grow the log."""

    def __init__(self, audit_log: Path, agency: str, interval: float = 60.0) -> None:
        self.audit_log, self.agency, self.interval = audit_log, agency, interval
        self.counts: collections.Counter[str] = collections.Counter()
        self._since: str | None = None
        self._last_flush = time.monotonic()
        self._lock = threading.Lock()

    def add(self, code: str) -> None:
        with self._lock:
            if not self.counts:
                self._since = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            self.counts[code] += 1
            due = time.monotonic() - self._last_flush >= self.interval
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            if not self.counts:
                return
            counts, since = dict(self.counts), self._since
            self.counts.clear()
            self._last_flush = time.monotonic()
        append_audit(
            self.audit_log,
            {
                "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "agency": self.agency,
                "outcome": "unauthenticated_refusals",
                "since": since,
                "counts": counts,
            },
        )
