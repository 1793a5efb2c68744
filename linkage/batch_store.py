"""Where a batch goes once the hub has decided about it, inside hub-private storage.

- refused: only `manifest.json` (the agency's signed statement of what it sent: hashes and
  counts, no identifiers) and `refusal.json` (the reason) are kept; every data file is
  destroyed, so a refused payload that carried a column it should not have does not stay.
- held: a verified batch waiting for an earlier sequence number (linkage.sequence).
- ingested: the verified bytes that were loaded.
Nothing here follows a symlink: a link is removed, never the thing it points at.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from ig_bridge.manifest import (
    MANIFEST_NAME,
    BatchRefused,
    VerifiedManifest,
    read_manifest_bytes,
)
from linkage.config import HubPaths, private_dir, private_file, private_umask
from linkage.custody import CustodyRefusal, record_refusals
from linkage.warehouse import ensure_batch_tables

log = logging.getLogger(__name__)

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def spent(exc: BatchRefused, vm: VerifiedManifest | None) -> BatchRefused:
    """A refusal after the signature verified spends the batch's sequence number; a replay
    does not (the number belongs to the batch first seen with it)."""
    if vm is not None and exc.reason_code != "replay" and exc.signed_sequence is None:
        exc.signed_agency, exc.signed_sequence = vm.agency, vm.sequence
    return exc


def safe_name(name: str) -> str:
    """`name` if it is a plain folder name, else a fresh one (never a path)."""
    return name if _SAFE.fullmatch(name) else f"unnamed-{uuid.uuid4().hex[:12]}"


def free_slot(dest_root: Path, agency: str, name: str) -> Path:
    """A path `dest_root/<agency>/<name>` (suffixed .1, .2 ... if taken) not yet used."""
    return _free(dest_root, agency, name)


def _free(dest_root: Path, agency: str, name: str) -> Path:
    parent = private_dir(dest_root / safe_name(agency))
    dest = parent / safe_name(name)
    n = 1
    while dest.exists() or dest.is_symlink():  # an earlier folder of that name is kept
        dest = parent / f"{safe_name(name)}.{n}"
        n += 1
    return dest


def destroy(batch_dir: Path) -> None:
    """Remove a batch folder; a symlink is unlinked, never followed."""
    if batch_dir.is_symlink() or batch_dir.is_file():
        batch_dir.unlink()
    elif batch_dir.exists():
        shutil.rmtree(batch_dir)  # does not follow links inside


def move_into(batch_dir: Path, dest_root: Path, agency: str) -> Path:
    """Move a batch folder into hub-private storage; it and its files become owner-only
    (a move keeps the modes the bridge gave them)."""
    return move_to(batch_dir, _free(dest_root, agency, batch_dir.name))


def move_to(batch_dir: Path, dest: Path) -> Path:
    shutil.move(str(batch_dir), str(dest))
    if not dest.is_symlink():
        dest.chmod(0o700)
        for p in dest.iterdir():
            if p.is_file() and not p.is_symlink():
                p.chmod(0o600)
    return dest


def refuse(
    con: duckdb.DuckDBPyConnection, paths: HubPaths, batch_dir: Path, agency: str, exc: BatchRefused
) -> tuple[Path, dict[str, object]]:
    """Record a refusal: hub/refused/<agency>/<batch>/ keeps manifest.json (when it is a
    regular file within the size cap) and refusal.json; the data files are destroyed."""
    dest = _free(paths.refused, agency, batch_dir.name)
    dest.mkdir(mode=0o700)
    try:
        manifest = read_manifest_bytes(batch_dir / MANIFEST_NAME)
    except (BatchRefused, OSError):
        manifest = None  # missing, oversized or not a file: nothing worth keeping
    if manifest is not None:
        (dest / MANIFEST_NAME).write_bytes(manifest)
    destroy(batch_dir)
    reason: dict[str, object] = {
        "batch_id": batch_dir.name,
        "agency": agency,
        "reason_code": exc.reason_code,
        "detail": exc.detail.replace(str(batch_dir), str(dest)),
        "signed_agency": exc.signed_agency,
        "sequence": exc.signed_sequence,
        "manifest_kept": manifest is not None,
        "data_files_destroyed": True,
        "refused_at": datetime.now(UTC).isoformat(),
    }
    (dest / "refusal.json").write_text(json.dumps(reason, indent=1), "utf-8")
    record_refused_batch(
        con,
        batch_dir.name,
        agency,
        exc.reason_code,
        str(reason["detail"]),
        dest,
        exc.signed_agency,
        exc.signed_sequence,
    )
    # a held batch refused when its turn came is no longer held
    con.execute("DELETE FROM held_batch WHERE held_path = ?", [str(batch_dir)])
    log.warning("refused batch %s/%s: %s", agency, batch_dir.name, exc.reason_code)
    return dest, reason


def record_refused_batch(
    con: duckdb.DuckDBPyConnection,
    batch_folder: str,
    agency: str,
    reason_code: str,
    detail: str,
    moved_to: Path,
    signed_agency: str | None = None,
    sequence: int | None = None,
) -> None:
    """The one writer of refused_batch rows (the IG report and the sequence ledger read them).
    Columns are named: the table grew columns over releases. `signed_agency`/`sequence` only
    when the signature verified (the refusal then spends that sequence number)."""
    ensure_batch_tables(con)
    con.execute(
        """INSERT INTO refused_batch (batch_folder, agency, reason_code, detail,
                   refused_at, moved_to, signed_agency, sequence)
                   VALUES (?, ?, ?, ?, now(), ?, ?, ?)""",
        [batch_folder, agency, reason_code, detail, str(moved_to), signed_agency, sequence],
    )


def record_custody_refusals(
    paths: HubPaths, refusals: list[CustodyRefusal], con: duckdb.DuckDBPyConnection | None = None
) -> list[Path]:
    """Items refused at custody (extract or re-keying landing): refusal.json in hub/refused/
    and a refused_batch row each (nothing was verified, so no sequence number is spent)."""
    if not refusals:
        return []
    with private_umask():
        dirs = record_refusals(paths.refused, refusals)
        c = con if con is not None else duckdb.connect(str(paths.warehouse))
        try:
            private_file(paths.warehouse)
            for r, d in zip(refusals, dirs, strict=True):
                record_refused_batch(c, r.item, r.agency, r.reason_code, r.detail, d)
        finally:
            if con is None:
                c.close()
    return dirs
