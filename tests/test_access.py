"""Access: assignment of protocols to agencies, teams and users; team managers; data-controller
sign-off of each protocol version; manager approval of break-glass; restricted records.

Every rule on a real store (SQLite file and a PostgreSQL schema: the `backend` fixture) over the
linked test world's real warehouse, each attack performed end to end and shown to fail.
"""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

import duckdb
import pytest
from access_world import (
    DSL,
    EARLY_HELP,
    MASH,
    OTHER_TM,
    PEER,
    S47,
    SW,
    TM,
    access_hub,
    flag_restricted,
)
from test_api import NOW, World, build_world

from governance.access import load_assignments, parse_assignments
from governance.approvals import ApprovalRefused, ApprovalStore
from governance.audit import AuditLog
from governance.decision_records import BreakGlass
from governance.decisions import User
from governance.identity import IdentityService
from governance.policy import PolicyError, load_protocol, load_protocols
from governance.relationships import Subject
from governance.restricted import RestrictionError, RestrictionStore
from governance.service import BreakGlassAsk, Forbidden
from governance.signoff import SignOffError

PG_SCHEMA_PREFIX = "access20_test"
WHY = "strategy discussion needs the police risk picture tonight"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory)


# --- assignments file: validated with clear errors ----------------------------------------------


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        (
            {"assignments_version": 2, "protocols": {S47: {"agencies": ["CSC"]}}},
            "assignments_version: must be 1",
        ),
        (
            {"assignments_version": 1, "protocols": {"no_such_protocol": {"agencies": ["CSC"]}}},
            "protocols.no_such_protocol: unknown protocol",
        ),
        (
            {"assignments_version": 1, "protocols": {S47: {"agencies": ["XXX"]}}},
            "protocols.s47_child_protection_enquiry.agencies: unknown agency 'XXX'",
        ),
        (
            {"assignments_version": 1, "protocols": {S47: {"teams": ["ghost_team"]}}},
            "protocols.s47_child_protection_enquiry.teams: unknown team 'ghost_team'",
        ),
        (
            {"assignments_version": 1, "protocols": {S47: {}}},
            "protocols.s47_child_protection_enquiry: assigned to nobody",
        ),
        (
            {"assignments_version": 1, "protocols": {S47: {"agencies": ["CSC"], "roles": ["x"]}}},
            "protocols.s47_child_protection_enquiry.roles: unknown key",
        ),
        (
            {
                "assignments_version": 1,
                "teams": {"t1": {"agency": "CSC", "managers": ["m1"], "members": ["m1"]}},
                "protocols": {S47: {"teams": ["t1"]}},
            },
            "teams.t1.members: 'm1' is also a manager",
        ),
        (
            {
                "assignments_version": 1,
                "teams": {"t1": {"agency": "CSC", "members": ["a"]}},
                "protocols": {S47: {"teams": ["t1"]}},
            },
            "teams.t1.managers: a team needs at least one manager",
        ),
        (
            {"assignments_version": 1, "protocols": {S47: {"users": ["bad id with spaces"]}}},
            "protocols.s47_child_protection_enquiry.users.0: "
            "'bad id with spaces' is not a valid id",
        ),
    ],
)
def test_assignments_errors_name_file_and_key(doc: dict, where: str) -> None:
    with pytest.raises(PolicyError) as exc:
        parse_assignments(doc, "assignments.yaml", load_protocols())
    assert str(exc.value).startswith("assignments.yaml: ") and where in str(exc.value)


def test_shipped_assignments_load_against_shipped_protocols() -> None:
    a = load_assignments(protocols=load_protocols())
    assert a.may_act(SW, S47) and not a.may_act(DSL, S47) and a.may_act(DSL, EARLY_HELP)
    assert a.manages(TM.user_id, SW.user_id) and not a.manages(OTHER_TM.user_id, SW.user_id)
    assert not a.manages(SW.user_id, SW.user_id)


def test_requires_approval_needs_break_glass_allowed(tmp_path: Path) -> None:
    src = load_protocols()[S47].model_dump(mode="json")
    src["break_glass"] = {"allowed": False, "requires_approval": True}
    import yaml

    path = tmp_path / f"{S47}.yaml"
    path.write_text(yaml.safe_dump(src))
    with pytest.raises(PolicyError, match="break_glass: .*requires_approval given but"):
        load_protocol(path)


