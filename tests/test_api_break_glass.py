"""Break-glass through the HTTP API (real FastAPI app, real linked warehouse, real audit log):
allowed only where the protocol allows override on risk of significant harm; refused with 403
and the reason audited otherwise; alert and notification rows written; expiry honoured.

The hub runs access control as deployed (tests/test_api.make_hub(deployed=True): the shipped
assignments, the test team whose manager is tm1, every protocol signed off), so a MASH
override waits for tm1's approval (the protocol requires it) and opens with the grant that
approval creates."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from test_api import NOW, World, build_world, make_hub

from governance.api import create_app
from governance.approvals import ApprovalStore
from governance.audit import AuditLog
from governance.decisions import NOTIFY_WITHIN_DAYS, Governance, User
from governance.models import Alert, BreakGlassGrant, NotificationDue
from governance.service import ViewService

MASH = "mash_information_sharing"
S47 = "s47_child_protection_enquiry"
WHY = "Strategy discussion: child disclosed injuries at school this morning"


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory)


class Hub:
    def __init__(self, world: World, tmp: Path) -> None:
        gov, views, store, tokens, db_path = make_hub(world, tmp, deployed=True)
        self.gov: Governance = gov
        self.views: ViewService = views
        self.audit: AuditLog = gov.audit
        self.tokens = tokens
        self.db_path = db_path
        self.client = TestClient(create_app(views, store))
        self.at(NOW)
        self.start = self.audit.count()  # the partnership's sign-offs come first

    def seq(self, n: int) -> int:
        """The audit sequence number of this test's n-th entry."""
        return self.start + n

    def override(self, url: str, view: str, who: str = "sw1", **body: object):  # noqa: ANN201
        """A MASH override as deployed: the request waits (403, nothing shown), the
        requester's manager tm1 approves it, and the view opens under the grant."""
        r = self.post(url, who, **body)
        assert r.status_code == 403, r.text
        assert "break_glass_needs_manager_approval" in r.json()["reasons"]
        [req] = [
            q for q in ApprovalStore(self.audit.engine).for_requester(who) if q.status == "pending"
        ]
        when = self.views.clock()
        approved = ApprovalStore(self.audit.engine).decide(
            self.gov, User("tm1", "team_manager", "CSC"), req.request_id, True, when
        )
        sep = "&" if "?" in view else "?"
        return self.get(f"{view}{sep}break_glass_id={approved.grant_id}", who)

    def at(self, when: dt.datetime) -> None:
        self.views.clock = lambda: when

    def _h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def post(self, url: str, who: str = "sw1", **body: object):  # noqa: ANN201
        payload = {
            "protocol_id": MASH,
            "category": "risk_of_significant_harm",
            "justification": WHY,
            "hours": 4,
            **body,
        }
        return self.client.post(url, json=payload, headers=self._h(who))

    def get(self, url: str, who: str = "sw1"):  # noqa: ANN201
        return self.client.get(url, headers=self._h(who))

    def rows(self, model: type) -> list:
        with self.audit.engine.connect() as conn:
            return list(conn.execute(select(*model.__table__.c)).all())

    def last(self) -> dict:
        rec = self.audit.get(self.audit.count())
        assert rec is not None
        return rec.data()


@pytest.fixture
def hub(world: World, tmp_path: Path) -> Hub:
    return Hub(world, tmp_path)


def _mash_holders(world: World, person: str) -> set[str]:
    con = duckdb.connect(str(world.warehouse), read_only=True)
    try:
        held = {
            r[0]
            for r in con.execute(
                "SELECT DISTINCT agency FROM record_person WHERE person_id = ?", [person]
            ).fetchall()
        }
    finally:
        con.close()
    return held


def _person_without_mash_consent(hub: Hub, world: World) -> tuple[str, set[str]]:
    proto = hub.gov.protocols[MASH]
    for p in [world.person, *world.members]:
        held = _mash_holders(world, p) & set(proto.agencies)
        lacking = {
            a for a in held if not hub.gov.consent.state(p, proto.consent_purpose, a, NOW).given
        }
        if lacking:
            return p, lacking
    pytest.fail("fixture household has no member lacking mash consent at a MASH agency")


