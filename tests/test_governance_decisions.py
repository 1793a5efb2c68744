"""decide(): property tests over role x protocol x consent x relationship x break-glass x fields,
plus concrete break-glass, offer-mode and audit-side-effect checks. Real SQLite audit store."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from governance.audit import AuditLog
from governance.consent import ConsentRegistry
from governance.decision_records import BreakGlass, Interaction
from governance.decisions import Governance, Subject, User
from governance.models import Alert, NotificationDue
from governance.policy import (
    AGENCY_CODES,
    ROLE_NAMES,
    ConsentRule,
    load_payload_fields,
    load_protocols,
    load_roles,
)
from governance.relationships import Relationship, RelationshipRegistry, SubjectKind
from governance.testing import signed_and_verified

PROTOCOLS = load_protocols()
# A test-only variant naming a single role, so the role rule is exercised on its own.
_MGR = PROTOCOLS["mash_information_sharing"].model_copy(update={"roles": ("team_manager",)})
PROTOCOLS_UNDER_TEST = {**PROTOCOLS, "mash_managers_only": _MGR}
ROLES = load_roles()
PAYLOAD = sorted(load_payload_fields())
AGENCIES = sorted(AGENCY_CODES)
AT = dt.datetime(2026, 6, 15, 14, 30, tzinfo=dt.UTC)
TODAY = AT.date()
SUBJECT = Subject("P-0001", "H-0001")
GOOD_JUSTIFICATION = "Child disclosed injuries at school; strategy discussion convened today"
IDENTIFIER_JUSTIFICATION = "Child at SW1A 1AA with NHS no 943 476 5919 disclosed injuries"

# One real on-disk-free store shared by all examples; counts are compared before/after.
_LOG = AuditLog("sqlite://")

# Biased towards the paths that can allow something, so the "allowed" branches are exercised.
relationship_kinds = st.sampled_from(
    ["person", "household", "person", "household", "none", "expired", "future", "other_person"]
)
roles = st.sampled_from(["practitioner", "team_manager"] * 3 + sorted(ROLE_NAMES))
consent_events = st.lists(
    st.tuples(
        st.sampled_from(AGENCIES),
        st.sampled_from(["given", "given", "given", "refused", "withdrawn"]),
        st.integers(min_value=-60, max_value=3),
    ),
    max_size=6,
)
break_glass_kinds = st.sampled_from(
    ["none", "valid", "expired", "short", "identifier", "bad_category", "too_long"]
)
field_requests = st.lists(
    st.tuples(
        st.sampled_from(AGENCIES + ["XYZ"]),
        st.sampled_from(PAYLOAD + ["given_name", "postcode", "nhs_number"]),
    ),
    max_size=8,
)


def _relationships(kind: str) -> RelationshipRegistry:
    d = dt.timedelta(days=30)
    rel = {
        "none": None,
        "person": Relationship("u1", SubjectKind.PERSON, SUBJECT.person_id, TODAY - d),
        "household": Relationship("u1", SubjectKind.HOUSEHOLD, "H-0001", TODAY - d, TODAY),
        "expired": Relationship(
            "u1", SubjectKind.PERSON, SUBJECT.person_id, TODAY - 2 * d, TODAY - dt.timedelta(days=1)
        ),
        "future": Relationship(
            "u1", SubjectKind.PERSON, SUBJECT.person_id, TODAY + dt.timedelta(days=1)
        ),
        "other_person": Relationship("u1", SubjectKind.PERSON, "P-9999", TODAY - d),
    }[kind]
    return RelationshipRegistry([rel] if rel else [])


def _break_glass(kind: str) -> BreakGlass | None:
    start = AT - dt.timedelta(hours=2)
    return {
        "none": None,
        "valid": BreakGlass("risk_of_significant_harm", GOOD_JUSTIFICATION, start, 12),
        "expired": BreakGlass(
            "immediate_danger", GOOD_JUSTIFICATION, AT - dt.timedelta(hours=30), 24
        ),
        "short": BreakGlass("risk_of_significant_harm", "urgent", start, 12),
        "identifier": BreakGlass("risk_of_significant_harm", IDENTIFIER_JUSTIFICATION, start, 12),
        "bad_category": BreakGlass("curiosity", GOOD_JUSTIFICATION, start, 12),
        "too_long": BreakGlass("risk_of_significant_harm", GOOD_JUSTIFICATION, start, 200),
    }[kind]


def _consent(events: list[tuple[str, str, int]], purpose: str) -> ConsentRegistry:
    reg = ConsentRegistry()
    for agency, status, offset in events:
        reg.record(SUBJECT.person_id, agency, purpose, status, TODAY + dt.timedelta(days=offset))
    return reg


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    protocol_id=st.sampled_from(sorted(PROTOCOLS_UNDER_TEST)),
    role=roles,
    events=consent_events,
    rel_kind=relationship_kinds,
    bg_kind=break_glass_kinds,
    withdraw_today=st.sampled_from([None] * 7 + AGENCIES),
    data=st.data(),
)
def test_decision_properties(
    protocol_id: str,
    role: str,
    events: list[tuple[str, str, int]],
    rel_kind: str,
    bg_kind: str,
    withdraw_today: str | None,
    data: st.DataObject,
) -> None:
    proto = PROTOCOLS_UNDER_TEST[protocol_id]
    # half the requests from the protocol's own dataset, so allowed paths are well exercised
    in_dataset = [(a, f) for a, fs in proto.agencies.items() for f in fs]
    requested = data.draw(
        st.lists(
            st.one_of(
                st.sampled_from(in_dataset), field_requests.filter(bool).map(lambda xs: xs[0])
            ),
            max_size=8,
        ),
        label="requested",
    )
    consent = _consent(events, proto.consent_purpose)
    if withdraw_today is not None:
        consent.record(SUBJECT.person_id, withdraw_today, proto.consent_purpose, "withdrawn", TODAY)
    gov = Governance(_LOG, consent, _relationships(rel_kind), PROTOCOLS_UNDER_TEST, ROLES)
    bg = _break_glass(bg_kind)
    before = _LOG.count()

    d = gov.decide(User("u1", role), proto, SUBJECT, requested, AT, bg)

    # exactly one audit entry, and it is this decision
    assert _LOG.count() == before + 1
    rec = _LOG.get(before + 1)
    assert rec is not None
    last = json.loads(rec.body)
    assert last["decision_id"] == d.decision_id and d.audit_seq == before + 1
    # the identifier-like justification never reaches the log
    assert "943 476 5919" not in json.dumps(last) and "SW1A" not in json.dumps(last)

    # every distinct request is decided exactly once
    assert [(f.agency, f.field) for f in d.fields] == list(dict.fromkeys(requested))

    rel_ok = rel_kind in ("person", "household")
    role_ok = role in proto.roles
    bg_valid = bg_kind == "valid" and proto.break_glass.allowed and ROLES[role].may_break_glass
    for f in d.fields:
        if not f.allowed:
            assert f.reasons and f.legal_basis is None
            continue
        # never outside the minimum dataset, never the wrong role or no relationship
        assert f.field in proto.minimum_dataset(f.agency)
        assert role_ok and rel_ok
        # no consent and no gateway -> never allowed
        given_events = [e for e in events if e[0] == f.agency and e[1] == "given" and e[2] <= 0]
        if proto.consent_rule is not ConsentRule.NOT_REQUIRED_UNDER_GATEWAY:
            assert given_events or (bg_valid and f.legal_basis == proto.legal_gateway)
            # a withdrawal recorded today (anywhere) is honoured at once
            if withdraw_today is not None:
                assert bg_valid and f.reasons == ("break_glass_override",)
        else:
            assert f.legal_basis == proto.legal_gateway
    assert d.break_glass_used == any(f.reasons == ("break_glass_override",) for f in d.fields)
    assert (d.notification_due_by is not None) == d.break_glass_used
    assert d.alert_raised == (bg is not None)

    # interactions partition the request: each field disclosed or refused exactly once
    disclosed = [
        (i.agency, x)
        for i in d.interactions
        if i.kind is Interaction.DISCLOSE_ON_REQUEST
        for x in i.fields
    ]
    refused = [
        (i.agency, x)
        for i in d.interactions
        if i.kind is Interaction.REFUSE_REQUEST
        for x in i.fields
    ]
    assert sorted(disclosed) == sorted((f.agency, f.field) for f in d.fields if f.allowed)
    assert sorted(refused) == sorted((f.agency, f.field) for f in d.fields if not f.allowed)
    assert d.interactions[0].kind is Interaction.REQUEST


@pytest.fixture
def gov(tmp_path) -> Governance:
    log = AuditLog(f"sqlite:///{tmp_path}/gov.db")
    rels = RelationshipRegistry(
        [
            Relationship("sw1", SubjectKind.HOUSEHOLD, "H-0001", dt.date(2026, 1, 1)),
            Relationship("ana", SubjectKind.HOUSEHOLD, "H-0001", dt.date(2026, 1, 1)),
        ]
    )
    return Governance(log, ConsentRegistry(), rels, PROTOCOLS, ROLES)


def _count(gov: Governance, model: type) -> int:
    with gov.audit.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def test_withdrawal_is_honoured_immediately(gov: Governance, tmp_path) -> None:
    sw = User("sw1", "practitioner")
    fields = [("SCH", "attendance_pct"), ("EH", "assessment_outcome")]
    gov.consent.record(SUBJECT.person_id, "SCH", "early_help", "given", dt.date(2026, 3, 1))
    gov.consent.record(SUBJECT.person_id, "EH", "early_help", "given", dt.date(2026, 3, 1))
    first = gov.decide(sw, "early_help_family_support", SUBJECT, fields, AT)
    assert first.allowed_fields() == {"SCH": ["attendance_pct"], "EH": ["assessment_outcome"]}
    gov.consent.record(SUBJECT.person_id, "EH", "early_help", "withdrawn", AT)
    second = gov.decide(
        sw, "early_help_family_support", SUBJECT, fields, AT + dt.timedelta(minutes=1)
    )
    assert second.allowed_fields() == {}
    assert {f.reasons for f in second.fields} == {("consent_withdrawn",)}
    assert gov.audit.count() == 2 and signed_and_verified(gov.audit, tmp_path).ok


def test_break_glass_override_alerts_and_records_notification(gov: Governance) -> None:
    tm = User("sw1", "team_manager")
    gov.consent.record(SUBJECT.person_id, "POL", "mash", "refused", dt.date(2026, 5, 1))
    fields = [("POL", "risk_level"), ("POL", "incident_notes")]
    denied = gov.decide(tm, "mash_information_sharing", SUBJECT, fields, AT)
    assert denied.allowed_fields() == {} and _count(gov, Alert) == 0
    bg = BreakGlass("risk_of_significant_harm", GOOD_JUSTIFICATION, AT, 4)
    d = gov.decide(tm, "mash_information_sharing", SUBJECT, fields, AT, bg)
    assert d.allowed_fields() == {"POL": ["risk_level"]}  # minimum dataset still applies
    assert d.break_glass_used and d.notification_due_by == TODAY + dt.timedelta(days=30)
    assert _count(gov, Alert) == 1 and _count(gov, NotificationDue) == 1
    body = json.loads(list(gov.audit.entries())[-1].body)
    assert body["break_glass"]["justification"].startswith("risk_of_significant_harm: Child")
    assert body["fields"][0]["legal_basis"] == "CA2004_s11"
    # after the window closes the same break-glass grants nothing, but is still alerted
    late = gov.decide(
        tm, "mash_information_sharing", SUBJECT, fields, AT + dt.timedelta(hours=5), bg
    )
    assert late.allowed_fields() == {} and "break_glass_expired" in late.break_glass_problems
    assert _count(gov, Alert) == 2 and _count(gov, NotificationDue) == 1


def test_break_glass_refused_where_protocol_or_role_does_not_allow(gov: Governance) -> None:
    bg = BreakGlass("risk_of_significant_harm", GOOD_JUSTIFICATION, AT, 4)
    d = gov.decide(
        User("sw1", "practitioner"),
        "early_help_family_support",
        SUBJECT,
        [("SCH", "attendance_pct")],
        AT,
        bg,
    )
    assert not d.allowed("SCH", "attendance_pct")
    assert "break_glass_not_permitted_by_protocol" in d.break_glass_problems
    d = gov.decide(
        User("ana", "analyst"),
        "mash_information_sharing",
        SUBJECT,
        [("SCH", "attendance_pct")],
        AT,
        bg,
    )
    assert not d.allowed("SCH", "attendance_pct")
    assert "role_may_not_break_glass" in d.break_glass_problems
    assert set(d.fields[0].reasons) >= {"role_not_in_protocol", "role_not_row_level"}


def test_gateway_protocol_and_unknown_protocol(gov: Governance) -> None:
    sw = User("sw1", "practitioner")
    d = gov.decide(
        sw,
        "s47_child_protection_enquiry",
        SUBJECT,
        [("POL", "incident_notes"), ("GP", "case_notes")],
        AT,
    )
    assert d.allowed("POL", "incident_notes") and not d.allowed("GP", "case_notes")
    assert d.fields[0].legal_basis == "CA1989_s47" and d.fields[0].consent == "none"
    u = gov.decide(sw, "fishing_expedition", SUBJECT, [("POL", "incident_notes")], AT)
    assert u.allowed_fields() == {} and "unknown_protocol" in u.fields[0].reasons
    late = gov.decide(
        sw,
        "s47_child_protection_enquiry",
        SUBJECT,
        [("POL", "incident_notes")],
        dt.datetime(2028, 1, 1, tzinfo=dt.UTC),
    )
    assert "protocol_not_in_force" in late.fields[0].reasons
    assert gov.audit.count() == 3
    with pytest.raises(ValueError, match="timezone-aware"):
        gov.decide(sw, "s47_child_protection_enquiry", SUBJECT, [], AT.replace(tzinfo=None))
    assert gov.audit.count() == 3


def test_offer_mode_interactions(gov: Governance) -> None:
    gov.consent.record(SUBJECT.person_id, "SCH", "mash", "given", dt.date(2026, 6, 1))
    fields = [("SCH", "attendance_pct"), ("POL", "risk_level"), ("SCH", "case_notes")]
    d = gov.decide(
        User("sw1", "practitioner"), "mash_information_sharing", SUBJECT, fields, AT, mode="offer"
    )
    kinds = {(i.kind, i.agency): i.fields for i in d.interactions}
    assert kinds[(Interaction.OFFER, "SCH")] == ("attendance_pct",)
    assert kinds[(Interaction.ACCEPT, "SCH")] == ("attendance_pct",)
    assert kinds[(Interaction.WITHHOLD_OFFER, "SCH")] == ("case_notes",)
    assert kinds[(Interaction.WITHHOLD_OFFER, "POL")] == ("risk_level",)
    # a worker with no relationship: offered on information grounds, declined on theirs
    stranger = gov.decide(
        User("nobody", "practitioner"),
        "mash_information_sharing",
        SUBJECT,
        [("SCH", "attendance_pct")],
        AT,
        mode="offer",
    )
    assert [i.kind for i in stranger.interactions] == [Interaction.OFFER, Interaction.DECLINE_OFFER]
    seq = gov.record_withheld_request(
        User("sw1", "practitioner"), "mash_information_sharing", SUBJECT, "not_proportionate", AT
    )
    assert seq == gov.audit.count() == 3
    with pytest.raises(ValueError, match="short lower-case code"):
        gov.record_withheld_request(
            User("sw1", "practitioner"),
            "mash_information_sharing",
            SUBJECT,
            "Because Jane Smith said so",
            AT,
        )