# --- assignment decides which protocols a user may act under ------------------------------------


def test_dsl_with_allocation_is_refused_s47_notes_but_social_worker_is_not(
    world: World, tmp_path: Path, backend: tuple[str, str | None]
) -> None:
    hub = access_hub(world, tmp_path, *backend)
    fields = [("CSC", "case_notes"), ("POL", "incident_notes")]
    subject = Subject(world.person, world.household)
    d = hub.gov.decide(DSL, S47, subject, fields, NOW)
    assert not any(f.allowed for f in d.fields)
    assert all("not_assigned_to_protocol" in f.reasons for f in d.fields)
    ok = hub.gov.decide(SW, S47, subject, fields, NOW)
    assert all(f.allowed for f in ok.fields)
    # The refusal is recorded, with the protocol version and content hash it was decided under.
    body = hub.gov.audit.get(d.audit_seq).data()
    assert body["protocol_version"] == hub.gov.protocols[S47].version
    assert body["protocol_sha256"] == hub.gov.protocols[S47].document_sha256
    # And the DSL's household view under s.47 shows nothing (one refused decision).
    with pytest.raises(Forbidden) as exc:
        hub.views.household_view(DSL, S47, world.household)
    assert "not_assigned_to_protocol" in exc.value.reasons


def test_team_manager_has_the_teams_allocations_other_managers_do_not(
    world: World, tmp_path: Path, backend: tuple[str, str | None]
) -> None:
    hub = access_hub(world, tmp_path, *backend)
    subject = Subject(world.person, world.household)
    mine = hub.gov.decide(TM, S47, subject, [("CSC", "plan_type")], NOW)
    assert mine.fields[0].allowed
    other = hub.gov.decide(OTHER_TM, S47, subject, [("CSC", "plan_type")], NOW)
    assert "no_legitimate_relationship" in other.fields[0].reasons
    # The right is the team's current allocation: once it ends, the manager's ends too.
    hub.gov.relationships.base.end(SW.user_id, _hh(), world.household, dt.date(2026, 5, 1))
    gone = hub.gov.decide(TM, S47, subject, [("CSC", "plan_type")], NOW)
    assert "no_legitimate_relationship" in gone.fields[0].reasons


def _hh():  # noqa: ANN202
    from governance.relationships import SubjectKind

    return SubjectKind.HOUSEHOLD


# --- data-controller sign-off --------------------------------------------------------------------


def test_protocol_in_force_only_when_every_controller_signed_this_content(
    world: World, tmp_path: Path, backend: tuple[str, str | None]
) -> None:
    hub = access_hub(world, tmp_path, *backend, sign_off=True)
    assert hub.signoffs is not None
    proto = hub.gov.protocols[S47]
    subject = Subject(world.person, world.household)
    d = hub.gov.decide(SW, S47, subject, [("CSC", "plan_type")], NOW)
    assert d.fields[0].reasons == ("protocol_not_signed_off",)
    # Only the agency's own IG lead signs for it; a party not in the protocol cannot sign.
    with pytest.raises(SignOffError, match="only CSC's own data controller"):
        hub.signoffs.sign(hub.gov.audit, proto, "CSC", "ig.pol", "ig_lead", "POL")
    with pytest.raises(SignOffError, match="may not sign off"):
        hub.signoffs.sign(hub.gov.audit, proto, "CSC", "sw.csc.1", "practitioner", "CSC")
    # (EH signs s.47 for its known-to stage; MASH names no GP, in detail or known-to stage)
    with pytest.raises(SignOffError, match="GP is not a party"):
        hub.signoffs.sign(
            hub.gov.audit,
            hub.gov.protocols["mash_information_sharing"],
            "GP",
            "ig.gp",
            "ig_lead",
            "GP",
        )
    agencies = sorted(proto.agencies)
    for a in agencies[:-1]:
        hub.signoffs.sign(hub.gov.audit, proto, a, f"ig.{a.lower()}", "ig_lead", a)
    still = hub.gov.decide(SW, S47, subject, [("CSC", "plan_type")], NOW)
    assert still.fields[0].reasons == ("protocol_not_signed_off",)
    last = hub.signoffs.sign(hub.gov.audit, proto, agencies[-1], "ig.x", "ig_lead", agencies[-1])
    assert hub.gov.audit.get(last.audit_seq).data()["protocol_sha256"] == proto.document_sha256
    assert hub.gov.decide(SW, S47, subject, [("CSC", "plan_type")], NOW).fields[0].allowed
    # An edited document (same id and version, different bytes) is a different content hash:
    # nobody signed it, so it is not in force.
    edited = tmp_path / "edited" / f"{S47}.yaml"
    edited.parent.mkdir()
    src = Path(__file__).resolve().parent.parent / "schemas" / "protocols" / f"{S47}.yaml"
    edited.write_text(src.read_text() + "\n# a quiet edit\n")
    changed = load_protocol(edited)
    assert changed.document_sha256 != proto.document_sha256
    assert hub.signoffs.missing(changed) == agencies
    d2 = hub.gov.decide(SW, changed, subject, [("CSC", "plan_type")], NOW)
    assert d2.fields[0].reasons == ("protocol_not_signed_off",)


