"""The whole decision log (governance.sharing) on real stores: SQLite and PostgreSQL.

Every interaction the rules never see is one entry in the hash-chained audit log, the chain
verifies against the IG lead's trusted key, a justification that looks like an identifier is
refused and never stored, and a tampered entry is detected.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import select, update

from governance.audit import AuditLog
from governance.decisions import Governance, User
from governance.models import AuditEntry
from governance.relationships import Relationship, RelationshipRegistry, Subject, SubjectKind
from governance.sharing import SharingLog
from governance.sharing_model import (
    About,
    BadSharingRecord,
    SharingConflict,
    SharingNotFound,
    SharingRefused,
)

PG_SCHEMA_PREFIX = "gov_test_sharing"
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
HH, P1, P2 = "H-1", "P-1", "P-2"
SW = User("sw1", "practitioner", "CSC")
HV = User("hv1", "practitioner", "HV")
OUTSIDER = User("pc9", "practitioner", "POL")
IG = User("ig1", "ig_lead", None)
CG = User("cg1", "caldicott_guardian", None)
WHY = "the family asked that the school knows about the support plan"


def _members(about: About) -> About | None:
    """The linkage's view of who is where (what ViewService.person_household answers)."""
    if about.person_id is not None:
        return About(about.person_id, HH) if about.person_id in (P1, P2) else None
    return about if about.household_id == HH else None


@pytest.fixture
def log(backend: tuple[str, str | None]) -> SharingLog:
    url, schema = backend
    rels = RelationshipRegistry(
        [
            Relationship("sw1", SubjectKind.HOUSEHOLD, HH, dt.date(2026, 1, 1)),
            Relationship("hv1", SubjectKind.PERSON, P1, dt.date(2026, 1, 1)),
        ]
    )
    gov = Governance(AuditLog(url, schema=schema), relationships=rels)
    return SharingLog(gov, resolve=_members, clock=lambda: NOW)


def _bodies(log: SharingLog) -> list[dict]:
    return [r.data() for r in log.audit.entries()]


def test_every_interaction_the_rules_never_see_is_one_chained_entry(
    log: SharingLog, tmp_path, trusted, hub_key
) -> None:  # noqa: ANN001
    offer = log.offer(
        SW, About(P1), "HV", ["social_care_plan"], "consent", WHY, team="assessment team 1"
    )
    assert [o["offer_id"] for o in log.open_offers("HV")] == [offer.record_id]
    refused = log.respond(
        HV,
        offer.record_id,
        accept=False,
        reason="already_known",
        justification="the health visitor already holds the same plan",
    )
    assert log.open_offers("HV") == []
    with pytest.raises(SharingConflict):  # answered once only
        log.respond(HV, offer.record_id, accept=True)
    not_offered = log.not_offered(
        SW,
        About(household_id=HH),
        "POL",
        ["case_notes"],
        "not_proportionate",
        "police involvement is historic and not relevant now",
    )
    not_asked = log.not_requested(
        HV,
        About(P1),
        "SCH",
        ["attendance"],
        "not_necessary",
        "the visit found no concern that school data would inform",
    )
    off = log.off_system(
        SW,
        About(P2),
        channel="strategy_meeting",
        occurred_on=dt.date(2026, 5, 30),
        from_agency="CSC",
        to_agency="POL",
        asked=True,
        categories=["case_notes"],
        basis="CA1989_s47",
        justification="strategy discussion under section forty seven held",
    )
    challenge = log.challenge(
        HV,
        refused.audit_seq,
        "caldicott_guardian",
        "the plan differs from ours and the refusal should be reviewed",
    )
    assert [c["challenge_id"] for c in log.open_challenges()] == [challenge.record_id]
    decided = log.decide(
        CG,
        challenge.record_id,
        "overturned",
        "caldicott_guardian",
        "the offer was proportionate and should have been accepted",
    )
    assert log.open_challenges() == []

    bodies = {b["record_id"]: b for b in _bodies(log)}
    kinds = {rid: [i["kind"] for i in b["interactions"]] for rid, b in bodies.items()}
    assert kinds[offer.record_id] == ["offer"]
    assert kinds[refused.record_id] == ["decline_offer"]
    assert bodies[refused.record_id]["interactions"][0]["agency"] == "HV"
    assert kinds[not_offered.record_id] == ["withhold_offer"]
    assert kinds[not_asked.record_id] == ["withhold_request"]
    assert kinds[off.record_id] == ["request", "disclose_on_request"]
    assert bodies[off.record_id]["channel"] == "strategy_meeting"
    assert bodies[offer.record_id]["team"] == "assessment team 1"
    # the challenge names what it challenged; the decision who, as what, and why
    assert bodies[challenge.record_id]["challenged"] == [
        {"kind": "decline_offer", "agency": "HV", "side": "actor", "user_id": "hv1", "team": None}
    ]
    d = bodies[decided.record_id]
    assert (d["outcome"], d["decided_as"], d["user_id"]) == (
        "overturned",
        "caldicott_guardian",
        "cg1",
    )
    assert d["reasons"].startswith("the offer was proportionate")
    # the chain verifies against the IG lead's key, with these entries in it
    AuditLog(log.audit.engine, signing_key=hub_key, create=False).checkpoint("test")
    report = log.audit.verify(trusted)
    assert report.ok, report
    assert log.audit.count() == 7


