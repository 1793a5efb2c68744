"""Restricted records marked by the owning agency (#20): the workspace screen (by the worker's
own case reference, through the agency's real service), the API route (by record ref), and the
marker following the record through person merges and splits. Real warehouse, real keys, real
governance store (SQLite file and PostgreSQL: the `backend` fixture)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from access_world import S47, SW, access_hub
from fastapi.testclient import TestClient
from test_api import World, build_world
from test_workspace_app import audit_bodies, audit_text, client, csrf, sign_in
from workspace_world import Setup, workspace

from governance.decisions import User
from governance.restricted import RestrictionStore, restricted_people
from governance.service import Forbidden


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory)


@pytest.fixture
def setup(world: World, tmp_path: Path) -> Iterator[Setup]:
    with workspace(world, tmp_path) as s:
        yield s


def _refused_restricted(s: Setup) -> bool:
    try:
        s.ws.views().person_view(User("sw1", "practitioner", s.agency), S47, s.person)
    except Forbidden as exc:
        return exc.reasons == ["restricted_record"]
    return False


# --- the workspace screen ------------------------------------------------------------------------


def test_owning_agency_marks_and_lifts_on_the_restrictions_screen(setup: Setup) -> None:
    c = sign_in(client(setup))
    page = c.get("/restrictions")
    assert page.status_code == 200 and 'id="no-markers"' in page.text
    assert not _refused_restricted(setup)
    r = c.post(
        "/restrictions",
        data={
            "case_reference": setup.case_reference,
            "reason": "refuge",
            "csrf_token": csrf(page.text),
        },
    )
    assert r.status_code == 303 and r.headers["location"] == "/restrictions?done=marked"
    [marker] = RestrictionStore(setup.ws.gov.audit.engine).active_for(setup.agency)
    assert marker["reason"] == "refuge" and marker["set_by"] == "sw1"
    [entry] = audit_bodies(setup, "restriction")
    assert entry["type"] == "restriction_marked" and entry["record_ref"] == marker["record_ref"]
    assert setup.case_reference not in audit_text(setup)  # it went to the agency only
    assert _refused_restricted(setup)  # honoured at once, for the agency's own staff too
    listing = c.get("/restrictions?done=marked")
    assert (
        "Record marked restricted." in listing.text
        and f'data-marker="{marker["id"]}"' in listing.text
    )

    # another agency's worker sees none of CSC's markers and cannot lift one
    pol = sign_in(client(setup), "pc9")
    other = pol.get("/restrictions")
    assert 'id="no-markers"' in other.text and marker["record_ref"] not in other.text
    r = pol.post(f"/restrictions/{marker['id']}/lift", data={"csrf_token": csrf(other.text)})
    assert r.status_code == 403 and "Only the agency that holds the record" in r.text
    assert _refused_restricted(setup)

    # no CSRF token: refused before anything happens
    r = c.post(f"/restrictions/{marker['id']}/lift", data={"csrf_token": "forged"})
    assert r.status_code == 403 and _refused_restricted(setup)

    r = c.post(f"/restrictions/{marker['id']}/lift", data={"csrf_token": csrf(listing.text)})
    assert r.status_code == 303 and r.headers["location"] == "/restrictions?done=lifted"
    assert not _refused_restricted(setup)
    assert [b["type"] for b in audit_bodies(setup, "restriction")] == [
        "restriction_marked",
        "restriction_lifted",
    ]


def test_screen_refuses_unknown_case_and_bad_reason_and_analysts(setup: Setup) -> None:
    c = sign_in(client(setup))
    token = csrf(c.get("/restrictions").text)
    r = c.post(
        "/restrictions",
        data={"case_reference": "NO-SUCH-CASE-0", "reason": "refuge", "csrf_token": token},
    )
    assert r.status_code == 404 and "no case with that reference" in r.text
    assert "NO-SUCH-CASE-0" not in r.text and "NO-SUCH-CASE-0" not in audit_text(setup)
    r = c.post(
        "/restrictions",
        data={"case_reference": setup.case_reference, "reason": "gossip", "csrf_token": token},
    )
    assert r.status_code == 422 and setup.case_reference not in r.text
    assert RestrictionStore(setup.ws.gov.audit.engine).active_for(setup.agency) == []
    an = sign_in(client(setup), "an1")
    assert an.get("/restrictions").status_code == 403


# --- the API -------------------------------------------------------------------------------------


def test_api_marks_lists_and_lifts_for_the_owning_agency_only(world: World, tmp_path: Path) -> None:
    from test_api import make_hub

    from governance.api import create_app

    gov, views, store, tokens, _db = make_hub(world, tmp_path)
    con = duckdb.connect(str(world.warehouse), read_only=True)
    agency, ref = con.execute(
        "SELECT agency, record_ref FROM record_person WHERE agency = 'CSC' ORDER BY 2 LIMIT 1"
    ).fetchone()
    con.close()
    owner = store.issue("dpo.csc", "data_officer", agency)
    outsider = store.issue("dpo.pol", "data_officer", "POL")
    api = TestClient(create_app(views, store))

    def call(method: str, url: str, token: str, **kw: object):  # noqa: ANN202
        return api.request(method, url, headers={"Authorization": f"Bearer {token}"}, **kw)

    r = call("POST", "/restrictions", outsider, json={"record_ref": ref, "reason": "adoption"})
    assert r.status_code == 403 and r.json()["detail"]["reasons"] == ["not_the_owning_agency"]
    r = call("POST", "/restrictions", owner, json={"record_ref": ref, "reason": "nosy"})
    assert r.status_code == 422
    r = call("POST", "/restrictions", owner, json={"record_ref": ref, "reason": "adoption"})
    assert r.status_code == 201, r.text
    seq = r.json()["audit_seq"]
    assert gov.audit.get(seq).data()["type"] == "restriction_marked"
    [m] = call("GET", "/restrictions", owner).json()["markers"]
    assert m["record_ref"] == ref and m["reason"] == "adoption"
    assert call("GET", "/restrictions", outsider).json()["markers"] == []
    assert call("POST", f"/restrictions/{m['id']}/lift", outsider).status_code == 403
    r = call("POST", f"/restrictions/{m['id']}/lift", owner)
    assert r.status_code == 200 and call("GET", "/restrictions", owner).json()["markers"] == []
    assert call("POST", f"/restrictions/{m['id']}/lift", owner).status_code == 404


# --- the marker follows the record through merges and splits -------------------------------------


def _move(warehouse: Path, agency: str, ref: str, to_person: str) -> None:
    """What a re-link does to one record: it now belongs to another person."""
    con = duckdb.connect(str(warehouse))
    con.execute(
        "UPDATE record_person SET person_id = ? WHERE agency = ? AND record_ref = ?",
        [to_person, agency, ref],
    )
    con.close()


def test_marker_follows_its_record_through_merge_and_split(
    world: World, tmp_path: Path, backend: tuple[str, str | None]
) -> None:
    hub = access_hub(world, tmp_path, *backend)
    agencies = list(hub.gov.protocols[S47].agencies)
    con = duckdb.connect(str(hub.warehouse), read_only=True)
    rows = con.execute(
        """SELECT person_id, agency, record_ref FROM record_person
        WHERE list_contains(?, person_id) AND list_contains(?, agency)
        ORDER BY person_id, agency, record_ref""",
        [world.members, agencies],
    ).fetchall()
    con.close()
    a, agency, ref = rows[0]
    b = next(p for p, _, _ in rows if p != a)  # another member with records of their own
    b_records = [(ag, r) for p, ag, r in rows if p == b]
    owner = User(f"worker.{agency.lower()}", "practitioner", agency)
    RestrictionStore(hub.gov.audit.engine).mark(hub.gov.audit, owner, agency, ref, "adoption")
    assert set(restricted_people(hub.views, [a, b])) == {a}
    assert hub.views.person_view(SW, S47, b).records

    # merge: a re-link finds the marked record is b's
    _move(hub.warehouse, agency, ref, b)
    assert set(restricted_people(hub.views, [a, b])) == {b}
    with pytest.raises(Forbidden) as exc:
        hub.views.person_view(SW, S47, b)
    assert exc.value.reasons == ["restricted_record"]
    view_a = hub.views.household_view(SW, S47, world.household)
    assert b not in view_a.members and all(r.person_id != b for r in view_a.records)

    # split: b's own records go to a new person; the marker stays with the record, not the id
    for ag, r in b_records:
        _move(hub.warehouse, ag, r, "P_SPLIT_1")
    assert set(restricted_people(hub.views, [a, b, "P_SPLIT_1"])) == {b}
    _move(hub.warehouse, agency, ref, "P_SPLIT_1")
    assert set(restricted_people(hub.views, [a, b, "P_SPLIT_1"])) == {"P_SPLIT_1"}
