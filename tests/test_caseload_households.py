"""Family allocations: an agency's family case (several of its case references under one family
reference) goes through its bridge as one household allocation of record refs and lands at the
hub as a legitimate relationship to the household the linkage places those people in; the
family reference and the case references stay at the agency. A family the hub cannot place in
one household is not guessed; another agency's record refs place no one.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
from pathlib import Path

import duckdb
import pytest
from test_caseload_allocations import (  # noqa: F401 - fixtures
    Agency,
    _signed_body,
    client,
    hub_import,
    refusals,
    setup,
    world,
)
from workspace_world import S47, Setup

from governance.allocations import AllocationsRefused
from governance.relationships import SubjectKind
from ig_bridge.allocations import AllocationError, build_export, land_export, read_allocations
from ig_bridge.sealing import bridge_hub_key

Row = tuple[str, str, str, str, str]  # worker, case reference, start, end, family reference


def write_csv(path: Path, rows: list[Row]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["worker_id", "case_reference", "start", "end", "family_reference"])
        w.writerows(rows)
    return path


def family_doc(agency: Agency, rows: list[Row], sequence: int) -> bytes:
    csv_path = write_csv(agency.work / f"case_system_{sequence}.csv", rows)
    try:
        return build_export(
            agency.keys,
            read_allocations(csv_path),
            sequence,
            agency.known,
            exported_at=dt.datetime(2026, 5, 20 + sequence, 9, tzinfo=dt.UTC),
        )
    finally:
        csv_path.unlink()


def send(agency: Agency, rows: list[Row], sequence: int) -> Path:
    return land_export(
        family_doc(agency, rows, sequence),
        bridge_hub_key(agency.keys.directory),
        agency.drop,
        agency.code,
        sequence,
        agency.work,
    )


def households_of(s: Setup) -> dict[str, str]:
    """person -> active household, from the published warehouse."""
    con = duckdb.connect(str(s.ws.warehouse()), read_only=True)
    rows = con.execute(
        "SELECT m.person_id, m.household_id FROM household_member m "
        "JOIN household h USING (household_id) WHERE h.status = 'active'"
    ).fetchall()
    con.close()
    return dict(rows)


def test_a_family_case_allocates_the_worker_to_the_household(setup: Setup) -> None:  # noqa: F811
    s = setup
    hh = s.world.household
    agency = Agency(s, s.agency)
    refs = agency.case_refs(s.world.members)  # the agency's cases among the family
    assert refs and households_of(s)[s.person] == hh
    assert set(refs) < set(s.world.members)  # members it holds no record of, too
    c = client(s)
    assert c.get(f"/households/{hh}?protocol={S47}").status_code == 403  # no allocation yet
    rows = [("sw1", ref, "2026-05-01", "", "FAMILY-CASE-77") for ref in refs.values()]
    rows.append(("sw1", "NO-SUCH-CASE-9", "2026-05-01", "", "FAMILY-CASE-77"))

    doc = json.loads(family_doc(agency, rows, sequence=1))  # what the bridge signs and seals
    [sent] = doc["body"]["allocations"]
    assert sent["kind"] == "household" and len(sent["record_refs"]) == len(refs)
    text = json.dumps(doc)
    assert "FAMILY-CASE-77" not in text and not any(r in text for r in refs.values())

    report = hub_import(s, send(agency, rows, sequence=1), s.agency)
    assert (report.received, report.added, report.unknown_at_agency) == (1, 1, 1)
    assert report.households_unresolved == 0
    [rel] = s.ws.gov.relationships.all()
    assert (rel.user_id, rel.kind, rel.subject_id, rel.reason) == (
        "sw1",
        SubjectKind.HOUSEHOLD,
        hh,
        f"allocation_{s.agency}",
    )

    page = c.get("/caseload").text
    assert re.findall(r'ws-allocation" data-subject="([^"]+)"', page) == [hh]
    assert f"Family {hh}" in page and f'href="/households/{hh}/known-to"' in page
    view = c.get(f"/households/{hh}?protocol={S47}")
    assert view.status_code == 200
    # the household allocation covers every member, also those the agency holds no record of
    assert all(f"Member {m}" in view.text for m in s.world.members)
    for ref in [*refs.values(), "FAMILY-CASE-77", "NO-SUCH-CASE-9"]:
        assert ref not in view.text and ref not in page
        assert ref.encode() not in (s.tmp / "governance.db").read_bytes()
    [entry] = [r.data() for r in s.ws.gov.audit.entries() if r.kind == "allocations_import"]
    assert entry["added"] == 1 and entry["households_unresolved"] == 0

    # the next export no longer holds the family: the allocation ends, and access with it
    hub_import(s, send(agency, [], sequence=2), s.agency)
    [rel] = s.ws.gov.relationships.all()
    assert rel.end == dt.date(2026, 5, 22)
    assert c.get(f"/households/{hh}?protocol={S47}").status_code == 403


def test_a_family_split_across_households_goes_to_the_majority_and_a_tie_to_none(
    setup: Setup,  # noqa: F811
) -> None:
    s = setup
    gp = Agency(s, "GP")  # the agency with records of the most people
    where = households_of(s)
    by_household: dict[str, list[str]] = {}
    for person, ref in sorted(gp.case_refs(sorted(where)).items()):
        by_household.setdefault(where[person], []).append(ref)
    big = next(h for h, r in sorted(by_household.items()) if len(r) >= 2)
    other = next(h for h in sorted(by_household) if h != big)
    a1, a2 = by_household[big][:2]
    b1 = by_household[other][0]
    rows = [
        ("gp1", a1, "2026-05-01", "", "FAM-A"),  # two in `big`, one in `other`: `big`
        ("gp1", a2, "2026-05-01", "", "FAM-A"),
        ("gp1", b1, "2026-05-01", "", "FAM-A"),
        ("gp2", a1, "2026-05-01", "", "FAM-B"),  # one each: the hub does not guess
        ("gp2", b1, "2026-05-01", "", "FAM-B"),
    ]
    report = hub_import(s, send(gp, rows, sequence=1), "GP")
    assert (report.received, report.added, report.households_unresolved) == (2, 1, 1)
    assert [(r.user_id, r.kind, r.subject_id) for r in s.ws.gov.relationships.all()] == [
        ("gp1", SubjectKind.HOUSEHOLD, big)
    ]


def test_another_agencys_refs_place_no_family_and_a_bad_family_row_is_refused(
    setup: Setup,  # noqa: F811
) -> None:
    s = setup
    mine = Agency(s, s.agency)
    con = duckdb.connect(str(s.world.warehouse), read_only=True)
    theirs = [
        r[0]
        for r in con.execute(
            "SELECT record_ref FROM record_person WHERE agency <> ? ORDER BY 1 LIMIT 3",
            [s.agency],
        ).fetchall()
    ]
    con.close()
    hub_key = bridge_hub_key(mine.keys.directory)
    row = {"user_id": "sw1", "kind": "household", "start": "2026-05-01", "end": None}
    doc = _signed_body(mine.keys, s.agency, [{**row, "record_refs": theirs}], 1)
    report = hub_import(s, land_export(doc, hub_key, mine.drop, s.agency, 1, mine.work), s.agency)
    assert (report.added, report.unlinked) == (0, 1)
    assert not s.ws.gov.relationships.all()
    for bad in ([], ["x" * 40] * 51, "x" * 40):  # none, too many, not a list
        seq = len(refusals(s)) + 2
        doc = _signed_body(mine.keys, s.agency, [{**row, "record_refs": bad}], seq)
        with pytest.raises(AllocationsRefused) as exc:
            hub_import(s, land_export(doc, hub_key, mine.drop, s.agency, seq, mine.work), s.agency)
        assert exc.value.code == "bad_rows" and "record_refs" in exc.value.detail
    doc = _signed_body(mine.keys, s.agency, [{**row, "kind": "team", "record_ref": "x" * 40}], 9)
    with pytest.raises(AllocationsRefused) as exc:
        hub_import(s, land_export(doc, hub_key, mine.drop, s.agency, 9, mine.work), s.agency)
    assert "kind: not person or household" in exc.value.detail
    assert not s.ws.gov.relationships.all()


def test_a_family_whose_rows_disagree_is_named_by_row_never_by_value(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "export.csv",
        [
            ("ew1", "CASE-SECRET-1", "2026-05-01", "", "FAMILY-SECRET"),
            ("ew1", "CASE-SECRET-2", "2026-05-02", "", "FAMILY-SECRET"),
            ("ew1", "CASE-SECRET-3", "2026-05-01", "", "F" * 65),
        ],
    )
    with pytest.raises(AllocationError) as exc:
        read_allocations(path)
    msg = str(exc.value)
    assert "row 3: start/end: differ from row 2 of the same family allocation" in msg
    assert "row 4: family_reference: longer than 64" in msg
    assert "SECRET" not in msg and "F" * 65 not in msg
    # without the optional column every row is a person allocation, as before
    plain = tmp_path / "plain.csv"
    plain.write_text("worker_id,case_reference,start,end\new1,C-1,2026-05-01,\n")
    [a] = read_allocations(plain)
    assert a.family_reference is None
