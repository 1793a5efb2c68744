"""Consent records: one per person x purpose x scope, recorded and withdrawn by practitioners.

A record says who consented (a parent, a carer, a Gillick-competent child, a young person of
16 or over, an adult) and on what capacity, how it was sought (or why it was not), an evidence
reference in the recording agency's own files, the date and the review date after which it no
longer counts. It lives in the governance store (SQLite by default, PostgreSQL in production)
beside the audit log; recording and withdrawing each write one audit entry in the same
transaction, so nothing changes unrecorded.

Records follow records, not person ids. A record is keyed to the record refs the person held
when it was made; a re-link that merges persons keeps it (the merged person holds the refs) and
one that splits them keeps it with the half that holds the recording agency's own record of the
person (its "anchor" refs). Where a split leaves the anchors with two persons the consent is
given to neither (it is ambiguous whom it was about) until it is recorded again. Refusals and
withdrawals are the other way round: they reach every person holding any of the refs.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    Index,
    Integer,
    String,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Mapped, mapped_column

from governance.audit import AuditLog
from governance.consent_scope import Scope
from governance.models import Base
from governance.policy import AGENCY_CODES
from ig_bridge.recognise import has_identifier

CONSENTERS = ("parent", "carer", "gillick_competent_child", "young_person_16_plus", "adult")
# Capacity each kind of consenter may consent on (Gillick / Fraser; Mental Capacity Act 2005
# from 16; parental responsibility for a child who is not competent).
CAPACITIES = {
    "parent": ("parental_responsibility",),
    "carer": ("parental_responsibility", "delegated_by_parent"),
    "gillick_competent_child": ("assessed_gillick_competent",),
    "young_person_16_plus": ("presumed_capacity", "assessed_capacity"),
    "adult": ("presumed_capacity", "assessed_capacity"),
}
METHODS = ("written_in_person", "verbal_in_person", "phone", "digital_form")
STATUSES = ("given", "refused", "not_sought")
NOT_SOUGHT_REASONS = (
    "risk_of_significant_harm",
    "would_prejudice_enquiry",
    "person_not_contactable",
    "statutory_gateway_applies",
)
WITHDRAWAL_WAYS = ("in_person", "phone", "in_writing", "digital_form")
EVIDENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9/_.:-]{0,63}$")
CODE = re.compile(r"^[a-z][a-z0-9_]{1,63}$")
ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


class ConsentRecordError(ValueError):
    """A consent record is not acceptable; names the field, never echoes a value."""


class ConsentRecordRow(Base):
    __tablename__ = "gov_consent_records"
    __table_args__ = (Index("ix_gov_consent_records_person", "person_id", "purpose"),)
    record_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    person_id: Mapped[str] = mapped_column(String(128), nullable=False)  # at recording
    purpose: Mapped[str] = mapped_column(String(64), nullable=False)
    agencies: Mapped[str] = mapped_column(String(64), nullable=False)  # sorted, comma-joined
    categories: Mapped[str] = mapped_column(String(400), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    consenter: Mapped[str] = mapped_column(String(32), nullable=False)
    capacity: Mapped[str] = mapped_column(String(32), nullable=False)
    method: Mapped[str | None] = mapped_column(String(32), nullable=True)
    not_sought_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    evidence_ref: Mapped[str | None] = mapped_column(String(64), nullable=True)
    given_on: Mapped[str] = mapped_column(String(10), nullable=False)  # ISO date
    review_by: Mapped[str] = mapped_column(String(10), nullable=False)  # ISO date
    recorded_by: Mapped[str] = mapped_column(String(128), nullable=False)
    recorded_agency: Mapped[str | None] = mapped_column(String(8), nullable=True)
    recorded_at: Mapped[str] = mapped_column(String(40), nullable=False)
    audit_seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    withdrawn_at: Mapped[str | None] = mapped_column(String(40), nullable=True)
    withdrawn_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    withdrawal_way: Mapped[str | None] = mapped_column(String(32), nullable=True)
    withdrawal_audit_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class ConsentRecordRef(Base):
    """The record refs of the person when the consent was recorded (what it follows)."""

    __tablename__ = "gov_consent_record_refs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    record_id: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    agency: Mapped[str] = mapped_column(String(8), nullable=False)
    record_ref: Mapped[str] = mapped_column(String(200), nullable=False, index=True)
    anchor: Mapped[int] = mapped_column(Integer, nullable=False)  # 1: the consent follows it


Ref = tuple[str, str]  # (agency, record_ref)


@dataclass(frozen=True)
class NewConsent:
    person_id: str
    purpose: str
    scope: Scope
    status: str
    consenter: str
    capacity: str
    given_on: dt.date
    review_by: dt.date
    method: str | None = None
    not_sought_reason: str | None = None
    evidence_ref: str | None = None

    def problems(self, today: dt.date) -> list[str]:
        """Field: problem, for every rule broken (never a value)."""
        out: list[str] = []
        if not ID.fullmatch(self.person_id):
            out.append("person_id: not a hub person id")
        if not CODE.fullmatch(self.purpose):
            out.append("purpose: not a consent purpose code")
        if self.status not in STATUSES:
            out.append(f"status: one of {', '.join(STATUSES)}")
        if self.consenter not in CAPACITIES:
            out.append(f"consenter: one of {', '.join(CONSENTERS)}")
        elif self.capacity not in CAPACITIES[self.consenter]:
            out.append(
                f"capacity: for a {self.consenter} one of {', '.join(CAPACITIES[self.consenter])}"
            )
        if self.status == "not_sought":
            if self.not_sought_reason not in NOT_SOUGHT_REASONS:
                out.append(f"not_sought_reason: one of {', '.join(NOT_SOUGHT_REASONS)}")
            if self.method is not None:
                out.append("method: consent was not sought, so no method")
        else:
            if self.method not in METHODS:
                out.append(f"method: one of {', '.join(METHODS)}")
            if self.not_sought_reason is not None:
                out.append("not_sought_reason: only when consent was not sought")
        if self.evidence_ref is not None and (
            not EVIDENCE.fullmatch(self.evidence_ref) or has_identifier(self.evidence_ref)
        ):
            out.append(
                "evidence_ref: a document reference (letters, digits, / _ . : -), "
                "never a personal identifier"
            )
        if self.status == "given" and not self.evidence_ref:
            out.append("evidence_ref: required when consent is given")
        if self.given_on > today:
            out.append("given_on: in the future")
        if self.review_by <= self.given_on:
            out.append("review_by: must be after given_on")
        elif (self.review_by - self.given_on).days > 366 * 2:
            out.append("review_by: at most two years after given_on")
        return out


@dataclass(frozen=True)
class ConsentRecord:
    record_id: str
    person_id: str
    purpose: str
    scope: Scope
    status: str
    consenter: str
    capacity: str
    method: str | None
    not_sought_reason: str | None
    evidence_ref: str | None
    given_on: dt.date
    review_by: dt.date
    recorded_by: str
    recorded_agency: str | None
    recorded_at: dt.datetime
    audit_seq: int
    withdrawn_at: dt.datetime | None
    withdrawn_by: str | None
    withdrawal_way: str | None
    refs: tuple[tuple[str, str, bool], ...] = ()  # (agency, record_ref, anchor)

    @property
    def anchors(self) -> frozenset[Ref]:
        return frozenset((a, r) for a, r, anchor in self.refs if anchor)

    @property
    def all_refs(self) -> frozenset[Ref]:
        return frozenset((a, r) for a, r, _ in self.refs)

    def public(self) -> dict[str, Any]:
        """What the API and the workspace show: codes and dates, no record refs."""
        return {
            "record_id": self.record_id,
            "person_id": self.person_id,
            "purpose": self.purpose,
            "agencies": sorted(self.scope.agencies),
            "categories": sorted(self.scope.categories),
            "status": self.status,
            "consenter": self.consenter,
            "capacity": self.capacity,
            "method": self.method,
            "not_sought_reason": self.not_sought_reason,
            "evidence_ref": self.evidence_ref,
            "given_on": self.given_on.isoformat(),
            "review_by": self.review_by.isoformat(),
            "recorded_by": self.recorded_by,
            "recorded_agency": self.recorded_agency,
            "recorded_at": self.recorded_at.isoformat(),
            "audit_seq": self.audit_seq,
            "withdrawn_at": self.withdrawn_at.isoformat() if self.withdrawn_at else None,
            "withdrawn_by": self.withdrawn_by,
            "withdrawal_way": self.withdrawal_way,
        }


def _record(row: Any, refs: Iterable[tuple[str, str, bool]]) -> ConsentRecord:
    return ConsentRecord(
        row.record_id,
        row.person_id,
        row.purpose,
        Scope(frozenset(row.agencies.split(",")), frozenset(row.categories.split(","))),
        row.status,
        row.consenter,
        row.capacity,
        row.method,
        row.not_sought_reason,
        row.evidence_ref,
        dt.date.fromisoformat(row.given_on),
        dt.date.fromisoformat(row.review_by),
        row.recorded_by,
        row.recorded_agency,
        dt.datetime.fromisoformat(row.recorded_at),
        row.audit_seq,
        dt.datetime.fromisoformat(row.withdrawn_at) if row.withdrawn_at else None,
        row.withdrawn_by,
        row.withdrawal_way,
        tuple(refs),
    )


# --- the person map: which record refs a person holds now --------------------------------------


class PersonRefs:
    """Record refs of persons in the hub warehouse's `record_person` table (read-only, one
    connection per call, so a re-link that rewrote the map is seen on the next decision).
    `warehouse` is a path or a callable giving the current one (the workspace reads the
    latest published copy); no warehouse means no refs (records then match by person id)."""

    def __init__(self, warehouse: Path | str | Callable[[], Path | None] | None) -> None:
        self._warehouse = warehouse

    def _path(self) -> Path | None:
        w = self._warehouse() if callable(self._warehouse) else self._warehouse
        return Path(w) if w is not None and Path(w).exists() else None

    def _query(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        path = self._path()
        if path is None:
            return []
        con = duckdb.connect(str(path), read_only=True)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    def refs_of(self, person_id: str) -> frozenset[Ref]:
        return frozenset(
            (a, r)
            for a, r in self._query(
                "SELECT agency, record_ref FROM record_person WHERE person_id = ?", [person_id]
            )
        )

    def household_of(self, person_id: str) -> str | None:
        """The person's current household (as governance.service.ViewService decides it)."""
        rows = self._query(
            """SELECT m.household_id FROM household_member m
            JOIN household h USING (household_id)
            WHERE m.person_id = ? AND h.status = 'active'
            ORDER BY m.n_agencies_agreeing DESC, m.household_id LIMIT 1""",
            [person_id],
        )
        return rows[0][0] if rows else None

    def holders(self, refs: Iterable[Ref]) -> dict[Ref, str]:
        wanted = sorted({r for _, r in refs})
        if not wanted:
            return {}
        rows = self._query(
            "SELECT agency, record_ref, person_id FROM record_person "
            "WHERE list_contains(?, record_ref)",
            [wanted],
        )
        return {(a, r): p for a, r, p in rows}