def test_every_entry_names_protocol_version_and_hash_and_old_entries_still_verify(
    world: World, tmp_path: Path, backend: tuple[str, str | None], hub_key, trusted
) -> None:  # noqa: ANN001
    url, schema = backend
    old = AuditLog(url, schema=schema, signing_key=hub_key, checkpoint_every=3)
    old.append("decision", {"type": "decision", "protocol_id": S47, "user_id": "sw.old"})
    hub = access_hub(world, tmp_path, url, schema)
    hub.gov.audit.signing_key, hub.gov.audit.checkpoint_every = hub_key, 3
    subject = Subject(world.person, world.household)
    hub.gov.decide(SW, S47, subject, [("CSC", "plan_type")], NOW)
    hub.views.household_view(SW, S47, world.household)
    hub.gov.record_withheld_request(SW, MASH, subject, "not_proportionate", NOW)
    hub.gov.audit.checkpoint("test")
    bodies = [r.data() for r in hub.gov.audit.entries()]
    assert "protocol_sha256" not in bodies[0]  # the entry written before still reads as it was
    for b in bodies[1:]:
        pid = b["protocol_id"]
        assert b["protocol_version"] == hub.gov.protocols[pid].version
        assert b["protocol_sha256"] == hub.gov.protocols[pid].document_sha256
    report = hub.gov.audit.verify(trusted)
    assert report.ok, report


# --- break-glass needs a manager's approval where the protocol says so --------------------------


def _without_mash_consent(hub, world: World) -> str:  # noqa: ANN001
    proto = hub.gov.protocols[MASH]
    for p in [world.person, *world.members]:
        con = duckdb.connect(str(hub.warehouse), read_only=True)
        held = {
            r[0]
            for r in con.execute(
                "SELECT DISTINCT agency FROM record_person WHERE person_id = ?", [p]
            ).fetchall()
        }
        con.close()
        if any(
            not hub.gov.consent.state(p, proto.consent_purpose, a, NOW).given
            for a in held & set(proto.agencies)
        ):
            return p
    pytest.fail("no member lacks MASH consent")


