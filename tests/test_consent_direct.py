"""Consent events recorded directly at the hub (a withdrawal received by phone) follow records
through person merges and splits, like consent records (#20): a withdrawal is never lost when
the person it was recorded against is merged into another. Real governance store (SQLite file
and PostgreSQL), real DuckDB person map, real agency ref keys."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from governance.audit import make_engine
from governance.consent import ConsentStatus, SqlConsentRegistry
from governance.consent_direct import follow_records
from tests.consent_world import ConsentWorld, make_world

DAY = dt.date(2026, 6, 1)
LATER = dt.date(2026, 6, 10)


@pytest.fixture
def w(tmp_path: Path, backend: tuple[str, str | None]) -> ConsentWorld:
    return make_world(tmp_path, *backend, consent=SqlConsentRegistry(make_engine(*backend)))


def _reg(w: ConsentWorld) -> SqlConsentRegistry:
    reg = w.gov.consent
    if not isinstance(reg, SqlConsentRegistry):  # the consent service wrapped it (scoped)
        reg = reg.base
    assert isinstance(reg, SqlConsentRegistry) and reg.direct is not None
    return reg


def test_direct_withdrawal_follows_records_through_a_merge(w: ConsentWorld) -> None:
    reg = _reg(w)
    reg.record("P1", "SCH", "early_help", "given", DAY)
    reg.record("P1", "EH", "early_help", "withdrawn", LATER)
    assert reg.state("P1", "early_help", "SCH", LATER).status is ConsentStatus.WITHDRAWN
    # re-link: P1 is merged into P7 (P1 no longer exists)
    w.person_map(
        {
            "P7": [("EH", "1001"), ("SCH", "1001"), ("HV", "1001"), ("SCH", "1002")],
            "P2": [("EH", "2001"), ("HSG", "2001")],
        }
    )
    assert reg.state("P7", "early_help", "SCH", LATER).status is ConsentStatus.WITHDRAWN
    assert reg.state("P7", "early_help", "SCH", DAY + dt.timedelta(days=1)).given
    assert reg.state("P1", "early_help", "SCH", LATER).status is ConsentStatus.NONE
    assert reg.state("P2", "early_help", "SCH", LATER).status is ConsentStatus.NONE


def test_split_sends_a_withdrawal_to_both_halves_and_a_consent_to_its_anchor(
    w: ConsentWorld,
) -> None:
    reg = _reg(w)
    reg.record("P1", "SCH", "early_help", "given", DAY)
    # re-link: P1 was two children; the school's record (the consent's anchor) went to P5
    w.person_map(
        {
            "P1": [("EH", "1001"), ("HV", "1001")],
            "P5": [("SCH", "1001"), ("GP", "1001"), ("HSG", "1001")],
            "P2": [("EH", "2001")],
        }
    )
    assert reg.state("P5", "early_help", "SCH", LATER).given
    assert not reg.state("P1", "early_help", "SCH", LATER).given
    reg2 = SqlConsentRegistry(reg.engine)  # another process: recorded against P5 only
    follow_records(reg2, w.warehouse)
    reg2.record("P5", "HSG", "early_help", "withdrawn", LATER)
    w.person_map(  # and a later re-link splits P5's housing record off to P6
        {
            "P1": [("EH", "1001"), ("HV", "1001")],
            "P5": [("SCH", "1001"), ("GP", "1001")],
            "P6": [("HSG", "1001")],
            "P2": [("EH", "2001")],
        }
    )
    # both halves hold refs the withdrawal names: it overrides P5's consent and stands at P6
    assert reg.state("P5", "early_help", "SCH", LATER).status is ConsentStatus.WITHDRAWN
    assert reg.state("P6", "early_help", "HSG", LATER).status is ConsentStatus.WITHDRAWN
    assert reg.state("P1", "early_help", "SCH", LATER).status is ConsentStatus.NONE


def test_older_events_are_pinned_once_when_a_registry_is_attached(
    tmp_path: Path, backend: tuple[str, str | None]
) -> None:
    w = make_world(tmp_path, *backend)
    legacy = SqlConsentRegistry(make_engine(*backend))  # never attached: keyed by person id
    legacy.record("P1", "EH", "early_help", "withdrawn", LATER)
    assert legacy.direct is None
    attached = SqlConsentRegistry(make_engine(*backend))
    direct = follow_records(attached, w.warehouse)  # pins the older event to P1's refs now
    assert direct.pin_unpinned() == 0  # once
    w.person_map(
        {
            "P8": [("EH", "1001"), ("SCH", "1001"), ("HV", "1001"), ("HSG", "1001")],
            "P2": [("EH", "2001")],
        }
    )
    assert attached.state("P8", "early_help", "EH", LATER).status is ConsentStatus.WITHDRAWN
    assert legacy.state("P8", "early_help", "EH", LATER).status is ConsentStatus.NONE  # was lost
