"""My caseload end to end with real keys: an agency's case-system export (its own case
references) goes through its bridge (record refs with its AES-SIV key, signed with its Ed25519
key, sealed to the hub's key; ig_bridge.allocations), lands at the hub as legitimate
relationships (governance.allocations) and shows on the worker's caseload page, where it opens
the child's pages. Then the attacks: a tampered file, another agency's signature, an old
export replayed, another agency's record ref, a file moved between drop areas.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from fastapi.testclient import TestClient
from test_api import World, build_world
from workspace_world import MAPPINGS, S47, Setup, _extract, workspace

from governance.allocations import AllocationsRefused, import_allocations, import_drop_area
from governance.relationships import Relationship, SqlRelationshipRegistry, SubjectKind
from ig_bridge.allocations import (
    AllocationError,
    build_export,
    canonical,
    land_export,
    read_allocations,
)
from ig_bridge.keys import KeyStore, decrypt_record_ref
from ig_bridge.manifest import load_public_keys
from ig_bridge.reid_service import extract_lookup
from ig_bridge.sealing import bridge_hub_key, load_hub_sealing_keys
from linkage.config import HubPaths
from linkage.publish import current
from workspace.app import create_app

PG_SCHEMA_PREFIX = "ws19_alloc"


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory)


@pytest.fixture
def setup(world: World, tmp_path: Path) -> Iterator[Setup]:
    with workspace(world, tmp_path) as s:
        # the hub's relationships in the governance store, as in production (workspace.cli)
        s.ws.gov.relationships = SqlRelationshipRegistry(s.ws.gov.audit.engine)
        yield s


class Agency:
    """One agency's side: its keys, its extract, its drop area."""

    def __init__(self, s: Setup, code: str) -> None:
        self.s, self.code = s, code
        self.keys = KeyStore(s.world.run / "agency" / code / "keys", code)
        lookup = extract_lookup(_extract(s.world.run, code), MAPPINGS / f"{code.lower()}.yaml")
        self.known = lambda ref: bool(lookup([ref]))
        self.work = s.tmp / "agency_work" / code
        self.drop = s.tmp / "allocations_landing"

    def case_refs(self, people: list[str]) -> dict[str, str]:
        """person -> this agency's own case reference for one of its records about them."""
        con = duckdb.connect(str(self.s.world.warehouse), read_only=True)
        rows = con.execute(
            "SELECT person_id, min(record_ref) FROM record_person WHERE agency = ?"
            " AND list_contains(?, person_id) GROUP BY 1",
            [self.code, people],
        ).fetchall()
        con.close()
        return {p: decrypt_record_ref(r, self.keys.ref_keys()) for p, r in rows}

    def export(self, rows: list[tuple[str, str, str, str]], sequence: int) -> Path:
        csv_path = self.work / f"case_system_{sequence}.csv"
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        with csv_path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["worker_id", "case_reference", "start", "end"])
            w.writerows(rows)
        doc = build_export(
            self.keys,
            read_allocations(csv_path),
            sequence,
            self.known,
            exported_at=dt.datetime(2026, 5, 20 + sequence, 9, tzinfo=dt.UTC),
        )
        csv_path.unlink()
        return land_export(
            doc, bridge_hub_key(self.keys.directory), self.drop, self.code, sequence, self.work
        )


def hub_import(s: Setup, path: Path, agency: str, **kw: object) -> object:
    run = HubPaths.for_run(s.world.run)
    return import_allocations(
        path,
        agency,
        hub_keys=load_hub_sealing_keys(run.keys),
        public_keys=load_public_keys(run.public_keys),
        warehouse=current(s.ws.paths),
        registry=s.ws.gov.relationships,
        audit=s.ws.gov.audit,
        **kw,
    )


def client(s: Setup, user: str = "sw1") -> TestClient:
    from test_workspace_app import sign_in

    return sign_in(
        TestClient(create_app(s.ws), base_url="https://testserver", follow_redirects=False), user
    )


def refusals(s: Setup) -> list[str]:
    return [r.data()["code"] for r in s.ws.gov.audit.entries() if r.kind == "allocations_refused"]