def test_break_glass_waits_for_manager_and_attacks_fail(
    world: World, tmp_path: Path, backend: tuple[str, str | None]
) -> None:
    hub = access_hub(world, tmp_path, *backend)
    store = ApprovalStore(hub.gov.audit.engine)
    ask = BreakGlassAsk("risk_of_significant_harm", WHY, 4)
    with pytest.raises(Forbidden) as exc:
        hub.views.household_view(SW, MASH, world.household, break_glass=ask)
    assert "break_glass_needs_manager_approval" in exc.value.reasons
    entry = hub.gov.audit.get(exc.value.audit_seq).data()
    assert not any(f["allowed"] for d in entry["decisions"] for f in d["fields"])
    [req] = store.for_requester(SW.user_id)
    assert req.status == "pending" and entry["break_glass_approval_request"] == req.request_id
    # The unapproved request grants nothing: there is no grant to reopen.
    assert hub.views.grants.grant_for_seq(exc.value.audit_seq) is None
    # Attacks: self-approval, a peer, a manager of another team: refused and audited.
    for who, code in (
        (SW, "self_approval"),
        (PEER, "not_manager_of_requester"),
        (OTHER_TM, "not_manager_of_requester"),
    ):
        n = hub.gov.audit.count()
        with pytest.raises(ApprovalRefused) as refused:
            store.decide(hub.gov, who, req.request_id, True, NOW)
        assert refused.value.code == code
        assert hub.gov.audit.count() == n + 1
        assert hub.gov.audit.get(n + 1).data()["outcome"] == "refused"
    assert store.get(req.request_id).status == "pending"
    # Forging the approval in the override itself is refused by the decision.
    for forged_by, problem in (
        (SW.user_id, "break_glass_self_approved"),
        (OTHER_TM.user_id, "break_glass_approver_not_manager_of_requester"),
    ):
        bg = BreakGlass("risk_of_significant_harm", WHY, NOW, 4, forged_by)
        d = hub.gov.evaluate(
            SW, MASH, Subject(world.person, world.household), [("POL", "risk_level")], NOW, bg
        )
        assert problem in d.break_glass_problems and not d.break_glass_used
    # The team's manager approves: a grant for the hours asked, starting now, audited.
    done = store.decide(hub.gov, TM, req.request_id, True, NOW)
    assert done.status == "approved" and done.decided_by == TM.user_id and done.grant_id
    approval_entry = hub.gov.audit.get(hub.gov.audit.count()).data()
    assert approval_entry["outcome"] == "approved" and approval_entry["protocol_sha256"]
    with pytest.raises(ApprovalRefused, match="request_already_approved"):
        store.decide(hub.gov, TM, req.request_id, False, NOW)
    view = hub.views.household_view(
        SW, MASH, world.household, break_glass=BreakGlassAsk(grant_id=done.grant_id)
    )
    assert view.extra["break_glass"]["used"]
    # The grant is the requester's only: the manager cannot reuse it.
    with pytest.raises(Forbidden):
        hub.views.household_view(
            TM, MASH, world.household, break_glass=BreakGlassAsk(grant_id=done.grant_id)
        )


def test_declined_request_grants_nothing(
    world: World, tmp_path: Path, backend: tuple[str, str | None]
) -> None:
    hub = access_hub(world, tmp_path, *backend)
    store = ApprovalStore(hub.gov.audit.engine)
    with pytest.raises(Forbidden):
        hub.views.household_view(
            SW, MASH, world.household, break_glass=BreakGlassAsk("immediate_danger", WHY, 2)
        )
    [req] = store.awaiting(hub.gov, TM)
    assert store.awaiting(hub.gov, OTHER_TM) == []
    out = store.decide(hub.gov, TM, req.request_id, False, NOW)
    assert out.status == "declined" and out.grant_id is None
    assert hub.gov.audit.get(hub.gov.audit.count()).data()["outcome"] == "declined"


def test_a_bad_request_is_not_queued(
    world: World, tmp_path: Path, backend: tuple[str, str | None]
) -> None:
    hub = access_hub(world, tmp_path, *backend)
    with pytest.raises(Forbidden) as exc:
        hub.views.household_view(
            SW,
            MASH,
            world.household,
            break_glass=BreakGlassAsk("risk_of_significant_harm", "short", 4),
        )
    assert "justification_missing_or_too_short" in exc.value.reasons
    assert ApprovalStore(hub.gov.audit.engine).for_requester(SW.user_id) == []


# --- restricted records --------------------------------------------------------------------------


def test_bridge_flagged_record_shows_only_restricted_and_whom_to_contact(
    world: World, tmp_path: Path, backend: tuple[str, str | None]
) -> None:
    hub = access_hub(world, tmp_path, *backend)
    target = world.person
    [agency, *_] = [
        a for a in flag_restricted(hub.warehouse, target) if a in hub.gov.protocols[S47].agencies
    ]
    with pytest.raises(Forbidden) as exc:
        hub.views.person_view(SW, S47, target)
    assert exc.value.reasons == ["restricted_record"]
    contact = load_assignments().contact_for(agency)
    assert contact in exc.value.decision.extra["restricted_contacts"]
    # The household view leaves the restricted member out entirely: no records, no member,
    # nothing withheld about them (that would place them at this address).
    view = hub.views.household_view(SW, S47, world.household)
    assert target not in view.members and all(r.person_id != target for r in view.records)
    assert view.records and set(view.members) == set(world.members) - {target}
    # Identity: refused before anything is forwarded (no bridge needed to show it).
    ident = IdentityService(hub.views, _key(), {})
    with pytest.raises(Forbidden) as idexc:
        ident.request(SW, S47, target, agency, "strategy discussion needs the record holder")
    assert idexc.value.reasons == ["restricted_record"]
    assert hub.gov.audit.get(idexc.value.audit_seq).data()["outcome"] == "refused"
    # Involvement index (who holds what) leaves them out too.
    inv = hub.views.involvement(SW, world.household)
    assert all(target not in a["members"] for a in inv.extra["agencies"])


