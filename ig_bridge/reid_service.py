"""The agency's re-identification service: answers signed identity requests from the hub.

Runs on the agency's own infrastructure next to its extract and keys, on the standard library's
`http.server` (no web framework in the bridge install). POST /reidentify takes
{"request": {...}, "signature": base64}; the signature is Ed25519 by the hub over the canonical
JSON of "request" and is checked with the hub's public key (PEM) the agency was given at
onboarding.

A valid hub signature is not enough: whoever reads the hub's key can sign anything, so the
bridge checks every request itself (ig_bridge.reid_controls) and refuses unless
- it is for this agency, its request_id is new, and it names exactly ONE record ref;
- it lives at most 5 minutes (issued_at -> expires_at), was not issued in the future beyond a
  small clock skew, and has not expired;
- it carries the hub's decision reference (decision id, audit entry seq and hash), which the
  bridge records;
- its protocol (id, version, SHA-256 of the document) is one this agency's IG lead agreed
  (`<agency dir>/agreed_protocols.yaml`) and that allows identity to be revealed;
- the record's consent was not withdrawn (the agency's own register of applied withdrawals)
  where the protocol relies on consent (ig_bridge.reid_consent);
- the requesting user and the service as a whole are within their sliding-window rate limits.
Every refusal of a signed request is one line in the agency's own chained audit log; requests
nobody signed (bad signature, malformed, oversized) are refused before anything is written and
logged only as counters (at most one summary line a minute). Then ig_bridge.reidentify decrypts
the agency's own record ref, looks the identity up in the agency's extract, logs and answers.
Run it behind TLS in production.

POST /record-ref (same envelope, same hub key) answers a worker's own case reference with the
record ref the hub holds for it, for this agency's own workers only (ig_bridge.caseref): how
the practitioner workspace finds a child without names at the hub.

    python -m ig_bridge.reid_service --agency-dir var/run/agency/CSC --mapping \
        schemas/agencies/csc.yaml --extract FILE --hub-public-key hub_request_key.pub --port 8701
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as dt
import json
import re
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ig_bridge.keys import KeyStore, RecordRefError
from ig_bridge.manifest import canonical_json
from ig_bridge.reader import iter_chunks
from ig_bridge.reid_consent import WithdrawalRegister, consent_refusal
from ig_bridge.reid_controls import (
    AgreedProtocols,
    SlidingWindowLimiter,
    UnauthenticatedCounter,
    append_audit,
    read_audit,
)
from ig_bridge.reidentify import Lookup, ReidentificationRequest, frame_lookup, reidentify
from schemas.mapping import SUBJECT, load_mapping

MAX_BODY = 16 * 1024  # one subject per request: a real request is under 2 KB
REQUEST_VERSION = 2
MAX_LIFETIME = dt.timedelta(minutes=5)
CLOCK_SKEW = dt.timedelta(seconds=30)
DEFAULT_PER_USER = 10  # answered requests per user per window
DEFAULT_TOTAL = 60  # answered requests in all per window
DEFAULT_WINDOW = 3600.0  # seconds
_REQUIRED = (
    "request_version",
    "request_id",
    "protocol_id",
    "protocol_version",
    "protocol_sha256",
    "requesting_user",
    "reason",
    "agency",
    "issued_at",
    "expires_at",
)
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_USER = re.compile(r"^[A-Za-z0-9_.@-]{1,128}$")
_PROTOCOL = re.compile(r"^[a-z][a-z0-9_]{2,63}$")
# Fields of a signed request that may enter a refusal line, each only if it has its form.
_LOGGED = {
    "request_id": _HEX32,
    "hub_request_id": _HEX32,
    "hub_decision_id": _HEX32,
    "hub_audit_hash": _HEX64,
    "protocol_id": _PROTOCOL,
    "protocol_sha256": _HEX64,
    "requesting_user": _USER,
}


class Refused(Exception):  # noqa: N818 - an outcome, not a fault
    def __init__(self, status: HTTPStatus, code: str) -> None:
        super().__init__(code)
        self.status, self.code = status, code


def load_hub_public_key(path: str | Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key")
    return key


def restricted_rows(values: pd.Series) -> pd.Series:
    """True where an extract's restricted flag is set (the bridge's yes/no spellings)."""
    from ig_bridge.rowcheck import _BOOL

    text = ["" if pd.isna(v) else str(v).strip().lower() for v in values]
    # Anything present that is not a clear "no" counts as restricted: err on the safe side.
    return pd.Series(
        [t != "" and _BOOL.get(t) is not False for t in text], index=values.index, dtype=bool
    )


def extract_lookup(extract: str | Path, mapping_path: str | Path) -> Lookup:
    """Lookup over the agency's own extract, subject identifier columns renamed to canonical."""
    mapping = load_mapping(mapping_path)
    cols = mapping.identifier_columns(SUBJECT)
    # A record the agency's own data marks restricted (its flag mapped to the `restricted`
    # payload field) is never re-identified here, whatever the hub asks.
    flag = mapping.payload_columns().get("restricted")
    frames = [
        c.frame[list(cols.values())].rename(columns={v: k for k, v in cols.items()})[
            ~restricted_rows(c.frame[flag]) if flag else slice(None)
        ]
        for c in iter_chunks(extract, mapping.source)
    ]
    frame = pd.concat(frames, ignore_index=True)
    frame["record_id"] = frame["record_id"].astype(str).str.strip()
    if "address" not in frame and "address_line_1" in frame:
        frame["address"] = frame["address_line_1"]
    return frame_lookup(frame)