def test_justification_with_an_identifier_is_refused_and_not_stored(log: SharingLog) -> None:
    texts = [
        "shared because Mrs Jane Smith rang from the school office",
        "the mother rang from SW1A 1AA and asked us to share it",
        "phone call about NHS number 943 476 5919 confirmed it",
    ]
    for text in texts:
        with pytest.raises(SharingRefused) as exc:
            log.off_system(
                SW,
                About(P1),
                channel="phone_call",
                occurred_on=NOW.date(),
                from_agency="CSC",
                to_agency="SCH",
                asked=False,
                categories=["case_notes"],
                basis="consent",
                justification=text,
            )
        assert exc.value.reasons == ["justification_contains_identifier"]
        assert exc.value.audit_seq is not None
    with pytest.raises(SharingRefused):
        log.not_offered(
            SW,
            About(P1),
            None,
            ["case_notes"],
            "other",
            "not offered: the child was born on 3rd March 2015",
        )
    raw = "".join(r.body for r in log.audit.entries())
    for needle in ("Smith", "SW1A", "943 476", "3rd March"):
        assert needle not in raw
    refused = [b for b in _bodies(log) if b["type"] == "sharing_record_refused"]
    assert len(refused) == 4 and all(
        b["reasons"] == ["justification_contains_identifier"] for b in refused
    )
    assert not [b for b in _bodies(log) if b["type"] == "sharing_off_system"]


def test_tampering_with_a_recorded_share_is_detected(log: SharingLog, trusted, hub_key) -> None:  # noqa: ANN001
    off = log.off_system(
        SW,
        About(P1),
        channel="phone_call",
        occurred_on=NOW.date(),
        from_agency="CSC",
        to_agency="SCH",
        asked=False,
        categories=["case_notes"],
        basis="consent",
        justification="the parent agreed that the school should know",
    )
    log.not_requested(
        SW,
        About(P2),
        None,
        ["attendance"],
        "not_necessary",
        "no concern about school attendance has been raised",
    )
    AuditLog(log.audit.engine, signing_key=hub_key, create=False).checkpoint("test")
    assert log.audit.verify(trusted).ok
    # an insider rewrites the basis of the off-system share after the fact
    body = json.loads(log.audit.get(off.audit_seq).body)
    body["basis"] = "CA1989_s47"
    with log.audit.engine.begin() as conn:
        conn.execute(
            update(AuditEntry)
            .where(AuditEntry.seq == off.audit_seq)
            .values(body=json.dumps(body, sort_keys=True, separators=(",", ":")))
        )
        assert (
            conn.execute(select(AuditEntry.body).where(AuditEntry.seq == off.audit_seq))
            .scalar_one()
            .find("CA1989_s47")
            > 0
        )
    report = log.audit.verify(trusted)
    assert not report.ok
    assert report.first_bad_seq == off.audit_seq