def test_allocations_from_the_case_system_become_the_workers_caseload(setup: Setup) -> None:
    s = setup
    agency = Agency(s, s.agency)
    refs = agency.case_refs(s.world.members)
    person, ref = s.person, refs[s.person]
    c = client(s)
    assert c.get(f"/people/{person}?protocol={S47}").status_code == 403  # no allocation yet
    assert "no-allocations" in c.get("/caseload").text
    # a relationship typed at the hub for another subject must survive every sync
    s.ws.gov.relationships.add(
        Relationship("sw1", SubjectKind.PERSON, "P-TYPED-AT-HUB", dt.date(2026, 1, 1))
    )

    sealed = agency.export(
        [
            ("sw1", ref, "2026-05-01", ""),
            ("sw1", "NO-SUCH-CASE-42", "2026-05-01", ""),
            ("pc9", ref, "2026-04-01", "2026-12-31"),
        ],
        sequence=1,
    )
    raw = sealed.read_bytes()
    assert ref.encode() not in raw and b"sw1" not in raw  # sealed: nothing readable lands
    assert not list(agency.work.iterdir())  # the plaintext export did not stay behind
    kept = s.tmp / "kept" / sealed.name  # an eavesdropper's copy, for a replay
    kept.parent.mkdir()
    shutil.copy(sealed, kept)
    report = hub_import(s, sealed, s.agency)
    assert (report.received, report.added, report.unlinked, report.unknown_at_agency) == (
        2,
        2,
        0,
        1,
    )

    rels = {(r.user_id, r.subject_id, r.reason) for r in s.ws.gov.relationships.all()}
    assert ("sw1", person, f"allocation_{s.agency}") in rels
    assert ("pc9", person, f"allocation_{s.agency}") in rels
    page = c.get("/caseload")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    subjects = re.findall(
        r'class="govuk-table__row ws-allocation" data-subject="([^"]+)"', page.text
    )
    assert sorted(subjects) == sorted([person, "P-TYPED-AT-HUB"])
    assert "case system" in page.text and "recorded at the hub" in page.text
    assert f'href="/people/{person}/known-to"' in page.text
    assert ref not in page.text
    assert c.get(f"/people/{person}?protocol={S47}").status_code == 200  # now allocated
    assert c.get(f"/people/{person}/known-to?protocol={S47}").status_code == 200

    # the case references never reached the hub: not in its store, its audit log or its pages
    store = (s.tmp / "governance.db").read_bytes()
    assert ref.encode() not in store and b"NO-SUCH-CASE-42" not in store
    [entry] = [r.data() for r in s.ws.gov.audit.entries() if r.kind == "allocations_import"]
    assert entry["added"] == 2 and entry["unknown_at_agency"] == 1
    assert ref not in json.dumps(entry)

    # the next export no longer lists sw1's case: the allocation ends, access with it
    hub_import(s, agency.export([("pc9", ref, "2026-04-01", "2026-12-31")], sequence=2), s.agency)
    ended = [
        r for r in s.ws.gov.relationships.all() if r.user_id == "sw1" and r.subject_id == person
    ]
    assert [r.end for r in ended] == [dt.date(2026, 5, 22)]
    assert c.get(f"/people/{person}?protocol={S47}").status_code == 403
    assert person not in c.get("/caseload").text
    assert "P-TYPED-AT-HUB" in c.get("/caseload").text  # typed at the hub: untouched
    assert ("pc9", person) in {
        (r.user_id, r.subject_id)
        for r in s.ws.gov.relationships.all()
        if r.end is None or r.end > dt.date(2026, 6, 1)
    }

    # replaying the first export (which listed sw1) cannot reopen the allocation
    with pytest.raises(AllocationsRefused) as exc:
        hub_import(s, kept, s.agency)
    assert exc.value.code == "replayed_or_old" and refusals(s) == ["replayed_or_old"]
    assert c.get(f"/people/{person}?protocol={S47}").status_code == 403


