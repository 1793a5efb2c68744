"""Re-identification at the originating agency: the only way a practitioner sees an identity.

The hub's requests reach this through ig_bridge.reid_service, which checks each one first (one
record ref, lifetime, agreed protocol, rate limits); the agency's own uses (the CLI, subject
access) call it directly. It decrypts the agency's own refs, looks identities up in its own
system (a callable the caller provides), appends the request to its own chained audit log
(ig_bridge.reid_controls.append_audit: O(1), locked) and answers. The audit log holds refs
and context only, never local ids or identities.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ig_bridge.keys import RecordRefError, RefKey, decrypt_record_ref
from ig_bridge.reid_controls import append_audit

DISPLAY_FIELDS = ("given_name", "family_name", "date_of_birth", "address", "postcode")

# lookup(local_ids) -> {local_id: {display field: value}}; ids it cannot find are left out.
Lookup = Callable[[Sequence[str]], Mapping[str, Mapping[str, Any]]]


@dataclass(frozen=True)
class ReidentificationRequest:
    protocol_id: str
    requesting_user: str
    reason: str
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    hub_decision_id: str | None = None
    # Set on requests from the hub (ig_bridge.reid_service): what the agency checked and keeps.
    hub_request_id: str | None = None
    hub_audit_seq: int | None = None
    hub_audit_hash: str | None = None
    protocol_version: int | None = None
    protocol_sha256: str | None = None

    def __post_init__(self) -> None:
        for name in ("protocol_id", "requesting_user", "reason"):
            if not str(getattr(self, name) or "").strip():
                raise ValueError(f"re-identification request needs a {name}")


@dataclass(frozen=True)
class Identity:
    record_ref: str
    found: bool
    display: dict[str, Any] | None = field(default=None, repr=False)


def verify_audit_chain(path: str | Path) -> int:
    """Number of entries; raises ValueError naming the first broken line."""
    prev = "0" * 64
    count = 0
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip(b"\n")
            if not line:
                continue
            if json.loads(line).get("prev_sha256") != prev:
                raise ValueError(f"{path}: audit chain broken at line {lineno}")
            prev = hashlib.sha256(line).hexdigest()
            count += 1
    return count


def reidentify(
    record_refs: Sequence[str],
    request: ReidentificationRequest,
    *,
    ref_keys: RefKey | Sequence[RefKey],
    lookup: Lookup,
    audit_log: str | Path,
) -> list[Identity]:
    """Decrypt this agency's refs, look identities up, audit, and return them in order.

    Any ref that is not this agency's fails the whole request with RecordRefError (after the
    refusal is audited): the hub must route refs to their own agency.
    """
    audit_path = Path(audit_log)
    keys = [ref_keys] if isinstance(ref_keys, RefKey) else list(ref_keys)
    agency = keys[0].agency if keys else "?"
    base = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "agency": agency,
        **{k: v for k, v in asdict(request).items() if v is not None},
        "record_refs": list(record_refs),
    }
    local_ids: list[str] = []
    for pos, ref in enumerate(record_refs):
        try:
            local_ids.append(decrypt_record_ref(ref, keys))
        except RecordRefError as exc:
            append_audit(
                audit_path,
                {
                    **base,
                    "outcome": "refused",
                    "detail": f"record_refs[{pos}] is not this agency's",
                },
            )
            raise RecordRefError(f"record_refs[{pos}]: {exc}") from None
    found = lookup(local_ids) if local_ids else {}
    results = []
    for ref, local in zip(record_refs, local_ids, strict=True):
        row = found.get(local)
        display = None if row is None else {k: row.get(k) for k in DISPLAY_FIELDS if k in row}
        results.append(Identity(record_ref=ref, found=row is not None, display=display))
    append_audit(
        audit_path,
        {
            **base,
            "outcome": "answered",
            "found": sum(r.found for r in results),
            "not_found": sum(not r.found for r in results),
        },
    )
    return results


def frame_lookup(frame: Any, id_column: str = "record_id") -> Lookup:
    """Lookup over a pandas DataFrame of the agency's own extract (display columns by name)."""
    indexed = frame.drop_duplicates(id_column).set_index(id_column)
    cols = [c for c in DISPLAY_FIELDS if c in indexed.columns]

    def lookup(local_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        hit = indexed.loc[indexed.index.intersection(list(local_ids)), cols]
        return {
            str(i): {c: (None if v != v else v) for c, v in row.items()}
            for i, row in hit.iterrows()
        }

    return lookup


# --------------------------------------------------------------------------- local ids in bulk
@dataclass(frozen=True)
class RefLine:
    """One record ref read from a refs file, with where it was (for per-line reports)."""

    line: int
    record_ref: str
    agency: str | None = None


@dataclass
class LocalIdExport:
    path: Path
    written: int
    problems: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)


