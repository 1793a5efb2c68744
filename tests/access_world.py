"""A hub with access control on, for the access tests: the linked test world's warehouse
(tests/test_api.build_world) copied so a test may flag records restricted, the governance store
on the backend under test, the shipped schemas/assignments.yaml, and allocations for a social
worker in a team, that team's manager, a manager of another team, a peer with no team, and a
school's designated safeguarding lead."""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb
from test_api import NOW, World

from governance.access import AccessControl, load_assignments
from governance.audit import AuditLog
from governance.consent import ConsentRegistry
from governance.decisions import Governance, User
from governance.policy import load_protocols
from governance.relationships import Relationship, RelationshipRegistry, SubjectKind
from governance.service import ViewService
from governance.signoff import SignOffStore

SW = User("sw.csc.1", "practitioner", "CSC")  # member of csc_assessment_1
TM = User("tm.csc.1", "team_manager", "CSC")  # manages csc_assessment_1
OTHER_TM = User("tm.eh.1", "team_manager", "EH")  # manages eh_locality_north only
PEER = User("sw.csc.9", "practitioner", "CSC")  # CSC, in no team, allocated too
DSL = User("dsl.sch.1", "practitioner", "SCH")  # a school's designated safeguarding lead
S47 = "s47_child_protection_enquiry"
MASH = "mash_information_sharing"
EARLY_HELP = "early_help_family_support"


@dataclass
class AccessHub:
    gov: Governance
    views: ViewService
    warehouse: Path
    signoffs: SignOffStore | None


def access_hub(
    world: World,
    tmp: Path,
    url: str,
    schema: str | None,
    *,
    sign_off: bool = False,
    allocate: tuple[User, ...] = (SW, PEER, DSL),
) -> AccessHub:
    warehouse = tmp / "warehouse.duckdb"
    shutil.copy2(world.warehouse, warehouse)
    con = duckdb.connect(str(warehouse))
    con.execute("ALTER TABLE payload ADD COLUMN IF NOT EXISTS restricted BOOLEAN")
    con.close()
    protocols = load_protocols()
    audit = AuditLog(url, schema=schema)
    signoffs = SignOffStore(audit.engine) if sign_off else None
    rels = RelationshipRegistry(
        [
            Relationship(u.user_id, SubjectKind.HOUSEHOLD, world.household, dt.date(2026, 1, 1))
            for u in allocate
        ]
    )
    consent = ConsentRegistry()
    for (pid, purpose), events in world.consent._events.items():
        for e in events:
            consent.record(pid, e.agency, purpose, e.status.value, e.date)
    access = AccessControl(load_assignments(protocols=protocols), signoffs)
    gov = Governance(audit, consent=consent, relationships=rels, protocols=protocols, access=access)
    return AccessHub(gov, ViewService(warehouse, gov, clock=lambda: NOW), warehouse, signoffs)


def flag_restricted(warehouse: Path, person_id: str) -> list[str]:
    """What a bridge's `restricted` payload flag does at the hub: the person's records' latest
    rows carry restricted = true. Returns the flagged agencies."""
    con = duckdb.connect(str(warehouse))
    rows = con.execute(
        """UPDATE payload SET restricted = true WHERE (agency, record_ref) IN
        (SELECT agency, record_ref FROM record_person WHERE person_id = ?)
        RETURNING agency""",
        [person_id],
    ).fetchall()
    con.close()
    assert rows, "person has no records to flag"
    return sorted({r[0] for r in rows})