def test_a_tampered_export_and_one_moved_to_another_drop_area_do_not_open(setup: Setup) -> None:
    s = setup
    agency = Agency(s, s.agency)
    ref = agency.case_refs(s.world.members)[s.person]
    sealed = agency.export([("sw1", ref, "2026-05-01", "")], sequence=1)
    data = bytearray(sealed.read_bytes())
    data[-20] ^= 1
    tampered = s.tmp / sealed.name
    tampered.write_bytes(bytes(data))
    with pytest.raises(AllocationsRefused) as exc:
        hub_import(s, tampered, s.agency)
    assert exc.value.code == "unseal_failed"
    other = "POL" if s.agency != "POL" else "CSC"
    with pytest.raises(AllocationsRefused) as exc:  # dropped as if from another agency
        hub_import(s, sealed, other)
    assert exc.value.code == "unseal_failed"
    renamed = sealed.with_name("allocations-00000002.sealed")
    shutil.copy(sealed, renamed)
    with pytest.raises(AllocationsRefused):  # renamed to look like a later export
        hub_import(s, renamed, s.agency)
    assert refusals(s) == ["unseal_failed"] * 3
    assert not s.ws.gov.relationships.all()


def _signed_body(keys: KeyStore, agency_claimed: str, rows: list[dict], sequence: int) -> bytes:
    signer = keys.signing_key()
    body = {
        "format": "joinedup-allocations/1",
        "agency": agency_claimed,
        "sequence": sequence,
        "exported_at": "2026-05-21T09:00:00+00:00",
        "key_id": signer.key_id,
        "allocations": rows,
        "unknown_case_references": 0,
    }
    return json.dumps(
        {"body": body, "signature": base64.b64encode(signer.sign(canonical(body))).decode()}
    ).encode()


def test_a_partner_cannot_allocate_in_another_agencys_name_or_with_its_refs(setup: Setup) -> None:
    s = setup
    mine = Agency(s, s.agency)
    other_code = next(
        a
        for a in ("POL", "HV", "GP", "SCH", "CSC")
        if a != s.agency and Agency(s, a).case_refs(s.world.members)
    )
    other = Agency(s, other_code)
    hub_key = bridge_hub_key(other.keys.directory)
    # the other agency signs an export claiming to be this agency and drops it in this
    # agency's area (it holds the hub's public key, so it can seal for any context)
    forged = _signed_body(
        other.keys,
        s.agency,
        [{"user_id": "sw1", "record_ref": "x" * 40, "start": "2026-05-01", "end": None}],
        1,
    )
    path = land_export(forged, hub_key, mine.drop, s.agency, 1, other.work)
    with pytest.raises(AllocationsRefused) as exc:
        hub_import(s, path, s.agency)
    assert exc.value.code == "signed_by_another_agency"
    # this agency names another agency's record ref (of a real person): it maps to no one,
    # since refs resolve only among the sender's own records
    con = duckdb.connect(str(s.world.warehouse), read_only=True)
    theirs = con.execute(
        "SELECT record_ref FROM record_person WHERE agency = ? LIMIT 1", [other_code]
    ).fetchone()[0]
    con.close()
    doc = _signed_body(
        mine.keys,
        s.agency,
        [{"user_id": "sw1", "record_ref": theirs, "start": "2026-05-01", "end": None}],
        2,
    )
    report = hub_import(s, land_export(doc, hub_key, mine.drop, s.agency, 2, mine.work), s.agency)
    assert (report.added, report.unlinked) == (0, 1)
    assert not s.ws.gov.relationships.all()
    # this agency allocates a worker the hub knows to be another agency's (pc9, police):
    # not landed, counted; its own worker is
    assert s.agency != "POL"
    ref = mine.case_refs(s.world.members)[s.person]

    def staff(user_id: str) -> str | None:
        found = s.ws.accounts.get(user_id)
        return found[0].agency if found else None

    report = hub_import(
        s,
        mine.export([("pc9", ref, "2026-05-01", ""), ("sw1", ref, "2026-05-01", "")], sequence=3),
        s.agency,
        staff_agency=staff,
    )
    assert (report.added, report.other_agency_staff) == (1, 1)
    assert [r.user_id for r in s.ws.gov.relationships.all()] == ["sw1"]


