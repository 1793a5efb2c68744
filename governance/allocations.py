"""Caseload allocations, hub side: an agency's export lands as legitimate relationships.

Each agency's bridge sends its complete current allocations, keyed by record refs (the case
references stay at the agency: ig_bridge.allocations), sealed to the hub and signed by the
agency. Here one export is opened and checked, then synced into the governance store's
relationships (governance.relationships.SqlRelationshipRegistry), so legitimate relationships
come from the agencies' case systems instead of being typed at the hub.

Checks, each refusing the whole export (an `allocations_refused` audit entry with the code;
nothing lands): the file name gives the sequence; it opens with the hub's sealing key in the
context of this agency, sequence and name (a file moved from another agency's drop area or
renamed does not open); it is signed by a signing key of the drop area's agency (a partner
cannot write allocations in another agency's name); the body names that agency and sequence;
the sequence is above the last one imported (an old export cannot be replayed to reopen ended
allocations); every row is well formed (errors name the file, row and field, never a value).

Sync: each record ref is mapped to its person in the published warehouse, only among the
sending agency's own records, so an agency can only allocate its staff to people it holds
records about. A family allocation (several record refs: the agency's family case) goes to the
active household that holds the most of those people; if none does, or two tie, it is counted
(`households_unresolved`) and not landed: the hub does not guess which home a split family's
worker covers. A (worker, person or household) allocation not open yet is added (reason
`allocation_<AGENCY>`, start as sent); an open allocation from this agency missing from the
export is ended on the export's date; allocations typed at the hub or sent by other agencies
are never touched; a row naming a worker the staff directory places at another agency is not
landed. Refs with no linked person are counted, not stored. The sync lands in the transaction
of the one `allocations_import` audit entry that records the counts.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import io
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    case,
    func,
    insert,
    or_,
    select,
    update,
)

from governance.audit import AuditLog
from governance.models import RelationshipRow
from governance.relationships import Relationship, SqlRelationshipRegistry, SubjectKind
from ig_bridge.allocations import FORMAT, MAX_FAMILY, batch_id, canonical
from ig_bridge.sealing import HubSealingKey, SealError, unseal_stream

NAME = re.compile(r"^allocations-(\d{8})\.sealed$")
USER = re.compile(r"^[A-Za-z0-9_.@-]{1,128}$")
REF = re.compile(r"^[A-Za-z0-9_=:.-]{8,256}$")
MAX_BYTES = 64 << 20
FORMATS = (FORMAT, "joinedup-allocations/1")  # /1: every row a person allocation
Row = tuple[str, SubjectKind, tuple[str, ...], dt.date, dt.date | None]  # user, kind, refs
StaffDirectory = Callable[[str], str | None]  # user id -> employing agency (None: unknown)
_meta = MetaData()
imports = Table(
    "gov_allocation_imports",
    _meta,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("agency", String(8), nullable=False, index=True),
    Column("sequence", BigInteger, nullable=False),
    Column("exported_at", String(40), nullable=False),
    Column("imported_at", String(40), nullable=False),
    Column("audit_seq", BigInteger, nullable=False),
)


class AllocationsRefused(Exception):  # noqa: N818 - an outcome, not a fault
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code, self.detail = code, detail


class _LandedMeanwhile(Exception):  # noqa: N818 - rolls the audit transaction back
    pass


@dataclass(frozen=True)
class ImportReport:
    agency: str
    sequence: int
    received: int  # allocations in the export
    added: int
    kept: int  # already open, unchanged
    ended: int
    unlinked: int  # allocations none of whose record refs is linked to a person (yet)
    unknown_at_agency: int  # case references the agency's extract did not hold
    audit_seq: int
    other_agency_staff: int = 0  # rows naming another agency's worker: not landed
    households_unresolved: int = 0  # family allocations with no one household: not landed


def reason_for(agency: str) -> str:
    return f"allocation_{agency}"


def last_sequence(engine: Any, agency: str) -> int:
    _meta.create_all(engine)
    with engine.connect() as conn:
        rows = conn.execute(select(imports.c.sequence).where(imports.c.agency == agency)).all()
    return max((r.sequence for r in rows), default=0)


def _open(path: Path, agency: str, sequence: int, hub_keys: Mapping[str, HubSealingKey]) -> bytes:
    buf = io.BytesIO()
    try:
        with path.open("rb") as fh:
            unseal_stream(
                fh,
                buf,
                hub_keys,
                agency=agency,
                batch_id=batch_id(sequence),
                file_name=path.name,
                max_bytes=MAX_BYTES,
            )
    except SealError as exc:
        raise AllocationsRefused(
            exc.reason_code, f"{path.name}: does not open for {agency}"
        ) from None
    return buf.getvalue()


def _verify(
    raw: bytes, name: str, agency: str, sequence: int, public_keys: Mapping[str, bytes]
) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
        body, sig = doc["body"], base64.b64decode(doc["signature"], validate=True)
        key_id = body["key_id"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise AllocationsRefused("malformed", f"{name}: not an allocations export") from None
    if not isinstance(key_id, str) or not key_id.startswith(f"{agency}-"):
        raise AllocationsRefused(
            "signed_by_another_agency", f"{name}: not signed by a key of {agency}"
        )
    pub = public_keys.get(key_id)
    if pub is None:
        raise AllocationsRefused("unknown_signing_key", f"{name}: key {key_id} not registered")
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, canonical(body))
    except InvalidSignature:
        raise AllocationsRefused("bad_signature", f"{name}: signature does not verify") from None
    if body.get("format") not in FORMATS:
        raise AllocationsRefused("malformed", f"{name}: format is not {FORMAT}")
    if body.get("agency") != agency or body.get("sequence") != sequence:
        raise AllocationsRefused(
            "wrong_agency_or_sequence", f"{name}: names another agency or sequence"
        )
    return body


def _refs(r: dict[str, Any]) -> tuple[SubjectKind | None, tuple[str, ...] | None]:
    """The row's kind and record refs (None where malformed)."""
    kind = r.get("kind", "person")
    if kind == "person":
        ref = r.get("record_ref")
        return SubjectKind.PERSON, (ref,) if isinstance(ref, str) and REF.fullmatch(ref) else None
    if kind == "household":
        refs = r.get("record_refs")
        ok = (
            isinstance(refs, list)
            and 0 < len(refs) <= MAX_FAMILY
            and all(isinstance(x, str) and REF.fullmatch(x) for x in refs)
        )
        return SubjectKind.HOUSEHOLD, tuple(refs) if ok else None
    return None, None