def test_restriction_is_no_oracle_for_the_unallocated(
    world: World, tmp_path: Path, backend: tuple[str, str | None]
) -> None:
    hub = access_hub(world, tmp_path, *backend)
    flag_restricted(hub.warehouse, world.person)
    with pytest.raises(Forbidden) as exc:
        hub.views.person_view(User("stranger", "practitioner", "CSC"), S47, world.person)
    assert "restricted_record" not in exc.value.reasons
    assert "no_legitimate_relationship" in exc.value.reasons


def test_owning_agency_marks_and_lifts_and_no_one_else_can(
    world: World, tmp_path: Path, backend: tuple[str, str | None]
) -> None:
    hub = access_hub(world, tmp_path, *backend)
    con = duckdb.connect(str(hub.warehouse), read_only=True)
    agency, ref, person = con.execute(
        """SELECT agency, record_ref, person_id FROM record_person
        WHERE list_contains(?, person_id) AND list_contains(?, agency)
        ORDER BY agency, record_ref LIMIT 1""",
        [world.members, list(hub.gov.protocols[S47].agencies)],
    ).fetchone()
    con.close()
    owner = User(f"worker.{agency.lower()}", "practitioner", agency)
    outsider = User("worker.eh", "practitioner", "EH")
    store = RestrictionStore(hub.gov.audit.engine)
    with pytest.raises(RestrictionError, match=f"only {agency}'s own staff"):
        store.mark(hub.gov.audit, outsider, agency, ref, "refuge")
    with pytest.raises(RestrictionError, match="reason must be one of"):
        store.mark(hub.gov.audit, owner, agency, ref, "because I said so")
    assert hub.views.person_view(SW, S47, person).records
    seq = store.mark(hub.gov.audit, owner, agency, ref, "refuge")
    assert hub.gov.audit.get(seq).data()["type"] == "restriction_marked"
    with pytest.raises(Forbidden) as exc:
        hub.views.person_view(SW, S47, person)
    assert exc.value.reasons == ["restricted_record"]
    with pytest.raises(RestrictionError):
        store.lift(hub.gov.audit, outsider, agency, ref)
    store.lift(hub.gov.audit, owner, agency, ref)
    assert hub.views.person_view(SW, S47, person).records


def _key():  # noqa: ANN202
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()


# --- property: user x team x protocol x restriction, no out-of-scope field ever returned --------

USERS = (
    SW,
    TM,
    OTHER_TM,
    PEER,
    DSL,
    User("pc.pol.1", "practitioner", "POL"),
    User("an.1", "analyst", None),
)


def test_no_out_of_scope_field_is_ever_returned(world: World, tmp_path: Path) -> None:
    """Every combination of user (own allocation, team manager, other team, no team, wrong
    agency, analyst), protocol and restricted member: whatever a view returns is in the
    protocol's minimum dataset for its agency, for a user assigned to the protocol with an
    own or team allocation, and never about a restricted member; refused views return nothing."""
    restricted_choices = (None, *world.members[:2])
    assignments = load_assignments()
    checked, shown = 0, 0
    for restricted in restricted_choices:
        folder = tmp_path / f"r{checked}"
        folder.mkdir()
        hub = access_hub(world, folder, f"sqlite:///{folder}/governance.db", None)
        if restricted is not None:
            flag_restricted(hub.warehouse, restricted)
        for user, pid in itertools.product(USERS, sorted(hub.gov.protocols)):
            proto = hub.gov.protocols[pid]
            for view_of in ("household", "person"):
                try:
                    view = (
                        hub.views.household_view(user, pid, world.household)
                        if view_of == "household"
                        else hub.views.person_view(user, pid, world.person)
                    )
                except Forbidden:
                    checked += 1
                    continue
                in_scope = (
                    assignments.may_act(user, pid)
                    and user.role in proto.roles
                    and (user in (SW, PEER, DSL) or assignments.manages(user.user_id, SW.user_id))
                )
                assert in_scope, (user, pid)
                for r in view.records:
                    assert set(r.fields) <= proto.minimum_dataset(r.agency), (user, pid, r)
                    assert r.person_id != restricted
                assert restricted not in view.members
                checked, shown = checked + 1, shown + 1
    assert 0 < shown < checked  # both outcomes were exercised
    assert checked == len(restricted_choices) * len(USERS) * 4 * 2


