"""The governance HTTP API through the real FastAPI app over a real (small) linked warehouse.

The warehouse is built by the pipeline itself: synthetic population -> provision_partnership ->
run_bridge per agency -> stage_ingest / stage_link_persons / stage_households. It is built once
per session (cached here, shared with tests/test_identity.py).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
from fastapi.testclient import TestClient

from governance.api import create_app
from governance.api_tokens import TokenStore
from governance.audit import AuditLog, make_engine
from governance.consent import ConsentRegistry, ConsentStatus
from governance.decisions import Governance
from governance.relationships import Relationship, RelationshipRegistry, SubjectKind
from governance.service import ViewService, load_consent
from governance.testing import deployed_access

MAPPINGS = Path(__file__).resolve().parent.parent / "schemas" / "agencies"
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
PEOPLE = 300


@dataclass
class World:
    run: Path
    warehouse: Path
    household: str
    members: list[str]
    person: str  # a member with records at two or more agencies
    consent: ConsentRegistry


_WORLD: dict[str, World] = {}


def build_world(factory: pytest.TempPathFactory) -> World:
    if "w" in _WORLD:
        return _WORLD["w"]
    from ig_bridge.split import run_bridge
    from linkage.config import HubPaths
    from linkage.pipeline import stage_households, stage_ingest, stage_link_persons
    from synthetic_data.generate import generate_population
    from synthetic_data.parties import provision_partnership

    reuse = os.environ.get("JOINEDUP_API_TEST_RUN")  # developer speed-up: a run built before
    if reuse:
        run = Path(reuse)
    else:
        run = factory.mktemp("api_world")
        summary = generate_population(run / "population", seed=20240611, people=PEOPLE)
        provision_partnership(run, list(summary.agencies), passphrase="api test, synthetic only")
        for code, agency in summary.agencies.items():
            run_bridge(
                run / "population" / agency.file,
                MAPPINGS / f"{code.lower()}.yaml",
                run / "agency" / code,
                run / "landing",
            )
    paths = HubPaths.for_run(run)
    if not reuse:
        stage_ingest(paths)
        stage_link_persons(paths, "r1")
        stage_households(paths, "r1")
    con = duckdb.connect(str(paths.warehouse), read_only=True)
    hh = con.execute("""
        SELECT m.household_id FROM household_member m JOIN record_person rp USING (person_id)
        GROUP BY 1 HAVING count(DISTINCT m.person_id) >= 2
        ORDER BY bool_or(rp.agency = 'EH') DESC, bool_or(rp.agency = 'SCH') DESC,
                 count(DISTINCT rp.agency) DESC, 1 LIMIT 1""").fetchone()[0]
    members = [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT person_id FROM household_member WHERE household_id = ? ORDER BY 1",
            [hh],
        ).fetchall()
    ]
    person = con.execute(
        """SELECT person_id FROM record_person WHERE list_contains(?, person_id)
        GROUP BY 1 ORDER BY count(DISTINCT agency) DESC, 1 LIMIT 1""",
        [members],
    ).fetchone()[0]
    con.close()
    _WORLD["w"] = World(run, paths.warehouse, hh, members, person, load_consent(paths.warehouse))
    return _WORLD["w"]


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory)


@dataclass
class Hub:
    client: TestClient
    audit: AuditLog
    gov: Governance
    tokens: dict[str, str]
    db_path: Path

    def get(self, url: str, who: str | None = "sw1", **kw: object):  # noqa: ANN201
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return self.client.get(url, headers=headers, **kw)


TEST_TEAMS = {"test_assessment": {"agency": "CSC", "managers": ["tm1"], "members": ["sw1", "sw2"]}}


def make_hub(
    world: World, tmp: Path, *, deployed: bool = True
) -> tuple[Governance, ViewService, TokenStore, dict, Path]:
    """The hub of the API tests. By default access control as a deployment runs it
    (governance.testing.deployed_access: the shipped assignments plus TEST_TEAMS, every
    protocol signed off). `deployed=False`: role-only rules, only for this module's tests of
    those rules (their audit sequence numbers start at 1, with no sign-off entries before)."""
    db_path = tmp / "governance.db"
    engine = make_engine(f"sqlite:///{db_path}")
    rels = RelationshipRegistry(
        [
            Relationship("sw1", SubjectKind.HOUSEHOLD, world.household, dt.date(2026, 1, 1)),
            Relationship("sw3", SubjectKind.PERSON, "P-DOES-NOT-EXIST", dt.date(2026, 1, 1)),
            Relationship("analyst1", SubjectKind.HOUSEHOLD, world.household, dt.date(2026, 1, 1)),
        ]
    )
    consent = ConsentRegistry()
    for (pid, purpose), events in world.consent._events.items():
        for e in events:
            consent.record(pid, e.agency, purpose, e.status.value, e.date)
    # As deployed: the shipped assignments plus this hub's team (tm1 manages sw1 and sw2),
    # every protocol signed off by its controllers.
    gov = Governance(
        AuditLog(engine),
        consent=consent,
        relationships=rels,
        access=deployed_access(engine, tmp, TEST_TEAMS) if deployed else None,
    )
    views = ViewService(world.warehouse, gov, clock=lambda: NOW)
    store = TokenStore(engine)
    tokens = {
        "sw1": store.issue("sw1", "practitioner", "CSC"),
        "sw2": store.issue("sw2", "practitioner", "CSC"),
        "sw3": store.issue("sw3", "practitioner", "EH"),
        "analyst1": store.issue("analyst1", "analyst"),
        "tm1": store.issue("tm1", "team_manager", "CSC"),
    }
    return gov, views, store, tokens, db_path


@pytest.fixture
def hub(world: World, tmp_path: Path) -> Hub:
    gov, views, store, tokens, db_path = make_hub(world, tmp_path, deployed=False)
    return Hub(TestClient(create_app(views, store)), gov.audit, gov, tokens, db_path)


def _payload(world: World, person_ids: list[str]) -> dict[tuple[str, str], list[dict]]:
    con = duckdb.connect(str(world.warehouse), read_only=True)
    df = con.execute(
        """SELECT rp.person_id, p.* FROM payload p JOIN record_person rp
        USING (agency, record_ref) WHERE list_contains(?, rp.person_id)""",
        [person_ids],
    ).df()
    con.close()
    out: dict[tuple[str, str], list[dict]] = {}
    for row in df.to_dict("records"):
        out.setdefault((row["person_id"], row["agency"]), []).append(row)
    return out


def _last_body(hub: Hub) -> dict:
    rec = hub.audit.get(hub.audit.count())
    assert rec is not None
    return rec.data()


# --- authentication ----------------------------------------------------------------------------


def test_no_or_bad_token_is_401_and_no_decision(hub: Hub, world: World) -> None:
    url = f"/persons/{world.person}?protocol=s47_child_protection_enquiry"
    r = hub.get(url, who=None)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = hub.client.get(url, headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 401
    # no decision: only the failed authentications (tests/test_api_safety.py)
    assert [e.kind for e in hub.audit.entries()] == ["auth_failure", "auth_failure"]


def test_tokens_are_stored_hashed_and_revocable(hub: Hub, world: World) -> None:
    raw = hub.db_path.read_bytes()
    for tok in hub.tokens.values():
        assert tok.encode() not in raw
    store = TokenStore(hub.audit.engine)
    assert store.authenticate(hub.tokens["sw1"]).user_id == "sw1"
    assert store.revoke(hub.tokens["sw1"])
    r = hub.get(f"/persons/{world.person}?protocol=s47_child_protection_enquiry")
    assert r.status_code == 401


# --- person and household views ----------------------------------------------------------------


def test_person_view_shows_only_protocol_fields_with_one_audit_entry(
    hub: Hub, world: World
) -> None:
    proto = hub.gov.protocols["s47_child_protection_enquiry"]
    r = hub.get(f"/persons/{world.person}?protocol={proto.id}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["subject_id"] == world.person and body["household_id"] == world.household
    assert "record_ref" not in r.text  # pseudonymous: hub ids only
    assert hub.audit.count() == 1
    entry = _last_body(hub)
    assert entry["user_id"] == "sw1" and entry["subject"]["person_id"] == world.person
    assert body["audit_seq"] == 1
    expected = _payload(world, [world.person])
    covered = {a for (_, a) in expected if a in proto.agencies}
    assert covered, "fixture person should have a record at an s47 agency"
    assert {rec["agency"] for rec in body["records"]} == covered
    for rec in body["records"]:
        assert set(rec["fields"]) == set(proto.agencies[rec["agency"]])
        rows = expected[(world.person, rec["agency"])]
        # every shown value is the warehouse's value for one of that agency's records
        assert any(
            all(
                json.dumps(row[f], default=str)[1:11] in json.dumps(v, default=str)
                or (row[f] is None or row[f] != row[f])
                and v is None
                for f, v in rec["fields"].items()
            )
            for row in rows
        )
    allowed = {(f["agency"], f["field"]) for f in entry["fields"] if f["allowed"]}
    assert allowed == {(a, f) for a in covered for f in proto.agencies[a]}


def test_fields_parameter_narrows_the_request(hub: Hub, world: World) -> None:
    proto = hub.gov.protocols["s47_child_protection_enquiry"]
    agency = sorted(a for (_, a) in _payload(world, [world.person]) if a in proto.agencies)[0]
    field = proto.agencies[agency][-1]
    r = hub.get(f"/persons/{world.person}?protocol={proto.id}&fields={field}")
    assert r.status_code == 200
    assert r.json()["records"]
    for rec in r.json()["records"]:
        assert set(rec["fields"]) == {field}
    assert {f["field"] for f in _last_body(hub)["fields"]} == {field}


def test_household_view_lists_members_and_logs_once(hub: Hub, world: World) -> None:
    r = hub.get(f"/households/{world.household}?protocol=s47_child_protection_enquiry")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["members"] == world.members
    assert {rec["person_id"] for rec in body["records"]} <= set(world.members)
    assert hub.audit.count() == 1
    entry = _last_body(hub)
    assert entry["type"] == "household_decision" and entry["household_id"] == world.household
    assert sorted(d["subject"]["person_id"] for d in entry["decisions"]) == world.members


def test_unallocated_user_gets_403_with_reason_in_audit(hub: Hub, world: World) -> None:
    r = hub.get(f"/persons/{world.person}?protocol=s47_child_protection_enquiry", who="sw2")
    assert r.status_code == 403
    assert "no_legitimate_relationship" in r.json()["reasons"]
    assert hub.audit.count() == 1
    entry = _last_body(hub)
    assert entry["user_id"] == "sw2"
    assert all(
        not f["allowed"] and "no_legitimate_relationship" in f["reasons"] for f in entry["fields"]
    )


def test_analyst_role_never_sees_rows(hub: Hub, world: World) -> None:
    r = hub.get(
        f"/households/{world.household}?protocol=s47_child_protection_enquiry", who="analyst1"
    )
    assert r.status_code == 403
    assert "role_not_row_level" in r.json()["reasons"]
    assert hub.audit.count() == 1


def test_unknown_protocol_is_refused_and_recorded(hub: Hub, world: World) -> None:
    r = hub.get(f"/persons/{world.person}?protocol=no_such_protocol")
    assert r.status_code == 403 and r.json()["reasons"] == ["unknown_protocol"]
    assert _last_body(hub)["protocol_id"] == "no_such_protocol"


def test_unknown_ids_404_only_with_a_relationship(hub: Hub) -> None:
    # allocated to an id that does not exist: 404 after the decision is recorded
    r = hub.get("/persons/P-DOES-NOT-EXIST?protocol=s47_child_protection_enquiry", who="sw3")
    assert r.status_code == 404 and r.json()["audit_seq"] == 1
    # no relationship: 403 whether or not the id exists (no existence oracle)
    r = hub.get("/persons/P-ALSO-MISSING?protocol=s47_child_protection_enquiry", who="sw2")
    assert r.status_code == 403
    r = hub.get("/households/H-NOPE?protocol=s47_child_protection_enquiry", who="sw2")
    assert r.status_code == 403
    assert hub.audit.count() == 3


@pytest.mark.parametrize(
    "url",
    [
        "/persons/P1?protocol=Bad-Protocol",
        "/persons/P1",
        "/persons/has%20space?protocol=s47_child_protection_enquiry",
        "/persons/P1?protocol=s47_child_protection_enquiry&fields=DROP%20TABLE",
    ],
)
def test_bad_input_is_422_and_not_audited(hub: Hub, url: str) -> None:
    r = hub.get(url)
    assert r.status_code == 422, r.text
    assert hub.audit.count() == 0


def test_early_help_consent_in_scope_shows_partner_data_and_withdrawal_refuses_at_once(
    hub: Hub, world: World
) -> None:
    """Under Early Help a consent recorded through the API with a scope (agencies x
    categories) lets the worker see what partners hold in scope, and only that; withdrawing
    it refuses the very next view."""
    from governance.consent_scope import Scope

    proto = hub.gov.protocols["early_help_family_support"]

    def holders_of(person: str) -> set[str]:
        return {a for (_, a) in _payload(world, [person]) if a in proto.agencies}

    def no_consent_yet(person: str) -> bool:  # Early Help records early_help consent too
        return all(
            hub.gov.consent.state(person, proto.consent_purpose, a, NOW).status
            is ConsentStatus.NONE
            for a in proto.agencies
        )

    subjects = [
        p
        for p in dict.fromkeys([world.person, *world.members])
        if len(holders_of(p)) >= 2 and no_consent_yet(p)
    ]
    assert subjects, "no household member without early_help consent to start from"
    subject = subjects[0]
    holders = sorted(holders_of(subject))
    in_scope, out_of_scope = holders[:-1], holders[-1]
    url = f"/persons/{subject}?protocol={proto.id}"
    r = hub.get(url)
    assert r.status_code == 403 and "no_consent" in r.json()["reasons"]
    auth = {"Authorization": f"Bearer {hub.tokens['sw1']}"}
    cats = ["involvement", "education", "health", "housing"]
    r = hub.client.post(
        f"/persons/{subject}/consents",
        headers=auth,
        json={
            "purpose": "early_help",
            "agencies": in_scope,
            "categories": cats,
            "status": "given",
            "consenter": "parent",
            "capacity": "parental_responsibility",
            "method": "written_in_person",
            "evidence_ref": "EH/TAF/0007",
            "given_on": "2026-05-20",
            "review_by": "2026-11-20",
        },
    )
    assert r.status_code == 201, r.text
    record_id = r.json()["record"]["record_id"]
    r = hub.get(url)
    assert r.status_code == 200
    scope = Scope.of(in_scope, cats)
    shown = {(rec["agency"], f) for rec in r.json()["records"] for f in rec["fields"]}
    assert {a for a, _ in shown} == set(in_scope)  # partner data in scope is shown
    assert all(scope.covers(a, f) for a, f in shown)  # and nothing outside it
    withheld = {(w["agency"], w["field"]): w["reasons"] for w in r.json()["withheld"]}
    assert all(
        withheld[(out_of_scope, f)] == ["consent_out_of_scope"]
        for f in proto.agencies[out_of_scope]
    )
    assert all(
        withheld[(a, f)] == ["consent_out_of_scope"]
        for a in in_scope
        for f in proto.agencies[a]
        if not scope.covers(a, f)
    )
    r = hub.client.post(
        f"/consents/{record_id}/withdraw", headers=auth, json={"withdrawal_way": "phone"}
    )
    assert r.status_code == 200 and r.json()["record"]["withdrawn_at"]
    r = hub.get(url)
    assert r.status_code == 403 and "consent_withdrawn" in r.json()["reasons"]
    assert hub.audit.count() == 5


def test_consent_api_refuses_without_relationship_and_names_bad_fields(
    hub: Hub, world: World
) -> None:
    body = {
        "purpose": "early_help",
        "agencies": ["SCH"],
        "categories": ["education"],
        "status": "given",
        "consenter": "parent",
        "capacity": "parental_responsibility",
        "method": "phone",
        "evidence_ref": "EH/1",
        "given_on": "2026-05-20",
        "review_by": "2026-11-20",
    }
    r = hub.client.post(
        f"/persons/{world.person}/consents",
        json=body,
        headers={"Authorization": f"Bearer {hub.tokens['sw2']}"},
    )
    assert r.status_code == 403  # the uniform refusal: nothing about the person
    assert r.json() == {
        "detail": "refused under the protocol",
        "reasons": ["no_legitimate_relationship"],
    }
    auth = {"Authorization": f"Bearer {hub.tokens['sw1']}"}
    r = hub.client.post(
        f"/persons/{world.person}/consents",
        headers=auth,
        json={**body, "evidence_ref": "9434765919"},
    )
    assert r.status_code == 422 and "evidence_ref" in r.text and "9434765919" not in r.text
    r = hub.client.post(
        f"/persons/{world.person}/consents",
        headers=auth,
        json={**body, "categories": ["everything"]},
    )
    assert r.status_code == 422 and "scope.categories" in r.text
    r = hub.client.get(f"/persons/{world.person}/consents", headers=auth)
    assert r.status_code == 200 and r.json() == {"records": []}
    assert r.headers["cache-control"] == "no-store"


# --- involvement index -------------------------------------------------------------------------


def test_involvement_index_who_holds_what(hub: Hub, world: World) -> None:
    r = hub.get(f"/households/{world.household}/involvement")
    assert r.status_code == 200, r.text
    body = r.json()
    pay = _payload(world, world.members)
    expected_agencies = sorted({a for (_, a) in pay})
    assert [a["agency"] for a in body["agencies"]] == expected_agencies
    for a in body["agencies"]:
        rows = [row for (p, ag), rs in pay.items() if ag == a["agency"] for row in rs]
        dates = [
            row["event_date"]
            for row in rows
            if row["event_date"] is not None and row["event_date"] == row["event_date"]
        ]
        assert a["since"] == (min(dates).isoformat()[:10] if dates else None)
        contacts = sorted(
            {
                row["lead_practitioner_contact"]
                for row in rows
                if isinstance(row["lead_practitioner_contact"], str)
            }
        )
        assert a["lead_practitioner_contacts"] == (contacts if a["agency"] in ("EH", "CSC") else [])
    assert any(a["lead_practitioner_contacts"] for a in body["agencies"])
    assert "records" not in body  # who holds what, never the content
    entry = _last_body(hub)
    assert entry["protocol_id"] == "involvement_index" and hub.audit.count() == 1


def test_involvement_index_needs_a_relationship(hub: Hub, world: World) -> None:
    r = hub.get(f"/households/{world.household}/involvement", who="sw2")
    assert r.status_code == 403 and hub.audit.count() == 1


def test_openapi_is_served(hub: Hub) -> None:
    spec = hub.client.get("/openapi.json").json()
    assert {
        "/persons/{person_id}",
        "/households/{household_id}",
        "/households/{household_id}/involvement",
        "/persons/{person_id}/identity",
    } <= set(spec["paths"])
    assert "403" in spec["paths"]["/persons/{person_id}"]["get"]["responses"]


def test_app_from_config_file(world: World, tmp_path: Path) -> None:
    import hashlib

    from governance.api import app_from_config

    token = "config-token-for-tests-only-0123456789"
    (tmp_path / "alloc.csv").write_text(
        f"user_id,kind,subject_id,start,end\nsw9,household,{world.household},2026-01-01,\n"
    )
    from governance.audit_keys import create_audit_key

    create_audit_key(tmp_path / "keys")  # every API process checkpoints with the audit key
    cfg = tmp_path / "hub_api.yaml"
    cfg.write_text(
        f"warehouse: {world.warehouse}\n"
        f"governance_db: sqlite:///{tmp_path / 'gov.db'}\n"
        f"relationships_csv: {tmp_path / 'alloc.csv'}\n"
        f"audit_signing_key: {tmp_path / 'keys'}\n"
        "tokens:\n"
        f"  - {{token_sha256: {hashlib.sha256(token.encode()).hexdigest()}, user_id: sw9, "
        "role: practitioner, agency: CSC}\n"
    )
    client = TestClient(app_from_config(cfg))
    # Access control is on by default: nothing is in force until the controllers sign off.
    r = client.get(
        f"/households/{world.household}/involvement", headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 403 and "protocol_not_signed_off" in r.json()["reasons"]
    from governance.audit import make_engine
    from governance.testing import partnership_set_up

    partnership_set_up(make_engine(f"sqlite:///{tmp_path / 'gov.db'}"))
    r = client.get(
        f"/households/{world.household}/involvement", headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 200, r.text
    assert token.encode() not in (tmp_path / "gov.db").read_bytes()
    bad = tmp_path / "bad.yaml"
    bad.write_text("warehouse: x\n")
    with pytest.raises(ValueError, match="governance_db: missing"):
        app_from_config(bad)
