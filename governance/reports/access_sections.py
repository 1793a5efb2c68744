"""Access sections of the linkage audit report (governance.reports.linkage_report): decisions
by protocol and role, overrides, grants near the end of a relationship, identity requests and
consent recorded."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

NEAR_END_DAYS = 7  # a grant this close to the end of the user's relationship is worth a look


def _decision_outcome(body: Mapping[str, Any]) -> str:
    fields = body.get("fields") or []
    if body.get("type") == "withheld_request":
        return "withheld_by_practitioner"
    allowed = sum(bool(f.get("allowed")) for f in fields)
    if not fields or allowed == 0:
        return "denied"
    return "granted" if allowed == len(fields) else "partly_granted"


def _one_request(body: Mapping[str, Any]) -> Mapping[str, Any]:
    """A household view is one request (one audit entry) with a decision per member: count it
    once, over all members' fields, with its break-glass if any member's was recorded."""
    if body.get("type") != "household_decision":
        return body
    subs = list(body.get("decisions") or [])
    bgs = [d["break_glass"] for d in subs if d.get("break_glass")]
    bg = None if not bgs else {**bgs[0], "used": any(b.get("used") for b in bgs)}
    return {
        **body,
        "type": "decision",
        "fields": [f for d in subs for f in d.get("fields") or []],
        "break_glass": bg,
        "subject": {"person_id": None, "household_id": body.get("household_id")},
    }


def _access(
    entries: Iterable[Mapping[str, Any]],
    protocols: Iterable[str],
    relationships: pd.DataFrame | None,
    identity_logs: Mapping[str, Path],
    consent: pd.DataFrame | None,
    t: int,
) -> dict[str, Any]:
    by_prot_role_outcome: Counter[tuple[str, str, str]] = Counter()
    break_glass: list[dict[str, Any]] = []
    override_by_user: Counter[str] = Counter()
    grants_by_user: Counter[str] = Counter()
    denied_with_consent: Counter[tuple[str, str]] = Counter()
    used_protocols: set[str] = set()
    near_end: list[dict[str, Any]] = []
    ends: dict[tuple[str, str], list[dt.date]] = defaultdict(list)
    if relationships is not None and not relationships.empty:
        for r in relationships.itertuples(index=False):
            if isinstance(r.end, str | dt.date) and str(r.end).strip():
                ends[(r.user_id, r.subject_id)].append(pd.Timestamp(r.end).date())
    n = 0
    for body in map(_one_request, entries):
        if body.get("type") not in ("decision", "withheld_request"):
            continue
        n += 1
        outcome = _decision_outcome(body)
        proto, role, user = body.get("protocol_id"), body.get("role"), body.get("user_id")
        used_protocols.add(proto)
        by_prot_role_outcome[(proto, role, outcome)] += 1
        bg = body.get("break_glass")
        if bg:
            break_glass.append(
                {
                    "at": body.get("at"),
                    "protocol_id": proto,
                    "user_id": user,
                    "role": role,
                    "used": bg.get("used"),
                    "problems": ", ".join(bg.get("problems") or []) or "-",
                    "justification": bg.get("justification") or "",
                }
            )
        if outcome in ("granted", "partly_granted"):
            grants_by_user[user] += 1
            if bg and bg.get("used"):
                override_by_user[user] += 1
            at = pd.Timestamp(body.get("at")).date()
            subj = body.get("subject") or {}
            for sid in (subj.get("person_id"), subj.get("household_id")):
                for end in ends.get((user, sid), []):
                    if 0 <= (end - at).days <= NEAR_END_DAYS:
                        near_end.append(
                            {
                                "at": body.get("at"),
                                "user_id": user,
                                "protocol_id": proto,
                                "days_before_end": (end - at).days,
                            }
                        )
        for f in body.get("fields") or []:
            if not f.get("allowed") and f.get("consent") == "given":
                denied_with_consent[(proto, ",".join(f.get("reasons") or []))] += 1
    over_open = [
        {
            "user_id": u,
            "grants": grants_by_user[u],
            "via_override": k,
            "share": k / grants_by_user[u],
        }
        for u, k in override_by_user.most_common()
    ]
    identity: Counter[tuple[str, str, str]] = Counter()
    for agency, path in sorted(identity_logs.items()):
        if not Path(path).exists():
            continue
        for line in Path(path).read_text("utf-8").splitlines():
            if line.strip():
                e = json.loads(line)
                if e.get("outcome") == "unauthenticated_refusals":  # one line, many requests
                    identity[(agency, "-", "unauthenticated_refusals")] += sum(
                        int(n) for n in (e.get("counts") or {}).values()
                    )
                    continue
                identity[(agency, str(e.get("protocol_id")), str(e.get("outcome")))] += 1
    cov = []
    if consent is not None:
        for r in consent.itertuples(index=False):
            cov.append(
                {
                    "purpose": r.purpose,
                    "agency": r.agency,
                    "state": r.state,
                    "persons": "<" + str(t) if pd.isna(r.n) else f"{int(r.n):,}",
                }
            )
    return {
        "n_decisions": n,
        "by_protocol_role_outcome": [
            {"protocol_id": p, "role": r, "outcome": o, "decisions": c}
            for (p, r, o), c in sorted(by_prot_role_outcome.items(), key=lambda x: str(x[0]))
        ],
        "break_glass": break_glass,
        "identity_requests": [
            {"agency": a, "protocol_id": p, "outcome": o, "requests": c}
            for (a, p, o), c in sorted(identity.items())
        ],
        "consent_coverage": cov,
        "consent_recorded": _consent_recorded(cov),
        "over_open": {"override_grants": over_open, "near_relationship_end": near_end},
        "over_cautious": {
            "denied_with_consent": [
                {"protocol_id": p, "reasons": r, "fields": c}
                for (p, r), c in sorted(denied_with_consent.items())
            ],
            "protocols_never_used": sorted(set(protocols) - used_protocols),
        },
    }


def _consent_recorded(cov: list[dict[str, Any]]) -> dict[str, Any]:
    """The consent table without its zeros: one row per purpose and agency where any consent
    decision is recorded (given, refused or withdrawn; a suppressed count is not a zero), and
    the agencies that hold no consent decision for any purpose."""
    cells: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for c in cov:
        cells[(c["purpose"], c["agency"])][c["state"]] = c["persons"]
    decided = ("given", "refused", "withdrawn")
    rows = [
        {"purpose": p, "agency": a, **{k: v.get(k, "0") for k in (*decided, "none")}}
        for (p, a), v in sorted(cells.items())
        if any(v.get(k, "0") != "0" for k in decided)
    ]
    with_any = {r["agency"] for r in rows}
    return {"rows": rows, "no_decisions": sorted({a for _, a in cells} - with_any)}
