"""A real workspace for tests: the linked test world (tests/test_api.build_world), its warehouse
copied into a private hub folder and published (linkage.publish), the governance store of
tests/test_api.make_hub (allocations, consent) with access control as deployed (the shipped
schemas/assignments.yaml plus the API tests' team, every protocol signed off by its
controllers), local accounts with argon2 passwords, and one agency's re-identification service
on a real 127.0.0.1 port with that agency's own keys and extract (case references and identity
go there, signed by a real hub key).

The worker sw1 is a children's social care (CSC) practitioner: CSC is the agency the shipped
assignments give every protocol the tests use (s.47, MASH, Early Help), so the household is one
with a CSC record (`_csc_world`), and that record is the worker's own case.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import duckdb
from test_api import MAPPINGS, NOW, World, make_hub

from governance.audit import generate_hub_key
from ig_bridge.keys import KeyStore, decrypt_record_ref
from ig_bridge.reid_service import ReidService, extract_lookup, load_hub_public_key, make_server
from linkage.config import HubPaths
from linkage.publish import publish
from synthetic_data.parties import agree_partnership_protocols
from workspace.accounts import AccountStore, SessionStore
from workspace.app import Workspace

PASSWORD = "correct horse battery staple"
S47 = "s47_child_protection_enquiry"
EARLY_HELP = "early_help_family_support"
MASH = "mash_information_sharing"


@dataclass
class Setup:
    ws: Workspace
    world: World
    agency: str  # the worker's agency (holds a record of a household member)
    case_reference: str  # that agency's own local id for the record (its case system's)
    person: str  # the person that record is linked to
    bridge_log: Path
    tmp: Path


def _extract(run: Path, code: str) -> Path:
    [path] = [p for p in (run / "population" / "extracts" / code).iterdir() if p.is_file()]
    return path


def _unconsented(world: World, members: list[str], agencies: list[str]) -> bool:
    """A member with records at two or more Early Help partners and no early_help consent
    recorded by any (what the consent pages' tests start from)."""
    from governance.consent import ConsentStatus
    from governance.policy import load_protocols

    partners = load_protocols()[EARLY_HELP].agencies
    held: dict[str, set[str]] = {}
    for p, a in zip(members, agencies, strict=True):
        if a in partners:
            held.setdefault(p, set()).add(a)
    return any(
        len(a) >= 2
        and all(
            world.consent.state(p, "early_help", x, NOW).status is ConsentStatus.NONE
            for x in partners
        )
        for p, a in held.items()
    )


def _csc_world(world: World, early_help_unconsented: bool = False) -> World:
    """The test world moved to a household of two or more with a CSC record (the worker's
    agency): one also known to Early Help and a GP if there is one, then the most agencies (the
    MASH view then withholds some detail for lack of consent and shows the rest); with
    `early_help_unconsented`, one with a member `_unconsented` describes. Its person is the
    member with the CSC record known to the most agencies."""
    con = duckdb.connect(str(world.warehouse), read_only=True)
    candidates = [
        r[0]
        for r in con.execute("""
        SELECT m.household_id FROM household_member m JOIN record_person rp USING (person_id)
        GROUP BY 1 HAVING count(DISTINCT m.person_id) >= 2 AND bool_or(rp.agency = 'CSC')
        ORDER BY bool_or(rp.agency = 'EH') DESC, bool_or(rp.agency = 'GP') DESC,
                 count(DISTINCT rp.agency) DESC, 1""").fetchall()
    ]
    hh = None
    for h in candidates:
        rows = con.execute(
            """SELECT DISTINCT m.person_id, rp.agency FROM household_member m
            JOIN record_person rp USING (person_id) WHERE m.household_id = ?""",
            [h],
        ).fetchall()
        if not early_help_unconsented or _unconsented(
            world, [r[0] for r in rows], [r[1] for r in rows]
        ):
            hh = h
            break
    assert hh is not None, "the test world has no household with a CSC record to use"
    members = [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT person_id FROM household_member WHERE household_id = ? ORDER BY 1",
            [hh],
        ).fetchall()
    ]
    person = con.execute(
        """SELECT person_id FROM record_person WHERE list_contains(?, person_id)
        GROUP BY 1 ORDER BY bool_or(agency = 'CSC') DESC, count(DISTINCT agency) DESC, 1
        LIMIT 1""",
        [members],
    ).fetchone()[0]
    con.close()
    return replace(world, household=hh, members=members, person=person)


def _case(world: World) -> tuple[str, str, str]:
    """(agency, record ref, person) of a household member's record, CSC first."""
    con = duckdb.connect(str(world.warehouse), read_only=True)
    row = con.execute(
        """SELECT agency, record_ref, person_id FROM record_person
        WHERE list_contains(?, person_id) AND agency IN ('CSC', 'SCH', 'GP', 'HV', 'POL')
        ORDER BY agency = 'CSC' DESC, agency = 'SCH' DESC, agency, record_ref LIMIT 1""",
        [world.members],
    ).fetchone()
    con.close()
    return row


@contextmanager
def workspace(
    world: World, tmp: Path, *, idle_minutes: float = 15, early_help_unconsented: bool = False
) -> Iterator[Setup]:
    import datetime as dt

    world = _csc_world(world, early_help_unconsented)
    gov, _views, _store, _tokens, _db = make_hub(world, tmp, deployed=True)
    paths = HubPaths.for_run(tmp)
    paths.hub.mkdir(parents=True, exist_ok=True)
    shutil.copy2(world.warehouse, paths.warehouse)  # private: tests may lock or change it
    publish(paths, "r1")
    agency, ref, person = _case(world)
    keys = KeyStore(world.run / "agency" / agency / "keys", agency)
    case_reference = decrypt_record_ref(ref, keys.ref_keys())  # the agency's own case number
    hub_key = generate_hub_key(paths.hub / "keys" / "hub_request.pem")
    agree_partnership_protocols(tmp, [agency])
    bridge_log = tmp / "agency" / agency / "audit.log"
    service = ReidService(
        agency,
        keys,
        load_hub_public_key(paths.hub / "keys" / "hub_request.pub"),
        extract_lookup(_extract(world.run, agency), MAPPINGS / f"{agency.lower()}.yaml"),
        bridge_log,
    )
    server = make_server(service)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    engine = gov.audit.engine
    accounts = AccountStore(engine)
    assert agency == "CSC", f"the workspace world's household has no CSC record ({agency})"
    accounts.create("sw1", PASSWORD, "practitioner", agency, team="assessment team 1")
    accounts.create("tm1", PASSWORD, "team_manager", agency, team="assessment team 1")
    accounts.create("pc9", PASSWORD, "practitioner", "POL")
    accounts.create("an1", PASSWORD, "analyst", None)
    ws = Workspace(
        paths,
        gov,
        accounts,
        SessionStore(engine, idle=dt.timedelta(minutes=idle_minutes)),
        hub_key,
        {agency: f"http://127.0.0.1:{server.server_address[1]}"},
        clock=lambda: NOW,
    )
    try:
        yield Setup(ws, world, agency, case_reference, person, bridge_log, tmp)
    finally:
        server.shutdown()
        server.server_close()
        ws.http.close()
