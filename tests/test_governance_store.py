"""Legitimate relationships and the consent registry persisted in the governance store (the
audit log's SQLAlchemy models and engine), on SQLite and on a real PostgreSQL; refreshed from a
real warehouse; decisions and the API reading them; changes by another process take effect at
once."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from sqlalchemy import Engine
from test_api import NOW, World, build_world

from governance.audit import AuditLog, make_engine
from governance.audit_keys import create_audit_key, export_public_record, load_trusted_keys
from governance.consent import ConsentDataError, ConsentStatus, SqlConsentRegistry
from governance.decisions import Governance, User
from governance.hub_stage import consent_events, refresh_consent
from governance.relationships import (
    Relationship,
    RelationshipError,
    SqlRelationshipRegistry,
    Subject,
    SubjectKind,
)
from governance.service import load_consent
from governance.testing import postgres_url, signed_and_verified, temp_schema

D = dt.date(2026, 3, 1)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    """(url, schema) of an empty governance store."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gov.db'}", None
        return
    url, why = postgres_url()
    if url is None:
        pytest.skip(why)
    with temp_schema(url, "gov_store") as schema:
        yield url, schema


def _engine(store: tuple[str, str | None]) -> Engine:
    # A fresh engine stands for another process (API worker, allocation sync, DAG task).
    return make_engine(store[0], store[1])


def test_relationships_persist_and_an_ended_allocation_stops_access_at_once(store) -> None:
    a, b = _engine(store), _engine(store)
    writer, reader = SqlRelationshipRegistry(a), SqlRelationshipRegistry(b)
    writer.add(Relationship("sw1", SubjectKind.HOUSEHOLD, "H1", dt.date(2026, 1, 1)))
    writer.add(
        Relationship("sw1", SubjectKind.PERSON, "P9", dt.date(2026, 1, 1), dt.date(2026, 2, 1))
    )
    assert reader.current("sw1", Subject("P1", "H1"), D) is not None
    assert reader.current("sw1", Subject("P9"), D) is None  # ended before D
    assert reader.current("sw2", Subject("P1", "H1"), D) is None
    assert writer.end("sw1", SubjectKind.HOUSEHOLD, "H1", dt.date(2026, 2, 15)) == 1
    assert reader.current("sw1", Subject("P1", "H1"), D) is None
    assert reader.current("sw1", Subject("P1", "H1"), dt.date(2026, 2, 10)) is not None
    frame = reader.to_frame()
    assert sorted(frame["subject_id"]) == ["H1", "P9"]
    assert set(frame.loc[frame.subject_id == "H1", "end"]) == {"2026-02-15"}


def test_allocations_file_loads_whole_or_not_at_all_and_only_once(store) -> None:
    reg = SqlRelationshipRegistry(_engine(store))
    good = pd.DataFrame(
        [
            {
                "user_id": "sw1",
                "kind": "person",
                "subject_id": "P1",
                "start": "2026-01-01",
                "end": "",
            },
            {
                "user_id": "sw2",
                "kind": "household",
                "subject_id": "H1",
                "start": "2026-01-01",
                "end": "2026-12-31",
            },
        ]
    )
    assert reg.load_frame(good, "alloc.csv") == 2
    assert reg.load_frame(good, "alloc.csv") == 0  # re-importing the same export adds nothing
    bad = pd.concat(
        [
            good.assign(user_id=["sw3", "sw4"]),
            pd.DataFrame(
                [
                    {
                        "user_id": "sw5",
                        "kind": "team",
                        "subject_id": "P2",
                        "start": "2026-01-01",
                        "end": "",
                    }
                ]
            ),
        ],
        ignore_index=True,
    )
    with pytest.raises(RelationshipError, match=r"alloc2.csv: row 3: kind"):
        reg.load_frame(bad, "alloc2.csv")
    assert sorted(r.user_id for r in reg.all()) == ["sw1", "sw2"]


def test_consent_withdrawal_by_another_process_takes_effect_at_once(store) -> None:
    writer, reader = SqlConsentRegistry(_engine(store)), SqlConsentRegistry(_engine(store))
    writer.record("P1", "SCH", "early_help", "given", D)
    assert reader.state("P1", "early_help", "SCH", D).given
    assert reader.state("P1", "early_help", "GP", D).status is ConsentStatus.NONE
    writer.record("P1", "EH", "early_help", "withdrawn", D + dt.timedelta(days=3))
    assert reader.state("P1", "early_help", "SCH", D + dt.timedelta(days=2)).given
    state = reader.state("P1", "early_help", "SCH", D + dt.timedelta(days=3))
    assert (state.status, state.recorded_by) == (ConsentStatus.WITHDRAWN, "EH")
    with pytest.raises(ConsentDataError, match="consent_status"):
        writer.record("P1", "SCH", "early_help", "maybe", D)
    assert len(reader) == 2


