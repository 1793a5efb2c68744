"""Caseload allocations, agency side: which of its staff work with which of its cases.

An agency's case system knows who is allocated to which case, keyed by its own case
references. The hub may learn that a worker has a legitimate relationship with a person, but
never the case reference, so the bridge (which holds the record-ref key) turns each case
reference into the record ref it already gave that case in its batches (AES-SIV of the local
id, ig_bridge.keys) and sends the hub only (worker id, record ref, start, end).

The export is the agency's complete list of current allocations (a snapshot: an allocation
missing from the next one has ended). It is a JSON document signed with the agency's Ed25519
signing key, numbered (`sequence`, strictly increasing, so an old export cannot be replayed to
reopen ended allocations), sealed to the hub's public key (ig_bridge.sealing, bound to this
agency, the sequence and the file name) and dropped atomically into the agency's own
allocations drop area as `allocations-<sequence>.sealed`.

Input: a CSV with columns `worker_id, case_reference, start, end` (end may be empty) and,
optionally, `family_reference`. A row without a family reference allocates the worker to that
case's person. Rows sharing a worker and a family reference are one *family* allocation (a
family case: Early Help's family assessment, a sibling group): the worker is allocated to the
household the hub places those cases' people in; the export carries the members' record refs,
never the family reference. A bad row is an error naming the file, row and field, never the
value. A case reference not in the agency's extract is counted (`unknown_case_references`),
never sent.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ig_bridge.keys import KeyStore, encrypt_record_ref
from ig_bridge.landing import drop_area
from ig_bridge.sealing import HubPublicKey, bridge_hub_key, seal_file

FORMAT = "joinedup-allocations/2"  # /2: rows carry a kind (person | household)
COLUMNS = ("worker_id", "case_reference", "start", "end")
WORKER = re.compile(r"^[A-Za-z0-9_.@-]{1,128}$")
MAX_CASE_REF = 64
MAX_ROWS = 200_000
MAX_FAMILY = 50  # case references in one family allocation


class AllocationError(ValueError):
    """A bad allocations export; names the file, row and field (never a value)."""


@dataclass(frozen=True)
class Allocation:
    worker_id: str
    case_reference: str  # the agency's own: never leaves the bridge
    start: dt.date
    end: dt.date | None
    family_reference: str | None = None  # the agency's own family case: never leaves the bridge


def canonical(body: dict[str, Any]) -> bytes:
    """The signed bytes: sorted keys, no whitespace, UTF-8."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def sealed_file_name(sequence: int) -> str:
    return f"allocations-{sequence:08d}.sealed"


def batch_id(sequence: int) -> str:
    """The sealing context: a file sealed as one export does not open as another."""
    return f"allocations-{sequence:08d}"


