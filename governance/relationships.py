"""Legitimate relationships: a user allocated to a person or a household for a period.

A relationship to a household covers every person the linkage places in that household.
Dates are inclusive; an open end means the allocation is current until ended.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import Engine, case, or_, select, update
from sqlalchemy import insert as sa_insert

from governance.models import Base, RelationshipRow

if TYPE_CHECKING:  # pandas costs seconds to import; only the frame methods need it
    import pandas as pd


class SubjectKind(StrEnum):
    PERSON = "person"
    HOUSEHOLD = "household"


class RelationshipError(ValueError):
    """Malformed relationship data; names the source, row and field."""


@dataclass(frozen=True, slots=True)
class Subject:
    """Who a request is about: hub ids from the linkage (opaque, never identifiers)."""

    person_id: str
    household_id: str | None = None


@dataclass(frozen=True, slots=True)
class Relationship:
    user_id: str
    kind: SubjectKind
    subject_id: str  # a person_id or a household_id
    start: dt.date
    end: dt.date | None = None
    reason: str = "allocation"

    def __post_init__(self) -> None:
        if self.end is not None and self.end < self.start:
            raise RelationshipError(f"relationship for user {self.user_id}: end before start")

    def current(self, on: dt.date) -> bool:
        return self.start <= on and (self.end is None or on <= self.end)


class RelationshipRegistry:
    def __init__(self, relationships: list[Relationship] | None = None) -> None:
        self._by_user: dict[str, list[Relationship]] = defaultdict(list)
        for r in relationships or ():
            self.add(r)

    def add(self, rel: Relationship) -> None:
        self._by_user[rel.user_id].append(rel)

    def all(self) -> list[Relationship]:
        return [r for rels in self._by_user.values() for r in rels]

    def to_frame(self) -> pd.DataFrame:
        """user_id, kind, subject_id, start, end (ISO dates; end None if open): the shape
        `from_frame` reads and the IG report takes."""
        import pandas as pd

        return pd.DataFrame(
            [
                {
                    "user_id": r.user_id,
                    "kind": r.kind.value,
                    "subject_id": r.subject_id,
                    "start": r.start.isoformat(),
                    "end": r.end.isoformat() if r.end else None,
                }
                for r in self.all()
            ],
            columns=["user_id", "kind", "subject_id", "start", "end"],
        )

    def end(self, user_id: str, kind: SubjectKind, subject_id: str, on: dt.date) -> int:
        """End every open allocation of user to subject on `on`; returns how many were ended."""
        rels = self._by_user.get(user_id, [])
        n = 0
        for i, r in enumerate(rels):
            if r.kind is kind and r.subject_id == subject_id and (r.end is None or r.end > on):
                rels[i] = Relationship(r.user_id, r.kind, r.subject_id, r.start, on, r.reason)
                n += 1
        return n

    def current(
        self, user_id: str, subject: Subject, at: dt.date | dt.datetime
    ) -> Relationship | None:
        return _current_in(self._by_user.get(user_id, ()), subject, at)

    @classmethod
    def from_frame(cls, df: pd.DataFrame, source: str = "<frame>") -> RelationshipRegistry:
        """Columns: user_id, kind (person|household), subject_id, start, end (may be empty)."""
        import pandas as pd

        cols = ("user_id", "kind", "subject_id", "start", "end")
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise RelationshipError(f"{source}: missing column(s) {missing}")
        starts = pd.to_datetime(df["start"], errors="coerce", format="mixed")
        ends = pd.to_datetime(df["end"], errors="coerce", format="mixed")
        problems: list[str] = []
        rels: list[Relationship] = []
        for pos, row in enumerate(df.itertuples(index=False)):
            where = f"{source}: row {pos + 1}"
            bad = []
            if not isinstance(row.user_id, str) or not row.user_id:
                bad.append("user_id: missing")
            if row.kind not in ("person", "household"):
                bad.append("kind: must be person or household")
            if not isinstance(row.subject_id, str) or not row.subject_id:
                bad.append("subject_id: missing")
            if pd.isna(starts.iloc[pos]):
                bad.append("start: missing or not a date")
            if not pd.isna(row.end) and str(row.end).strip() and pd.isna(ends.iloc[pos]):
                bad.append("end: not a date")
            if not bad:
                end = None if pd.isna(ends.iloc[pos]) else ends.iloc[pos].date()
                if end is not None and end < starts.iloc[pos].date():
                    bad.append("end: before start")
                else:
                    rels.append(
                        Relationship(
                            row.user_id,
                            SubjectKind(row.kind),
                            row.subject_id,
                            starts.iloc[pos].date(),
                            end,
                        )
                    )
            problems.extend(f"{where}: {b}" for b in bad)
        if problems:
            raise RelationshipError(
                f"{source}: {len(problems)} problem(s); nothing loaded:\n  "
                + "\n  ".join(problems[:20])
            )
        return cls(rels)


class SqlRelationshipRegistry(RelationshipRegistry):
    """Legitimate relationships in the governance store (the audit log's SQLAlchemy models and
    engine). Every lookup reads the store, so an allocation ended by another process (e.g. the
    case-management sync) stops access on the next decision."""

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine
        Base.metadata.create_all(engine, tables=[RelationshipRow.__table__])

    def add(self, rel: Relationship) -> None:
        self.add_many([rel])

    def add_many(self, rels: list[Relationship]) -> int:
        now = dt.datetime.now(dt.UTC).isoformat()
        rows = [
            {
                "user_id": r.user_id,
                "kind": r.kind.value,
                "subject_id": r.subject_id,
                "start": r.start.isoformat(),
                "end": r.end.isoformat() if r.end else None,
                "reason": r.reason,
                "recorded_at": now,
            }
            for r in rels
        ]
        if rows:
            with self.engine.begin() as conn:
                conn.execute(sa_insert(RelationshipRow), rows)
        return len(rows)

    def load_frame(self, df: pd.DataFrame, source: str = "<frame>") -> int:
        """Validate a whole allocations frame (RelationshipRegistry.from_frame rules: nothing
        is loaded if any row is bad), then add the allocations not already stored. An
        allocation is the same if user, kind, subject and start match: re-importing an export
        never reopens an allocation ended in the store since."""

        def key(r: Relationship) -> tuple[str, str, str, dt.date]:
            return (r.user_id, r.kind.value, r.subject_id, r.start)

        have = {key(r) for r in self.all()}
        new: dict[tuple[str, str, str, dt.date], Relationship] = {}
        for r in RelationshipRegistry.from_frame(df, source=source).all():
            if key(r) not in have:
                new.setdefault(key(r), r)
        return self.add_many(list(new.values()))

    def end(self, user_id: str, kind: SubjectKind, subject_id: str, on: dt.date) -> int:
        c = RelationshipRow
        with self.engine.begin() as conn:
            # An allocation that would only start after `on` ends on its first day.
            res = conn.execute(
                update(c)
                .where(
                    c.user_id == user_id,
                    c.kind == kind.value,
                    c.subject_id == subject_id,
                    or_(c.end.is_(None), c.end > on.isoformat()),
                )
                .values(end=case((c.start > on.isoformat(), c.start), else_=on.isoformat()))
            )
        return int(res.rowcount)

    def _rows(self, user_id: str | None = None) -> list[Relationship]:
        c = RelationshipRow
        q = select(c.user_id, c.kind, c.subject_id, c.start, c.end, c.reason).order_by(c.id)
        if user_id is not None:
            q = q.where(c.user_id == user_id)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return [
            Relationship(
                r.user_id,
                SubjectKind(r.kind),
                r.subject_id,
                dt.date.fromisoformat(r.start),
                dt.date.fromisoformat(r.end) if r.end else None,
                r.reason,
            )
            for r in rows
        ]

    def all(self) -> list[Relationship]:
        return self._rows()

    def current(
        self, user_id: str, subject: Subject, at: dt.date | dt.datetime
    ) -> Relationship | None:
        return _current_in(self._rows(user_id), subject, at)


def _current_in(
    rels: Iterable[Relationship], subject: Subject, at: dt.date | dt.datetime
) -> Relationship | None:
    on = at.date() if isinstance(at, dt.datetime) else at
    for r in rels:
        if not r.current(on):
            continue
        if r.kind is SubjectKind.PERSON and r.subject_id == subject.person_id:
            return r
        if (
            r.kind is SubjectKind.HOUSEHOLD
            and subject.household_id is not None
            and r.subject_id == subject.household_id
        ):
            return r
    return None
