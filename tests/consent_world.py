"""A small real world for the consent tests: agency ref keys, a DuckDB warehouse person map
(written with the hub's own table definitions), a governance store on the backend under test,
and the hub's request key."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import duckdb
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from governance.audit import AuditLog, make_engine
from governance.consent import ConsentRegistry
from governance.consent_records import NewConsent
from governance.consent_scope import Scope
from governance.consent_service import ConsentService
from governance.decisions import Governance, User
from governance.policy import load_protocols, load_roles
from governance.relationships import Relationship, RelationshipRegistry, SubjectKind
from ig_bridge.keys import KeyStore
from linkage.households import HOUSEHOLD_DDL
from linkage.person_run import ensure_record_person

AGENCIES = ("EH", "SCH", "HV", "HSG", "GP")
NOW = dt.datetime(2026, 6, 15, 10, 0, tzinfo=dt.UTC)
EH_WORKER = User("eh1", "practitioner", "EH")
PROTOCOLS = load_protocols()
ROLES = load_roles()
EARLY_HELP = "early_help_family_support"


@dataclass
class ConsentWorld:
    root: Path
    warehouse: Path
    gov: Governance
    service: ConsentService
    hub_key: Ed25519PrivateKey
    hub_pem: Path
    refs: dict[tuple[str, str], str]  # (agency, local id) -> record ref
    clock: list[dt.datetime]

    def ref(self, agency: str, local: str) -> str:
        return self.refs[(agency, local)]

    def person_map(self, rows: dict[str, list[tuple[str, str]]]) -> None:
        """Rewrite record_person as a hub re-link does: person -> [(agency, local id)]."""
        con = duckdb.connect(str(self.warehouse))
        try:
            con.execute("DELETE FROM record_person")
            for pid, recs in rows.items():
                for agency, local in recs:
                    con.execute(
                        "INSERT INTO record_person VALUES (?, ?, ?, 'auto', 1.0, ?)",
                        [self.ref(agency, local), agency, pid, "r2"],
                    )
        finally:
            con.close()

    def consent(
        self,
        person: str = "P1",
        agencies: tuple[str, ...] = ("EH", "SCH"),
        categories: tuple[str, ...] = ("involvement", "education"),
        status: str = "given",
        **kw: object,
    ) -> NewConsent:
        base = dict(
            person_id=person,
            purpose="early_help",
            scope=Scope.of(agencies, categories),
            status=status,
            consenter="parent",
            capacity="parental_responsibility",
            given_on=NOW.date(),
            review_by=NOW.date() + dt.timedelta(days=365),
            method=None if status == "not_sought" else "written_in_person",
            evidence_ref="EH-FORM-0042" if status == "given" else None,
        )
        base.update(kw)
        return NewConsent(**base)  # type: ignore[arg-type]

    def tick(self, minutes: int = 1) -> dt.datetime:
        self.clock[0] += dt.timedelta(minutes=minutes)
        return self.clock[0]


def make_world(
    root: Path, url: str, schema: str | None, consent: ConsentRegistry | None = None
) -> ConsentWorld:
    refs: dict[tuple[str, str], str] = {}
    for agency in AGENCIES:
        key = KeyStore(root / "agency" / agency / "keys", agency).create_ref_key()
        for local in ("1001", "1002", "1003", "2001"):
            refs[(agency, local)] = key.encrypt(f"{agency}-{local}")
    warehouse = root / "hub" / "warehouse.duckdb"
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(warehouse))
    ensure_record_person(con)
    con.execute(HOUSEHOLD_DDL)
    con.execute("INSERT INTO household VALUES ('H1', 'active', 'r1', 'r1', NULL, NULL, 2, 3)")
    con.execute(
        "INSERT INTO household_member VALUES ('H1', 'P1', 'r1', 2, 'child'), "
        "('H1', 'P2', 'r1', 2, 'lead')"
    )
    con.close()
    engine = make_engine(url, schema)
    rels = RelationshipRegistry(
        [
            Relationship("eh1", SubjectKind.HOUSEHOLD, "H1", dt.date(2026, 1, 1)),
            Relationship("eh2", SubjectKind.PERSON, "P9", dt.date(2026, 1, 1)),
        ]
    )
    gov = Governance(
        AuditLog(engine),
        consent if consent is not None else ConsentRegistry(),
        rels,
        PROTOCOLS,
        ROLES,
    )
    hub_key = Ed25519PrivateKey.generate()
    pem = root / "agency" / "hub_request_key.pub"
    pem.write_bytes(
        hub_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    clock = [NOW]
    service = ConsentService(
        gov, warehouse, hub_key=hub_key, outbox=root / "hub" / "outbox", clock=lambda: clock[0]
    )
    w = ConsentWorld(root, warehouse, gov, service, hub_key, pem, refs, clock)
    # P1: a child known to EH, school, HV, housing and the GP; P2: the parent
    w.person_map(
        {
            "P1": [
                ("EH", "1001"),
                ("SCH", "1001"),
                ("HV", "1001"),
                ("HSG", "1001"),
                ("GP", "1001"),
            ],
            "P2": [("EH", "2001"), ("HSG", "2001")],
        }
    )
    return w