def _rows(body: dict[str, Any], name: str) -> list[Row]:
    rows = body.get("allocations")
    if not isinstance(rows, list):
        raise AllocationsRefused("malformed", f"{name}: allocations: not a list")
    out, problems = [], []
    for i, r in enumerate(rows, start=1):
        where = f"{name}: allocation {i}"
        if not isinstance(r, dict):
            problems.append(f"{where}: not an object")
            continue
        bad = []
        user = r.get("user_id")
        kind, refs = _refs(r)
        if not isinstance(user, str) or not USER.fullmatch(user):
            bad.append("user_id: missing or not a staff id")
        if kind is None:
            bad.append("kind: not person or household")
        elif refs is None:
            bad.append(
                "record_ref: missing or malformed"
                if kind is SubjectKind.PERSON
                else f"record_refs: not a list of 1 to {MAX_FAMILY} record refs"
            )
        try:
            start = dt.date.fromisoformat(r.get("start"))
        except (TypeError, ValueError):
            start = None
            bad.append("start: not a date")
        end = None
        if r.get("end") is not None:
            try:
                end = dt.date.fromisoformat(r["end"])
            except (TypeError, ValueError):
                bad.append("end: not a date")
        if start is not None and end is not None and end < start:
            bad.append("end: before start")
        if bad:
            problems.extend(f"{where}: {b}" for b in bad)
        else:
            out.append((user, kind, refs, start, end))
    if problems:
        raise AllocationsRefused(
            "bad_rows", f"{name}: {len(problems)} problem(s):\n  " + "\n  ".join(problems[:20])
        )
    return out


def _people(warehouse: Path, agency: str, refs: list[str]) -> dict[str, str]:
    """record ref -> person, among this agency's own records only."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        rows = con.execute(
            "SELECT record_ref, person_id FROM record_person WHERE agency = ? "
            "AND list_contains(?, record_ref)",
            [agency, refs],
        ).fetchall()
    finally:
        con.close()
    return dict(rows)


def _households(warehouse: Path, people: set[str]) -> str | None:
    """The one active household holding the most of these people; None if none or a tie."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        counts = con.execute(
            "SELECT m.household_id, count(DISTINCT m.person_id) AS n FROM household_member m "
            "JOIN household h USING (household_id) WHERE h.status = 'active' "
            "AND list_contains(?, m.person_id) GROUP BY 1 ORDER BY n DESC, 1 LIMIT 2",
            [sorted(people)],
        ).fetchall()
    finally:
        con.close()
    if not counts or (len(counts) == 2 and counts[0][1] == counts[1][1]):
        return None
    return counts[0][0]


