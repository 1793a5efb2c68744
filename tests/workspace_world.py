"""A real workspace for tests: the linked test world (tests/test_api.build_world), its warehouse
copied into a private hub folder and published (linkage.publish), the governance store of
tests/test_api.make_hub (allocations, consent), local accounts with argon2 passwords, and one
agency's re-identification service on a real 127.0.0.1 port with that agency's own keys and
extract (case references and identity go there, signed by a real hub key).
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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


def _case(world: World) -> tuple[str, str, str]:
    """(agency, record ref, person) of a household member's record, CSC first."""
    con = duckdb.connect(str(world.warehouse), read_only=True)
    row = con.execute("""SELECT agency, record_ref, person_id FROM record_person
        WHERE list_contains(?, person_id) AND agency IN ('CSC', 'SCH', 'GP', 'HV', 'POL')
        ORDER BY agency = 'CSC' DESC, agency = 'SCH' DESC, agency, record_ref LIMIT 1""",
                      [world.members]).fetchone()
    con.close()
    return row


@contextmanager
def workspace(world: World, tmp: Path, *, idle_minutes: float = 15) -> Iterator[Setup]:
    import datetime as dt

    gov, _views, _store, _tokens, _db = make_hub(world, tmp)
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
    service = ReidService(agency, keys, load_hub_public_key(paths.hub / "keys" /
                                                            "hub_request.pub"),
                          extract_lookup(_extract(world.run, agency),
                                         MAPPINGS / f"{agency.lower()}.yaml"), bridge_log)
    server = make_server(service)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    engine = gov.audit.engine
    accounts = AccountStore(engine)
    accounts.create("sw1", PASSWORD, "practitioner", agency, team="assessment team 1")
    accounts.create("pc9", PASSWORD, "practitioner", "POL")
    accounts.create("an1", PASSWORD, "analyst", None)
    ws = Workspace(paths, gov, accounts,
                   SessionStore(engine, idle=dt.timedelta(minutes=idle_minutes)), hub_key,
                   {agency: f"http://127.0.0.1:{server.server_address[1]}"},
                   clock=lambda: NOW)
    try:
        yield Setup(ws, world, agency, case_reference, person, bridge_log, tmp)
    finally:
        server.shutdown()
        server.server_close()
        ws.http.close()