def test_bad_rows_are_named_by_file_row_and_field_never_by_value(tmp_path: Path) -> None:
    p = tmp_path / "export.csv"
    p.write_text(
        "worker_id,case_reference,start,end\n"
        "sw1,CASE-SECRET-1,2026-05-01,\n"
        "sw 2,CASE-SECRET-2,2026-13-01,2026-01-01\n"
        ",CASE-SECRET-3,2026-05-01,2026-04-01\n"
    )
    with pytest.raises(AllocationError) as exc:
        read_allocations(p)
    msg = str(exc.value)
    assert (
        "row 3: worker_id" in msg
        and "row 3: start" in msg
        and "row 4: end: before start" in msg
        and "row 4: worker_id" in msg
    )
    assert "SECRET" not in msg
    p.write_text("worker,case\nsw1,1\n")
    with pytest.raises(AllocationError, match="missing column"):
        read_allocations(p)


def test_the_drop_area_is_imported_in_order_and_emptied(setup: Setup) -> None:
    s = setup
    agency = Agency(s, s.agency)
    ref = agency.case_refs(s.world.members)[s.person]
    agency.export([("sw1", ref, "2026-05-01", "")], sequence=1)
    agency.export([("sw1", ref, "2026-05-01", ""), ("tm1", ref, "2026-05-02", "")], sequence=2)
    run = HubPaths.for_run(s.world.run)
    reports = import_drop_area(
        agency.drop,
        s.agency,
        hub_keys=load_hub_sealing_keys(run.keys),
        public_keys=load_public_keys(run.public_keys),
        warehouse=current(s.ws.paths),
        registry=s.ws.gov.relationships,
        audit=s.ws.gov.audit,
    )
    assert [(r.sequence, r.added, r.kept) for r in reports] == [(1, 1, 0), (2, 1, 1)]
    assert not list((agency.drop / s.agency).glob("allocations-*"))
    assert len(s.ws.gov.relationships.all()) == 2


def test_the_two_command_lines_carry_an_export_from_agency_to_hub(
    world: World, tmp_path: Path, capsys
) -> None:
    """`python -m ig_bridge.allocations` at the agency, `python -m governance.allocations` at
    the hub, over a run folder of their own (keys copied from the test world)."""
    from governance.allocations import drop_root
    from governance.allocations import main as hub_main
    from ig_bridge.allocations import main as bridge_main
    from linkage.publish import publish

    src = HubPaths.for_run(world.run)
    run = tmp_path / "run"
    paths = HubPaths.for_run(run)
    paths.hub.mkdir(parents=True)
    shutil.copytree(src.keys, paths.keys)
    shutil.copytree(src.public_keys, paths.public_keys)
    shutil.copy2(world.warehouse, paths.warehouse)
    publish(paths, "r1")
    con = duckdb.connect(str(world.warehouse), read_only=True)
    code, ref = con.execute(
        "SELECT agency, record_ref FROM record_person WHERE person_id = ? ORDER BY agency LIMIT 1",
        [world.person],
    ).fetchone()
    con.close()
    agency_dir = tmp_path / "agency" / code
    shutil.copytree(world.run / "agency" / code / "keys", agency_dir / "keys")
    case = decrypt_record_ref(ref, KeyStore(agency_dir / "keys", code).ref_keys())
    export = tmp_path / "export.csv"
    export.write_text(
        f"worker_id,case_reference,start,end\nw.{code.lower()},{case},"
        f"2026-05-01,\nother.worker,{case},2026-05-01,\n"
    )
    from governance.hub_stage import governance_engine
    from workspace.accounts import AccountStore

    # the hub's staff directory knows other.worker as another agency's
    AccountStore(governance_engine(run)).create(
        "other.worker", None, "practitioner", "HSG" if code != "HSG" else "GP"
    )
    args = [
        "--csv",
        str(export),
        "--agency",
        code,
        "--agency-dir",
        str(agency_dir),
        "--extract",
        str(_extract(world.run, code)),
        "--mapping",
        str(MAPPINGS / f"{code.lower()}.yaml"),
        "--drop",
        str(drop_root(run)),
    ]
    assert bridge_main(args) == 0 and bridge_main(args) == 0  # two exports: 1 then 2
    assert sorted(p.name for p in (drop_root(run) / code).iterdir()) == [
        "allocations-00000001.sealed",
        "allocations-00000002.sealed",
    ]
    assert hub_main([str(run)]) == 0
    out = capsys.readouterr().out
    assert (
        f"{code} #1: 2 received, 1 added" in out
        and f"{code} #2: 2 received, 0 added, 1 kept" in out
    )
    assert case not in out
    rels = SqlRelationshipRegistry(governance_engine(run)).all()
    assert [(r.user_id, r.subject_id) for r in rels] == [(f"w.{code.lower()}", world.person)]


