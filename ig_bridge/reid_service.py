"""The agency's re-identification service: answers signed identity requests from the hub.

Runs on the agency's own infrastructure next to its extract and keys, on the standard library's
`http.server` (no web framework in the bridge install). POST /reidentify takes
{"request": {...}, "signature": base64}; the signature is Ed25519 by the hub over the canonical
JSON of "request" and is checked with the hub's public key (PEM) the agency was given at
onboarding. A request is refused (and the refusal logged in the agency's own audit log) when the
signature is bad, it is for another agency, it has expired, or its request_id was seen before.
Otherwise ig_bridge.reidentify decrypts the agency's own record refs, looks the identities up in
the agency's extract, logs the request and answers. Run it behind TLS in production.

    python -m ig_bridge.reid_service --agency-dir var/run/agency/CSC --mapping \
        schemas/agencies/csc.yaml --extract FILE --hub-public-key hub_request_key.pub --port 8701
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as dt
import json
import threading
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
from ig_bridge.reidentify import (
    Lookup,
    ReidentificationRequest,
    _append_audit,
    frame_lookup,
    reidentify,
)
from schemas.mapping import SUBJECT, load_mapping

MAX_BODY = 1 << 20
MAX_REFS = 1000
REQUEST_VERSION = 1
_REQUIRED = ("request_version", "request_id", "protocol_id", "requesting_user", "reason",
             "agency", "record_refs", "issued_at", "expires_at")


class Refused(Exception):  # noqa: N818 - an outcome, not a fault
    def __init__(self, status: HTTPStatus, code: str) -> None:
        super().__init__(code)
        self.status, self.code = status, code


def load_hub_public_key(path: str | Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key")
    return key


def extract_lookup(extract: str | Path, mapping_path: str | Path) -> Lookup:
    """Lookup over the agency's own extract, subject identifier columns renamed to canonical."""
    mapping = load_mapping(mapping_path)
    cols = mapping.identifier_columns(SUBJECT)
    frames = [c.frame[list(cols.values())].rename(columns={v: k for k, v in cols.items()})
              for c in iter_chunks(extract, mapping.source)]
    frame = pd.concat(frames, ignore_index=True)
    frame["record_id"] = frame["record_id"].astype(str).str.strip()
    if "address" not in frame and "address_line_1" in frame:
        frame["address"] = frame["address_line_1"]
    return frame_lookup(frame)


