"""The decision log through the governance API (/sharing), over the linked test world.

A real app (governance.api.create_app) with real tokens, the real warehouse (subjects are
resolved against the linkage) and a real audit log; every record is checked in the log.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from fastapi.testclient import TestClient
from test_api import Hub, World, make_hub
from test_api import world as world  # noqa: F401 - the session's linked test world

from governance.api import create_app
from governance.relationships import Relationship, SubjectKind
from governance.testing import signed_and_verified

EARLY_HELP = "early_help_family_support"
WHY = "strategy discussion agreed police should know of the plan"


def _hub(world: World, tmp_path: Path) -> tuple[Hub, dict[str, str]]:
    gov, views, store, tokens, db_path = make_hub(world, tmp_path)
    tokens["ig1"] = store.issue("ig1", "ig_lead")
    tokens["cg1"] = store.issue("cg1", "caldicott_guardian")
    tokens["hv1"] = store.issue("hv1", "practitioner", "HV")
    gov.relationships.add(
        Relationship("hv1", SubjectKind.PERSON, world.person, dt.date(2026, 1, 1))
    )
    return Hub(TestClient(create_app(views, store)), gov.audit, gov, tokens, db_path), tokens


def _post(hub: Hub, who: str | None, url: str, body: dict):  # noqa: ANN202
    headers = {"Authorization": f"Bearer {hub.tokens[who]}"} if who else {}
    return hub.client.post(url, json=body, headers=headers)


def _off_system(person: str, justification: str = WHY, **over: object) -> dict:
    return {
        "person_id": person,
        "channel": "strategy_meeting",
        "occurred_on": "2026-05-29",
        "from_agency": "CSC",
        "to_agency": "POL",
        "asked": True,
        "categories": ["case_notes"],
        "basis": "CA1989_s47",
        "justification": justification,
        **over,
    }


def test_off_system_share_is_recorded_with_its_justification(world: World, tmp_path: Path) -> None:
    hub, _ = _hub(world, tmp_path)
    assert _post(hub, None, "/sharing/off-system", _off_system(world.person)).status_code == 401
    r = _post(hub, "sw1", "/sharing/off-system", _off_system(world.person))
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store" and WHY not in r.text
    body = hub.audit.get(r.json()["audit_seq"]).data()
    assert body["type"] == "sharing_off_system" and body["justification"] == WHY
    # the household comes from the linkage, not from the caller
    assert body["subject"] == {"person_id": world.person, "household_id": world.household}
    assert [i["kind"] for i in body["interactions"]] == ["request", "disclose_on_request"]
    assert signed_and_verified(hub.audit, tmp_path / "verify").ok


def test_identifier_in_a_justification_is_refused_and_not_echoed(
    world: World, tmp_path: Path
) -> None:
    hub, _ = _hub(world, tmp_path)
    text = "Mr John Barker phoned from 12 Acacia Avenue to ask for it"
    r = _post(hub, "sw1", "/sharing/off-system", _off_system(world.person, text))
    assert r.status_code == 403
    assert r.json()["detail"]["reasons"] == ["justification_contains_identifier"]
    assert "Barker" not in r.text and "Acacia" not in r.text
    assert not any("Barker" in rec.body or "Acacia" in rec.body for rec in hub.audit.entries())
    # bad codes: 422 names the field, never the value
    r = _post(
        hub, "sw1", "/sharing/off-system", _off_system(world.person, basis="because_Mr_Barker_said")
    )
    assert r.status_code == 422 and r.json()["detail"]["field"] == "basis"
    assert "Barker" not in r.text


def test_no_relationship_is_one_answer_and_unknown_ids_404_only_with_one(
    world: World, tmp_path: Path
) -> None:
    hub, _ = _hub(world, tmp_path)
    a = _post(hub, "sw2", "/sharing/off-system", _off_system(world.person))
    b = _post(hub, "sw2", "/sharing/off-system", _off_system("P-NOPE"))
    assert a.status_code == b.status_code == 403
    assert (
        a.json()["detail"]["reasons"]
        == b.json()["detail"]["reasons"]
        == ["no_legitimate_relationship"]
    )
    # sw3 (Early Help) is allocated to an id the linkage does not know
    r = _post(
        hub,
        "sw3",
        "/sharing/not-requested",
        {
            "person_id": "P-DOES-NOT-EXIST",
            "agency": "SCH",
            "categories": ["attendance"],
            "reason": "not_necessary",
            "justification": "no concern about attendance at school",
        },
    )
    assert r.status_code == 404


def test_offer_refused_then_challenged_and_overturned(world: World, tmp_path: Path) -> None:
    hub, tokens = _hub(world, tmp_path)
    r = _post(
        hub,
        "sw1",
        "/sharing/offers",
        {
            "person_id": world.person,
            "to_agency": "HV",
            "categories": ["social_care_plan"],
            "basis": "consent",
            "justification": "the family asked that their visitor knows",
        },
    )
    assert r.status_code == 201, r.text
    offer_id = r.json()["record_id"]
    pending = hub.client.get(
        "/sharing/offers", headers={"Authorization": f"Bearer {tokens['hv1']}"}
    )
    assert [o["offer_id"] for o in pending.json()] == [offer_id]
    refused = _post(
        hub,
        "hv1",
        f"/sharing/offers/{offer_id}/response",
        {
            "accept": False,
            "reason": "not_relevant",
            "justification": "the plan concerns an older sibling outside our service",
        },
    )
    assert refused.status_code == 201
    again = _post(hub, "hv1", f"/sharing/offers/{offer_id}/response", {"accept": True})
    assert again.status_code == 409
    ch = _post(
        hub,
        "sw1",
        "/sharing/challenges",
        {
            "target_seq": refused.json()["audit_seq"],
            "to": "caldicott_guardian",
            "grounds": "the plan covers the baby the health visitor sees weekly",
        },
    )
    assert ch.status_code == 201, ch.text
    assert (
        hub.client.get(
            "/sharing/challenges", headers={"Authorization": f"Bearer {tokens['sw1']}"}
        ).status_code
        == 403
    )

    def listed_for(who: str) -> list[dict]:
        return hub.client.get(
            "/sharing/challenges", headers={"Authorization": f"Bearer {tokens[who]}"}
        ).json()

    listed = listed_for("cg1")  # addressed to the Caldicott guardian: theirs, not the IG lead's
    assert [c["challenge_id"] for c in listed] == [ch.json()["record_id"]]
    assert listed[0]["grounds"].startswith("the plan covers")
    assert listed_for("ig1") == []
    by_sw = _post(
        hub,
        "sw1",
        f"/sharing/challenges/{ch.json()['record_id']}/decision",
        {
            "outcome": "overturned",
            "decided_as": "ig_lead",
            "reasons": "deciding my own challenge is not allowed",
        },
    )
    assert by_sw.status_code == 403
    url = f"/sharing/challenges/{ch.json()['record_id']}/decision"
    why = "the offer was relevant and should have been accepted"
    # the IG lead may neither decide it nor sign as the Caldicott guardian
    for as_ in ("ig_lead", "caldicott_guardian"):
        r = _post(hub, "ig1", url, {"outcome": "overturned", "decided_as": as_, "reasons": why})
        assert r.status_code == 403, r.text
    d = _post(hub, "cg1", url, {"outcome": "overturned", "reasons": why})
    assert d.status_code == 201, d.text
    body = hub.audit.get(d.json()["audit_seq"]).data()
    assert (body["outcome"], body["decided_as"], body["user_id"]) == (
        "overturned",
        "caldicott_guardian",
        "cg1",
    )


def test_a_refused_view_can_be_challenged(world: World, tmp_path: Path) -> None:
    hub, _ = _hub(world, tmp_path)
    view = hub.get(f"/persons/{world.person}?protocol={EARLY_HELP}")
    assert view.status_code in (200, 403)
    seq = view.json()["audit_seq"]
    target = hub.audit.get(seq).data()
    assert any(i["kind"] == "refuse_request" for i in target["interactions"]), target
    r = _post(
        hub,
        "sw1",
        "/sharing/challenges",
        {
            "target_seq": seq,
            "to": "ig_lead",
            "grounds": "the family consented to early help sharing with partners",
        },
    )
    assert r.status_code == 201, r.text
    body = hub.audit.get(r.json()["audit_seq"]).data()
    assert {c["side"] for c in body["challenged"]} == {"rules"}
    # a challenge of something that was not refused is refused (and recorded)
    ok = _post(hub, "sw1", "/sharing/off-system", _off_system(world.person))
    r = _post(
        hub,
        "sw1",
        "/sharing/challenges",
        {
            "target_seq": ok.json()["audit_seq"],
            "to": "ig_lead",
            "grounds": "this was a share, not a refusal of any kind",
        },
    )
    assert r.status_code == 403
