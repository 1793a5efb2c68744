"""The demo's caseload allocations, sent the production way: by each agency's bridge.

In a partnership legitimate relationships come from the agencies' case systems, never typed at
the hub: each agency's bridge turns its own case references into record refs, signs, seals and
drops its export (ig_bridge.allocations); the hub opens, checks and lands every waiting export
(governance.allocations, as its report stage does after each run). The demo plays each agency's
case system: for each allocation the week needs (a worker to a person, or to a family, chosen
from the warehouse by what the week must show), the worker's agency finds its own case
references for those people by decrypting its own record refs with its own key (only it
can), writes its case-system export in its own folder and runs its bridge on it. A family
becomes one family case (its members' case references under one family reference), which the
hub places in the household the linkage holds them in.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def _members(warehouse: Path, household: str) -> list[str]:
    import duckdb

    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        rows = con.execute(
            "SELECT DISTINCT person_id FROM household_member WHERE household_id = ? ORDER BY 1",
            [household],
        ).fetchall()
    finally:
        con.close()
    return [r[0] for r in rows]


def case_references(out: Path, agency: str, people: list[str], warehouse: Path) -> list[str]:
    """The agency's own case references for its records about these people: its record refs
    decrypted with its own record-ref key (agency side; the hub cannot do this)."""
    import duckdb

    from ig_bridge.keys import KeyStore, decrypt_record_ref

    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        refs = con.execute(
            "SELECT min(record_ref) FROM record_person WHERE agency = ? "
            "AND list_contains(?, person_id) GROUP BY person_id ORDER BY 1",
            [agency, people],
        ).fetchall()
    finally:
        con.close()
    keys = KeyStore(out / "agency" / agency / "keys", agency).ref_keys()
    return [decrypt_record_ref(r[0], keys) for r in refs]


def write_case_system_export(
    out: Path, agency: str, allocations: Iterable[Any], warehouse: Path
) -> Path:
    """The agency's case-system export (0600, in its own folder): one row per case, a family
    allocation's rows sharing a family reference."""
    rows = []
    for n, a in enumerate(allocations, start=1):
        household = a.kind.value == "household"
        people = _members(warehouse, a.subject_id) if household else [a.subject_id]
        cases = case_references(out, agency, people, warehouse)
        if not cases:
            raise SystemExit(
                f"demo: {agency} holds no record of {a.kind.value} {a.subject_id}, so its "
                f"case system cannot allocate {a.user_id} to it"
            )
        end = a.end.isoformat() if a.end else ""
        family = f"DEMO-FAMILY-{n}" if household else ""
        for case in cases if household else cases[:1]:
            rows.append([a.user_id, case, a.start.isoformat(), end, family])
    folder = out / "agency" / agency / "case_system"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / "allocations.csv"
    path.unlink(missing_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
        w = csv.writer(fh)
        w.writerow(["worker_id", "case_reference", "start", "end", "family_reference"])
        w.writerows(rows)
    return path


def send_allocations(
    out: Path,
    allocations: Iterable[Any],
    staff: Mapping[str, tuple[str, str]],
    engine: Any,
    audit: Any,
) -> list[Any]:
    """Each worker's agency sends its allocations (governance.relationships.Relationship
    objects: worker, kind, subject, dates) through its bridge; the hub imports them all.
    `staff`: worker -> (role, employing agency). Returns the hub's import reports."""
    from governance.allocations import drop_root, import_run
    from ig_bridge.allocations import export_and_land
    from ig_bridge.reid_service import extract_lookup
    from linkage.config import HubPaths
    from linkage.publish import current

    paths = HubPaths.for_run(out)
    warehouse = current(paths) or paths.warehouse
    by_agency: dict[str, list[Any]] = {}
    for a in allocations:
        by_agency.setdefault(staff[a.user_id][1], []).append(a)
    for agency, mine in sorted(by_agency.items()):
        extract = next(
            p for p in sorted((out / "population" / "extracts" / agency).iterdir()) if p.is_file()
        )
        lookup = extract_lookup(extract, REPO / "schemas" / "agencies" / f"{agency.lower()}.yaml")
        export = write_case_system_export(out, agency, mine, warehouse)
        try:
            export_and_land(
                export,
                out / "agency" / agency,
                agency,
                lambda ref, lookup=lookup: bool(lookup([ref])),
                drop_root(out),
            )
        finally:
            export.unlink()
    return import_run(out, warehouse, engine, audit)
