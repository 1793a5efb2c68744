"""What ships enforces access control: the governance API built from a config that says nothing
about access (governance.api.app_from_config) and the workspace built with no access settings in
its environment (workspace.cli.build) both apply the shipped schemas/assignments.yaml and
data-controller sign-off. Each attack is performed end to end through the default configuration
and shown to fail: a protocol not signed off by every controller, a school's designated
safeguarding lead reading social-care case notes under s.47, and a practitioner's MASH
break-glass without a manager's approval."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from test_api import World, build_world

from governance.approvals import ApprovalStore
from governance.audit import AuditLog, make_engine
from governance.audit_keys import create_audit_key
from governance.policy import PolicyError, load_protocols
from governance.signoff import SignOffStore, ig_lead_of
from governance.testing import partnership_set_up

S47 = "s47_child_protection_enquiry"
MASH = "mash_information_sharing"
USERS = {"sw.csc.1": ("practitioner", "CSC"), "dsl.sch.1": ("practitioner", "SCH")}
WHY = "Strategy discussion: child disclosed injuries at school this morning"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory)


def _token(user: str) -> str:
    return f"defaults-test-token-{user}-0123456789abcdef"


def _social_care_household(world: World) -> str:
    """A household of the linked world with a member known to children's social care."""
    import duckdb

    con = duckdb.connect(str(world.warehouse), read_only=True)
    try:
        return con.execute("""SELECT m.household_id FROM household_member m
            JOIN record_person rp USING (person_id) WHERE rp.agency = 'CSC'
            ORDER BY 1 LIMIT 1""").fetchone()[0]
    finally:
        con.close()


def _default_api(
    world: World, tmp: Path, household: str | None = None
) -> tuple[TestClient, object]:
    """A hub API config with no `assignments` or `require_sign_off` key; both users are
    allocated the household (the world's own unless given)."""
    from governance.api import app_from_config

    hh = household or world.household
    lines = "".join(f"{u},household,{hh},2026-01-01,\n" for u in USERS)
    (tmp / "alloc.csv").write_text("user_id,kind,subject_id,start,end\n" + lines)
    create_audit_key(tmp / "keys")
    tokens = "".join(
        f"  - {{token_sha256: {hashlib.sha256(_token(u).encode()).hexdigest()}, user_id: {u}, "
        f"role: {role}, agency: {agency}}}\n"
        for u, (role, agency) in USERS.items()
    )
    cfg = tmp / "hub_api.yaml"
    cfg.write_text(
        f"warehouse: {world.warehouse}\ngovernance_db: sqlite:///{tmp / 'gov.db'}\n"
        f"relationships_csv: {tmp / 'alloc.csv'}\naudit_signing_key: {tmp / 'keys'}\n"
        f"tokens:\n{tokens}"
    )
    return TestClient(app_from_config(cfg)), make_engine(f"sqlite:///{tmp / 'gov.db'}")


def _get(client: TestClient, user: str, url: str):  # noqa: ANN202
    return client.get(url, headers={"Authorization": f"Bearer {_token(user)}"})


def test_default_api_refuses_a_protocol_not_signed_off_by_every_controller(
    world: World, tmp_path: Path
) -> None:
    client, engine = _default_api(world, tmp_path)
    url = f"/persons/{world.person}?protocol={S47}"
    r = _get(client, "sw.csc.1", url)  # allocated, CSC, assigned: but nobody has signed
    assert r.status_code == 403 and "protocol_not_signed_off" in r.json()["reasons"]
    s47 = load_protocols()[S47]
    store, audit = SignOffStore(engine), AuditLog(engine)
    for agency in sorted(set(s47.agencies) - {"POL"}):  # every controller but one signs
        store.sign(audit, s47, agency, ig_lead_of(agency), "ig_lead", agency)
    r = _get(client, "sw.csc.1", url)
    assert r.status_code == 403 and "protocol_not_signed_off" in r.json()["reasons"]
    store.sign(audit, s47, "POL", ig_lead_of("POL"), "ig_lead", "POL")  # the last one
    r = _get(client, "sw.csc.1", url)
    assert r.status_code == 200, r.text


def test_default_api_refuses_a_school_dsl_social_care_notes_under_s47(
    world: World, tmp_path: Path
) -> None:
    household = _social_care_household(world)
    client, engine = _default_api(world, tmp_path, household)
    assert partnership_set_up(engine) > 0
    url = f"/households/{household}?protocol={S47}"
    ok = _get(client, "sw.csc.1", url)  # the control: social care's own worker sees the notes
    assert ok.status_code == 200, ok.text
    notes = [
        v
        for rec in ok.json()["records"]
        if rec["agency"] in ("CSC", "POL")
        for k, v in rec["fields"].items()
        if k.endswith("notes") and v
    ]
    assert notes, "fixture household has no social-care or police notes to protect"
    r = _get(client, "dsl.sch.1", url)  # the same allocation, as a school's DSL
    assert r.status_code == 403
    assert "not_assigned_to_protocol" in r.json()["reasons"]
    assert not any(str(v) in r.text for v in notes)
    for rec in ok.json()["records"]:
        r = _get(client, "dsl.sch.1", f"/persons/{rec['person_id']}?protocol={S47}")
        assert r.status_code == 403 and "not_assigned_to_protocol" in r.json()["reasons"]


def test_default_api_holds_a_practitioners_mash_break_glass_for_a_manager(
    world: World, tmp_path: Path
) -> None:
    client, engine = _default_api(world, tmp_path)
    partnership_set_up(engine)
    r = client.post(
        f"/households/{world.household}/break-glass",
        json={
            "protocol_id": MASH,
            "category": "risk_of_significant_harm",
            "justification": WHY,
            "hours": 4,
        },
        headers={"Authorization": f"Bearer {_token('sw.csc.1')}"},
    )
    assert r.status_code == 403, r.text
    assert "break_glass_needs_manager_approval" in r.json()["reasons"]
    assert "records" not in r.json() or not r.json()["records"]
    [waiting] = ApprovalStore(engine).for_requester("sw.csc.1")
    assert waiting.status == "pending" and waiting.protocol_id == MASH


def test_default_workspace_applies_assignments_and_sign_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from governance.access import ASSIGNMENTS_FILE, NOT_ASSIGNED, NOT_SIGNED_OFF
    from governance.decisions import User
    from workspace.cli import build

    for var in ("JOINEDUP_ASSIGNMENTS", "JOINEDUP_REQUIRE_SIGN_OFF", "JOINEDUP_GOVERNANCE_DB"):
        monkeypatch.delenv(var, raising=False)
    run = tmp_path / "run"
    create_audit_key(run / "hub" / "keys")
    ws = build(run)
    access = ws.gov.access
    assert access is not None and access.assignments.source == str(ASSIGNMENTS_FILE)
    s47 = ws.gov.protocols[S47]
    dsl, sw = User("dsl.sch.1", "practitioner", "SCH"), User("sw.csc.1", "practitioner", "CSC")
    assert access.refusal_reasons(dsl, s47) == [NOT_ASSIGNED, NOT_SIGNED_OFF]
    assert access.refusal_reasons(sw, s47) == [NOT_SIGNED_OFF]
    partnership_set_up(ws.gov.audit.engine)
    assert access.refusal_reasons(sw, s47) == [] and access.refusal_reasons(dsl, s47) == [
        NOT_ASSIGNED
    ]
    monkeypatch.setenv("JOINEDUP_REQUIRE_SIGN_OFF", "false")
    with pytest.raises(PolicyError, match="environment: require_sign_off: .*cannot be turned"):
        build(run)
