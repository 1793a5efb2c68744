"""The demo week's decision log: the interactions the access rules never see (#20).

Through the governance API, as practitioners would record them: children's social care offers
its case notes to the police and the police refuse the offer; the social worker records that
they did not ask health visiting, and a strategy meeting where case notes were shared with the
police outside the system; then challenges the police's refusal to the Caldicott guardian,
who overturns it. The IG report's appropriateness section then has something to count. The
justifications are the kind a worker writes: reasons, never names, dates or numbers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

# Who the decision log needs beyond the demo's practitioners.
SHARING_USERS: dict[str, tuple[str, str | None]] = {
    "caldicott.1": ("caldicott_guardian", None),
}


def record_decision_log(
    call: Callable[..., Any],
    tokens: dict[str, str],
    store: Any,
    person: str,
    monday: dt.datetime,
    day: int = 4,
) -> dict[str, int]:
    """Record the week's offer, refused offer, request not made, off-system sharing and a
    challenge with its outcome; returns the audit seq of each (what the report counts)."""
    for user, (role, agency) in SHARING_USERS.items():
        tokens.setdefault(user, store.issue(user, role, agency))
    seqs: dict[str, int] = {}
    offer = call(
        "offer case notes to police",
        day,
        6,
        "sw.csc.1",
        "POST",
        "/sharing/offers",
        {
            "person_id": person,
            "to_agency": "POL",
            "categories": ["case_notes"],
            "basis": "CA1989_s47",
            "justification": "police should know the plan before the joint visit",
            "protocol_id": "s47_child_protection_enquiry",
        },
    )
    seqs["offer"] = offer.get("audit_seq", 0)
    refused = call(
        "police refuse the offer",
        day,
        7,
        "pc.pol.9",
        "POST",
        f"/sharing/offers/{offer.get('record_id', '0' * 32)}/response",
        {
            "accept": False,
            "reason": "already_known",
            "justification": "the public protection unit already holds the referral detail",
        },
    )
    seqs["offer_refused"] = refused.get("audit_seq", 0)
    seqs["not_requested"] = call(
        "did not ask health visiting",
        day,
        8,
        "sw.csc.1",
        "POST",
        "/sharing/not-requested",
        {
            "person_id": person,
            "agency": "HV",
            "categories": ["health_notes"],
            "reason": "not_necessary",
            "justification": "the enquiry concerns school age concerns, not infant health",
        },
    ).get("audit_seq", 0)
    seqs["off_system"] = call(
        "strategy meeting shared case notes",
        day,
        9,
        "sw.csc.1",
        "POST",
        "/sharing/off-system",
        {
            "person_id": person,
            "channel": "strategy_meeting",
            "occurred_on": (monday + dt.timedelta(days=day)).date().isoformat(),
            "from_agency": "CSC",
            "to_agency": "POL",
            "asked": True,
            "categories": ["case_notes"],
            "basis": "CA1989_s47",
            "justification": "strategy discussion under section forty seven, police present",
        },
    ).get("audit_seq", 0)
    challenge = call(
        "challenge the refusal",
        day,
        10,
        "sw.csc.1",
        "POST",
        "/sharing/challenges",
        {
            "target_seq": max(seqs["offer_refused"], 1),
            "to": "caldicott_guardian",
            "grounds": "the police picture is needed before the joint visit goes ahead",
        },
    )
    seqs["challenge"] = challenge.get("audit_seq", 0)
    seqs["challenge_decision"] = call(
        "Caldicott guardian overturns it",
        day,
        11,
        "caldicott.1",
        "POST",
        f"/sharing/challenges/{challenge.get('record_id', '0' * 32)}/decision",
        {
            "outcome": "overturned",
            "reasons": "the offer was proportionate and the police should have accepted it",
        },
    ).get("audit_seq", 0)
    return seqs