def _date(value: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        return None


def read_allocations(path: Path | str) -> list[Allocation]:
    """The case system's export; every problem in one error, each naming row and field."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise AllocationError(f"{path}: missing column(s) {missing}")
        out: list[Allocation] = []
        problems: list[str] = []
        families: dict[tuple[str, str], tuple[int, dt.date | None, dt.date | None, int]] = {}
        for n, row in enumerate(reader, start=2):  # row 1 is the header
            if n - 1 > MAX_ROWS:
                raise AllocationError(f"{path}: more than {MAX_ROWS} allocations")
            bad = []
            worker = (row["worker_id"] or "").strip()
            ref = (row["case_reference"] or "").strip()
            start = _date(row["start"] or "")
            end_text = (row["end"] or "").strip()
            end = _date(end_text) if end_text else None
            family = (row.get("family_reference") or "").strip() or None
            if not WORKER.fullmatch(worker):
                bad.append("worker_id: missing or not a staff id ([A-Za-z0-9_.@-], at most 128)")
            if not 0 < len(ref) <= MAX_CASE_REF:
                bad.append(f"case_reference: missing or longer than {MAX_CASE_REF}")
            if start is None:
                bad.append("start: missing or not a date (YYYY-MM-DD)")
            if end_text and end is None:
                bad.append("end: not a date (YYYY-MM-DD)")
            elif start is not None and end is not None and end < start:
                bad.append("end: before start")
            if family is not None and len(family) > MAX_CASE_REF:
                bad.append(f"family_reference: longer than {MAX_CASE_REF}")
            elif family is not None and not bad:
                first, f_start, f_end, size = families.get((worker, family), (n, start, end, 0))
                if (f_start, f_end) != (start, end):
                    bad.append(f"start/end: differ from row {first} of the same family allocation")
                elif size >= MAX_FAMILY:
                    bad.append(f"family_reference: more than {MAX_FAMILY} cases in one family")
                families[(worker, family)] = (first, f_start, f_end, size + 1)
            if bad:
                problems.extend(f"{path}: row {n}: {b}" for b in bad)
            else:
                out.append(Allocation(worker, ref, start, end, family))  # type: ignore[arg-type]
    if problems:
        raise AllocationError(
            f"{path}: {len(problems)} problem(s); nothing exported:\n  "
            + "\n  ".join(problems[:20])
        )
    return out


def build_export(
    keys: KeyStore,
    allocations: Iterable[Allocation],
    sequence: int,
    known_case: Callable[[str], bool],
    exported_at: dt.datetime | None = None,
) -> bytes:
    """The signed export document: case references turned into record refs; a family's
    rows become one household allocation listing its members' record refs."""
    if sequence < 1:
        raise AllocationError("sequence: must be 1 or more")
    ref_key, signer = keys.ref_key(), keys.signing_key()
    rows: list[dict[str, Any]] = []
    families: dict[tuple[str, str], dict[str, Any]] = {}
    unknown = 0
    for a in allocations:
        if not known_case(a.case_reference):
            unknown += 1
            continue
        ref = encrypt_record_ref(ref_key, a.case_reference)
        dates = {"start": a.start.isoformat(), "end": a.end.isoformat() if a.end else None}
        if a.family_reference is None:
            rows.append({"user_id": a.worker_id, "kind": "person", "record_ref": ref, **dates})
            continue
        family = families.get((a.worker_id, a.family_reference))
        if family is None:
            family = {"user_id": a.worker_id, "kind": "household", "record_refs": [], **dates}
            families[(a.worker_id, a.family_reference)] = family
            rows.append(family)
        if ref not in family["record_refs"]:
            family["record_refs"].append(ref)
    for family in families.values():  # the order cases were typed in says nothing to the hub
        family["record_refs"].sort()
    at = exported_at or dt.datetime.now(dt.UTC)
    body = {
        "format": FORMAT,
        "agency": keys.agency,
        "sequence": sequence,
        "exported_at": at.isoformat(timespec="seconds"),
        "key_id": signer.key_id,
        "allocations": rows,
        "unknown_case_references": unknown,
    }
    signature = base64.b64encode(signer.sign(canonical(body))).decode("ascii")
    return json.dumps({"body": body, "signature": signature}).encode("utf-8")


def land_export(
    document: bytes,
    hub_key: HubPublicKey,
    drop_root: Path | str,
    agency: str,
    sequence: int,
    work_dir: Path | str,
) -> Path:
    """Seal the export into `drop_root/<agency>/allocations-<seq>.sealed`, atomically: the
    plaintext is written only in the agency's private `work_dir` and removed after sealing."""
    area = drop_area(drop_root, agency)
    name = sealed_file_name(sequence)
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, plain = tempfile.mkstemp(prefix=".plain-allocations-", dir=work)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(document)
        tmp = area / f".tmp-{name}-{os.getpid()}"
        seal_file(plain, tmp, hub_key, agency=agency, batch_id=batch_id(sequence), file_name=name)
        os.chmod(tmp, 0o644)
        final = area / name
        if final.exists():
            tmp.unlink()
            raise AllocationError(f"{final}: sequence {sequence} was already sent")
        os.replace(tmp, final)
        return final
    finally:
        Path(plain).unlink(missing_ok=True)


def next_sequence(work_dir: Path | str) -> int:
    """The agency's own counter of exports sent (`allocations_sequence` in its folder)."""
    path = Path(work_dir) / "allocations_sequence"
    last = int(path.read_text().strip()) if path.exists() else 0
    return last + 1


def export_and_land(
    csv_path: Path | str,
    agency_dir: Path | str,
    agency: str,
    known_case: Callable[[str], bool],
    drop_root: Path | str,
) -> Path:
    """The whole agency side: read the case system's export, convert, sign, seal, land, and
    advance the counter only once the file has landed."""
    keys = KeyStore(Path(agency_dir) / "keys", agency)
    sequence = next_sequence(agency_dir)
    doc = build_export(keys, read_allocations(csv_path), sequence, known_case)
    landed = land_export(
        doc, bridge_hub_key(keys.directory), drop_root, agency, sequence, Path(agency_dir) / "work"
    )
    (Path(agency_dir) / "allocations_sequence").write_text(f"{sequence}\n")
    return landed


def main(argv: list[str] | None = None) -> int:
    import argparse

    from ig_bridge.reid_service import extract_lookup

    p = argparse.ArgumentParser(
        prog="python -m ig_bridge.allocations",
        description=("Send the case system's current allocations to the hub as record refs."),
    )
    p.add_argument(
        "--csv", required=True, help="worker_id,case_reference,start,end[,family_reference]"
    )
    p.add_argument("--agency", required=True)
    p.add_argument("--agency-dir", required=True, help="the agency's folder (keys/ inside)")
    p.add_argument("--extract", required=True, help="the agency's extract (case refs known)")
    p.add_argument("--mapping", required=True, help="the agency's onboarding mapping")
    p.add_argument("--drop", required=True, help="the allocations drop root at the hub")
    a = p.parse_args(argv)
    lookup = extract_lookup(a.extract, a.mapping)
    try:
        path = export_and_land(a.csv, a.agency_dir, a.agency, lambda r: bool(lookup([r])), a.drop)
    except AllocationError as exc:
        print(exc)
        return 2
    print(f"landed {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
