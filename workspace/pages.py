"""What each workspace page shows, assembled from a governed view (governance.service).

Nothing here decides access: every page starts from one ViewService call (one decision, one
audit entry); this module only arranges what that call returned: per member the lawful basis
recorded in the decision's own audit entry, per item its source agency, as-of date and match
band, withheld items as "something from <agency> is withheld, because ..." (never which field
or value), case summary sections from schemas/case_summaries.yaml, and a chronology newest first.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import duckdb
import yaml

from governance.access import AccessControl
from governance.audit import AuditLog
from governance.decisions import User
from governance.policy import Protocol
from governance.service import INVOLVEMENT_PROTOCOL, ViewResult

SUMMARIES = Path(__file__).resolve().parent.parent / "schemas" / "case_summaries.yaml"

REASON_TEXT = {
    "no_consent": "no consent recorded for this purpose",
    "consent_refused": "consent was refused",
    "consent_withdrawn": "consent was withdrawn",
    "consent_out_of_scope": "the consent recorded does not cover this agency or information",
    "consent_expired": "the consent is past its review date",
    "agency_not_in_protocol": "this agency does not share under this protocol",
    "field_not_in_minimum_dataset": "not in the protocol's minimum dataset",
    "no_legitimate_relationship": "you have no current allocation to this child or family",
    "role_not_in_protocol": "your role may not use this protocol",
    "role_not_row_level": "your role may not see records about individuals",
    "unknown_protocol": "unknown protocol",
    "protocol_not_in_force": "the protocol is not in force today",
    "identity_not_allowed_by_protocol": "this protocol does not allow identity to be revealed",
    "justification_contains_identifier": "the justification looks like it contains a name, "
    "date, address or number: describe the reason only",
    "justification_missing_or_too_short": "give a justification of at least 20 characters",
    "break_glass_not_permitted_by_protocol": "this protocol does not allow break-glass",
    "break_glass_category_not_permitted": "this protocol does not allow that category",
    "break_glass_duration_exceeds_protocol": "longer than the protocol allows",
    "role_may_not_break_glass": "your role may not use break-glass",
    "break_glass_expired": "the break-glass period has ended",
    "break_glass_grant_not_valid_for_request": "that break-glass grant is not valid here",
    "not_assigned_to_protocol": "this protocol is not assigned to you, your team or agency",
    "protocol_not_signed_off": "not every data controller has signed off this protocol version",
    "break_glass_needs_manager_approval": "this protocol needs a manager's approval: your "
    "request is waiting under Approvals",
    "break_glass_self_approved": "you cannot approve your own break-glass",
    "break_glass_approver_not_manager_of_requester": "the approver does not manage your team",
    "restricted_record": "this record is restricted",
}
BASIS_TEXT = {"consent": "consent given"}
BAND_TEXT = {
    "auto_match": "high (automatic match)",
    "clerical": "medium (awaiting review)",
    "non_match": "low (single agency record)",
}
# Which payload field says what an event was, in order of preference.
WHAT_FIELDS = (
    "incident_type",
    "assessment_type",
    "visit_type",
    "plan_type",
    "referral_reason",
    "record_type",
    "tenancy_type",
)
DATE_FIELDS = ("event_date", "plan_start", "tenancy_start")


def reason_text(code: str) -> str:
    return REASON_TEXT.get(code, code.replace("_", " "))


def basis_text(basis: str) -> str:
    return BASIS_TEXT.get(basis, f"legal gateway {basis}")


def band_text(band: str | None) -> str:
    return BAND_TEXT.get(band or "", band or "unknown")


def label(name: str) -> str:
    return name.replace("_", " ").capitalize()


def assigned_protocols(
    protocols: dict[str, Protocol], user: User, on: dt.date, access: AccessControl | None = None
) -> list[Protocol]:
    """The protocols a worker may choose from: their role is named, it is in force and (with
    access control) assigned to them (the involvement index has its own page)."""
    return [
        p
        for _, p in sorted(protocols.items())
        if user.role in p.roles
        and p.in_force(on)
        and p.id != INVOLVEMENT_PROTOCOL
        and (access is None or access.assignments.may_act(user, p.id))
    ]


@dataclass
class Member:
    person_id: str
    bases: list[str] = field(default_factory=list)  # lawful bases of what is shown
    withheld: dict[str, list[str]] = field(default_factory=dict)  # agency -> reason codes
    n_withheld: dict[str, int] = field(default_factory=dict)  # agency -> items withheld
    records: list[dict[str, Any]] = field(default_factory=list)
    allowed_agencies: set[str] = field(default_factory=set)  # agencies sharing anything


def _decision_bodies(audit: AuditLog, seq: int) -> list[dict[str, Any]]:
    rec = audit.get(seq)
    body = rec.data() if rec is not None else {}
    return list(body.get("decisions") or [body])


def members(view: ViewResult, audit: AuditLog) -> list[Member]:
    """One Member per person in the view, with what the recorded decision said about them."""
    out = {p: Member(p) for p in view.members}
    for d in _decision_bodies(audit, view.audit_seq):
        pid = (d.get("subject") or {}).get("person_id")
        m = out.get(pid)
        if m is None:
            continue
        bases, withheld, counts = set(), defaultdict(set), defaultdict(int)
        for f in d.get("fields") or []:
            if f.get("allowed"):
                bases.add(f.get("legal_basis") or "unknown")
                m.allowed_agencies.add(f["agency"])
            else:
                withheld[f["agency"]].update(f.get("reasons") or [])
                counts[f["agency"]] += 1
        m.bases = sorted(bases)
        m.withheld = {a: sorted(r) for a, r in sorted(withheld.items())}
        m.n_withheld = dict(counts)
    for r in view.records:
        if r.person_id in out:
            out[r.person_id].records.append(
                {
                    "agency": r.agency,
                    "fields": r.fields,
                    "as_of": r.meta.get("as_of"),
                    "band": band_text(r.meta.get("band")),
                }
            )
    return list(out.values())


@cache
def summary_sections() -> dict[str, list[dict[str, Any]]]:
    doc = yaml.safe_load(SUMMARIES.read_text("utf-8")) or {}
    return doc.get("protocols") or {}


def case_summary(view: ViewResult, audit: AuditLog) -> list[dict[str, Any]]:
    """Sections per the protocol's YAML: per section, per member, the latest allowed value of
    each listed field with its agency and as-of date."""
    sections = summary_sections().get(view.protocol_id, [])
    ms = members(view, audit)
    out = []
    for s in sections:
        rows = []
        for m in ms:
            for f in s["fields"]:
                vals = [
                    (r["as_of"] or "", r["agency"], r["fields"][f])
                    for r in m.records
                    if f in r["fields"] and r["fields"][f] not in (None, "")
                ]
                if vals:
                    as_of, agency, value = max(vals, key=lambda v: v[0])
                    rows.append(
                        {
                            "person_id": m.person_id,
                            "field": label(f),
                            "value": value,
                            "agency": agency,
                            "as_of": as_of,
                        }
                    )
        withheld = sorted({a for m in ms for a in m.withheld})
        out.append({"title": s["title"], "rows": rows, "withheld_agencies": withheld})
    return out


def chronology(view: ViewResult) -> list[dict[str, Any]]:
    """Dated events from every record the protocol showed, newest first."""
    events = []
    for r in view.records:
        date = next((r.fields[f] for f in DATE_FIELDS if r.fields.get(f)), None)
        if not date:
            continue
        what = next((str(r.fields[f]) for f in WHAT_FIELDS if r.fields.get(f)), "record")
        events.append(
            {
                "date": str(date)[:10],
                "agency": r.agency,
                "person_id": r.person_id,
                "what": label(what),
                "band": band_text(r.meta.get("band")),
            }
        )
    return sorted(events, key=lambda e: (e["date"], e["agency"]), reverse=True)


def wider_family(warehouse: Path, members: list[Member]) -> list[dict[str, Any]]:
    """Relatives of members who live in another household (a parent living elsewhere), from
    the linkage's family edges, only where the agency whose record carries the relationship
    shares something about that member under this decision: the network never says more than
    the protocol already lets the worker see. Each relative's own page is decided afresh."""
    ids = [m.person_id for m in members]
    agencies = {m.person_id: m.allowed_agencies for m in members}
    if not ids:
        return []
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        rows = con.execute(
            """SELECT DISTINCT subject_person_id, related_person_id,
                relationship, agency FROM family_edge
            WHERE list_contains(?, subject_person_id) AND related_person_id IS NOT NULL
              AND NOT list_contains(?, related_person_id)
            ORDER BY 2, 1""",
            [ids, ids],
        ).fetchall()
    except duckdb.CatalogException:  # a warehouse from before family networks
        return []
    finally:
        con.close()
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for subject, related, relationship, agency in rows:
        if agency in agencies.get(subject, set()):
            out.setdefault(
                (related, subject),
                {
                    "person_id": related,
                    "member": subject,
                    "relationship": label(relationship or "relative"),
                },
            )
    return list(out.values())