def import_allocations(
    path: Path | str,
    agency: str,
    *,
    hub_keys: Mapping[str, HubSealingKey],
    public_keys: Mapping[str, bytes],
    warehouse: Path,
    registry: SqlRelationshipRegistry,
    audit: AuditLog,
    staff_agency: StaffDirectory | None = None,
) -> ImportReport:
    """Open, check and sync one export from `agency`'s drop area; AllocationsRefused if any
    check fails (audited; nothing lands). `staff_agency` (user id -> employing agency, None
    if unknown) keeps an agency from allocating another agency's staff."""
    path = Path(path)
    if registry.engine.url != audit.engine.url:
        raise ValueError(
            "allocations: the relationships and the audit log must share one "
            "governance store (they land in one transaction)"
        )
    try:
        m = NAME.fullmatch(path.name)
        if m is None:
            raise AllocationsRefused("bad_name", f"{path.name}: not allocations-<8 digits>.sealed")
        sequence = int(m.group(1))
        body = _verify(
            _open(path, agency, sequence, hub_keys), path.name, agency, sequence, public_keys
        )
        last = last_sequence(registry.engine, agency)
        if sequence <= last:
            raise AllocationsRefused(
                "replayed_or_old", f"{path.name}: sequence {sequence} is not after {last}"
            )
        rows = _rows(body, path.name)
        try:
            as_of = dt.datetime.fromisoformat(body["exported_at"]).date()
        except (KeyError, TypeError, ValueError):
            raise AllocationsRefused("malformed", f"{path.name}: exported_at: not a time") from None
    except AllocationsRefused as exc:
        audit.append(
            "allocations_refused",
            {
                "type": "allocations_refused",
                "at": dt.datetime.now(dt.UTC).isoformat(),
                "agency": agency,
                "file": path.name[:64],
                "code": exc.code,
            },
        )
        raise
    return _sync(registry, audit, agency, sequence, body, rows, as_of, warehouse, staff_agency)


def _sync(
    registry: SqlRelationshipRegistry,
    audit: AuditLog,
    agency: str,
    sequence: int,
    body: dict[str, Any],
    rows: list[Row],
    as_of: dt.date,
    warehouse: Path,
    staff_agency: StaffDirectory | None,
) -> ImportReport:
    people = _people(warehouse, agency, sorted({ref for r in rows for ref in r[2]}))
    reason = reason_for(agency)
    wanted: dict[tuple[str, SubjectKind, str], Relationship] = {}
    unlinked = other_staff = unresolved = 0
    for user, kind, refs, start, end in rows:
        linked = {people[ref] for ref in refs if ref in people}
        if not linked:
            unlinked += 1
            continue
        subject = linked.pop() if kind is SubjectKind.PERSON else _households(warehouse, linked)
        if subject is None:
            unresolved += 1
            continue
        employer = staff_agency(user) if staff_agency is not None else None
        if employer is not None and employer != agency:
            other_staff += 1  # an agency allocates its own staff only
            continue
        wanted.setdefault(
            (user, kind, subject), Relationship(user, kind, subject, start, end, reason)
        )
    mine = [r for r in registry.all() if r.reason == reason and (r.end is None or r.end > as_of)]
    open_now = {(r.user_id, r.kind, r.subject_id) for r in mine}
    added = [r for k, r in wanted.items() if k not in open_now]
    to_end = sorted(open_now - set(wanted))
    _meta.create_all(registry.engine)
    now = dt.datetime.now(dt.UTC).isoformat()

    def land(conn: Connection, seq: int) -> None:
        """Ends, additions and the sequence in the audit entry's own transaction: all or
        nothing, so a failed import can be sent again and a landed one never replayed. The
        sequence is checked again here, under the audit chain's lock, so two hub processes
        importing the same export at once cannot both land it."""
        last = (
            conn.execute(
                select(func.max(imports.c.sequence)).where(imports.c.agency == agency)
            ).scalar()
            or 0
        )
        if sequence <= last:
            raise _LandedMeanwhile()
        _end(conn, reason, to_end, as_of)
        if added:
            conn.execute(
                insert(RelationshipRow),
                [
                    {
                        "user_id": r.user_id,
                        "kind": r.kind.value,
                        "subject_id": r.subject_id,
                        "start": r.start.isoformat(),
                        "end": r.end.isoformat() if r.end else None,
                        "reason": r.reason,
                        "recorded_at": now,
                    }
                    for r in added
                ],
            )
        conn.execute(
            insert(imports).values(
                agency=agency,
                sequence=sequence,
                exported_at=str(body["exported_at"]),
                imported_at=now,
                audit_seq=seq,
            )
        )

    unknown = int(body.get("unknown_case_references") or 0)
    try:
        rec = audit.append(
            "allocations_import",
            {
                "type": "allocations_import",
                "at": now,
                "agency": agency,
                "sequence": sequence,
                "exported_at": body["exported_at"],
                "received": len(rows),
                "added": len(added),
                "ended": len(to_end),
                "unlinked": unlinked,
                "other_agency_staff": other_staff,
                "households_unresolved": unresolved,
                "unknown_at_agency": unknown,
            },
            also=land,
        )
    except _LandedMeanwhile:
        audit.append(
            "allocations_refused",
            {
                "type": "allocations_refused",
                "at": now,
                "agency": agency,
                "file": f"allocations-{sequence:08d}.sealed",
                "code": "replayed_or_old",
            },
        )
        raise AllocationsRefused(
            "replayed_or_old", f"sequence {sequence} landed meanwhile"
        ) from None
    return ImportReport(
        agency,
        sequence,
        len(rows),
        len(added),
        len(wanted) - len(added),
        len(to_end),
        unlinked,
        unknown,
        rec.seq,
        other_staff,
        unresolved,
    )


