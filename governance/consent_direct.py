"""Consent events recorded directly at the hub follow records, not person ids.

An agency's events from its payload are rebuilt from the warehouse at every hub run, under the
person ids of that run, so they always name the right person. An event recorded directly
(`SqlConsentRegistry.record`: a withdrawal received by phone, say) was keyed by the person id
of the day, and a re-link that merged that person into another lost it: the withdrawal no
longer counted. Now each direct event is pinned to the record refs the person held when it
was recorded (`gov_consent_event_refs`) and is read through them, with the rules of consent
records (governance.consent_records):
- a refusal or withdrawal reaches every person now holding any of its refs (after a split,
  both halves);
- a consent given follows the recording agency's own refs (its anchors; all refs if the
  agency held none) to the one person holding them now, and counts for no one if a split
  left them with two.
Events recorded before this existed are pinned once, to their person's current refs, when a
registry is first attached to a warehouse (`follow_records`); one whose person had already
gone in a merge cannot be recovered and stays keyed by its old id.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, Integer, String, insert, select
from sqlalchemy.orm import Mapped, mapped_column

from governance.consent_records import PersonRefs, Ref
from governance.models import Base, ConsentEventRow

if TYPE_CHECKING:
    from governance.consent import ConsentEvent, SqlConsentRegistry


class ConsentEventRef(Base):
    __tablename__ = "gov_consent_event_refs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(Integer, nullable=False, index=True)
    agency: Mapped[str] = mapped_column(String(8), nullable=False)
    record_ref: Mapped[str] = mapped_column(String(256), nullable=False, index=True)
    anchor: Mapped[int] = mapped_column(Integer, nullable=False)  # 1: a consent follows it


class DirectEvents:
    """Reads and pins direct consent events through the warehouse's person map."""

    def __init__(self, engine: Engine, refs: PersonRefs) -> None:
        self.engine = engine
        self.refs = refs
        Base.metadata.create_all(engine, tables=[ConsentEventRef.__table__])

    def pin(self, conn: Connection, event_id: int, person_id: str, agency: str) -> int:
        """Pin one event to the person's current refs (in the caller's transaction)."""
        held = sorted(self.refs.refs_of(person_id))
        if held:
            conn.execute(
                insert(ConsentEventRef),
                [
                    {"event_id": event_id, "agency": a, "record_ref": r, "anchor": int(a == agency)}
                    for a, r in held
                ],
            )
        return len(held)

    def pin_unpinned(self) -> int:
        """Pin direct events recorded before events were pinned; returns how many."""
        e, p = ConsentEventRow, ConsentEventRef
        with self.engine.begin() as conn:
            pinned = select(p.event_id)
            rows = conn.execute(
                select(e.id, e.person_id, e.agency).where(e.source == "direct", e.id.not_in(pinned))
            ).all()
            return sum(1 for r in rows if self.pin(conn, r.id, r.person_id, r.agency))

    def events(self, person_id: str, purpose: str) -> list[ConsentEvent]:
        from governance.consent import ConsentEvent, ConsentStatus

        e, p = ConsentEventRow, ConsentEventRef
        with self.engine.connect() as conn:
            # the warehouse's events, and direct ones never pinned, by person id as before
            rows = conn.execute(
                select(e.agency, e.status, e.on_date).where(
                    e.person_id == person_id,
                    e.purpose == purpose,
                    (e.source != "direct") | e.id.not_in(select(p.event_id)),
                )
            ).all()
            pinned = conn.execute(
                select(e.id, e.agency, e.status, e.on_date, p.agency, p.record_ref, p.anchor)
                .join(p, p.event_id == e.id)
                .where(e.purpose == purpose, e.source == "direct")
            ).all()
        out = [
            ConsentEvent(r.agency, ConsentStatus(r.status), dt.date.fromisoformat(r.on_date))
            for r in rows
        ]
        if not pinned:  # nothing recorded directly for the purpose: no warehouse look-up
            return out
        by_event: dict[int, tuple[tuple[str, str, str], list[tuple[Ref, bool]]]] = {}
        for eid, agency, status, on, pa, pr, anchor in pinned:
            by_event.setdefault(eid, ((agency, status, on), []))[1].append(((pa, pr), bool(anchor)))
        mine = self.refs.refs_of(person_id)
        holders = self.refs.holders({ref for _, pins in by_event.values() for ref, _ in pins})
        for (agency, status, on), pins in by_event.values():
            refs = {ref for ref, _ in pins}
            if status == "given":
                anchors = {ref for ref, a in pins if a} or refs
                if {holders[r] for r in anchors if r in holders} != {person_id}:
                    continue
            elif not refs & mine:
                continue
            out.append(ConsentEvent(agency, ConsentStatus(status), dt.date.fromisoformat(on)))
        return out


def follow_records(
    registry: SqlConsentRegistry, warehouse: Path | str | Callable[[], Path | None] | None
) -> DirectEvents:
    """Attach the registry to the warehouse's person map (idempotent) and pin older events."""
    if registry.direct is None:
        registry.direct = DirectEvents(registry.engine, PersonRefs(warehouse))
        registry.direct.pin_unpinned()
    return registry.direct
