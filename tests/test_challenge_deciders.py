"""Challenges of a refusal go to the IG lead or the Caldicott guardian (#20): each decided by
someone holding the role it was addressed to, in that role, and (where the partnership's
assignments name them) only by those named. Real governance store (SQLite and PostgreSQL),
every refusal an audit entry."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml
from test_sharing_log import CG, IG, NOW, P1, SW, WHY, _members

from governance.access import ASSIGNMENTS_FILE, AccessControl, load_assignments
from governance.audit import AuditLog
from governance.decisions import Governance, User
from governance.policy import PolicyError, load_roles
from governance.relationships import Relationship, RelationshipRegistry, SubjectKind
from governance.sharing import SharingLog
from governance.sharing_model import About, SharingRefused


def _log(backend: tuple[str, str | None], access: AccessControl | None = None) -> SharingLog:
    url, schema = backend
    rels = RelationshipRegistry([Relationship("sw1", SubjectKind.PERSON, P1, dt.date(2026, 1, 1))])
    gov = Governance(AuditLog(url, schema=schema), relationships=rels, access=access)
    return SharingLog(gov, resolve=_members, clock=lambda: NOW)


def _refusal_challenged(log: SharingLog, to: str) -> str:
    nope = log.not_offered(SW, About(P1), "HV", ["case_notes"], "not_necessary", WHY)
    return log.challenge(SW, nope.audit_seq, to, "health visiting needed this plan").record_id


def _refused(log: SharingLog, user: User, cid: str, as_: str) -> list[str]:
    with pytest.raises(SharingRefused) as exc:
        log.decide(user, cid, "overturned", as_, "the plan should have been offered then")
    entry = list(log.audit.entries())[-1].data()
    assert entry["type"] == "sharing_record_refused" and entry["reasons"] == exc.value.reasons
    return exc.value.reasons


def test_the_role_it_was_addressed_to_decides_in_that_role(
    backend: tuple[str, str | None],
) -> None:
    assert load_roles()["caldicott_guardian"].receives_alerts
    assert not load_roles()["caldicott_guardian"].row_level
    log = _log(backend)
    to_cg = _refusal_challenged(log, "caldicott_guardian")
    assert _refused(log, IG, to_cg, "ig_lead") == ["challenge_addressed_to_other_role"]
    assert _refused(log, IG, to_cg, "caldicott_guardian") == ["decided_as_not_your_role"]
    d = log.decide(CG, to_cg, "upheld", "caldicott_guardian", "proportionate at that stage")
    body = log.audit.get(d.audit_seq).data()
    assert (body["outcome"], body["decided_as"], body["user_id"]) == (
        "upheld",
        "caldicott_guardian",
        "cg1",
    )
    log2 = _log(backend)
    to_ig = log2.challenge(
        SW,
        log2.not_offered(SW, About(P1), "SCH", ["case_notes"], "not_necessary", WHY).audit_seq,
        "ig_lead",
        "the school needed to know of this plan",
    ).record_id
    assert _refused(log2, CG, to_ig, "caldicott_guardian") == ["challenge_addressed_to_other_role"]
    assert log2.decide(IG, to_ig, "overturned", "ig_lead", "the school should have been told")


def test_named_deciders_in_the_assignments(backend: tuple[str, str | None], tmp_path: Path) -> None:
    doc = yaml.safe_load(ASSIGNMENTS_FILE.read_text())
    doc["challenge_deciders"] = {"caldicott_guardian": ["cg1"]}
    path = tmp_path / "assignments.yaml"
    path.write_text(yaml.safe_dump(doc))
    assignments = load_assignments(path)
    assert assignments.challenge_deciders == {"caldicott_guardian": frozenset({"cg1"})}
    log = _log(backend, AccessControl(assignments, None))
    cid = _refusal_challenged(log, "caldicott_guardian")
    other_cg = User("cg2", "caldicott_guardian", None)
    assert _refused(log, other_cg, cid, "caldicott_guardian") == ["not_a_named_decider"]
    assert log.decide(CG, cid, "overturned", "caldicott_guardian", "should have been offered")
    doc["challenge_deciders"] = {"practitioner": ["sw1"]}
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(PolicyError, match=r"challenge_deciders\.practitioner"):
        load_assignments(path)