def _end(
    conn: Connection, reason: str, keys: list[tuple[str, SubjectKind, str]], on: dt.date
) -> None:
    """End this agency's open allocations of these (worker, kind, subject) on `on`; those
    typed at the hub or sent by another agency (other reasons) are left alone."""
    c = RelationshipRow
    for user, kind, subject in keys:
        conn.execute(
            update(c)
            .where(
                c.user_id == user,
                c.kind == kind.value,
                c.subject_id == subject,
                c.reason == reason,
                or_(c.end.is_(None), c.end > on.isoformat()),
            )
            .values(end=case((c.start > on.isoformat(), c.start), else_=on.isoformat()))
        )


def import_drop_area(drop_root: Path | str, agency: str, **kw: Any) -> list[ImportReport]:
    """Import every export waiting in `drop_root/<agency>/`, oldest first; each imported or
    refused file is removed (a refused one is audited), so nothing is read twice."""
    area = Path(drop_root) / agency
    out = []
    for path in sorted(p for p in area.glob("allocations-*.sealed") if p.is_file()):
        try:
            out.append(import_allocations(path, agency, **kw))
        except AllocationsRefused:
            pass
        finally:
            path.unlink(missing_ok=True)
    return out


def drop_root(run_dir: Path | str) -> Path:
    """Where agencies drop allocations exports in a run folder (beside the batch landing)."""
    return Path(run_dir) / "allocations_landing"


def import_run(
    run_dir: Path | str, warehouse: Path, engine: Any, audit: AuditLog
) -> list[ImportReport]:
    """Every agency's waiting exports in the run's drop root (the hub run's report stage and
    the command line), workers checked against the hub's local accounts."""
    from ig_bridge.manifest import load_public_keys
    from ig_bridge.sealing import load_hub_sealing_keys
    from linkage.config import HubPaths
    from workspace.accounts import AccountStore  # the hub's staff directory (local accounts)

    root = drop_root(run_dir)
    if not root.is_dir():
        return []
    paths = HubPaths.for_run(Path(run_dir))
    accounts = AccountStore(engine)

    def staff_agency(user_id: str) -> str | None:
        found = accounts.get(user_id)
        return found[0].agency if found else None

    kw = {
        "hub_keys": load_hub_sealing_keys(paths.keys),
        "staff_agency": staff_agency,
        "public_keys": load_public_keys(paths.public_keys),
        "warehouse": warehouse,
        "registry": SqlRelationshipRegistry(engine),
        "audit": audit,
    }
    out: list[ImportReport] = []
    for area in sorted(d for d in root.iterdir() if d.is_dir()):
        out.extend(import_drop_area(root, area.name, **kw))
    return out


def main(argv: list[str] | None = None) -> int:
    """Import every agency's waiting allocations into the run's governance store."""
    import argparse

    from governance.audit_checkpointer import process_origin
    from governance.audit_keys import load_audit_key
    from governance.hub_stage import governance_engine, hub_keys_dir
    from linkage.config import HubPaths
    from linkage.publish import current

    p = argparse.ArgumentParser(
        prog="python -m governance.allocations",
        description=("Land agencies' caseload allocations as legitimate relationships."),
    )
    p.add_argument(
        "run",
        type=Path,
        help="the run folder (hub/ inside); the store is "
        "JOINEDUP_GOVERNANCE_DB or the run's SQLite file",
    )
    a = p.parse_args(argv)
    paths = HubPaths.for_run(a.run)
    engine = governance_engine(a.run)
    warehouse = current(paths)
    if warehouse is None:
        print("no published warehouse yet: run the hub first")
        return 1
    audit = AuditLog(
        engine,
        signing_key=load_audit_key(hub_keys_dir(paths.hub)),
        origin=process_origin("allocations"),
    )
    for r in import_run(a.run, warehouse, engine, audit):
        print(
            f"{r.agency} #{r.sequence}: {r.received} received, {r.added} added, "
            f"{r.kept} kept, {r.ended} ended, {r.unlinked} not linked, "
            f"{r.households_unresolved} families in no one household"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