def test_refresh_replaces_warehouse_events_and_keeps_direct_ones(store) -> None:
    reg = SqlConsentRegistry(_engine(store))
    reg.record("P1", "EH", "mash", "withdrawn", D)  # received directly at the hub
    frame = pd.DataFrame(
        [
            {
                "person_id": "P1",
                "agency": "EH",
                "consent_purpose": "mash",
                "consent_status": "given",
                "consent_date": "2026-02-01",
            },
            {
                "person_id": "P2",
                "agency": "SCH",
                "consent_purpose": "early_help",
                "consent_status": "given",
                "consent_date": "2026-02-01",
            },
        ]
    )
    assert reg.replace_warehouse_events(frame, "wh") == 2
    assert reg.replace_warehouse_events(frame.iloc[1:], "wh") == 1  # a run later: replaced
    assert len(reg) == 2
    assert reg.state("P1", "mash", "EH", D).status is ConsentStatus.WITHDRAWN
    assert reg.state("P2", "early_help", "SCH", D).given
    broken = frame.assign(consent_date=["2026-02-01", "not a date"])
    with pytest.raises(ConsentDataError, match=r"wh: .*row 2 .*consent_date"):
        reg.replace_warehouse_events(broken, "wh")
    assert len(reg) == 2 and reg.state("P2", "early_help", "SCH", D).given  # nothing changed


def test_decisions_read_the_store(store, tmp_path: Path) -> None:
    engine = _engine(store)
    rels, consent = SqlRelationshipRegistry(engine), SqlConsentRegistry(engine)
    gov = Governance(AuditLog(engine), consent, rels)
    rels.add(Relationship("ehw", SubjectKind.PERSON, "P1", dt.date(2026, 1, 1)))
    consent.record("P1", "SCH", "early_help", "given", dt.date(2026, 2, 1))
    user = User("ehw", "practitioner", "EH")
    ask = [("SCH", "attendance_pct")]
    at = dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC)
    assert gov.decide(user, "early_help_family_support", Subject("P1"), ask, at).allowed_fields()
    # another process records the withdrawal; the next decision refuses
    SqlConsentRegistry(_engine(store)).record("P1", "SCH", "early_help", "withdrawn", at)
    d = gov.decide(user, "early_help_family_support", Subject("P1"), ask, at)
    assert not d.allowed_fields() and "consent_withdrawn" in d.fields[0].reasons
    # and the allocation ended elsewhere stops a gateway view too
    assert gov.decide(
        user, "s47_child_protection_enquiry", Subject("P1"), [("SCH", "attendance_pct")], at
    ).allowed_fields()
    SqlRelationshipRegistry(_engine(store)).end(
        "ehw", SubjectKind.PERSON, "P1", dt.date(2026, 2, 28)
    )
    d = gov.decide(
        user, "s47_child_protection_enquiry", Subject("P1"), [("SCH", "attendance_pct")], at
    )
    assert "no_legitimate_relationship" in d.fields[0].reasons
    assert signed_and_verified(gov.audit, tmp_path).ok and gov.audit.count() == 4


# --- from a real warehouse ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory)


def test_refresh_from_the_warehouse_matches_the_payload(store, world: World) -> None:
    engine = _engine(store)
    summary = refresh_consent(engine, world.warehouse, "r1")
    con = duckdb.connect(str(world.warehouse), read_only=True)
    try:
        n = con.execute("""SELECT count(*) FROM payload p JOIN record_person rp
            USING (agency, record_ref) WHERE p.consent_status IS NOT NULL
            AND p.consent_purpose IS NOT NULL AND p.consent_date IS NOT NULL""").fetchone()[0]
    finally:
        con.close()
    assert summary["consent_events"] == n > 0
    reg, mem = SqlConsentRegistry(engine), load_consent(world.warehouse)
    events = consent_events(world.warehouse)
    for row in events.drop_duplicates(["person_id", "consent_purpose"]).head(40).itertuples():
        for agency in ("SCH", "EH", "HV", "CSC"):
            assert reg.state(row.person_id, row.consent_purpose, agency, NOW) == mem.state(
                row.person_id, row.consent_purpose, agency, NOW
            )
    assert refresh_consent(engine, world.warehouse, "r2")["consent_events"] == n  # not doubled
    assert len(reg) == n


