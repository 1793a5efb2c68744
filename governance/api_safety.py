"""What the governance API's responses and logs must never give away (used by governance.api).

- `no_store`: every response carries `Cache-Control: no-store` and `Pragma: no-cache`, so no
  browser, proxy or cache keeps a page of personal data.
- `validation_problems`: a 422 names the field and the problem, never the value sent (a
  justification holding a name and an address must not come back in the body or a log).
- `uniform_refusal`: without a legitimate relationship every refusal looks the same whether or
  not the person exists or what their consent says: only reasons about who is asking.
- `AuthFailureLog`: failed authentication goes to the audit log (the fact, time, route and at
  most a 12-hex-digit prefix of the presented token's SHA-256, never the token), individually up
  to a per-minute budget and beyond it as one count, so a flood cannot grow the log unbounded.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from governance.audit import AuditLog

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# Reasons about the asker and the request, true of any subject (governance.decisions'
# recipient-side reasons, the protocol's identity rule, break-glass problems, which depend on
# the protocol, role, text, duration and grant only): the only ones a refusal without a
# relationship may show. Consent, dataset and agency reasons depend on the person: never shown.
ASKER_REASONS = frozenset(
    {
        "unknown_protocol",
        "protocol_not_in_force",
        "unknown_role",
        "role_not_in_protocol",
        "role_not_row_level",
        "no_legitimate_relationship",
        "identity_not_allowed_by_protocol",
        "role_may_not_break_glass",
        "justification_missing_or_too_short",
        "justification_contains_identifier",
        "break_glass_not_permitted_by_protocol",
        "break_glass_category_not_permitted",
        "break_glass_duration_exceeds_protocol",
        "break_glass_not_started",
        "break_glass_expired",
        "break_glass_grant_not_valid_for_request",
        "break_glass_invalid",
        # governance.access: about the asker and the protocol, never the subject
        "not_assigned_to_protocol",
        "protocol_not_signed_off",
        "break_glass_needs_manager_approval",
        "break_glass_self_approved",
        "break_glass_approver_not_manager_of_requester",
    }
)
NO_RELATIONSHIP = "no_legitimate_relationship"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


async def no_store(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    response = await call_next(request)
    response.headers.update(NO_STORE)
    return response


def validation_problems(errors: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """[{field, problem}] from pydantic errors, without the input: the location is kept only
    where it is a name or an index, and the problem is pydantic's error type plus its message
    when that message does not contain the value."""
    out = []
    for e in errors:
        loc = ".".join(
            str(p) if isinstance(p, int) or _NAME.fullmatch(str(p)) else "?"
            for p in e.get("loc", ())
        )
        problem = str(e.get("type", "invalid"))
        msg = str(e.get("msg", ""))
        value = e.get("input")
        echoed = isinstance(value, str | int | float) and len(str(value)) >= 2 and str(value) in msg
        if msg and not echoed and problem not in ("value_error", "assertion_error"):
            problem = f"{problem}: {msg}"
        out.append({"field": loc or "request", "problem": problem[:200]})
    return out


def validation_response(_: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse(
        status_code=422,
        content={"detail": "invalid request", "errors": validation_problems(exc.errors())},
    )


def uniform_refusal(reasons: Sequence[str], audit_seq: int | None) -> dict[str, Any]:
    """The 403 body. Without a legitimate relationship: the asker-side reasons only and no
    audit seq (it would count requests), identical for every subject, known or not."""
    if NO_RELATIONSHIP in reasons:
        return {
            "detail": "refused under the protocol",
            "reasons": sorted(r for r in set(reasons) if r in ASKER_REASONS),
        }
    return {
        "detail": "refused under the protocol",
        "reasons": list(reasons),
        "audit_seq": audit_seq,
    }


def token_prefix(token: str | None) -> str | None:
    return None if not token else hashlib.sha256(token.encode("utf-8")).hexdigest()[:12]


class AuthFailureLog:
    """Audit entries for failed authentication: up to `per_minute` a minute one entry each,
    then one `auth_failures_suppressed` entry with the count when the minute is over."""

    def __init__(
        self, audit: AuditLog, per_minute: int = 30, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.audit, self.per_minute, self.clock = audit, per_minute, clock
        self._lock = threading.Lock()
        self._window_start = clock()
        self._logged = 0
        self._suppressed = 0
        self._suppressed_since: str | None = None

    def record(self, reason: str, token: str | None, method: str, route: str) -> None:
        now = dt.datetime.now(dt.UTC).isoformat()
        with self._lock:
            pending = self._roll()
            write = self._logged < self.per_minute
            if write:
                self._logged += 1
            else:
                self._suppressed += 1
                self._suppressed_since = self._suppressed_since or now
        if pending:
            self.audit.append("auth_failure", pending)
        if write:
            self.audit.append(
                "auth_failure",
                {
                    "type": "auth_failure",
                    "at": now,
                    "reason": reason,
                    "method": method,
                    "route": route,
                    "token_sha256_prefix": token_prefix(token),
                },
            )

    def _roll(self) -> dict[str, Any] | None:
        """Start a new minute if this one is over; the count suppressed in it, if any."""
        if self.clock() - self._window_start < 60:
            return None
        pending = self._pending()
        self._window_start, self._logged = self.clock(), 0
        return pending

    def _pending(self) -> dict[str, Any] | None:
        if not self._suppressed:
            return None
        body = {
            "type": "auth_failures_suppressed",
            "count": self._suppressed,
            "since": self._suppressed_since,
            "until": dt.datetime.now(dt.UTC).isoformat(),
        }
        self._suppressed, self._suppressed_since = 0, None
        return body

    def flush(self) -> None:
        with self._lock:
            pending = self._pending()
        if pending:
            self.audit.append("auth_failure", pending)
