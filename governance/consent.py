"""Consent registry built from the agencies' payload consent records.

Rules (deny by default):
- state is kept per (person_id, consent_purpose, agency); the latest record wins;
- on the same date the safest status wins (withdrawn > refused > given);
- a refusal or withdrawal recorded with *any* agency for a purpose overrides an earlier-or-same-day
  consent given to another agency for that purpose: the person has told the partnership, and
  withdrawal takes effect at once, wherever it was recorded;
- a malformed row stops the whole load: dropping a malformed withdrawal would silently let an
  older consent stand, so nothing is dropped.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import Engine, delete, func, insert, select

from governance.models import Base, ConsentEventRow
from governance.policy import AGENCY_CODES

if TYPE_CHECKING:  # pandas costs seconds to import; only from_frame needs it at run time
    import pandas as pd

    from governance.consent_direct import DirectEvents

COLUMNS = ("person_id", "agency", "consent_purpose", "consent_status", "consent_date")


class ConsentStatus(StrEnum):
    GIVEN = "given"
    REFUSED = "refused"
    WITHDRAWN = "withdrawn"
    NONE = "none"  # nothing recorded (never a value in the input)
    # from consent records (governance.consent_scoped), never in the agencies' input:
    EXPIRED = "expired"  # the consent covering the field is past its review date
    OUT_OF_SCOPE = "out_of_scope"  # consent given, but not for this agency or category


# Precedence on the same date: the safest status wins.
_RANK = {ConsentStatus.GIVEN: 0, ConsentStatus.REFUSED: 1, ConsentStatus.WITHDRAWN: 2}
_INPUT_STATUSES = frozenset({"given", "refused", "withdrawn"})


class ConsentDataError(ValueError):
    """Consent records are malformed. Names the source, row and field; never echoes values."""


@dataclass(frozen=True, slots=True)
class ConsentEvent:
    agency: str
    status: ConsentStatus
    date: dt.date


@dataclass(frozen=True, slots=True)
class ConsentState:
    status: ConsentStatus
    since: dt.date | None = None
    recorded_by: str | None = None  # agency that recorded the deciding event

    @property
    def given(self) -> bool:
        return self.status is ConsentStatus.GIVEN


def _as_date(at: dt.date | dt.datetime) -> dt.date:
    return at.date() if isinstance(at, dt.datetime) else at


class ConsentRegistry:
    def __init__(self) -> None:
        self._events: dict[tuple[str, str], list[ConsentEvent]] = defaultdict(list)

    def __len__(self) -> int:
        return sum(len(v) for v in self._events.values())

    def record(
        self, person_id: str, agency: str, purpose: str, status: str, on: dt.date | dt.datetime
    ) -> None:
        """Add one consent event (e.g. a withdrawal received today); effective at once."""
        _validate(person_id, agency, purpose, status)
        self._events[(person_id, purpose)].append(
            ConsentEvent(agency, ConsentStatus(status), _as_date(on))
        )

    @classmethod
    def from_frame(cls, df: pd.DataFrame, source: str = "<frame>") -> ConsentRegistry:
        missing = [c for c in COLUMNS if c not in df.columns]
        if missing:
            raise ConsentDataError(f"{source}: missing column(s) {missing}")
        import pandas as pd

        dates = pd.to_datetime(df["consent_date"], errors="coerce", format="mixed")
        problems: list[str] = []
        for pos, (idx, row) in enumerate(df.iterrows()):
            where = f"{source}: row {pos + 1} (index {idx})"
            for col in ("person_id", "consent_purpose"):
                v = row[col]
                if not isinstance(v, str) or not v.strip():
                    problems.append(f"{where}: {col}: missing or not text")
            if row["agency"] not in AGENCY_CODES:
                problems.append(f"{where}: agency: not one of {sorted(AGENCY_CODES)}")
            if row["consent_status"] not in _INPUT_STATUSES:
                problems.append(f"{where}: consent_status: not one of given, refused, withdrawn")
            if pd.isna(dates.iloc[pos]):
                problems.append(f"{where}: consent_date: missing or not a date")
        if problems:
            shown = "\n  ".join(problems[:20])
            more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
            raise ConsentDataError(
                f"{source}: {len(problems)} problem(s); nothing loaded:\n  {shown}{more}"
            )
        reg = cls()
        for pos, row in enumerate(df.itertuples(index=False)):
            reg.record(
                row.person_id,
                row.agency,
                row.consent_purpose,
                row.consent_status,
                dates.iloc[pos].date(),
            )
        return reg

    def state(
        self, person_id: str, purpose: str, agency: str, at: dt.date | dt.datetime
    ) -> ConsentState:
        return _decide_state(self._events.get((person_id, purpose), ()), agency, _as_date(at))

    def for_subject(
        self, person_id: str, purpose: str, at: dt.date | dt.datetime
    ) -> Callable[[str, str], ConsentState]:
        """(agency, field) -> state for one decision. Per agency here; consent records add
        scope per field (governance.consent_scoped)."""
        cache: dict[str, ConsentState] = {}

        def state(agency: str, field: str) -> ConsentState:
            if agency not in cache:
                cache[agency] = self.state(person_id, purpose, agency, at)
            return cache[agency]

        return state


def _decide_state(all_events: Iterable[ConsentEvent], agency: str, on: dt.date) -> ConsentState:
    events = [e for e in all_events if e.date <= on]
    if not events:
        return ConsentState(ConsentStatus.NONE)

    def key(e: ConsentEvent) -> tuple[dt.date, int]:
        return (e.date, _RANK[e.status])

    own = [e for e in events if e.agency == agency]
    if not own:
        return ConsentState(ConsentStatus.NONE)
    latest = max(own, key=key)
    if latest.status is ConsentStatus.GIVEN:
        vetoes = [
            e for e in events if e.status is not ConsentStatus.GIVEN and e.date >= latest.date
        ]
        if vetoes:
            veto = max(vetoes, key=key)
            return ConsentState(veto.status, veto.date, veto.agency)
    return ConsentState(latest.status, latest.date, latest.agency)


def _validate(person_id: str, agency: str, purpose: str, status: str) -> None:
    if agency not in AGENCY_CODES:
        raise ConsentDataError(f"agency: unknown agency code {agency!r}")
    if status not in _INPUT_STATUSES:
        raise ConsentDataError("consent_status: must be one of given, refused, withdrawn")
    if not person_id or not purpose:
        raise ConsentDataError("person_id/consent_purpose: must not be empty")


class SqlConsentRegistry(ConsentRegistry):
    """The consent registry in the governance store (same SQLAlchemy models and engine as the
    audit log: SQLite by default, PostgreSQL in production). Every `state` reads the store, so
    a withdrawal recorded by any process takes effect on the next decision.

    Events from the warehouse (`source='warehouse'`) are replaced as a whole by
    `refresh_from_warehouse` each hub run; events recorded directly (`record`, e.g. a withdrawal
    received by phone) are kept across refreshes."""

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine
        # set by governance.consent_direct.follow_records: direct events then follow records
        self.direct: DirectEvents | None = None
        Base.metadata.create_all(engine, tables=[ConsentEventRow.__table__])

    def __len__(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(ConsentEventRow)).scalar_one())

    def record(
        self, person_id: str, agency: str, purpose: str, status: str, on: dt.date | dt.datetime
    ) -> int:
        _validate(person_id, agency, purpose, status)
        with self.engine.begin() as conn:
            res = conn.execute(
                insert(ConsentEventRow).values(
                    person_id=person_id,
                    purpose=purpose,
                    agency=agency,
                    status=status,
                    on_date=_as_date(on).isoformat(),
                    source="direct",
                    run_id=None,
                    recorded_at=dt.datetime.now(dt.UTC).isoformat(),
                )
            )
            event_id = int(res.inserted_primary_key[0])
            if self.direct is not None:  # pinned to the person's refs, in the same transaction
                self.direct.pin(conn, event_id, person_id, agency)
        return event_id

    def state(
        self, person_id: str, purpose: str, agency: str, at: dt.date | dt.datetime
    ) -> ConsentState:
        if self.direct is not None:
            return _decide_state(self.direct.events(person_id, purpose), agency, _as_date(at))
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    ConsentEventRow.agency, ConsentEventRow.status, ConsentEventRow.on_date
                ).where(ConsentEventRow.person_id == person_id, ConsentEventRow.purpose == purpose)
            ).all()
        events = [
            ConsentEvent(r.agency, ConsentStatus(r.status), dt.date.fromisoformat(r.on_date))
            for r in rows
        ]
        return _decide_state(events, agency, _as_date(at))

    def has_warehouse_events(self) -> bool:
        with self.engine.connect() as conn:
            return (
                conn.execute(
                    select(ConsentEventRow.id).where(ConsentEventRow.source == "warehouse").limit(1)
                ).first()
                is not None
            )

    def replace_warehouse_events(
        self, df: pd.DataFrame, source: str, run_id: str | None = None
    ) -> int:
        """Validate every row first (a malformed row stops the refresh and nothing changes:
        see ConsentRegistry.from_frame), then swap the warehouse-sourced events in one
        transaction. Returns the number of events loaded."""
        checked = ConsentRegistry.from_frame(df, source=source) if len(df) else ConsentRegistry()
        now = dt.datetime.now(dt.UTC).isoformat()
        rows = [
            {
                "person_id": pid,
                "purpose": purpose,
                "agency": e.agency,
                "status": e.status.value,
                "on_date": e.date.isoformat(),
                "source": "warehouse",
                "run_id": run_id,
                "recorded_at": now,
            }
            for (pid, purpose), evs in checked._events.items()
            for e in evs
        ]
        with self.engine.begin() as conn:
            conn.execute(delete(ConsentEventRow).where(ConsentEventRow.source == "warehouse"))
            if rows:
                conn.execute(insert(ConsentEventRow), rows)
        return len(rows)