def _aware(value: Any) -> dt.datetime | None:
    try:
        t = dt.datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return t if t is not None and t.tzinfo is not None else None


class ReidService:
    """Verifies, checks and answers; `handle` is what the HTTP handler calls (and tests).

    `agreed`: the agency's agreed protocols (default: `agreed_protocols.yaml` beside the audit
    log, i.e. in the agency folder). `limits`: the sliding-window rate limits."""

    def __init__(
        self,
        agency: str,
        key_store: KeyStore,
        hub_public_key: Ed25519PublicKey,
        lookup: Lookup,
        audit_log: str | Path,
        *,
        agreed: AgreedProtocols | None = None,
        limits: SlidingWindowLimiter | None = None,
        clock_skew: dt.timedelta = CLOCK_SKEW,
        max_lifetime: dt.timedelta = MAX_LIFETIME,
        summary_interval: float = 60.0,
    ) -> None:
        self.agency = agency
        self.keys = key_store
        self.hub_key = hub_public_key
        self.lookup = lookup
        self.audit_log = Path(audit_log)
        self.agreed = agreed or AgreedProtocols.load(self.audit_log.parent, agency)
        self.limits = limits or SlidingWindowLimiter(
            DEFAULT_PER_USER, DEFAULT_TOTAL, DEFAULT_WINDOW, clock=time.time
        )
        self.skew, self.max_lifetime = clock_skew, max_lifetime
        self.unauthenticated = UnauthenticatedCounter(self.audit_log, agency, summary_interval)
        self.withdrawals = WithdrawalRegister(self.audit_log.parent)
        self._lock = threading.Lock()  # one signed request at a time: replay set and limits
        self._seen: dict[str, float] = {}  # request_id -> when it can be forgotten (epoch s)
        self._load_state()

    def _load_state(self) -> None:
        """Once, at start: recent request ids (replay) and recent answers (rate limits). Each
        request then costs O(1): nothing re-reads the log."""
        now = time.time()
        keep = (self.max_lifetime + 2 * self.skew).total_seconds()
        for e in read_audit(self.audit_log):
            at = _aware(e.get("at"))
            t = at.timestamp() if at else 0.0
            rid = e.get("request_id")
            if isinstance(rid, str) and t > now - keep:
                self._seen[rid] = t + keep
            user = e.get("requesting_user")
            if (
                e.get("outcome") == "answered"
                and isinstance(user, str)
                and e.get("hub_audit_seq")
                and t > now - self.limits.window
            ):
                self.limits.record(user, t)

    def _remember(self, request_id: str, expires: float) -> None:
        now = time.time()
        if len(self._seen) > 10_000:  # forget ids whose requests have expired anyway
            self._seen = {k: v for k, v in self._seen.items() if v > now}
        self._seen[request_id] = expires

    def _refuse(self, code: str, status: HTTPStatus, req: Mapping[str, Any]) -> Refused:
        """A refusal of a signed request: one line in the agency's audit log."""
        entry: dict[str, Any] = {
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "agency": self.agency,
            "outcome": "refused",
            "detail": code,
        }
        for k, pattern in _LOGGED.items():
            v = req.get(k)
            if isinstance(v, str) and pattern.fullmatch(v):
                entry[k] = v
        for k in ("hub_audit_seq", "protocol_version"):
            if type(req.get(k)) is int:
                entry[k] = req[k]
        if isinstance(req.get("record_refs"), list):
            entry["n_record_refs"] = len(req["record_refs"])
        append_audit(self.audit_log, entry)
        return Refused(status, code)

    def _authenticate(self, body: bytes) -> dict[str, Any]:
        """The signed request, or Refused counted (not logged): nobody vouches for it."""
        try:
            envelope = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise self._unsigned("malformed_json", HTTPStatus.BAD_REQUEST) from None
        if not isinstance(envelope, dict) or not isinstance(envelope.get("request"), dict):
            raise self._unsigned("malformed_envelope", HTTPStatus.BAD_REQUEST)
        req: dict[str, Any] = envelope["request"]
        try:
            sig = base64.b64decode(str(envelope.get("signature", "")), validate=True)
            self.hub_key.verify(sig, canonical_json(req))
        except (InvalidSignature, binascii.Error, ValueError, TypeError):
            raise self._unsigned("bad_signature", HTTPStatus.FORBIDDEN) from None
        return req

    def _unsigned(self, code: str, status: HTTPStatus) -> Refused:
        self.unauthenticated.add(code)
        return Refused(status, code)

    def _check(self, req: dict[str, Any]) -> None:
        """Every check of a signed request; raises Refused (audited)."""
        bad = HTTPStatus.BAD_REQUEST
        no = HTTPStatus.FORBIDDEN
        if (
            any(k not in req for k in _REQUIRED)
            or req["request_version"] != REQUEST_VERSION
            or not isinstance(req["request_id"], str)
            or not _HEX32.fullmatch(req["request_id"])
            or not isinstance(req["requesting_user"], str)
            or not _USER.fullmatch(req["requesting_user"])
            or not isinstance(req["reason"], str)
            or not 0 < len(req["reason"]) <= 500
        ):
            raise self._refuse("malformed_request", bad, req)
        if req["agency"] != self.agency:
            raise self._refuse("wrong_agency", no, req)
        if req["request_id"] in self._seen:
            raise self._refuse("replayed_request", no, req)
        now = dt.datetime.now(dt.UTC)
        self._remember(req["request_id"], (now + self.max_lifetime + 2 * self.skew).timestamp())
        if "record_refs" in req or not isinstance(req.get("record_ref"), str):
            raise self._refuse("one_subject_per_request", no, req)
        issued, expires = _aware(req["issued_at"]), _aware(req["expires_at"])
        if issued is None or expires is None:
            raise self._refuse("malformed_request", bad, req)
        if not dt.timedelta(0) < expires - issued <= self.max_lifetime:
            raise self._refuse("lifetime_too_long", no, req)
        if issued > now + self.skew:
            raise self._refuse("not_yet_valid", no, req)
        if now > expires + self.skew:
            raise self._refuse("expired", no, req)
        if (
            not isinstance(req.get("hub_decision_id"), str)
            or not _HEX32.fullmatch(req["hub_decision_id"])
            or type(req.get("hub_audit_seq")) is not int
            or req["hub_audit_seq"] < 1
            or not isinstance(req.get("hub_audit_hash"), str)
            or not _HEX64.fullmatch(req["hub_audit_hash"])
            or not isinstance(req.get("hub_request_id"), str)
            or not _HEX32.fullmatch(req["hub_request_id"])
        ):
            raise self._refuse("no_hub_decision", no, req)
        code = self.agreed.check(
            req["protocol_id"], req["protocol_version"], req["protocol_sha256"]
        )
        if code is not None:
            raise self._refuse(code, no, req)
        code = consent_refusal(
            self.withdrawals,
            self.agreed.protocols[req["protocol_id"]],
            req,
            self.keys.ref_keys(),
            now,
        )
        if code is not None:  # the agency's own register of applied withdrawals says no
            raise self._refuse(code, no, req)
        code = self.limits.admit(req["requesting_user"])
        if code is not None:
            raise self._refuse(code, HTTPStatus.TOO_MANY_REQUESTS, req)

    def handle(self, body: bytes) -> tuple[HTTPStatus, dict[str, Any]]:
        try:
            req = self._authenticate(body)  # outside the lock: nothing shared is touched
            with self._lock:
                self._check(req)
                request = ReidentificationRequest(
                    protocol_id=req["protocol_id"],
                    requesting_user=req["requesting_user"],
                    reason=req["reason"],
                    request_id=req["request_id"],
                    hub_decision_id=req["hub_decision_id"],
                    hub_request_id=req["hub_request_id"],
                    hub_audit_seq=req["hub_audit_seq"],
                    hub_audit_hash=req["hub_audit_hash"],
                    protocol_version=req["protocol_version"],
                    protocol_sha256=req["protocol_sha256"],
                )
                try:
                    found = reidentify(
                        [req["record_ref"]],
                        request,
                        ref_keys=self.keys.ref_keys(),
                        lookup=self.lookup,
                        audit_log=self.audit_log,
                    )
                except RecordRefError:  # already audited by reidentify
                    raise Refused(HTTPStatus.UNPROCESSABLE_ENTITY, "record_ref_not_ours") from None
        except Refused as r:
            return r.status, {"error": r.code}
        return HTTPStatus.OK, {
            "request_id": req["request_id"],
            "agency": self.agency,
            "identities": [asdict(i) for i in found],
        }

    def close(self) -> None:
        """Write the pending unauthenticated-refusal counters (call at shutdown)."""
        self.unauthenticated.flush()


