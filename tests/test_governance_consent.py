"""Consent registry and legitimate relationships."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from governance.consent import ConsentDataError, ConsentRegistry, ConsentStatus
from governance.relationships import (
    Relationship,
    RelationshipError,
    RelationshipRegistry,
    Subject,
    SubjectKind,
)

D = dt.date


def _frame(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=["person_id", "agency", "consent_purpose", "consent_status", "consent_date"]
    )


def test_latest_state_wins_per_person_purpose_agency() -> None:
    reg = ConsentRegistry.from_frame(
        _frame(
            [
                ("P1", "EH", "early_help", "given", "2026-01-10"),
                ("P1", "EH", "early_help", "withdrawn", "2026-03-01"),
                ("P1", "EH", "early_help", "given", "2026-05-01"),
                ("P1", "SCH", "early_help", "refused", "2026-01-05"),
                ("P2", "EH", "mash", "given", "2026-01-01"),
            ]
        ),
        source="consent.parquet",
    )
    st = reg.state
    assert st("P1", "early_help", "EH", D(2026, 1, 9)).status is ConsentStatus.NONE
    assert st("P1", "early_help", "EH", D(2026, 2, 1)).status is ConsentStatus.GIVEN
    # withdrawal takes effect on the day it is recorded
    assert st("P1", "early_help", "EH", D(2026, 3, 1)).status is ConsentStatus.WITHDRAWN
    assert st("P1", "early_help", "EH", D(2026, 6, 1)).status is ConsentStatus.GIVEN
    # purposes and persons do not leak into each other
    assert st("P1", "mash", "EH", D(2026, 6, 1)).status is ConsentStatus.NONE
    assert st("P2", "early_help", "EH", D(2026, 6, 1)).status is ConsentStatus.NONE


def test_same_day_safest_status_wins_and_withdrawal_anywhere_vetoes() -> None:
    reg = ConsentRegistry()
    reg.record("P1", "EH", "early_help", "given", D(2026, 2, 1))
    reg.record("P1", "EH", "early_help", "withdrawn", D(2026, 2, 1))
    assert reg.state("P1", "early_help", "EH", D(2026, 2, 1)).status is ConsentStatus.WITHDRAWN
    reg.record("P1", "SCH", "early_help", "given", D(2026, 3, 1))
    assert reg.state("P1", "early_help", "SCH", D(2026, 3, 2)).given
    # withdrawn at HV: SCH's earlier consent for the same purpose no longer stands
    reg.record("P1", "HV", "early_help", "withdrawn", dt.datetime(2026, 3, 5, 9, tzinfo=dt.UTC))
    s = reg.state("P1", "early_help", "SCH", dt.datetime(2026, 3, 5, 8, tzinfo=dt.UTC))
    assert s.status is ConsentStatus.WITHDRAWN and s.recorded_by == "HV"


def test_malformed_rows_name_source_row_field_and_load_nothing() -> None:
    df = _frame(
        [
            ("P1", "EH", "early_help", "given", "2026-01-10"),
            ("P2", "XX", "early_help", "maybe", "not a date"),
            (None, "EH", "early_help", "withdrawn", "2026-01-10"),
        ]
    )
    with pytest.raises(ConsentDataError) as exc:
        ConsentRegistry.from_frame(df, source="EH/batch7/payload.parquet")
    msg = str(exc.value)
    assert "EH/batch7/payload.parquet" in msg and "nothing loaded" in msg
    assert "row 2 (index 1): agency" in msg
    assert "row 2 (index 1): consent_status" in msg
    assert "row 2 (index 1): consent_date" in msg
    assert "row 3 (index 2): person_id" in msg
    with pytest.raises(ConsentDataError, match="missing column"):
        ConsentRegistry.from_frame(df.drop(columns=["consent_date"]))


def test_relationships_person_household_and_dates() -> None:
    reg = RelationshipRegistry(
        [
            Relationship("sw1", SubjectKind.PERSON, "P1", D(2026, 1, 1), D(2026, 3, 31)),
            Relationship("hv1", SubjectKind.HOUSEHOLD, "H9", D(2026, 2, 1)),
        ]
    )
    p1 = Subject("P1", "H1")
    assert reg.current("sw1", p1, D(2026, 3, 31)) is not None
    assert reg.current("sw1", p1, D(2026, 4, 1)) is None
    assert reg.current("sw1", Subject("P2", "H1"), D(2026, 2, 1)) is None
    assert reg.current("hv1", Subject("P7", "H9"), D(2026, 2, 1)) is not None
    assert reg.current("hv1", Subject("P7", "H9"), D(2026, 1, 31)) is None
    assert reg.current("hv1", Subject("P7", None), D(2026, 2, 2)) is None
    assert reg.end("hv1", SubjectKind.HOUSEHOLD, "H9", D(2026, 2, 10)) == 1
    assert reg.current("hv1", Subject("P7", "H9"), D(2026, 2, 11)) is None


def test_relationship_frame_errors() -> None:
    df = pd.DataFrame(
        {
            "user_id": ["sw1", "sw2", ""],
            "kind": ["person", "team", "household"],
            "subject_id": ["P1", "P2", "H1"],
            "start": ["2026-01-01", "2026-01-01", "bad"],
            "end": [None, "2025-01-01", None],
        }
    )
    with pytest.raises(RelationshipError) as exc:
        RelationshipRegistry.from_frame(df, source="allocations.csv")
    msg = str(exc.value)
    assert "allocations.csv: row 2: kind" in msg
    assert "row 3: user_id" in msg and "row 3: start" in msg
    ok = RelationshipRegistry.from_frame(df.iloc[:1], source="allocations.csv")
    assert ok.current("sw1", Subject("P1"), D(2027, 1, 1)) is not None
