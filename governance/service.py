"""Scoped views over the hub warehouse: person, household and involvement index.

Every view is one governed request: the service works out which (agency, field) pairs the view
would show, asks the decision function, records exactly one audit entry, and only then reads the
payload, projecting it onto the allowed fields. Views are pseudonymous (person_id, household_id);
identity only ever comes from the originating agency (governance.identity).

Existence is not an oracle: a user without a legitimate relationship gets 403 whether or not
the id exists; only a user the decision lets through learns that an id is unknown (404).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
from sqlalchemy import Connection

from governance.approvals import ApprovalStore, pending_request
from governance.breakglass import Grant, GrantStore
from governance.consent import ConsentRegistry
from governance.decision_records import BreakGlass, Decision
from governance.decisions import (
    Governance,
    User,
    justification_for_audit,
    record_side_effects,
    refused_break_glass,
)
from governance.relationships import Subject
from governance.restricted import apply_restrictions, hide_restricted

INVOLVEMENT_PROTOCOL = "involvement_index"
INVOLVEMENT_FIELDS = ("record_type", "event_date", "lead_practitioner_contact")


class ViewError(Exception):
    """Base of the errors the API maps to HTTP statuses."""


class Forbidden(ViewError):
    """The decision allowed nothing. The reasons are already in the audit log."""

    def __init__(self, decision: Decision | None, reasons: list[str], audit_seq: int | None):
        super().__init__("access refused: " + ", ".join(reasons))
        self.decision = decision
        self.reasons = reasons
        self.audit_seq = audit_seq


class NotFound(ViewError):
    def __init__(self, kind: str, ident: str, audit_seq: int | None) -> None:
        super().__init__(f"unknown {kind} {ident}")
        self.kind, self.ident, self.audit_seq = kind, ident, audit_seq


@dataclass(frozen=True)
class BreakGlassAsk:
    """A practitioner's break-glass: a new override (category, justification, hours from now)
    or an earlier grant to reopen (grant_id)."""

    category: str | None = None
    justification: str | None = None
    hours: int | None = None
    grant_id: str | None = None


@dataclass(frozen=True)
class RecordView:
    agency: str
    person_id: str
    fields: dict[str, Any]
    # Provenance, not payload: the match band that joined the record to the person and the
    # date its batch was extracted (true as of). The workspace shows both per item.
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Withheld:
    agency: str
    field: str
    reasons: list[str]


@dataclass(frozen=True)
class ViewResult:
    protocol_id: str
    subject_kind: str  # person | household
    subject_id: str
    audit_seq: int
    decision_ids: list[str]
    members: list[str]
    records: list[RecordView]
    withheld: list[Withheld]
    extra: dict[str, Any] = field(default_factory=dict)


def _to_json(v: Any) -> Any:
    if v is None or (isinstance(v, float) and v != v):
        return None
    if isinstance(v, dt.datetime | dt.date | pd.Timestamp):
        return v.isoformat()[:10] if not isinstance(v, dt.datetime) else v.isoformat()
    if hasattr(v, "item"):  # numpy scalar
        return v.item()
    return v


def load_consent(warehouse: Path) -> ConsentRegistry:
    """An in-memory consent registry from the warehouse's consent payload fields (tests and
    one-off use; the hub keeps its registry in the governance store: SqlConsentRegistry,
    refreshed each run by governance.hub_stage.refresh_consent)."""
    from governance.hub_stage import consent_events

    events = consent_events(warehouse)
    if events.empty:
        return ConsentRegistry()
    return ConsentRegistry.from_frame(events, source=f"{warehouse.name}: payload consent fields")


class ViewService:
    """Assembles governed views. `clock` returns the (timezone-aware) time of a decision."""

    def __init__(
        self,
        warehouse: Path | str | Callable[[], Path],
        governance: Governance,
        clock: Callable[[], dt.datetime] | None = None,
        grants: GrantStore | None = None,
    ) -> None:
        # a path, or where to read now (linkage.publish.reader: the latest published copy)
        self._warehouse = warehouse if callable(warehouse) else Path(warehouse)
        if not self.warehouse.exists():
            raise FileNotFoundError(f"{self.warehouse}: no hub warehouse")
        self.gov = governance
        self.grants = grants or GrantStore(governance.audit.engine)
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))

    @property
    def warehouse(self) -> Path:
        w = self._warehouse
        return w() if callable(w) else w

    # -- warehouse access (read-only, one connection per request) --------------------------

    @contextmanager
    def _con(self) -> Iterator[duckdb.DuckDBPyConnection]:
        con = duckdb.connect(str(self.warehouse), read_only=True)
        try:
            yield con
        finally:
            con.close()

    def person_household(self, person_id: str) -> tuple[bool, str | None]:
        with self._con() as con:
            found = con.execute(
                "SELECT 1 FROM person WHERE person_id = ? AND status = 'active'", [person_id]
            ).fetchone()
            hh = con.execute(
                """SELECT m.household_id FROM household_member m
                JOIN household h USING (household_id)
                WHERE m.person_id = ? AND h.status = 'active'
                ORDER BY m.n_agencies_agreeing DESC, m.household_id LIMIT 1""",
                [person_id],
            ).fetchone()
        return found is not None, (hh[0] if hh else None)

    def household_members(self, household_id: str) -> tuple[bool, list[str]]:
        with self._con() as con:
            found = con.execute(
                "SELECT 1 FROM household WHERE household_id = ? AND status = 'active'",
                [household_id],
            ).fetchone()
            rows = con.execute(
                "SELECT DISTINCT person_id FROM household_member "
                "WHERE household_id = ? ORDER BY person_id",
                [household_id],
            ).fetchall()
        return found is not None, [r[0] for r in rows]

    def agencies_holding(self, person_ids: list[str]) -> dict[str, list[str]]:
        """person_id -> agencies with a current linked record about them."""
        if not person_ids:
            return {}
        with self._con() as con:
            rows = con.execute(
                """SELECT DISTINCT person_id, agency FROM record_person
                WHERE list_contains(?, person_id) ORDER BY person_id, agency""",
                [person_ids],
            ).fetchall()
        out: dict[str, list[str]] = {p: [] for p in person_ids}
        for pid, agency in rows:
            out[pid].append(agency)
        return out

    def payload_rows(self, allowed: dict[str, dict[str, list[str]]]) -> list[RecordView]:
        """allowed: person_id -> agency -> fields. Latest payload row per record (by batch
        sequence); only the allowed columns are ever selected."""
        out: list[RecordView] = []
        with self._con() as con:
            for pid, by_agency in allowed.items():
                for agency, fields in by_agency.items():
                    if not fields:
                        continue
                    cols = ", ".join(f'p."{f}"' for f in fields)  # names from the policy
                    rows = con.execute(
                        f"""
                        SELECT {cols}, rp.band, b.created_at FROM payload p
                        JOIN record_person rp ON rp.record_ref = p.record_ref
                             AND rp.agency = p.agency
                        JOIN batch b ON b.batch_id = p.batch_id
                        WHERE rp.person_id = ? AND p.agency = ?
                        QUALIFY row_number() OVER (PARTITION BY p.record_ref
                                                   ORDER BY b.sequence DESC) = 1
                        ORDER BY p.record_ref""",
                        [pid, agency],
                    ).fetchall()
                    for *r, band, as_of in rows:
                        out.append(
                            RecordView(
                                agency,
                                pid,
                                {f: _to_json(v) for f, v in zip(fields, r, strict=True)},
                                {"band": band, "as_of": (as_of or "")[:10]},
                            )
                        )
        return out

    # -- deciding ---------------------------------------------------------------------------

    def _requested(
        self, protocol_id: str, agencies: Iterable[str], only: Iterable[str] | None = None
    ) -> list[tuple[str, str]]:
        """The (agency, field) pairs a view would show: the protocol's minimum dataset for the
        agencies that hold records (all of the protocol's agencies for an unknown subject).
        An unknown protocol requests nothing; the decision records the refusal."""
        proto = self.gov.protocols.get(protocol_id)
        if proto is None:
            return []
        wanted = set(only) if only is not None else None
        return [
            (a, f)
            for a in agencies
            if a in proto.agencies
            for f in proto.agencies[a]
            if wanted is None or f in wanted
        ]

    def decide_for(
        self,
        user: User,
        protocol_id: str,
        subjects: list[tuple[Subject, list[tuple[str, str]]]],
        at: dt.datetime,
        context: dict[str, Any],
        *,
        break_glass: BreakGlassAsk | None = None,
        subject_kind: str = "person",
        subject_id: str | None = None,
    ) -> tuple[list[Decision], int]:
        """One audit entry for the whole request: a single subject is recorded as a decision
        entry, several (a household) together in one household entry.

        With `break_glass`, a new override (category, justification, hours starting now) or
        an earlier grant (`grant_id`) is checked for each subject; if it is not valid for the
        request nothing at all is disclosed, and the IG lead is alerted either way. A new
        valid override is stored as a grant in the audit entry's own transaction."""
        bg, grant_id, new_grant, grant_problem = self._break_glass(
            user, protocol_id, at, break_glass, subject_kind, subject_id
        )
        decisions = [self.gov.evaluate(user, protocol_id, s, req, at, bg) for s, req in subjects]
        decisions = apply_restrictions(self, decisions)
        approval = pending_request(
            self.gov, user, protocol_id, break_glass, decisions, at, subject_kind, subject_id
        )
        if grant_problem is not None:
            decisions = [
                replace(
                    d,
                    break_glass_requested=True,
                    alert_raised=True,
                    break_glass_problems=(grant_problem,),
                )
                for d in decisions
            ]
        if break_glass is not None and any(d.break_glass_problems for d in decisions):
            problems = tuple(dict.fromkeys(p for d in decisions for p in d.break_glass_problems))
            decisions = [
                refused_break_glass(replace(d, break_glass_problems=problems)) for d in decisions
            ]
            new_grant = None
        justification = justification_for_audit(bg)
        if len(decisions) == 1:
            body = decisions[0].audit_body(justification)
        else:
            body = {
                "type": "household_decision",
                "at": at.isoformat(),
                "user_id": user.user_id,
                "role": user.role,
                "protocol_id": protocol_id,
                **context,
                "decisions": [d.audit_body(justification) for d in decisions],
            }
        if break_glass is not None:
            ok = new_grant is not None or (
                grant_id is not None
                and grant_problem is None
                and not decisions[0].break_glass_problems
            )
            body["break_glass_grant"] = {
                "grant_id": grant_id if ok else None,
                "new": new_grant is not None,
            }
            if approval is not None:
                body["break_glass_approval_request"] = approval.request_id

        def also(conn: Connection, seq: int) -> None:
            record_side_effects(conn, seq, decisions, subject_id if len(decisions) > 1 else None)
            if new_grant is not None:
                GrantStore.insert(conn, replace(new_grant, audit_seq=seq))
            if approval is not None:
                ApprovalStore.insert(conn, replace(approval, audit_seq=seq))

        rec = self.gov.audit.append("decision", body, also=also)
        return [
            replace(d, audit_seq=rec.seq, audit_hash=rec.entry_hash) for d in decisions
        ], rec.seq

    def _break_glass(
        self,
        user: User,
        protocol_id: str,
        at: dt.datetime,
        ask: BreakGlassAsk | None,
        subject_kind: str,
        subject_id: str | None,
    ) -> tuple[BreakGlass | None, str | None, Grant | None, str | None]:
        """(override to evaluate, grant id, new grant to store, problem with a grant id)."""
        if ask is None:
            return None, None, None, None
        if ask.grant_id is not None:
            g = self.grants.get(ask.grant_id)
            if (
                g is None
                or g.user_id != user.user_id
                or g.protocol_id != protocol_id
                or g.subject_kind != subject_kind
                or g.subject_id != subject_id
            ):
                # Unknown, or someone else's grant: not an oracle on which grants exist.
                return None, ask.grant_id, None, "break_glass_grant_not_valid_for_request"
            return g.break_glass, g.grant_id, None, None
        bg = BreakGlass(ask.category or "", ask.justification or "", at, ask.hours or 0)
        gid = uuid.uuid4().hex
        proto = self.gov.protocols.get(protocol_id)
        max_hours = proto.break_glass.max_hours or 0 if proto is not None else 0
        expires = at + dt.timedelta(hours=max(0, min(bg.hours, max_hours)))
        grant = Grant(
            gid, 0, user.user_id, protocol_id, subject_kind, subject_id or "", bg, expires
        )
        return bg, gid, grant, None

    @staticmethod
    def _refusal_reasons(decisions: list[Decision]) -> list[str]:
        reasons = sorted(
            {r for d in decisions for f in d.fields if not f.allowed for r in f.reasons}
            | {p for d in decisions for p in d.break_glass_problems}
        )
        if not reasons and decisions and decisions[0].purpose is None:
            return ["unknown_protocol"]  # an unknown protocol requests no field to refuse
        return reasons or ["nothing_requested"]

    @staticmethod
    def _break_glass_extra(
        decisions: list[Decision], seq: int, ask: BreakGlassAsk | None, grants: GrantStore
    ) -> dict[str, Any]:
        if ask is None:
            return {}
        d = decisions[0]
        due = [x.notification_due_by for x in decisions if x.notification_due_by is not None]
        return {
            "break_glass": {
                "grant_id": ask.grant_id or grants.grant_for_seq(seq),
                "expires_at": d.break_glass_expires_at.isoformat()
                if d.break_glass_expires_at
                else None,
                "used": any(x.break_glass_used for x in decisions),
                "alert_raised": True,
                "notification_due_by": min(due).isoformat() if due else None,
            }
        }

    # -- views ------------------------------------------------------------------------------

    def person_view(
        self,
        user: User,
        protocol_id: str,
        person_id: str,
        fields: list[str] | None = None,
        *,
        break_glass: BreakGlassAsk | None = None,
    ) -> ViewResult:
        at = self.clock()
        exists, household_id = self.person_household(person_id)
        proto = self.gov.protocols.get(protocol_id)
        holders = self.agencies_holding([person_id]).get(person_id, []) if exists else []
        agencies = holders if exists else (list(proto.agencies) if proto else [])
        requested = self._requested(protocol_id, agencies, fields)
        subject = Subject(person_id, household_id)
        [d], seq = self.decide_for(
            user,
            protocol_id,
            [(subject, requested)],
            at,
            {},
            break_glass=break_glass,
            subject_kind="person",
            subject_id=person_id,
        )
        allowed = d.allowed_fields()
        if not allowed:
            raise Forbidden(d, self._refusal_reasons([d]), seq)
        if not exists:
            raise NotFound("person", person_id, seq)
        records = self.payload_rows({person_id: allowed})
        return ViewResult(
            protocol_id,
            "person",
            person_id,
            seq,
            [d.decision_id],
            [person_id],
            records,
            _withheld([d]),
            {
                "household_id": household_id,
                **self._break_glass_extra([d], seq, break_glass, self.grants),
            },
        )

    def household_view(
        self,
        user: User,
        protocol_id: str,
        household_id: str,
        fields: list[str] | None = None,
        *,
        break_glass: BreakGlassAsk | None = None,
    ) -> ViewResult:
        at = self.clock()
        exists, members = self.household_members(household_id)
        proto = self.gov.protocols.get(protocol_id)
        holders = self.agencies_holding(members)
        subjects: list[tuple[Subject, list[tuple[str, str]]]]
        if members:
            subjects = [
                (Subject(p, household_id), self._requested(protocol_id, holders.get(p, []), fields))
                for p in members
            ]
        else:  # unknown or empty household: decide on the household itself, for the record
            everyone = list(proto.agencies) if proto else []
            subjects = [
                (
                    Subject(household_id, household_id),
                    self._requested(protocol_id, everyone, fields),
                )
            ]
        decisions, seq = self.decide_for(
            user,
            protocol_id,
            subjects,
            at,
            {"household_id": household_id},
            break_glass=break_glass,
            subject_kind="household",
            subject_id=household_id,
        )
        hidden = hide_restricted(self, decisions)  # never place a restricted member here
        members = [m for m in members if m not in hidden]
        decisions = [d for d in decisions if d.subject.person_id not in hidden]
        allowed = {d.subject.person_id: d.allowed_fields() for d in decisions}
        if not any(allowed.values()):
            raise Forbidden(
                decisions[0] if decisions else None, self._refusal_reasons(decisions), seq
            )
        if not exists or not members:
            raise NotFound("household", household_id, seq)
        records = self.payload_rows(allowed)
        return ViewResult(
            protocol_id,
            "household",
            household_id,
            seq,
            [d.decision_id for d in decisions],
            members,
            records,
            _withheld(decisions),
            self._break_glass_extra(decisions, seq, break_glass, self.grants),
        )

    def involvement(self, user: User, household_id: str) -> ViewResult:
        """Who holds what: agencies involved with the household, since when, and the lead
        practitioner contact, under the involvement_index protocol only."""
        view = self.household_view(
            user, INVOLVEMENT_PROTOCOL, household_id, list(INVOLVEMENT_FIELDS)
        )
        by_agency: dict[str, dict[str, Any]] = {}
        for r in view.records:
            a = by_agency.setdefault(
                r.agency,
                {
                    "agency": r.agency,
                    "since": None,
                    "members": set(),
                    "record_types": set(),
                    "lead_practitioner_contacts": set(),
                },
            )
            a["members"].add(r.person_id)
            ev = r.fields.get("event_date")
            if ev is not None and (a["since"] is None or ev < a["since"]):
                a["since"] = ev
            if r.fields.get("record_type") is not None:
                a["record_types"].add(r.fields["record_type"])
            if r.fields.get("lead_practitioner_contact") is not None:
                a["lead_practitioner_contacts"].add(r.fields["lead_practitioner_contact"])
        index = [
            {
                **a,
                "members": sorted(a["members"]),
                "record_types": sorted(a["record_types"]),
                "lead_practitioner_contacts": sorted(a["lead_practitioner_contacts"]),
            }
            for _, a in sorted(by_agency.items())
        ]
        return replace(view, records=[], extra={"agencies": index})


def _withheld(decisions: list[Decision]) -> list[Withheld]:
    seen: dict[tuple[str, str], set[str]] = {}
    for d in decisions:
        for f in d.fields:
            if not f.allowed:
                seen.setdefault((f.agency, f.field), set()).update(f.reasons)
    return [Withheld(a, f, sorted(r)) for (a, f), r in sorted(seen.items())]
