"""Consent records, rule by rule, on real stores (SQLite file and a PostgreSQL schema) over a
real DuckDB person map: scope, who consented and how, review dates, withdrawal at once, the
Early Help protocol serving its purpose, and consent following records across re-links."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from governance.consent_records import ConsentRecordError
from governance.decisions import User
from governance.relationships import Relationship, Subject, SubjectKind
from governance.service import Forbidden
from tests.consent_world import EARLY_HELP, EH_WORKER, NOW, PROTOCOLS, ConsentWorld, make_world

PG_SCHEMA_PREFIX = "consent20_rec"
SUBJECT = Subject("P1", "H1")


@pytest.fixture
def w(tmp_path: Path, backend: tuple[str, str | None]) -> ConsentWorld:
    url, schema = backend
    return make_world(tmp_path, url, schema)


def _eh_fields() -> list[tuple[str, str]]:
    return [(a, f) for a, fs in PROTOCOLS[EARLY_HELP].agencies.items() for f in fs]


def _decide(w: ConsentWorld, user: User = EH_WORKER, subject: Subject = SUBJECT):
    return w.gov.decide(user, EARLY_HELP, subject, _eh_fields(), w.tick())


def test_without_consent_early_help_refuses_every_partner_field(w: ConsentWorld) -> None:
    d = _decide(w)
    assert d.allowed_fields() == {}
    assert {r for f in d.fields for r in f.reasons} == {"no_consent"}


def test_in_scope_consent_shows_partner_data_in_scope_and_nothing_else(w: ConsentWorld) -> None:
    rec = w.service.record(
        EH_WORKER,
        w.consent(agencies=("EH", "SCH", "HV"), categories=("involvement", "education", "health")),
    )
    assert rec.anchors == {("EH", w.ref("EH", "1001"))}  # the recording agency's own record
    d = _decide(w)
    allowed = d.allowed_fields()
    assert allowed == {
        "EH": ["record_type", "event_date", "lead_practitioner_contact"],
        "SCH": ["school_name", "year_group", "attendance_pct", "exclusions", "free_school_meals"],
        "HV": ["visit_type", "event_date", "immunisations_up_to_date"],
    }
    why = {(f.agency, f.field): f.reasons for f in d.fields if not f.allowed}
    assert why[("SCH", "sen_status")] == ("consent_out_of_scope",)  # category not named
    assert why[("HSG", "tenancy_type")] == ("consent_out_of_scope",)  # agency not named
    assert why[("EH", "assessment_outcome")] == ("consent_out_of_scope",)
    assert all(f.legal_basis == "consent" for f in d.fields if f.allowed)


def test_record_and_decisions_are_audited_with_codes_only(w: ConsentWorld) -> None:
    before = w.gov.audit.count()
    rec = w.service.record(EH_WORKER, w.consent())
    entries = list(w.gov.audit.entries())[before:]
    assert len(entries) == 1 and entries[0].kind == "consent"
    body = json.loads(entries[0].body)
    assert body["type"] == "consent_recorded" and body["record_id"] == rec.record_id
    assert body["consenter"] == "parent" and body["evidence_ref"] == "EH-FORM-0042"
    assert w.ref("EH", "1001") not in entries[0].body  # refs stay in the store, not the log
    assert rec.audit_seq == entries[0].seq


def test_withdrawal_takes_effect_on_the_next_decision(w: ConsentWorld) -> None:
    rec = w.service.record(EH_WORKER, w.consent())
    assert _decide(w).allowed("SCH", "attendance_pct")
    w.tick()
    done, notices = w.service.withdraw(EH_WORKER, rec.record_id, "phone")
    assert done.withdrawn_at == w.clock[0] and done.withdrawn_by == "eh1"
    d = _decide(w)
    assert d.allowed_fields() == {}
    assert {f.reasons for f in d.fields if f.agency == "SCH" and f.field == "attendance_pct"} == {
        ("consent_withdrawn",)
    }
    # a withdrawn consent is no current consent: outside its scope there is simply none
    assert {f.reasons for f in d.fields if f.agency == "HSG"} == {("no_consent",)}
    assert sorted(p.parent.name for p in notices) == ["EH", "SCH"]  # the agencies told
    with pytest.raises(ConsentRecordError, match="only a current given consent"):
        w.service.withdraw(EH_WORKER, rec.record_id, "phone")


def test_withdrawal_also_overrides_an_agencys_own_consent_in_scope(w: ConsentWorld) -> None:
    w.gov.consent.record("P1", "SCH", "early_help", "given", dt.date(2026, 3, 1))
    w.gov.consent.record("P1", "HV", "early_help", "given", dt.date(2026, 3, 1))
    rec = w.service.record(EH_WORKER, w.consent(agencies=("SCH",), categories=("education",)))
    w.tick()
    w.service.withdraw(EH_WORKER, rec.record_id, "in_writing")
    d = _decide(w)
    assert not d.allowed("SCH", "attendance_pct")  # in the withdrawn scope
    assert d.allowed("HV", "visit_type")  # HV's own consent, outside it, still stands


def test_a_new_consent_after_a_withdrawal_counts_again(w: ConsentWorld) -> None:
    rec = w.service.record(EH_WORKER, w.consent())
    w.tick()
    w.service.withdraw(EH_WORKER, rec.record_id, "phone")
    w.tick()
    w.service.record(EH_WORKER, w.consent(agencies=("SCH",), categories=("education",)))
    d = _decide(w)
    assert d.allowed_fields() == {"SCH": ["attendance_pct", "exclusions", "free_school_meals"]}


def test_refusal_and_not_sought_give_nothing(w: ConsentWorld) -> None:
    w.service.record(
        EH_WORKER,
        w.consent(status="refused", consenter="young_person_16_plus", capacity="presumed_capacity"),
    )
    w.service.record(
        EH_WORKER,
        w.consent(
            status="not_sought",
            agencies=("HV",),
            categories=("health",),
            not_sought_reason="person_not_contactable",
        ),
    )
    d = _decide(w)
    assert d.allowed_fields() == {}
    assert ("consent_refused",) in {f.reasons for f in d.fields if f.agency == "SCH"}
    # a refusal overrides an earlier consent covering the same fields, not later ones
    w.tick()
    w.service.record(EH_WORKER, w.consent(agencies=("SCH",), categories=("education",)))
    assert _decide(w).allowed("SCH", "attendance_pct")


def test_review_date_ends_consent(w: ConsentWorld) -> None:
    w.service.record(
        EH_WORKER,
        w.consent(
            given_on=NOW.date() - dt.timedelta(days=30), review_by=NOW.date() + dt.timedelta(days=1)
        ),
    )
    assert _decide(w).allowed("SCH", "attendance_pct")
    w.tick(60 * 24 * 2)
    d = _decide(w)
    assert d.allowed_fields() == {}
    assert ("consent_expired",) in {f.reasons for f in d.fields}


@pytest.mark.parametrize(
    "change, field",
    [
        (
            {"consenter": "gillick_competent_child", "capacity": "parental_responsibility"},
            "capacity",
        ),
        ({"consenter": "grandparent"}, "consenter"),
        ({"method": None}, "method"),
        ({"status": "not_sought", "method": None, "evidence_ref": None}, "not_sought_reason"),
        ({"evidence_ref": None}, "evidence_ref"),
        ({"evidence_ref": "NHS 943 476 5919"}, "evidence_ref"),
        ({"evidence_ref": "9434765919"}, "evidence_ref"),
        ({"review_by": NOW.date()}, "review_by"),
        ({"given_on": NOW.date() + dt.timedelta(days=1)}, "given_on"),
    ],
)
def test_bad_records_are_refused_naming_the_field_not_the_value(
    w: ConsentWorld, change: dict, field: str
) -> None:
    before = w.gov.audit.count()
    with pytest.raises(ConsentRecordError) as exc:
        w.service.record(EH_WORKER, w.consent(**change))
    assert f"{field}:" in str(exc.value)
    assert "943" not in str(exc.value) and "grandparent" not in str(exc.value)
    assert w.gov.audit.count() == before  # nothing recorded


def test_only_a_worker_with_a_relationship_and_a_protocol_may_record(w: ConsentWorld) -> None:
    with pytest.raises(Forbidden) as exc:
        w.service.record(User("eh2", "practitioner", "EH"), w.consent())
    assert exc.value.reasons == ["no_legitimate_relationship"]
    with pytest.raises(Forbidden) as exc:
        w.service.record(User("eh1", "analyst", "EH"), w.consent())
    assert "role_not_row_level" in exc.value.reasons
    with pytest.raises(Forbidden) as exc:
        w.service.record(EH_WORKER, w.consent(purpose="housing_support"))
    assert exc.value.reasons == ["purpose_not_in_any_protocol_of_role"]
    last = json.loads(list(w.gov.audit.entries())[-1].body)
    assert last["type"] == "consent_action_refused" and last["action"] == "record"


def test_consent_follows_records_when_persons_merge(w: ConsentWorld) -> None:
    w.service.record(EH_WORKER, w.consent())
    # re-link: P1's records and a duplicate P3 (a second school record) become P7
    w.person_map(
        {
            "P7": [("EH", "1001"), ("SCH", "1001"), ("SCH", "1002"), ("HV", "1001")],
            "P2": [("EH", "2001"), ("HSG", "2001")],
        }
    )
    w.gov.relationships.add(Relationship("eh1", SubjectKind.PERSON, "P7", dt.date(2026, 1, 1)))
    d = _decide(w, subject=Subject("P7"))
    assert d.allowed("SCH", "attendance_pct") and d.allowed("EH", "record_type")
    assert [r.record_id for r in w.service.scoped.records_for("P7")]
    assert _decide(w).allowed_fields() == {}  # P1 no longer exists: nothing follows the id


def test_consent_follows_the_anchor_when_a_person_splits(w: ConsentWorld) -> None:
    rec = w.service.record(EH_WORKER, w.consent())
    # re-link: P1 was two children; EH's record (the anchor) stays with P1
    w.person_map(
        {
            "P1": [("EH", "1001"), ("HV", "1001")],
            "P5": [("SCH", "1001"), ("GP", "1001")],
            "P2": [("EH", "2001"), ("HSG", "2001")],
        }
    )
    w.gov.relationships.add(Relationship("eh1", SubjectKind.PERSON, "P5", dt.date(2026, 1, 1)))
    assert _decide(w).allowed("EH", "record_type")
    assert _decide(w, subject=Subject("P5")).allowed_fields() == {}  # not who consented
    # a withdrawal reaches both halves (it names all the refs)
    w.tick()
    w.service.withdraw(EH_WORKER, rec.record_id, "phone")
    assert _decide(w).allowed_fields() == {}
    d5 = _decide(w, subject=Subject("P5"))
    assert ("consent_withdrawn",) in {f.reasons for f in d5.fields if f.agency == "SCH"}


def test_anchor_split_across_two_persons_gives_consent_to_neither(w: ConsentWorld) -> None:
    w.person_map({"P1": [("EH", "1001"), ("EH", "1002"), ("SCH", "1001")], "P2": [("EH", "2001")]})
    w.service.record(EH_WORKER, w.consent())
    w.person_map(
        {"P1": [("EH", "1001"), ("SCH", "1001")], "P6": [("EH", "1002")], "P2": [("EH", "2001")]}
    )
    assert _decide(w).allowed_fields() == {}


def test_withdrawal_in_one_process_refuses_the_next_view_in_another(
    w: ConsentWorld, backend: tuple[str, str | None]
) -> None:
    """The workspace and the API are separate processes over one governance store: a
    withdrawal made through one is honoured by the other's very next decision."""
    from governance.audit import AuditLog, make_engine
    from governance.consent import SqlConsentRegistry
    from governance.consent_scoped import install
    from governance.decisions import Governance

    url, schema = backend
    engine = make_engine(url, schema)  # the other process: its own engine and registries
    other = Governance(
        AuditLog(engine), SqlConsentRegistry(engine), w.gov.relationships, PROTOCOLS, w.gov.roles
    )
    install(other, w.warehouse)
    rec = w.service.record(EH_WORKER, w.consent())
    assert other.decide(EH_WORKER, EARLY_HELP, SUBJECT, _eh_fields(), w.tick()).allowed(
        "SCH", "attendance_pct"
    )
    w.tick()
    w.service.withdraw(EH_WORKER, rec.record_id, "in_person")
    d = other.decide(EH_WORKER, EARLY_HELP, SUBJECT, _eh_fields(), w.tick())
    assert d.allowed_fields() == {}
    assert ("consent_withdrawn",) in {f.reasons for f in d.fields}
