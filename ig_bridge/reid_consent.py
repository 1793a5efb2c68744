"""The bridge honours consent withdrawals it has applied when the hub asks for an identity.

A withdrawal at the hub reaches the agency as a signed notice that its bridge applies to its own
withdrawal register (ig_bridge.consent_notice). The hub already refuses what a withdrawal
forbids, but the bridge does not take the hub's word for it: before answering an identity
request it looks the record up in its own register, under what the protocol the agency agreed
says of consent (recorded when it was agreed, ig_bridge.reid_controls.agree_protocol):
- `required` (consent is the only basis): a record whose consent for the protocol's purpose
  was withdrawn is refused, `consent_withdrawn`;
- `override_on_significant_harm` (MASH): refused likewise, unless the hub's request says the
  decision overrode consent (`consent_override`: a break-glass for significant harm, which the
  hub's audit entry records and the IG lead's reconciliation checks);
- `not_required_under_gateway` (s.47, a statutory duty): a withdrawal does not stop it.
A protocol agreed before the rule was recorded is not checked; agree it again.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ig_bridge.consent_notice import REGISTER, withdrawn
from ig_bridge.keys import RecordRefError, RefKey, decrypt_record_ref
from ig_bridge.reid_controls import AgreedProtocol

CHECKED_RULES = frozenset({"required", "override_on_significant_harm"})


class WithdrawalRegister:
    """The agency's applied withdrawals, re-read only when the register file changes."""

    def __init__(self, agency_dir: Path) -> None:
        self.agency_dir = Path(agency_dir)
        self._stamp: tuple[int, int] | None = None
        self._by_purpose: dict[str, dict[str, dt.datetime]] = {}

    def for_purpose(self, purpose: str) -> dict[str, dt.datetime]:
        try:
            st = os.stat(self.agency_dir / REGISTER)
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            return {}
        if stamp != self._stamp:
            self._stamp, self._by_purpose = stamp, {}
        if purpose not in self._by_purpose:
            self._by_purpose[purpose] = withdrawn(self.agency_dir, purpose)
        return self._by_purpose[purpose]


def consent_refusal(
    register: WithdrawalRegister,
    agreed: AgreedProtocol,
    req: dict[str, Any],
    ref_keys: RefKey | Sequence[RefKey],
    now: dt.datetime,
) -> str | None:
    """The refusal code if the agency's own register forbids this identity; else None."""
    if agreed.consent_rule not in CHECKED_RULES or not agreed.consent_purpose:
        return None
    if (
        agreed.consent_rule == "override_on_significant_harm"
        and req.get("consent_override") is True
    ):
        return None
    try:
        local_id = decrypt_record_ref(str(req["record_ref"]), ref_keys)
    except RecordRefError:
        return None  # not this agency's ref: reidentify refuses it and logs why
    when = register.for_purpose(agreed.consent_purpose).get(local_id)
    return "consent_withdrawn" if when is not None and when <= now else None