def test_who_may_record_and_decide(log: SharingLog) -> None:
    # no relationship: refused the same way whether or not the person exists
    for pid in (P1, "P-NOT-THERE"):
        with pytest.raises(SharingRefused) as exc:
            log.not_offered(OUTSIDER, About(pid), None, ["incidents"], "not_relevant", WHY)
        assert exc.value.reasons == ["no_legitimate_relationship"]
    # the health visitor's allocation is to P1 only; the household's other member is out
    with pytest.raises(SharingRefused):
        log.not_requested(HV, About(P2), None, ["attendance"], "not_necessary", WHY)
    # a caller cannot claim a household for a person the linkage places elsewhere
    with pytest.raises(SharingRefused):
        log.not_offered(SW, About("P-ELSEWHERE", HH), None, ["incidents"], "other", WHY)
    with pytest.raises(BadSharingRecord) as bad:
        log.offer(SW, About(P1), "CSC", ["case_notes"], "consent", WHY)
    assert bad.value.field == "to_agency"
    with pytest.raises(BadSharingRecord) as bad:
        log.offer(SW, About(P1), "HV", ["case_notes"], "because we felt like it", WHY)
    assert bad.value.field == "basis" and "felt" not in str(bad.value)
    with pytest.raises(BadSharingRecord):
        log.off_system(
            SW,
            About(P1),
            channel="phone_call",
            occurred_on=NOW.date() + dt.timedelta(days=1),
            from_agency="CSC",
            to_agency="SCH",
            asked=True,
            categories=["case_notes"],
            basis="consent",
            justification=WHY,
        )
    # challenges: only of a refusal; decided by the IG lead, not by the one who raised it
    offer = log.offer(SW, About(P1), "HV", ["case_notes"], "consent", WHY)
    with pytest.raises(SharingRefused):
        log.challenge(SW, offer.audit_seq, "ig_lead", "an offer is not a refusal at all here")
    with pytest.raises(SharingRefused):
        log.challenge(SW, 10_000, "ig_lead", "there is no such entry in this audit log")
    nope = log.not_offered(SW, About(P1), "HV", ["case_notes"], "not_necessary", WHY)
    with pytest.raises(SharingRefused):  # not theirs, no relationship with the person
        log.challenge(OUTSIDER, nope.audit_seq, "ig_lead", "police should have been told")
    ch = log.challenge(HV, nope.audit_seq, "ig_lead", "health visiting needed this plan")
    with pytest.raises(SharingConflict):
        log.challenge(HV, nope.audit_seq, "ig_lead", "raising the same challenge again")
    with pytest.raises(SharingRefused) as exc:
        log.decide(SW, ch.record_id, "overturned", "ig_lead", "I think I was wrong there")
    assert exc.value.reasons == ["role_may_not_decide_challenges"]
    ig_raiser = User("ig2", "ig_lead", None)
    assert log.decide(
        IG, ch.record_id, "upheld", "ig_lead", "not offering was proportionate at that stage"
    ).audit_seq
    with pytest.raises(SharingConflict):
        log.decide(ig_raiser, ch.record_id, "overturned", "ig_lead", WHY)
    with pytest.raises(SharingNotFound):
        log.decide(IG, "0" * 32, "upheld", "ig_lead", WHY)
    with pytest.raises(SharingNotFound):  # an offer made to another agency is not theirs
        log.respond(OUTSIDER, offer.record_id, accept=True)


def test_a_rules_refusal_can_be_challenged(log: SharingLog) -> None:
    d = log.gov.decide(
        SW, "early_help_family_support", Subject(P1, HH), [("SCH", "attendance_pct")], NOW
    )
    assert not d.allowed("SCH", "attendance_pct")
    ch = log.challenge(
        SW, d.audit_seq, "ig_lead", "the family consented and expects the school to share this"
    )
    body = log.audit.get(ch.audit_seq).data()
    assert {
        "kind": "refuse_request",
        "agency": "SCH",
        "side": "rules",
        "user_id": "sw1",
        "team": None,
    } in body["challenged"]


def test_an_offer_answered_twice_at_once_is_answered_once(log: SharingLog) -> None:
    import threading

    offer = log.offer(SW, About(P1), "HV", ["case_notes"], "consent", WHY)
    barrier, results = threading.Barrier(2), []

    def answer(accept: bool) -> None:
        barrier.wait(timeout=30)
        try:
            log.respond(
                HV,
                offer.record_id,
                accept,
                reason=None if accept else "not_relevant",
                justification=None if accept else "not relevant to the visits we make",
            )
            results.append("recorded")
        except SharingConflict:
            results.append("conflict")

    threads = [threading.Thread(target=answer, args=(a,)) for a in (True, False)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(results) == ["conflict", "recorded"]
    answers = [b for b in _bodies(log) if b["type"] == "sharing_offer_response"]
    assert len(answers) == 1


def test_the_subject_access_report_tells_the_person_of_off_system_sharing(log: SharingLog) -> None:
    from governance.reports.sar import collect_sar, render_sar

    log.off_system(
        SW,
        About(P1),
        channel="strategy_meeting",
        occurred_on=NOW.date(),
        from_agency="CSC",
        to_agency="POL",
        asked=True,
        categories=["case_notes"],
        basis="CA1989_s47",
        justification=WHY,
    )
    log.not_offered(SW, About(P2), None, ["case_notes"], "not_relevant", WHY)
    report = collect_sar(log.audit, P1)
    assert [e.entry_type for e in report.entries] == ["sharing_off_system"]
    html = render_sar(report)
    assert "shared outside the system" in html and "P-2" not in html
