"""Identity requests, hub side: ask the originating agency's bridge, never keep the answer.

The hub decides (same rules as a view of that agency's data under the protocol, and only under
a protocol whose `identity.allowed` is true), records one audit entry *before* anything is
disclosed (fail closed), then forwards one request per record ref, each signed with the hub's
Ed25519 key and naming the protocol (id, version, document SHA-256) and the hub's decision
(decision id, audit seq and entry hash), to the agency's re-identification service
(ig_bridge.reid_service). The bridge checks each request itself (signature, one subject, short
lifetime, a protocol the agency agreed, rate limits), logs it in its own audit log and answers.
The identity goes back in the HTTP response to the user's session only: it is never written,
logged, cached or put in an exception message at the hub.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from governance.audit import AuditLog, canonical_json, key_id
from governance.decisions import MIN_JUSTIFICATION, User, screen_justification
from governance.relationships import Subject
from governance.restricted import apply_restrictions
from governance.service import Forbidden, NotFound, ViewError, ViewService

REQUEST_VERSION = 2
REQUEST_TTL = dt.timedelta(minutes=2)


class BadIdentityRequest(ViewError):
    """The request itself is unacceptable (e.g. the reason looks like an identifier)."""


class BridgeUnavailable(ViewError):
    """The agency's bridge could not be reached or refused the request; nothing disclosed."""


@dataclass(frozen=True)
class IdentityResult:
    request_id: str
    agency: str
    audit_seq: int
    identities: list[dict[str, Any]]  # [{found, display}] in record order; never stored


def sign_request(request: Mapping[str, Any], key: Ed25519PrivateKey) -> str:
    """Base64 Ed25519 signature over the canonical JSON (sorted keys, no whitespace, UTF-8)."""
    return base64.b64encode(key.sign(canonical_json(request).encode("utf-8"))).decode()


