"""The "known to" stage (governance.known_to, workspace.known_to_pages) on the linked test world:
which agencies are involved, per protocol, before the detail; decided by the one decision
function with its asker rules intact, one audit entry per request, nothing of the content.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
import yaml
from fastapi.testclient import TestClient
from test_api import World, build_world
from workspace_world import EARLY_HELP, MASH, S47, Setup, workspace

from governance.decisions import User
from governance.known_to import KNOWN_TO, KnownToService
from governance.policy import PROTOCOLS_DIR, PolicyError, load_protocol
from governance.service import Forbidden, NotFound, ViewService
from workspace.app import create_app

PAYLOAD_WORDS = (
    "incident_type",
    "referral_reason",
    "risk_level",
    "domestic_abuse",
    "attendance_pct",
    "case_notes",
    "incident_notes",
    "event_date",
)


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory)


@pytest.fixture
def setup(world: World, tmp_path: Path) -> Iterator[Setup]:
    with workspace(world, tmp_path) as s:
        yield s


def holders(s: Setup) -> dict[str, set[str]]:
    con = duckdb.connect(str(s.world.warehouse), read_only=True)
    rows = con.execute(
        "SELECT DISTINCT person_id, agency FROM record_person WHERE list_contains(?, person_id)",
        [s.world.members],
    ).fetchall()
    con.close()
    out: dict[str, set[str]] = {p: set() for p in s.world.members}
    for p, a in rows:
        out[p].add(a)
    return out


def service(s: Setup) -> KnownToService:
    return KnownToService(s.ws.views())


def decisions_since(s: Setup, seq: int) -> list[dict]:
    return [r.data() for r in s.ws.gov.audit.entries() if r.seq > seq]


SW1 = User("sw1", "practitioner", "CSC")


def test_each_protocol_shows_exactly_the_agencies_its_stage_covers(setup: Setup) -> None:
    held = holders(setup)
    protos = setup.ws.gov.protocols
    seen = {}
    for pid in (S47, MASH, EARLY_HELP):
        k = service(setup).household(SW1, pid, setup.world.household)
        covers = set(protos[pid].known_to.agencies)
        assert k.members == {p: sorted(a & covers) for p, a in held.items()}, pid
        assert k.legal_gateway == protos[pid].known_to.legal_gateway
        seen[pid] = k.members
    assert seen[S47] != seen[EARLY_HELP]  # two protocols, two different answers
    assert any("GP" in a for a in seen[S47].values())  # the world has a GP record here ...
    assert not any("GP" in a for a in seen[MASH].values())  # ... MASH's stage never shows it


def test_known_to_shows_involvement_the_detail_withholds_and_nothing_more(setup: Setup) -> None:
    """Under MASH, where consent is missing the detail from an agency is withheld, yet its
    involvement is known: that is the stage. The stage carries no content."""
    views: ViewService = setup.ws.views()
    detail = views.household_view(SW1, MASH, setup.world.household)
    shown = {(r.person_id, r.agency) for r in detail.records}
    known = service(setup).household(SW1, MASH, setup.world.household)
    only_known = {(p, a) for p, ags in known.members.items() for a in ags} - shown
    assert only_known, "the test world should have an agency MASH withholds for lack of consent"
    body = json.dumps(known.__dict__, default=str)
    assert not any(w in body for w in PAYLOAD_WORDS)


def test_one_audit_entry_per_request_naming_only_the_stage(setup: Setup) -> None:
    before = max((r.seq for r in setup.ws.gov.audit.entries()), default=0)
    k = service(setup).person(SW1, S47, setup.world.person)
    [entry] = decisions_since(setup, before)
    assert entry["stage"] == KNOWN_TO and entry["protocol_id"] == S47
    assert k.audit_seq == max(r.seq for r in setup.ws.gov.audit.entries())
    assert {f["field"] for f in entry["fields"]} == {KNOWN_TO}
    assert {f["legal_basis"] for f in entry["fields"] if f["allowed"]} == {"CA1989_s47"}
    assert not any(w in json.dumps(entry) for w in PAYLOAD_WORDS)


@pytest.mark.parametrize("user", [User("pc9", "practitioner", "POL"), User("an1", "analyst", None)])
def test_the_asker_rules_hold_and_an_unknown_id_looks_the_same(setup: Setup, user: User) -> None:
    svc = service(setup)
    with pytest.raises(Forbidden) as real:
        svc.household(user, MASH, setup.world.household)
    with pytest.raises(Forbidden) as unknown:
        svc.household(user, MASH, "H-NO-SUCH-HOUSEHOLD")
    assert real.value.reasons == unknown.value.reasons
    assert "no_legitimate_relationship" in real.value.reasons
    assert set(real.value.reasons) <= {
        "no_legitimate_relationship",
        "role_not_in_protocol",
        "role_not_row_level",
    }
    entries = [r.data() for r in setup.ws.gov.audit.entries()][-2:]
    assert [e["stage"] for e in entries] == [KNOWN_TO, KNOWN_TO]  # refusals recorded too


def test_allocated_worker_learns_an_id_is_unknown_only_after_the_decision(setup: Setup) -> None:
    with pytest.raises(NotFound):  # sw3 is allocated to a person id no one has
        service(setup).person(User("sw3", "practitioner", "EH"), S47, "P-DOES-NOT-EXIST")
    with pytest.raises(Forbidden) as exc:
        service(setup).person(SW1, "no_such_protocol", setup.world.person)
    assert exc.value.reasons == ["unknown_protocol"]


def test_a_known_to_stage_without_its_gateway_is_refused_naming_the_file(tmp_path: Path) -> None:
    doc = yaml.safe_load((PROTOCOLS_DIR / f"{MASH}.yaml").read_text())
    doc["known_to"] = {"agencies": ["POL"]}
    bad = tmp_path / f"{MASH}.yaml"
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(PolicyError, match=rf"{MASH}\.yaml: known_to.*legal_gateway"):
        load_protocol(bad)
    doc["known_to"] = {"agencies": ["XX"], "legal_gateway": "CA2004_s11"}
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(PolicyError, match=r"known_to.*unknown agency code 'XX'"):
        load_protocol(bad)


# --- the pages -----------------------------------------------------------------------------


def _signed_in(s: Setup, user: str = "sw1") -> TestClient:
    from test_workspace_app import sign_in

    c = TestClient(create_app(s.ws), base_url="https://testserver", follow_redirects=False)
    return sign_in(c, user)


def test_known_to_page_lists_agencies_per_member_and_links_to_the_detail(setup: Setup) -> None:
    c = _signed_in(setup)
    hh = setup.world.household
    r = c.get(f"/households/{hh}/known-to?protocol={MASH}")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    listed = set(re.findall(r'<tr[^>]*id="known-([^"]+)"', r.text))
    assert listed == set(setup.world.members)
    shown = {
        (m, a)
        for m, a in re.findall(
            r'<tr[^>]*id="known-([^"]+)"(?:(?!</tr>).)*?data-agency="([A-Z]+)"', r.text, re.S
        )
    }
    k = service(setup).household(SW1, MASH, hh)
    assert {(p, a) for p, ags in k.members.items() for a in ags} >= shown and shown
    assert f'href="/households/{hh}?protocol={MASH}"' in r.text
    assert not any(w in r.text for w in PAYLOAD_WORDS)
    assert not any(label in r.text for label in ("Incident type", "Risk level", "Referral reason"))
    r = c.get(f"/households/{hh}/known-to?protocol={EARLY_HELP}")
    assert r.status_code == 200 and "Police" not in r.text.split("<table")[1]
    page_views = [e.data() for e in setup.ws.gov.audit.entries() if e.kind == "page_view"]
    assert page_views[-1]["route"] == "/households/{household_id}/known-to"


def test_known_to_page_refuses_without_an_allocation_as_for_an_unknown_id(setup: Setup) -> None:
    c = _signed_in(setup, "pc9")
    real = c.get(f"/households/{setup.world.household}/known-to?protocol={MASH}")
    fake = c.get(f"/households/H-NO-SUCH/known-to?protocol={MASH}")
    assert real.status_code == fake.status_code == 403

    def strip(t: str) -> str:
        return re.sub(r"audit entry \d+", "", t)

    assert strip(real.text) == strip(fake.text)
    assert "no current allocation" in real.text
    assert not any("data-agency" in t for t in (real.text, fake.text))


def test_known_to_page_needs_sign_in(setup: Setup) -> None:
    c = TestClient(create_app(setup.ws), base_url="https://testserver", follow_redirects=False)
    r = c.get(f"/households/{setup.world.household}/known-to?protocol={MASH}")
    assert r.status_code == 303 and r.headers["location"] == "/sign-in"