def read_ref_lines(path: str | Path) -> list[RefLine]:
    """Refs to resolve, from a file the agency was given (e.g. the hub's clerical queue or a
    quality sample): Parquet with a `record_ref` column, CSV with a `record_ref` header
    (optionally `agency`), or text with one ref per line. Blank lines are skipped; line
    numbers are the file's own (Parquet: row numbers from 1)."""
    import csv

    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if "record_ref" not in table.column_names:
            raise ValueError(f"{path}: no record_ref column")
        agencies = (
            table.column("agency").to_pylist()
            if "agency" in table.column_names
            else [None] * table.num_rows
        )
        return [
            RefLine(i, str(r or "").strip(), a)
            for i, (r, a) in enumerate(
                zip(table.column("record_ref").to_pylist(), agencies, strict=True), start=1
            )
        ]
    lines = path.read_text("utf-8-sig").splitlines()
    first = next((x for x in lines if x.strip()), "")
    header = [c.strip() for c in next(csv.reader([first]), [])]
    if "record_ref" not in header:
        return [RefLine(i, x.strip()) for i, x in enumerate(lines, start=1) if x.strip()]
    out = []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh, skipinitialspace=True)
        for row in reader:
            ref = str(row.get("record_ref") or "").strip()
            agency = str(row.get("agency") or "").strip() or None
            if ref or agency:
                out.append(RefLine(reader.line_num, ref, agency))
    return out


def export_local_ids(
    refs: Sequence[RefLine],
    *,
    ref_keys: RefKey | Sequence[RefKey],
    out: str | Path,
    audit_log: str | Path,
    requested_by: str,
    source: str = "<refs>",
) -> LocalIdExport:
    """The agency's own local record ids for its refs, for its own quality checks: a new CSV
    (record_ref, local_id), owner-only (0600; an existing file is never overwritten). A ref of
    another agency, or one that does not decrypt under any of this agency's ref key versions,
    is reported with its line and left out: the rest are still written. The export is recorded
    in the agency's audit log (counts and a digest of the refs, never local ids)."""
    import csv
    import io
    import os

    keys = [ref_keys] if isinstance(ref_keys, RefKey) else list(ref_keys)
    if not keys:
        raise RecordRefError("no record-ref key given")
    agency = keys[0].agency
    rows: list[tuple[str, str]] = []
    problems: list[tuple[int, str]] = []
    for r in refs:
        if not r.record_ref:
            problems.append((r.line, "empty record_ref"))
        elif r.agency is not None and r.agency != agency:
            problems.append((r.line, f"a record ref of agency {r.agency}, not {agency}'s"))
        else:
            try:
                rows.append((r.record_ref, decrypt_record_ref(r.record_ref, keys)))
            except RecordRefError as exc:
                problems.append((r.line, str(exc)))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["record_ref", "local_id"])
    writer.writerows(rows)
    out = Path(out)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, buf.getvalue().encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    digest = hashlib.sha256("\n".join(r.record_ref for r in refs).encode("utf-8")).hexdigest()
    append_audit(
        Path(audit_log),
        {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "agency": agency,
            # protocol_id names the purpose: the IG report counts identity-log lines by it.
            "protocol_id": "local_id_export",
            "requesting_user": requested_by,
            "source": source,
            "out": str(out),
            "refs": len(refs),
            "refs_sha256": digest,
            "written": len(rows),
            "refused": len(problems),
            "outcome": "exported",
        },
    )
    return LocalIdExport(out, len(rows), problems)
