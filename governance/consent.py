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
from dataclasses import dataclass
from enum import StrEnum

import pandas as pd

from governance.policy import AGENCY_CODES

COLUMNS = ("person_id", "agency", "consent_purpose", "consent_status", "consent_date")


class ConsentStatus(StrEnum):
    GIVEN = "given"
    REFUSED = "refused"
    WITHDRAWN = "withdrawn"
    NONE = "none"  # nothing recorded (never a value in the input)


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
        if agency not in AGENCY_CODES:
            raise ConsentDataError(f"agency: unknown agency code {agency!r}")
        if status not in _INPUT_STATUSES:
            raise ConsentDataError("consent_status: must be one of given, refused, withdrawn")
        if not person_id or not purpose:
            raise ConsentDataError("person_id/consent_purpose: must not be empty")
        self._events[(person_id, purpose)].append(
            ConsentEvent(agency, ConsentStatus(status), _as_date(on))
        )

    @classmethod
    def from_frame(cls, df: pd.DataFrame, source: str = "<frame>") -> ConsentRegistry:
        missing = [c for c in COLUMNS if c not in df.columns]
        if missing:
            raise ConsentDataError(f"{source}: missing column(s) {missing}")
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
                row.person_id, row.agency, row.consent_purpose, row.consent_status,
                dates.iloc[pos].date(),
            )
        return reg

    def state(
        self, person_id: str, purpose: str, agency: str, at: dt.date | dt.datetime
    ) -> ConsentState:
        on = _as_date(at)
        events = [e for e in self._events.get((person_id, purpose), ()) if e.date <= on]
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
                e for e in events
                if e.status is not ConsentStatus.GIVEN and e.date >= latest.date
            ]
            if vetoes:
                veto = max(vetoes, key=key)
                return ConsentState(veto.status, veto.date, veto.agency)
        return ConsentState(latest.status, latest.date, latest.agency)