def make_server(
    service: ReidService, host: str = "127.0.0.1", port: int = 0
) -> ThreadingHTTPServer:
    """An HTTP server for the service (port 0: any free port; see server.server_address)."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "joinedup-reid/2"
        timeout = 10  # a client that stops sending mid-request does not hold a thread
        disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # the chained audit log is the record; access lines would only add noise

        def _send(self, status: HTTPStatus, obj: Mapping[str, Any]) -> None:
            data = json.dumps(obj, default=str).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def _unsigned(self, status: HTTPStatus, code: str) -> None:
            service.unauthenticated.add(code)  # counted, never a line per request
            self.close_connection = True
            self._send(status, {"error": code})

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            if self.path not in ("/reidentify", "/record-ref"):
                self._unsigned(HTTPStatus.NOT_FOUND, "not_found")
                return
            raw = self.headers.get("Content-Length")
            if raw is None or self.headers.get("Transfer-Encoding"):
                self._unsigned(HTTPStatus.LENGTH_REQUIRED, "length_required")
                return
            try:
                length = int(raw)
            except ValueError:
                length = -1
            if length > MAX_BODY:  # refused before a byte of the body is read
                self._unsigned(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body_too_large")
                return
            if length <= 0:
                self._unsigned(HTTPStatus.BAD_REQUEST, "bad_content_length")
                return
            body = self.rfile.read(length)
            if self.path == "/record-ref":  # a worker's own case reference (ig_bridge.caseref)
                from ig_bridge.caseref import handle_record_ref

                status, obj = handle_record_ref(service, body)
            else:
                status, obj = service.handle(body)
            self._send(status, obj)

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/health":
                self._send(HTTPStatus.OK, {"agency": service.agency, "status": "ok"})
            else:
                self._send(HTTPStatus.NOT_FOUND, {"error": "not_found"})

    return ThreadingHTTPServer((host, port), Handler)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ig_bridge.reid_service",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--agency-dir", type=Path, required=True)
    p.add_argument("--mapping", type=Path, required=True)
    p.add_argument("--extract", type=Path, required=True)
    p.add_argument("--hub-public-key", type=Path, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8701)
    p.add_argument(
        "--per-user-limit",
        type=int,
        default=DEFAULT_PER_USER,
        help="answered requests per requesting user per window",
    )
    p.add_argument(
        "--total-limit", type=int, default=DEFAULT_TOTAL, help="answered requests in all per window"
    )
    p.add_argument("--window-seconds", type=float, default=DEFAULT_WINDOW)
    a = p.parse_args(argv)
    code = load_mapping(a.mapping).code
    limits = SlidingWindowLimiter(
        a.per_user_limit, a.total_limit, a.window_seconds, clock=time.time
    )
    service = ReidService(
        code,
        KeyStore(a.agency_dir / "keys", code),
        load_hub_public_key(a.hub_public_key),
        extract_lookup(a.extract, a.mapping),
        a.agency_dir / "audit.log",
        agreed=AgreedProtocols.load(a.agency_dir, code),
        limits=limits,
    )
    server = make_server(service, a.host, a.port)
    print(f"{code} re-identification service on http://{a.host}:{server.server_address[1]}")
    if not service.agreed.protocols:
        print(
            "no agreed protocols: every request will be refused (joinedup-bridge protocols agree)",
            file=sys.stderr,
        )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        service.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
