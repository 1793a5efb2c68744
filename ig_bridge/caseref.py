"""Case reference -> record ref, at the agency: how a worker finds a child without names at the hub.

A worker types their own agency's case reference (the local record id of its case system) into
the workspace. Only this agency holds the record-ref key, so the hub asks the agency's
re-identification service (POST /record-ref, same envelope and hub signature as /reidentify):
the bridge checks the request itself and answers with the record ref the hub already holds for
that case, which the hub maps to its person id. The case reference is never written at the hub.

Checks (each refusal of a signed request is a line in the agency's own audit log):
- signed by the hub (ig_bridge.reid_service's key check), request_version 1, one case
  reference of at most 64 characters, a fresh request id, lifetime at most 5 minutes;
- the worker belongs to this agency (`requesting_agency`): an agency answers only for its
  own staff, so a hub insider cannot turn another agency's case numbers into people;
- the case reference exists in the agency's extract (otherwise `found: false`, no ref).
"""

from __future__ import annotations

import datetime as dt
import re
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from ig_bridge.keys import encrypt_record_ref
from ig_bridge.reid_controls import append_audit

if TYPE_CHECKING:
    from ig_bridge.reid_service import ReidService

REQUEST_VERSION = 1
MAX_CASE_REF = 64
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_USER = re.compile(r"^[A-Za-z0-9_.@-]{1,128}$")
_REQUIRED = (
    "request_version",
    "request_id",
    "agency",
    "requesting_user",
    "requesting_agency",
    "case_reference",
    "issued_at",
    "expires_at",
)


def _aware(value: Any) -> dt.datetime | None:
    try:
        t = dt.datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return t if t is not None and t.tzinfo is not None else None


def handle_record_ref(service: ReidService, body: bytes) -> tuple[HTTPStatus, dict[str, Any]]:
    """Answer one signed case-reference lookup: (status, JSON body)."""
    from ig_bridge.reid_service import Refused

    try:
        req = service._authenticate(body)  # unsigned: counted, never logged
    except Refused as r:
        return r.status, {"error": r.code}
    base: dict[str, Any] = {
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "agency": service.agency,
        "kind": "record_ref_lookup",
    }
    rid = req.get("request_id")
    if isinstance(rid, str) and _HEX32.fullmatch(rid):
        base["request_id"] = rid
    user = req.get("requesting_user")
    if isinstance(user, str) and _USER.fullmatch(user):
        base["requesting_user"] = user

    def refuse(code: str, status: HTTPStatus) -> tuple[HTTPStatus, dict[str, Any]]:
        append_audit(service.audit_log, {**base, "outcome": "refused", "detail": code})
        return status, {"error": code}

    ref = req.get("case_reference")
    if (
        any(k not in req for k in _REQUIRED)
        or req["request_version"] != REQUEST_VERSION
        or "request_id" not in base
        or "requesting_user" not in base
        or not isinstance(ref, str)
        or not 0 < len(ref.strip()) <= MAX_CASE_REF
    ):
        return refuse("malformed_request", HTTPStatus.BAD_REQUEST)
    if req["agency"] != service.agency:
        return refuse("wrong_agency", HTTPStatus.FORBIDDEN)
    if req["requesting_agency"] != service.agency:
        return refuse("not_this_agencys_worker", HTTPStatus.FORBIDDEN)
    now = dt.datetime.now(dt.UTC)
    issued, expires = _aware(req["issued_at"]), _aware(req["expires_at"])
    if issued is None or expires is None:
        return refuse("malformed_request", HTTPStatus.BAD_REQUEST)
    with service._lock:  # the replay set is shared with /reidentify
        if req["request_id"] in service._seen:
            return refuse("replayed_request", HTTPStatus.FORBIDDEN)
        service._remember(
            req["request_id"], (now + service.max_lifetime + 2 * service.skew).timestamp()
        )
    if not dt.timedelta(0) < expires - issued <= service.max_lifetime:
        return refuse("lifetime_too_long", HTTPStatus.FORBIDDEN)
    if issued > now + service.skew:
        return refuse("not_yet_valid", HTTPStatus.FORBIDDEN)
    if now > expires + service.skew:
        return refuse("expired", HTTPStatus.FORBIDDEN)
    local_id = ref.strip()
    found = bool(service.lookup([local_id]))
    record_ref = encrypt_record_ref(service.keys.ref_key(), local_id) if found else None
    append_audit(
        service.audit_log,
        {**base, "outcome": "record_ref_answered", "found": found, "record_ref": record_ref},
    )
    return HTTPStatus.OK, {
        "request_id": req["request_id"],
        "agency": service.agency,
        "found": found,
        "record_ref": record_ref,
    }