class IdentityService:
    def __init__(
        self,
        views: ViewService,
        signing_key: Ed25519PrivateKey,
        bridges: Mapping[str, str],
        http: httpx.Client | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.views = views
        self.key = signing_key
        self.key_id = key_id(signing_key.public_key())
        self.bridges = {a: u.rstrip("/") for a, u in bridges.items()}
        # trust_env=False: a proxy from the environment must never see identities in transit.
        self.http = http or httpx.Client(timeout=timeout, trust_env=False)

    def _record_refs(self, person_id: str, agency: str) -> list[str]:
        with self.views._con() as con:
            rows = con.execute(
                "SELECT record_ref FROM record_person WHERE person_id = ? "
                "AND agency = ? ORDER BY record_ref",
                [person_id, agency],
            ).fetchall()
        return [r[0] for r in rows]

    def request(
        self, user: User, protocol_id: str, person_id: str, agency: str, reason: str
    ) -> IdentityResult:
        reason = reason.strip()
        if len(reason) < MIN_JUSTIFICATION or not screen_justification(reason):
            # Refused before anything is decided or logged: the text never reaches a log.
            raise BadIdentityRequest(
                f"reason: give at least {MIN_JUSTIFICATION} characters of purpose, with no "
                "names, dates, postcodes, phone numbers or other identifiers"
            )
        gov = self.views.gov
        at = self.views.clock()
        exists, household_id = self.views.person_household(person_id)
        requested = self.views._requested(protocol_id, [agency])
        d = gov.evaluate(user, protocol_id, Subject(person_id, household_id), requested, at)
        d = apply_restrictions(self.views, [d])[0]  # no identity of a restricted record
        proto = gov.protocols.get(protocol_id)
        # Identity only where the protocol says so explicitly (the agency's bridge checks too).
        protocol_problems = (
            ["unknown_protocol"]
            if proto is None
            else []
            if proto.identity.allowed
            else ["identity_not_allowed_by_protocol"]
        )
        refs = self._record_refs(person_id, agency) if exists else []
        allowed = bool(d.allowed_fields()) and not protocol_problems
        request_id = uuid.uuid4().hex
        if not allowed:
            outcome = "refused"
        elif not refs:
            outcome = "not_found"
        elif agency not in self.bridges:
            outcome = "no_bridge_configured"
        else:
            outcome = "forwarded"
        reasons = sorted(
            {r for f in d.fields if not f.allowed for r in f.reasons} | set(protocol_problems)
        ) or ["agency_not_in_protocol"]
        # One signed request per record ref: the bridge answers one subject per request.
        bridge_ids = [uuid.uuid4().hex for _ in refs] if outcome == "forwarded" else []
        body = {
            **d.audit_body(None),
            "type": "identity_request",
            "request_id": request_id,
            "target_agency": agency,
            "n_record_refs": len(refs),
            "outcome": outcome,
            "bridge_request_ids": bridge_ids,
            "reason": reason,
        }
        if outcome == "refused":
            body["refusal_reasons"] = reasons
        rec = gov.audit.append("decision", body)  # before any disclosure: fail closed
        seq = rec.seq
        if outcome == "refused":
            raise Forbidden(d, reasons, seq)
        if outcome == "not_found":
            raise NotFound(f"record of person at {agency}", person_id, seq)
        if outcome == "no_bridge_configured":
            raise BridgeUnavailable(f"no re-identification service configured for {agency}")
        assert proto is not None  # allowed implies a known protocol
        identities = []
        for ref, bridge_id in zip(refs, bridge_ids, strict=True):
            now = dt.datetime.now(dt.UTC)
            signed = {
                "request_version": REQUEST_VERSION,
                "request_id": bridge_id,
                "hub_request_id": request_id,
                "hub_decision_id": d.decision_id,
                "hub_audit_seq": seq,
                "hub_audit_hash": rec.entry_hash,
                "protocol_id": protocol_id,
                "protocol_version": proto.version,
                "protocol_sha256": proto.document_sha256,
                "requesting_user": user.user_id,
                "reason": reason,
                "agency": agency,
                "record_ref": ref,
                "issued_at": now.isoformat(),
                "expires_at": (now + REQUEST_TTL).isoformat(),
                "hub_key_id": self.key_id,
                # the decision overrode consent (break-glass): the bridge checks its own
                # withdrawals otherwise (ig_bridge.reid_consent)
                "consent_override": bool(d.break_glass_used),
            }
            identities.extend(self._ask_bridge(agency, signed))
        return IdentityResult(request_id, agency, seq, identities)

    def _ask_bridge(self, agency: str, signed: dict[str, Any]) -> list[dict[str, Any]]:
        envelope = {"request": signed, "signature": sign_request(signed, self.key)}
        try:
            resp = self.http.post(f"{self.bridges[agency]}/reidentify", json=envelope)
        except httpx.HTTPError as exc:
            raise BridgeUnavailable(
                f"{agency} re-identification service unreachable ({type(exc).__name__})"
            ) from None
        if resp.status_code != 200:
            code = _error_code(resp)
            raise BridgeUnavailable(
                f"{agency} re-identification service refused the request "
                f"(HTTP {resp.status_code}: {code})"
            )
        answer = resp.json()
        if answer.get("request_id") != signed["request_id"]:
            raise BridgeUnavailable(f"{agency} answered a different request")
        return [
            {"found": bool(i.get("found")), "display": i.get("display")}
            for i in answer.get("identities", [])
        ]


def unmatched_answers(
    agency_log: Iterable[Mapping[str, Any]], audit: AuditLog
) -> list[dict[str, Any]]:
    """IG lead's reconciliation: identities an agency's bridge gave out with no matching hub
    decision. Each `answered` line of the agency's log (ig_bridge.reid_controls.read_audit)
    for a hub request must name a hub audit entry (seq and hash) that is a forwarded identity
    request by the same user, under the same protocol, that listed this bridge request id. A
    request signed with a leaked hub key, within the bridge's limits, shows up here. Returns
    one row per mismatch (bridge request id, user, hub seq, what is wrong); ids and codes
    only."""
    out = []
    for e in agency_log:
        if e.get("outcome") != "answered" or "hub_request_id" not in e:
            continue  # a refusal, or the agency's own use (its CLI, a subject access request)
        seq, problem = e.get("hub_audit_seq"), None
        rec = audit.get(seq) if type(seq) is int else None
        body = rec.data() if rec is not None else {}
        if rec is None:
            problem = "no_such_hub_entry"
        elif rec.entry_hash != e.get("hub_audit_hash"):
            problem = "hub_entry_hash_differs"
        elif body.get("type") != "identity_request" or body.get("outcome") != "forwarded":
            problem = "hub_entry_not_a_forwarded_identity_request"
        elif e.get("request_id") not in (body.get("bridge_request_ids") or []):
            problem = "request_not_in_hub_entry"
        elif (
            body.get("user_id"),
            body.get("protocol_id"),
            body.get("decision_id"),
            body.get("request_id"),
        ) != (
            e.get("requesting_user"),
            e.get("protocol_id"),
            e.get("hub_decision_id"),
            e.get("hub_request_id"),
        ):
            problem = "context_differs_from_hub_entry"
        if problem:
            out.append(
                {
                    "request_id": e.get("request_id"),
                    "requesting_user": e.get("requesting_user"),
                    "hub_audit_seq": seq,
                    "problem": problem,
                }
            )
    return out


def _error_code(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("error", "unknown"))[:80]
    except ValueError:
        return "unreadable answer"