class ReidService:
    """Verifies and answers; `handle` is what the HTTP handler calls (and what tests call)."""

    def __init__(self, agency: str, key_store: KeyStore, hub_public_key: Ed25519PublicKey,
                 lookup: Lookup, audit_log: str | Path,
                 clock_skew: dt.timedelta = dt.timedelta(minutes=2)) -> None:
        self.agency = agency
        self.keys = key_store
        self.hub_key = hub_public_key
        self.lookup = lookup
        self.audit_log = Path(audit_log)
        self.skew = clock_skew
        self._lock = threading.Lock()  # one request at a time: audit chain and replay set
        self._seen = self._seen_request_ids()

    def _seen_request_ids(self) -> set[str]:
        seen: set[str] = set()
        if self.audit_log.exists():
            for line in self.audit_log.read_text("utf-8").splitlines():
                if line.strip():
                    rid = json.loads(line).get("request_id")
                    if rid:
                        seen.add(str(rid))
        return seen

    def _refuse(self, code: str, status: HTTPStatus, request: Mapping[str, Any] | None) -> Refused:
        req = request or {}
        entry = {"at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                 "agency": self.agency, "outcome": "refused", "detail": code}
        for k in ("request_id", "hub_decision_id", "protocol_id", "requesting_user"):
            if isinstance(req.get(k), str):
                entry[k] = req[k][:128]
        _append_audit(self.audit_log, entry)
        return Refused(status, code)

    def _verify(self, envelope: Any) -> dict[str, Any]:
        if not isinstance(envelope, dict) or not isinstance(envelope.get("request"), dict):
            raise self._refuse("malformed_envelope", HTTPStatus.BAD_REQUEST, None)
        req: dict[str, Any] = envelope["request"]
        try:
            sig = base64.b64decode(str(envelope.get("signature", "")), validate=True)
            self.hub_key.verify(sig, canonical_json(req))
        except (InvalidSignature, binascii.Error, ValueError, TypeError):
            raise self._refuse("bad_signature", HTTPStatus.FORBIDDEN, req) from None
        missing = [k for k in _REQUIRED if k not in req]
        if missing or req["request_version"] != REQUEST_VERSION:
            raise self._refuse("malformed_request", HTTPStatus.BAD_REQUEST, req)
        if req["agency"] != self.agency:
            raise self._refuse("wrong_agency", HTTPStatus.FORBIDDEN, req)
        refs = req["record_refs"]
        if (not isinstance(refs, list) or not refs or len(refs) > MAX_REFS
                or not all(isinstance(r, str) for r in refs)):
            raise self._refuse("malformed_request", HTTPStatus.BAD_REQUEST, req)
        try:
            issued = dt.datetime.fromisoformat(req["issued_at"])
            expires = dt.datetime.fromisoformat(req["expires_at"])
        except (TypeError, ValueError):
            raise self._refuse("malformed_request", HTTPStatus.BAD_REQUEST, req) from None
        now = dt.datetime.now(dt.UTC)
        if issued - self.skew > now or now > expires + self.skew or expires <= issued:
            raise self._refuse("expired_or_not_yet_valid", HTTPStatus.FORBIDDEN, req)
        if req["request_id"] in self._seen:
            raise self._refuse("replayed_request", HTTPStatus.FORBIDDEN, req)
        return req

    def handle(self, body: bytes) -> tuple[HTTPStatus, dict[str, Any]]:
        with self._lock:
            try:
                try:
                    envelope = json.loads(body)
                except (ValueError, UnicodeDecodeError):
                    raise self._refuse("malformed_json", HTTPStatus.BAD_REQUEST, None) from None
                req = self._verify(envelope)
                self._seen.add(req["request_id"])
                request = ReidentificationRequest(
                    protocol_id=req["protocol_id"], requesting_user=req["requesting_user"],
                    reason=req["reason"], request_id=req["request_id"],
                    hub_decision_id=req.get("hub_decision_id"))
                try:
                    found = reidentify(req["record_refs"], request,
                                       ref_keys=self.keys.ref_keys(), lookup=self.lookup,
                                       audit_log=self.audit_log)
                except RecordRefError:  # already audited by reidentify
                    raise Refused(HTTPStatus.UNPROCESSABLE_ENTITY, "record_ref_not_ours") from None
            except Refused as r:
                return r.status, {"error": r.code}
        return HTTPStatus.OK, {"request_id": req["request_id"], "agency": self.agency,
                               "identities": [asdict(i) for i in found]}


def make_server(service: ReidService, host: str = "127.0.0.1", port: int = 0
                ) -> ThreadingHTTPServer:
    """An HTTP server for the service (port 0: any free port; see server.server_address)."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "joinedup-reid/1"

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

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            if self.path != "/reidentify":
                self._send(HTTPStatus.NOT_FOUND, {"error": "not_found"})
                return
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                length = -1
            if not 0 < length <= MAX_BODY:
                self._send(HTTPStatus.BAD_REQUEST, {"error": "bad_content_length"})
                return
            status, obj = service.handle(self.rfile.read(length))
            self._send(status, obj)

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/health":
                self._send(HTTPStatus.OK, {"agency": service.agency, "status": "ok"})
            else:
                self._send(HTTPStatus.NOT_FOUND, {"error": "not_found"})

    return ThreadingHTTPServer((host, port), Handler)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ig_bridge.reid_service", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agency-dir", type=Path, required=True)
    p.add_argument("--mapping", type=Path, required=True)
    p.add_argument("--extract", type=Path, required=True)
    p.add_argument("--hub-public-key", type=Path, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8701)
    a = p.parse_args(argv)
    code = load_mapping(a.mapping).code
    service = ReidService(code, KeyStore(a.agency_dir / "keys", code),
                          load_hub_public_key(a.hub_public_key),
                          extract_lookup(a.extract, a.mapping), a.agency_dir / "audit.log")
    server = make_server(service, a.host, a.port)
    print(f"{code} re-identification service on http://{a.host}:{server.server_address[1]}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