def test_configured_access_from_settings(tmp_path: Path) -> None:
    from governance.access import ASSIGNMENTS_FILE, configured_access
    from governance.audit import make_engine

    engine = make_engine(f"sqlite:///{tmp_path}/g.db")
    default = configured_access(engine, None)  # no settings: the shipped file, sign-off on
    assert default.assignments.source == str(ASSIGNMENTS_FILE) and default.signoffs is not None
    on = configured_access(engine, str(ASSIGNMENTS_FILE), "true")
    assert on.signoffs is not None
    # Neither control can be switched off: the setting is refused, naming where it came from.
    for off in (False, "false", "0", "off"):
        with pytest.raises(PolicyError, match="hub.yaml: require_sign_off: .*cannot be turned"):
            configured_access(engine, ASSIGNMENTS_FILE, off, source="hub.yaml")
    for off in (False, "none", "off", "false"):
        with pytest.raises(PolicyError, match="assignments: .*cannot be turned off"):
            configured_access(engine, off)
    with pytest.raises(PolicyError, match="require_sign_off: must be true or absent"):
        configured_access(engine, ASSIGNMENTS_FILE, "yes please")
    bad = tmp_path / "assignments.yaml"
    bad.write_text("assignments_version: 1\nprotocols: {}\n")
    with pytest.raises(PolicyError, match=f"{bad}: protocols: missing or empty"):
        configured_access(engine, bad)


def test_unallocated_refusal_names_assignment_but_never_restriction() -> None:
    from governance.api_safety import uniform_refusal

    body = uniform_refusal(
        ["no_legitimate_relationship", "not_assigned_to_protocol", "restricted_record"], 17
    )
    assert body["reasons"] == ["no_legitimate_relationship", "not_assigned_to_protocol"]
    assert "audit_seq" not in body


def test_restricted_is_never_in_a_minimum_dataset(tmp_path: Path) -> None:
    import yaml

    src = load_protocols()[S47].model_dump(mode="json")
    src["agencies"]["CSC"] = [*src["agencies"]["CSC"], "restricted"]
    path = tmp_path / f"{S47}.yaml"
    path.write_text(yaml.safe_dump(src))
    with pytest.raises(PolicyError, match=r"agencies\.CSC\.\d+: 'restricted' is a control"):
        load_protocol(path)


def test_workspace_offers_only_assigned_protocols() -> None:
    from governance.access import AccessControl
    from workspace.pages import assigned_protocols

    protocols = load_protocols()
    access = AccessControl(load_assignments(protocols=protocols), None)
    on = NOW.date()
    assert S47 in [p.id for p in assigned_protocols(protocols, DSL, on)]  # role-only
    offered = [p.id for p in assigned_protocols(protocols, DSL, on, access)]
    assert S47 not in offered and EARLY_HELP in offered
    assert S47 in [p.id for p in assigned_protocols(protocols, SW, on, access)]


def test_approver_must_be_assigned_to_the_protocol(
    world: World, tmp_path: Path, backend: tuple[str, str | None]
) -> None:
    from governance.access import AccessControl

    hub = access_hub(world, tmp_path, *backend)
    with pytest.raises(Forbidden):
        hub.views.household_view(
            SW, MASH, world.household, break_glass=BreakGlassAsk("immediate_danger", WHY, 2)
        )
    [req] = ApprovalStore(hub.gov.audit.engine).for_requester(SW.user_id)
    # A health-visiting manager put over the social worker's team, MASH assigned to CSC only.
    hv_manager = User("tm.hv.1", "team_manager", "HV")
    hub.gov.access = AccessControl(
        parse_assignments(
            {
                "assignments_version": 1,
                "teams": {
                    "mixed": {
                        "agency": "CSC",
                        "managers": [hv_manager.user_id],
                        "members": [SW.user_id],
                    }
                },
                "protocols": {MASH: {"agencies": ["CSC"]}},
            },
            "custom.yaml",
            hub.gov.protocols,
        ),
        None,
    )
    with pytest.raises(ApprovalRefused) as exc:
        ApprovalStore(hub.gov.audit.engine).decide(hub.gov, hv_manager, req.request_id, True, NOW)
    assert exc.value.code == "approver_not_assigned_to_protocol"
