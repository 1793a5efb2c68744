"""Find a child by the worker's own case reference, hub side.

The hub cannot turn a case reference into anything: the worker's agency holds the record-ref
key. So the workspace sends one hub-signed request to that agency's service (POST /record-ref,
ig_bridge.caseref), which answers with the record ref, and maps the ref to the person id in the
published warehouse. The case reference passes through memory only: it is never logged, stored
or put in an audit entry or error message at the hub (the audit entry says who looked, at which
agency, and what came of it).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import duckdb
import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from governance.audit import AuditLog
from governance.decisions import User
from governance.identity import BridgeUnavailable, sign_request

REQUEST_VERSION = 1
TTL = dt.timedelta(minutes=2)


@dataclass(frozen=True)
class Found:
    outcome: str  # found | not_found_at_agency | not_linked
    person_id: str | None
    audit_seq: int
    record_ref: str | None = None  # the agency's own ref (its restrictions screen marks it)


class CaseRefFinder:
    def __init__(
        self,
        signing_key: Ed25519PrivateKey,
        bridges: Mapping[str, str],
        audit: AuditLog,
        http: httpx.Client | None = None,
    ) -> None:
        self.key = signing_key
        self.bridges = {a: u.rstrip("/") for a, u in bridges.items()}
        self.audit = audit
        self.http = http or httpx.Client(timeout=10.0, trust_env=False)

    def _record_ref(self, user: User, case_reference: str) -> tuple[str | None, str]:
        """(record_ref, request id) from the worker's own agency."""
        agency = user.agency or ""
        if agency not in self.bridges:
            raise BridgeUnavailable(f"no service configured for agency {agency or '(none)'}")
        now = dt.datetime.now(dt.UTC)
        req = {
            "request_version": REQUEST_VERSION,
            "request_id": uuid.uuid4().hex,
            "agency": agency,
            "requesting_user": user.user_id,
            "requesting_agency": agency,
            "case_reference": case_reference,
            "issued_at": now.isoformat(),
            "expires_at": (now + TTL).isoformat(),
        }
        envelope = {"request": req, "signature": sign_request(req, self.key)}
        try:
            resp = self.http.post(f"{self.bridges[agency]}/record-ref", json=envelope)
        except httpx.HTTPError as exc:
            raise BridgeUnavailable(
                f"{agency} service unreachable ({type(exc).__name__})"
            ) from None
        if resp.status_code != 200:
            raise BridgeUnavailable(
                f"{agency} service refused the lookup (HTTP {resp.status_code})"
            )
        body = resp.json()
        if body.get("request_id") != req["request_id"]:
            raise BridgeUnavailable(f"{agency} answered a different request")
        return (body.get("record_ref") if body.get("found") else None), req["request_id"]

    def find(self, user: User, case_reference: str, warehouse: Path) -> Found:
        ref, request_id = self._record_ref(user, case_reference.strip())
        person = None
        if ref is not None:
            con = duckdb.connect(str(warehouse), read_only=True)
            try:
                row = con.execute(
                    "SELECT person_id FROM record_person WHERE agency = ? AND record_ref = ?",
                    [user.agency, ref],
                ).fetchone()
            finally:
                con.close()
            person = row[0] if row else None
        outcome = (
            "not_found_at_agency" if ref is None else "not_linked" if person is None else "found"
        )
        rec = self.audit.append(
            "case_lookup",
            {
                "type": "case_lookup",
                "at": dt.datetime.now(dt.UTC).isoformat(),
                "user_id": user.user_id,
                "role": user.role,
                "agency": user.agency,
                "bridge_request_id": request_id,
                "outcome": outcome,
                "person_id": person,
            },
        )
        return Found(outcome, person, rec.seq, ref)