def test_api_reads_allocations_and_consent_from_the_store(world: World, tmp_path: Path) -> None:
    import hashlib

    from fastapi.testclient import TestClient

    from governance.api import app_from_config
    from governance.testing import partnership_set_up

    token = "store-test-token-synthetic-0123456789"
    db = f"sqlite:///{tmp_path / 'gov.db'}"
    (tmp_path / "alloc.csv").write_text(
        f"user_id,kind,subject_id,start,end\nsw9,household,{world.household},2026-01-01,\n"
    )
    keys = tmp_path / "hub" / "keys"  # the hub's audit key; the IG lead keeps its record
    export_public_record(create_audit_key(keys), tmp_path / "ig_lead")
    cfg = tmp_path / "hub_api.yaml"
    cfg.write_text(
        f"warehouse: {world.warehouse}\ngovernance_db: {db}\n"
        f"relationships_csv: {tmp_path / 'alloc.csv'}\naudit_signing_key: {keys}\n"
        f"tokens:\n  - {{token_sha256: {hashlib.sha256(token.encode()).hexdigest()}, "
        "user_id: sw9, role: practitioner, agency: CSC}\n"
    )
    engine = make_engine(db)
    signed = partnership_set_up(engine)  # access control is on by default: controllers sign
    with TestClient(app_from_config(cfg)) as client:  # start-up and shutdown checkpoints
        head = {"Authorization": f"Bearer {token}"}
        url = f"/households/{world.household}/involvement"
        assert client.get(url, headers=head).status_code == 200
        assert len(SqlConsentRegistry(engine)) == len(consent_events(world.warehouse))
        # the allocation ends (another process); the running app refuses at once
        yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
        SqlRelationshipRegistry(engine).end(
            "sw9", SubjectKind.HOUSEHOLD, world.household, yesterday
        )
        r = client.get(url, headers=head)
        assert r.status_code == 403 and "no_legitimate_relationship" in r.json()["reasons"]
    # the API process signed the head at shutdown: every entry it wrote verifies
    report = AuditLog(engine, create=False).verify(load_trusted_keys(tmp_path / "ig_lead"))
    assert report.ok and report.last_seq == signed + 2 and report.uncovered == 0
    assert report.last_checkpoint["origin"].startswith("api:")
    assert report.last_checkpoint["origin"].endswith("/stop")
    # a second start does not import the same allocation again, nor reopen it
    app_from_config(cfg)
    [rel] = SqlRelationshipRegistry(engine).all()
    assert rel.end == yesterday


def test_break_glass_grant_on_the_store(store, world: World, tmp_path: Path) -> None:
    """The grant, alert and notification rows and the expiry on both backends (service level;
    the HTTP behaviour is in test_api_break_glass.py)."""
    from sqlalchemy import func, select

    from governance.models import Alert, BreakGlassGrant, NotificationDue
    from governance.service import BreakGlassAsk, Forbidden, ViewService

    engine = _engine(store)
    rels, consent = SqlRelationshipRegistry(engine), SqlConsentRegistry(engine)
    rels.add(Relationship("tm1", SubjectKind.HOUSEHOLD, world.household, dt.date(2026, 1, 1)))
    gov = Governance(AuditLog(engine), consent, rels)
    clock = {"t": NOW}
    views = ViewService(world.warehouse, gov, clock=lambda: clock["t"])
    user = User("tm1", "team_manager", "CSC")
    ask = BreakGlassAsk("immediate_danger", "Police report a child left alone overnight", 3)
    v = views.household_view(user, "mash_information_sharing", world.household, break_glass=ask)
    gid = v.extra["break_glass"]["grant_id"]
    assert v.extra["break_glass"]["used"] and gid
    clock["t"] = NOW + dt.timedelta(hours=2)
    again = BreakGlassAsk(grant_id=gid)
    assert views.household_view(
        user, "mash_information_sharing", world.household, break_glass=again
    ).records
    clock["t"] = NOW + dt.timedelta(hours=3, seconds=1)
    with pytest.raises(Forbidden) as exc:
        views.household_view(user, "mash_information_sharing", world.household, break_glass=again)
    assert "break_glass_expired" in exc.value.reasons
    with engine.connect() as conn:

        def n(model: type) -> int:
            return int(conn.execute(select(func.count()).select_from(model)).scalar_one())

        assert (n(BreakGlassGrant), n(Alert)) == (1, 3)
        assert n(NotificationDue) >= 1
    assert signed_and_verified(gov.audit, tmp_path).ok and gov.audit.count() == 3