# --- the store ---------------------------------------------------------------------------------


class ConsentRecordStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        Base.metadata.create_all(
            engine, tables=[ConsentRecordRow.__table__, ConsentRecordRef.__table__]
        )

    def add(
        self,
        new: NewConsent,
        refs: Iterable[Ref],
        user_id: str,
        agency: str | None,
        audit: AuditLog,
        now: dt.datetime,
    ) -> ConsentRecord:
        """Record a consent (given, refused or not sought) and its audit entry, atomically."""
        problems = new.problems(now.date())
        if agency is not None and agency not in AGENCY_CODES:
            problems.append("agency: the recording worker's agency is not a partnership code")
        if problems:
            raise ConsentRecordError("; ".join(problems))
        refs = sorted(set(refs))
        own = [r for r in refs if r[0] == agency]
        anchors = set(own or refs)  # the recording agency's own record of the person
        record_id = uuid.uuid4().hex
        body = {
            "type": "consent_recorded",
            "record_id": record_id,
            "at": now.isoformat(),
            "user_id": user_id,
            "agency": agency,
            "person_id": new.person_id,
            "purpose": new.purpose,
            "agencies": sorted(new.scope.agencies),
            "categories": sorted(new.scope.categories),
            "status": new.status,
            "consenter": new.consenter,
            "capacity": new.capacity,
            "method": new.method,
            "not_sought_reason": new.not_sought_reason,
            "evidence_ref": new.evidence_ref,
            "given_on": new.given_on.isoformat(),
            "review_by": new.review_by.isoformat(),
            "n_record_refs": len(refs),
        }
        holder: dict[str, int] = {}

        def also(conn: Connection, seq: int) -> None:
            holder["seq"] = seq
            conn.execute(
                insert(ConsentRecordRow).values(
                    record_id=record_id,
                    person_id=new.person_id,
                    purpose=new.purpose,
                    agencies=",".join(sorted(new.scope.agencies)),
                    categories=",".join(sorted(new.scope.categories)),
                    status=new.status,
                    consenter=new.consenter,
                    capacity=new.capacity,
                    method=new.method,
                    not_sought_reason=new.not_sought_reason,
                    evidence_ref=new.evidence_ref,
                    given_on=new.given_on.isoformat(),
                    review_by=new.review_by.isoformat(),
                    recorded_by=user_id,
                    recorded_agency=agency,
                    recorded_at=now.isoformat(),
                    audit_seq=seq,
                )
            )
            if refs:
                conn.execute(
                    insert(ConsentRecordRef),
                    [
                        {
                            "record_id": record_id,
                            "agency": a,
                            "record_ref": r,
                            "anchor": int((a, r) in anchors),
                        }
                        for a, r in refs
                    ],
                )

        audit.append("consent", body, also=also)
        got = self.get(record_id)
        assert got is not None
        return got

    def withdraw(
        self,
        record_id: str,
        user_id: str,
        way: str,
        audit: AuditLog,
        now: dt.datetime,
        also: Callable[[Connection, int], None] | None = None,
    ) -> ConsentRecord:
        """Withdraw a given consent at once: the audit entry and the change in one
        transaction (`also` adds e.g. the notices to the agencies to the same one)."""
        if way not in WITHDRAWAL_WAYS:
            raise ConsentRecordError(f"withdrawal_way: one of {', '.join(WITHDRAWAL_WAYS)}")
        rec = self.get(record_id)
        if rec is None:
            raise KeyError(record_id)
        if rec.status != "given" or rec.withdrawn_at is not None:
            raise ConsentRecordError("record_id: only a current given consent can be withdrawn")
        body = {
            "type": "consent_withdrawn",
            "record_id": record_id,
            "at": now.isoformat(),
            "user_id": user_id,
            "person_id": rec.person_id,
            "purpose": rec.purpose,
            "agencies": sorted(rec.scope.agencies),
            "categories": sorted(rec.scope.categories),
            "withdrawal_way": way,
        }

        def apply(conn: Connection, seq: int) -> None:
            res = conn.execute(
                update(ConsentRecordRow)
                .where(
                    ConsentRecordRow.record_id == record_id, ConsentRecordRow.withdrawn_at.is_(None)
                )
                .values(
                    withdrawn_at=now.isoformat(),
                    withdrawn_by=user_id,
                    withdrawal_way=way,
                    withdrawal_audit_seq=seq,
                )
            )
            if res.rowcount != 1:  # withdrawn meanwhile by another process: roll back
                raise ConsentRecordError("record_id: already withdrawn")
            if also is not None:
                also(conn, seq)

        audit.append("consent", body, also=apply)
        got = self.get(record_id)
        assert got is not None
        return got

    def has_any(self, purpose: str) -> bool:
        with self.engine.connect() as conn:
            return (
                conn.execute(
                    select(ConsentRecordRow.record_id)
                    .where(ConsentRecordRow.purpose == purpose)
                    .limit(1)
                ).first()
                is not None
            )

    def get(self, record_id: str) -> ConsentRecord | None:
        found = self._load(ConsentRecordRow.record_id == record_id)
        return found[0] if found else None

    def for_person(
        self, person_id: str, refs: Iterable[Ref], purpose: str | None = None
    ) -> list[ConsentRecord]:
        """Records keyed to any of `refs`, or (made without refs) to this person id."""
        wanted = sorted({r for _, r in refs})
        with self.engine.connect() as conn:
            ids = (
                {
                    row[0]
                    for row in conn.execute(
                        select(ConsentRecordRef.record_id).where(
                            ConsentRecordRef.record_ref.in_(wanted)
                        )
                    )
                }
                if wanted
                else set()
            )
            has_refs = select(ConsentRecordRef.record_id).distinct()
            ids |= {
                row[0]
                for row in conn.execute(
                    select(ConsentRecordRow.record_id).where(
                        ConsentRecordRow.person_id == person_id,
                        ConsentRecordRow.record_id.not_in(has_refs),
                    )
                )
            }
        if not ids:
            return []
        cond = ConsentRecordRow.record_id.in_(sorted(ids))
        if purpose is not None:
            cond = cond & (ConsentRecordRow.purpose == purpose)
        return self._load(cond)

    def _load(self, cond: Any) -> list[ConsentRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(ConsentRecordRow).where(cond).order_by(ConsentRecordRow.recorded_at)
            ).all()
            refs: dict[str, list[tuple[str, str, bool]]] = {}
            if rows:
                for r in conn.execute(
                    select(
                        ConsentRecordRef.record_id,
                        ConsentRecordRef.agency,
                        ConsentRecordRef.record_ref,
                        ConsentRecordRef.anchor,
                    ).where(ConsentRecordRef.record_id.in_([x.record_id for x in rows]))
                ):
                    refs.setdefault(r.record_id, []).append(
                        (r.agency, r.record_ref, bool(r.anchor))
                    )
        return [_record(r, sorted(refs.get(r.record_id, []))) for r in rows]