def test_sync_on_both_store_backends(setup: Setup, backend) -> None:
    """The same landing into the governance store on SQLite and PostgreSQL (production)."""
    from governance.audit import AuditLog, make_engine

    url, schema = backend
    engine = make_engine(url, schema)
    registry, audit = SqlRelationshipRegistry(engine), AuditLog(engine)
    agency = Agency(setup, setup.agency)
    refs = agency.case_refs(setup.world.members)
    run = HubPaths.for_run(setup.world.run)
    kw = {
        "hub_keys": load_hub_sealing_keys(run.keys),
        "public_keys": load_public_keys(run.public_keys),
        "warehouse": current(setup.ws.paths),
        "registry": registry,
        "audit": audit,
    }
    rows = [(f"w{i}", r, "2026-05-01", "") for i, r in enumerate(sorted(refs.values()))]
    r1 = import_allocations(agency.export(rows, 1), setup.agency, **kw)
    r2 = import_allocations(agency.export(rows[1:], 2), setup.agency, **kw)
    assert (r1.added, r2.added, r2.kept, r2.ended) == (len(rows), 0, len(rows) - 1, 1)
    open_now = {r.user_id for r in registry.all() if r.end is None}
    assert open_now == {f"w{i}" for i in range(1, len(rows))}
    with pytest.raises(AllocationsRefused):
        import_allocations(
            agency.export(rows, 3).rename(
                agency.drop / setup.agency / "allocations-00000002.sealed"
            ),
            setup.agency,
            **kw,
        )


def test_two_hub_processes_importing_one_export_at_once_land_it_once(
    setup: Setup, monkeypatch
) -> None:
    """Every process passes the early sequence check (made blind here, as when they all read
    before any lands); the check under the audit chain's lock lets exactly one land."""
    import threading

    import governance.allocations as allocations
    from governance.audit import AuditLog, make_engine

    monkeypatch.setattr(allocations, "last_sequence", lambda *_: 0)
    s = setup
    agency = Agency(s, s.agency)
    ref = agency.case_refs(s.world.members)[s.person]
    sealed = agency.export([("sw1", ref, "2026-05-01", "")], sequence=1)
    run = HubPaths.for_run(s.world.run)
    outcomes: list[str] = []

    def hub_process(i: int) -> None:
        copy = s.tmp / f"proc{i}" / sealed.name
        copy.parent.mkdir()
        shutil.copy(sealed, copy)
        engine = make_engine(f"sqlite:///{s.tmp / 'governance.db'}")
        try:
            import_allocations(
                copy,
                s.agency,
                hub_keys=load_hub_sealing_keys(run.keys),
                public_keys=load_public_keys(run.public_keys),
                warehouse=current(s.ws.paths),
                registry=SqlRelationshipRegistry(engine),
                audit=AuditLog(engine),
            )
            outcomes.append("landed")
        except AllocationsRefused as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=hub_process, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["landed"] + ["replayed_or_old"] * 3
    assert [(r.user_id, r.subject_id) for r in s.ws.gov.relationships.all()] == [("sw1", s.person)]
    assert [r.kind for r in s.ws.gov.audit.entries()].count("allocations_import") == 1