def test_break_glass_shows_what_consent_alone_would_not(hub: Hub, world: World) -> None:
    person, lacking = _person_without_mash_consent(hub, world)
    plain = hub.get(f"/persons/{person}?protocol={MASH}")
    shown_plain = (
        {r["agency"] for r in plain.json()["records"]} if plain.status_code == 200 else set()
    )
    assert not shown_plain & lacking
    n_before = hub.audit.count()

    r = hub.override(f"/persons/{person}/break-glass", f"/persons/{person}?protocol={MASH}")
    assert r.status_code == 200, r.text
    body = r.json()
    bg = body["break_glass"]
    assert bg["used"] and bg["alert_raised"]
    assert {rec["agency"] for rec in body["records"]} >= lacking
    assert bg["expires_at"] == (NOW + dt.timedelta(hours=4)).isoformat()
    due = NOW.date() + dt.timedelta(days=NOTIFY_WITHIN_DAYS)
    assert bg["notification_due_by"] == due.isoformat()
    # three audit entries: the waiting request, the manager's approval, the view under the
    # grant (with the screened justification and the approver)
    assert hub.audit.count() == n_before + 3 == body["audit_seq"]
    entry = hub.last()
    assert entry["break_glass"]["used"] and entry["break_glass"]["justification"] == (
        f"risk_of_significant_harm: {WHY}"
    )
    assert entry["break_glass_grant"] == {"grant_id": bg["grant_id"], "new": False}
    assert {
        f["agency"] for f in entry["fields"] if "break_glass_override" in f["reasons"]
    } == lacking
    assert hub.audit.get(n_before + 2).data()["outcome"] == "approved"
    alerts = hub.rows(Alert)
    assert [a.kind for a in alerts] == ["break_glass_attempted", "break_glass_used"]
    alert = alerts[-1]
    assert (alert.kind, alert.to_role, alert.user_id, alert.person_id, alert.audit_seq) == (
        "break_glass_used",
        "ig_lead",
        "sw1",
        person,
        body["audit_seq"],
    )
    [note] = hub.rows(NotificationDue)
    assert (note.person_id, note.protocol_id, note.due_by) == (person, MASH, due.isoformat())
    [grant] = hub.rows(BreakGlassGrant)
    assert grant.grant_id == bg["grant_id"] and grant.audit_seq == n_before + 2


def test_grant_reopens_until_it_expires(hub: Hub, world: World) -> None:
    person, lacking = _person_without_mash_consent(hub, world)
    gid = hub.override(
        f"/persons/{person}/break-glass", f"/persons/{person}?protocol={MASH}", hours=2
    ).json()["break_glass"]["grant_id"]
    url = f"/persons/{person}?protocol={MASH}&break_glass_id={gid}"

    hub.at(NOW + dt.timedelta(hours=1, minutes=59))
    r = hub.get(url)
    assert r.status_code == 200, r.text
    assert {rec["agency"] for rec in r.json()["records"]} >= lacking
    assert r.json()["break_glass"]["grant_id"] == gid
    assert hub.last()["break_glass_grant"] == {"grant_id": gid, "new": False}

    hub.at(NOW + dt.timedelta(hours=2, minutes=1))
    r = hub.get(url)
    assert r.status_code == 403
    assert "break_glass_expired" in r.json()["reasons"]
    entry = hub.last()
    assert entry["break_glass"]["problems"] == ["break_glass_expired"]
    assert not any(f["allowed"] for f in entry["fields"])  # nothing at all, not even consented
    assert [a.kind for a in hub.rows(Alert)] == [  # waiting, opened, reopened, expired
        "break_glass_attempted",
        "break_glass_used",
        "break_glass_used",
        "break_glass_attempted",
    ]
    assert len(hub.rows(NotificationDue)) == 1  # one pending notification per person


