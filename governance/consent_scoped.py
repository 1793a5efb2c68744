"""Scoped consent in the decision: does a consent cover this agency's field, for this person, now?

The decision function (governance.decisions) asks `for_subject(person, purpose, at)` once per
subject and then, for each (agency, field) it considers, gets a ConsentState. Two sources:
- the agencies' own consent events (governance.consent, from the payload or recorded
  directly): per agency, as before;
- consent records made in the workspace or through the API (governance.consent_records): per
  scope (agencies x categories), so an Early Help consent naming school and health visiting
  lets the lead practitioner see exactly those, and nothing else.
Rules (deny by default; the safest answer wins a tie):
- consent counts from when it was recorded until its review date, for the fields in its scope;
- a refusal or withdrawal covering a field overrides every consent for that field given
  before it, from either source (an agency's events count by day: a withdrawal on a day beats
  a consent given that day);
- nothing covering the field: `out_of_scope` if the person has a current consent for the
  purpose that does not cover it, `expired` if the only one covering it is past its review
  date, otherwise the agency's own state (`none` if nothing).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from governance.consent import ConsentRegistry, ConsentState, ConsentStatus, SqlConsentRegistry
from governance.consent_direct import follow_records
from governance.consent_records import ConsentRecord, ConsentRecordStore, PersonRefs
from governance.policy import AGENCY_CODES

StateOf = Callable[[str, str], ConsentState]  # (agency, field) -> state


@dataclass(frozen=True)
class _Moment:
    when: dt.datetime
    by_day: bool  # an agency's event: known to the day only
    status: ConsentStatus
    agency: str | None

    def beats(self, given: _Moment) -> bool:
        """Does this refusal/withdrawal override that consent? Ties go to the veto."""
        if self.by_day or given.by_day:
            return self.when.date() >= given.when.date()
        return self.when >= given.when


def _day(d: dt.date) -> dt.datetime:
    return dt.datetime.combine(d, dt.time(), tzinfo=dt.UTC)


def _aware(t: dt.datetime | dt.date) -> dt.datetime:
    if not isinstance(t, dt.datetime):
        return _day(t)
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


class ScopedConsent:
    """The governance consent registry with consent records on top. Everything else
    (`record`, `state`, ...) is the agencies' registry underneath, unchanged."""

    def __init__(self, base: ConsentRegistry, store: ConsentRecordStore, refs: PersonRefs) -> None:
        self.base = base
        self.store = store
        self.refs = refs

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)

    def __len__(self) -> int:
        return len(self.base)

    def records_for(self, person_id: str, purpose: str | None = None) -> list[ConsentRecord]:
        return self.store.for_person(person_id, self.refs.refs_of(person_id), purpose)

    def applies_to(
        self, rec: ConsentRecord, person_id: str, refs: frozenset, holders: dict
    ) -> bool:
        """A given consent follows its anchor refs: to the one person holding them now."""
        if not rec.refs:
            return rec.person_id == person_id
        anchors = rec.anchors or rec.all_refs
        now_held = {holders[r] for r in anchors if r in holders}
        return bool(anchors & refs) and now_held == {person_id}

    def for_subject(self, person_id: str, purpose: str, at: dt.datetime) -> StateOf:
        at = _aware(at)
        if not self.store.has_any(purpose):  # nothing recorded for the purpose: no map look-up
            return self.base.for_subject(person_id, purpose, at)
        refs = self.refs.refs_of(person_id)
        records = [
            r for r in self.store.for_person(person_id, refs, purpose) if r.recorded_at <= at
        ]
        givens = [r for r in records if r.status == "given"]
        holders = self.refs.holders({x for r in givens for x in (r.anchors or r.all_refs)})
        mine = [r for r in givens if self.applies_to(r, person_id, refs, holders)]
        live = [
            r
            for r in mine
            if r.given_on <= at.date() <= r.review_by
            and (r.withdrawn_at is None or r.withdrawn_at > at)
        ]
        expired = [r for r in mine if at.date() > r.review_by]
        vetoes: list[tuple[ConsentRecord, _Moment]] = []
        for r in records:
            if r.status == "refused":
                vetoes.append(
                    (r, _Moment(r.recorded_at, False, ConsentStatus.REFUSED, r.recorded_agency))
                )
            if r.withdrawn_at is not None and r.withdrawn_at <= at:
                vetoes.append(
                    (r, _Moment(r.withdrawn_at, False, ConsentStatus.WITHDRAWN, r.recorded_agency))
                )
        # The agencies' own states; a refusal or withdrawal at any agency covers the whole
        # purpose (it has no scope), as in governance.consent.
        agency_states = {a: self.base.state(person_id, purpose, a, at) for a in AGENCY_CODES}
        purpose_wide = [
            _Moment(_day(s.since), True, s.status, s.recorded_by)
            for s in agency_states.values()
            if s.status in (ConsentStatus.REFUSED, ConsentStatus.WITHDRAWN) and s.since is not None
        ]

        def state(agency: str, field: str) -> ConsentState:
            if agency not in agency_states:
                agency_states[agency] = self.base.state(person_id, purpose, agency, at)
            own = agency_states[agency]
            if not records:  # no consent records: the agencies' registry, exactly as before
                return own
            consents: list[_Moment] = [
                _Moment(r.recorded_at, False, ConsentStatus.GIVEN, r.recorded_agency)
                for r in live
                if r.scope.covers(agency, field)
            ]
            against = [m for r, m in vetoes if r.scope.covers(agency, field)] + purpose_wide
            if own.given and own.since is not None:
                consents.append(
                    _Moment(_day(own.since), True, ConsentStatus.GIVEN, own.recorded_by)
                )
            standing = [c for c in consents if not any(v.beats(c) for v in against)]
            if standing:
                latest = max(standing, key=lambda m: m.when)
                return ConsentState(ConsentStatus.GIVEN, latest.when.date(), latest.agency)
            if against:
                last = max(against, key=lambda m: (m.when, m.status is ConsentStatus.WITHDRAWN))
                return ConsentState(last.status, last.when.date(), last.agency)
            if any(r.scope.covers(agency, field) for r in expired):
                return ConsentState(ConsentStatus.EXPIRED)
            if live:
                return ConsentState(ConsentStatus.OUT_OF_SCOPE)
            return own

        return state


def install(gov: Any, warehouse: Path | str | Callable[[], Path | None] | None) -> ScopedConsent:
    """Put consent records under `gov`'s decisions (once; idempotent), in the governance
    store of its audit log."""
    if isinstance(gov.consent, ScopedConsent):
        return gov.consent
    if isinstance(gov.consent, SqlConsentRegistry):  # direct events follow records too
        follow_records(gov.consent, warehouse)
    scoped = ScopedConsent(gov.consent, ConsentRecordStore(gov.audit.engine), PersonRefs(warehouse))
    gov.consent = scoped
    return scoped