def test_grant_is_only_for_its_user_and_subject(hub: Hub, world: World) -> None:
    person, _ = _person_without_mash_consent(hub, world)
    gid = hub.override(
        f"/persons/{person}/break-glass", f"/persons/{person}?protocol={MASH}"
    ).json()["break_glass"]["grant_id"]
    # sw2 has no relationship; a guessed or borrowed grant id is refused and alerted
    r = hub.get(f"/persons/{person}?protocol={MASH}&break_glass_id={gid}", who="sw2")
    assert r.status_code == 403
    assert "break_glass_grant_not_valid_for_request" in r.json()["reasons"]
    assert hub.last()["user_id"] == "sw2"
    other = next(m for m in world.members if m != person)
    r = hub.get(f"/persons/{other}?protocol={MASH}&break_glass_id={gid}")
    assert r.status_code == 403
    assert "break_glass_grant_not_valid_for_request" in r.json()["reasons"]
    assert [a.kind for a in hub.rows(Alert)][-2:] == ["break_glass_attempted"] * 2


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"protocol_id": S47}, "break_glass_not_permitted_by_protocol"),
        ({"category": "curiosity"}, "break_glass_category_not_permitted"),
        ({"justification": "urgent"}, "justification_missing_or_too_short"),
        ({"hours": 48}, "break_glass_duration_exceeds_protocol"),
    ],
)
def test_refused_break_glass_is_403_audited_and_alerted(
    hub: Hub, world: World, change: dict, problem: str
) -> None:
    person, _ = _person_without_mash_consent(hub, world)
    r = hub.post(f"/persons/{person}/break-glass", **change)
    assert r.status_code == 403, r.text
    assert problem in r.json()["reasons"]
    assert hub.audit.count() == hub.seq(1) == r.json()["audit_seq"]
    entry = hub.last()
    assert problem in entry["break_glass"]["problems"] and not entry["break_glass"]["used"]
    # s47 would allow these fields under its gateway, but a refused override shows nothing
    assert entry["fields"] and not any(f["allowed"] for f in entry["fields"])
    assert [a.kind for a in hub.rows(Alert)] == ["break_glass_attempted"]
    assert hub.rows(NotificationDue) == [] and hub.rows(BreakGlassGrant) == []


def test_analyst_and_unallocated_users_cannot_break_glass(hub: Hub, world: World) -> None:
    person, _ = _person_without_mash_consent(hub, world)
    r = hub.post(f"/persons/{person}/break-glass", who="sw2")
    assert r.status_code == 403 and "no_legitimate_relationship" in r.json()["reasons"]
    r = hub.post(f"/households/{world.household}/break-glass", who="analyst1")
    assert r.status_code == 403
    assert {"role_may_not_break_glass", "role_not_row_level"} <= set(r.json()["reasons"])
    assert hub.rows(NotificationDue) == [] and len(hub.rows(Alert)) == 2


def test_identifier_in_justification_never_reaches_the_store(hub: Hub, world: World) -> None:
    person, _ = _person_without_mash_consent(hub, world)
    secret = "Mother called from 07700 900123 worried about her son"
    r = hub.post(f"/persons/{person}/break-glass", justification=secret)
    assert r.status_code == 403 and "justification_contains_identifier" in r.json()["reasons"]
    assert hub.last()["break_glass"]["justification"].endswith("looked like an identifier]")
    assert b"07700" not in hub.db_path.read_bytes()


def test_household_break_glass_one_entry_notification_per_member(hub: Hub, world: World) -> None:
    r = hub.override(
        f"/households/{world.household}/break-glass",
        f"/households/{world.household}?protocol={MASH}",
        hours=24,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["members"] == world.members and body["break_glass"]["used"]
    assert hub.audit.count() == hub.seq(3)  # waiting request, approval, view
    entry = hub.last()
    assert entry["type"] == "household_decision"
    overridden = sorted(
        d["subject"]["person_id"]
        for d in entry["decisions"]
        if any("break_glass_override" in f["reasons"] for f in d["fields"])
    )
    assert overridden
    assert sorted(n.person_id for n in hub.rows(NotificationDue)) == overridden
    alert = hub.rows(Alert)[-1]  # one alert for the view, naming the household
    assert (alert.kind, alert.person_id) == ("break_glass_used", world.household)
    gid = body["break_glass"]["grant_id"]
    hub.at(NOW + dt.timedelta(hours=25))
    r = hub.get(f"/households/{world.household}?protocol={MASH}&break_glass_id={gid}")
    assert r.status_code == 403 and "break_glass_expired" in r.json()["reasons"]


def test_openapi_documents_break_glass(hub: Hub) -> None:
    spec = hub.client.get("/openapi.json").json()
    for path in ("/persons/{person_id}/break-glass", "/households/{household_id}/break-glass"):
        op = spec["paths"][path]["post"]
        assert "403" in op["responses"] and "requestBody" in op
    params = {p["name"] for p in spec["paths"]["/persons/{person_id}"]["get"]["parameters"]}
    assert "break_glass_id" in params
    assert {"justification", "category", "hours"} <= set(
        spec["components"]["schemas"]["BreakGlassIn"]["properties"]
    )
