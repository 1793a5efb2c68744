"""Hub side of key rotation.

Record-ref key: `export_agency_refs` lists the refs the hub holds for one agency (pseudonyms,
never identifiers) for that agency to re-key; `apply_rekey` takes the agency's sealed
re-keying batch (`ig_bridge.rotation.build_rekey_batch`) into hub custody (hub/incoming_rekey/,
linkage.custody), verifies that copy like any batch, then rewrites every
`record_ref` column of every warehouse table in ONE transaction: all refs move or none does.

K_link: the link key versions the hub accepts live in `hub/link_keys.json`
(`{"accepted": [1]}`, default v1); `set_accepted_link_key_versions` moves it, after which
`HubExpectations.load` refuses batches under any other version and a full relink follows.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from ig_bridge.manifest import (
    MANIFEST_NAME,
    BatchRefused,
    VerifiedManifest,
    load_public_keys,
    verify_batch,
)
from ig_bridge.sealing import load_hub_sealing_keys
from linkage import batch_store, sequence
from linkage.config import HubPaths, private_file, private_umask
from linkage.custody import Custody, hub_private_batches, take_custody
from linkage.warehouse import ensure_batch_tables

log = logging.getLogger(__name__)

REKEY_FILE = "rekey.parquet"  # the bridge's ig_bridge.rotation.REKEY_FILE (contract, not import)
REKEY_KIND = "rekey"
REKEY_FILES = frozenset({MANIFEST_NAME, REKEY_FILE})
LINK_KEYS_FILE = "link_keys.json"
_REF_COL = re.compile(r"^record_ref(_[a-z0-9]+)?$")


@dataclass
class RekeyOutcome:
    batch_id: str
    agency: str
    status: str  # applied | already_applied | held | refused | error
    reason_code: str | None = None
    detail: str | None = None
    rows: dict[str, int] | None = None  # table.column -> refs rewritten


def rekey_landing(paths: HubPaths) -> Path:
    """Where agencies land re-keying batches (beside the ordinary landing zone, which ingest
    reads as extract batches only)."""
    return paths.landing.parent / "rekey_landing"


# -- K_link versions ---------------------------------------------------------------------------


def accepted_link_key_versions(paths: HubPaths) -> tuple[int, ...]:
    f = paths.hub / LINK_KEYS_FILE
    if not f.exists():
        return (1,)
    try:
        versions = tuple(int(v) for v in json.loads(f.read_text("utf-8"))["accepted"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{f}: not a link key config ({type(exc).__name__})") from None
    if not versions or any(v < 1 for v in versions):
        raise ValueError(f"{f}: accepted must list versions >= 1")
    return versions


def set_accepted_link_key_versions(paths: HubPaths, versions: list[int] | tuple[int, ...]) -> Path:
    if not versions or any(int(v) < 1 for v in versions):
        raise ValueError("accepted link key versions must be >= 1")
    paths.hub.mkdir(parents=True, exist_ok=True)
    f = paths.hub / LINK_KEYS_FILE
    tmp = f.with_suffix(".tmp")
    tmp.write_text(
        json.dumps(
            {
                "accepted": sorted({int(v) for v in versions}),
                "changed_at": datetime.now(UTC).isoformat(),
            }
        ),
        "utf-8",
    )
    tmp.replace(f)
    return f


# -- record-ref key ----------------------------------------------------------------------------


def export_agency_refs(paths: HubPaths, agency: str, dest: Path | str) -> Path:
    """Every distinct ref the warehouse holds for `agency` (any table), as Parquet
    `record_ref`, for the agency to re-key."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(paths.warehouse), read_only=True)
    try:
        parts = [
            f'SELECT "{c}" AS record_ref FROM "{t}" WHERE "{a}" = $agency'
            for t, c, a in _ref_columns(con)
            if a is not None
        ]
        if not parts:
            raise ValueError(f"{paths.warehouse}: no table holds record refs")
        con.execute(
            f"COPY (SELECT DISTINCT record_ref FROM ({' UNION ALL '.join(parts)}) "
            f"WHERE record_ref IS NOT NULL ORDER BY 1) TO '{_sql_path(dest)}' "
            "(FORMAT parquet)",
            {"agency": agency},
        )
    finally:
        con.close()
    return dest


def _sql_path(p: Path) -> str:
    return str(p).replace("'", "''")


def _ref_columns(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str | None]]:
    """(table, ref column, its agency column or None) for every base table holding refs."""
    rows = con.execute("""SELECT c.table_name, c.column_name FROM duckdb_columns() c
                          JOIN duckdb_tables() t USING (schema_name, table_name)
                          WHERE c.schema_name = 'main' AND NOT t.temporary""").fetchall()
    cols: dict[str, set[str]] = {}
    for t, c in rows:
        cols.setdefault(t, set()).add(c)
    out = []
    for t in sorted(cols):
        for c in sorted(cols[t]):
            m = _REF_COL.match(c)
            if m:
                agency_col = f"agency{m.group(1) or ''}"
                out.append((t, c, agency_col if agency_col in cols[t] else None))
    return out


def _refuse(
    con: duckdb.DuckDBPyConnection, paths: HubPaths, batch_dir: Path, agency: str, exc: BatchRefused
) -> RekeyOutcome:
    """Like an extract batch's refusal: manifest + reason kept, the mapping file destroyed,
    listed in refused_batch (the IG report and the sequence ledger read it)."""
    _dest, reason = batch_store.refuse(con, paths, batch_dir, agency, exc)
    return RekeyOutcome(batch_dir.name, agency, "refused", exc.reason_code, str(reason["detail"]))


def apply_rekey(
    paths: HubPaths, batch_dir: Path | str, public_keys: dict[str, bytes] | None = None
) -> RekeyOutcome:
    """Verify one re-keying batch and rewrite the agency's refs in every table, atomically.

    Refused whole (hub/refused/ keeps its manifest and refusal.json) on a bad signature or
    checksum, a malformed manifest or mapping file, a replayed batch or sequence, a mapping
    that is not one-to-one, an old ref held for another agency, or a new ref that already
    exists. One that arrives before an earlier sequence number is held (linkage.sequence).
    """
    batch_dir = Path(batch_dir)
    agency = batch_dir.parent.name
    if batch_dir.parent.parent.resolve() == rekey_landing(paths).resolve():
        # Landed: take the hub's own copy first, and verify and apply only that copy.
        custody = take_rekey_custody(paths, only={(agency, batch_dir.name)})
        if custody.refused:
            r = custody.refused[0]
            return RekeyOutcome(r.item, r.agency, "refused", r.reason_code, r.detail)
        if not custody.taken:
            return RekeyOutcome(
                batch_dir.name,
                agency,
                "refused",
                "not_taken",
                "a batch of that name is already waiting in hub custody",
            )
        batch_dir = custody.taken[0][1]
    keys = public_keys if public_keys is not None else load_public_keys(paths.public_keys)
    with private_umask():
        paths.ensure()
        con = duckdb.connect(str(paths.warehouse))
        private_file(paths.warehouse)
        try:
            ensure_batch_tables(con)
            return apply_rekey_with(con, paths, Path(batch_dir), keys)
        finally:
            con.close()


def apply_rekey_with(
    con: duckdb.DuckDBPyConnection,
    paths: HubPaths,
    batch_dir: Path,
    keys: dict[str, bytes],
    *,
    landed_agency: str | None = None,
) -> RekeyOutcome:
    """`apply_rekey` on an open warehouse connection (ingest releases held ones with it)."""
    from linkage.ingest import BATCH_FAULTS, DATA_ERRORS

    agency = batch_dir.parent.name if landed_agency is None else landed_agency
    vm: VerifiedManifest | None = None
    try:
        vm = verify_batch(batch_dir, keys, landed_agency=agency)
        if vm.extract_kind != REKEY_KIND or set(vm.files) != {REKEY_FILE}:
            raise BatchRefused("manifest_invalid", f"{batch_dir}: not a re-keying batch")
        sha = _manifest_sha(batch_dir)
        decision = sequence.decide(con, vm, sha)
    except BatchRefused as exc:
        return _refuse(con, paths, batch_dir, agency, batch_store.spent(exc, vm))
    except BATCH_FAULTS as exc:
        return _refuse(
            con,
            paths,
            batch_dir,
            agency,
            batch_store.spent(BatchRefused("batch_unreadable", type(exc).__name__), vm),
        )
    if decision in ("already_ingested", "already_held"):
        batch_store.destroy(batch_dir)
        return RekeyOutcome(vm.batch_id, vm.agency, "already_applied")
    if decision == "hold":
        where, waiting_for = sequence.hold(con, paths, vm, sha)
        return RekeyOutcome(
            vm.batch_id,
            vm.agency,
            "held",
            "sequence_gap",
            f"sequence {vm.sequence} waits for {waiting_for}; kept at {where}",
        )
    try:
        rows = _apply(con, vm, batch_dir / REKEY_FILE, sha, DATA_ERRORS)
    except BatchRefused as exc:
        return _refuse(con, paths, batch_dir, agency, batch_store.spent(exc, vm))
    except BATCH_FAULTS as exc:
        return _refuse(
            con,
            paths,
            batch_dir,
            agency,
            batch_store.spent(BatchRefused("batch_unreadable", type(exc).__name__), vm),
        )
    batch_store.move_into(batch_dir, paths.ingested, vm.agency)
    return RekeyOutcome(vm.batch_id, vm.agency, "applied", rows=rows)


def _manifest_sha(batch_dir: Path) -> str:
    import hashlib

    from ig_bridge.manifest import MANIFEST_NAME, read_manifest_bytes

    return hashlib.sha256(read_manifest_bytes(batch_dir / MANIFEST_NAME)).hexdigest()


def _apply(
    con: duckdb.DuckDBPyConnection,
    vm: VerifiedManifest,
    mapping: Path,
    sha: str,
    data_errors: tuple[type[Exception], ...],
) -> dict[str, int]:
    table = pq.read_table(mapping)
    if set(table.column_names) != {"old_ref", "new_ref"} or not all(
        pa.types.is_string(f.type) or pa.types.is_large_string(f.type) for f in table.schema
    ):
        raise BatchRefused(
            "contract_violation", f"{mapping}: columns must be old_ref, new_ref (strings)"
        )
    con.register("_rekey_src", table)
    try:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _rekey AS SELECT old_ref, new_ref FROM _rekey_src"
        )
    finally:
        con.unregister("_rekey_src")
    bad = con.execute("""SELECT count(*) - count(DISTINCT old_ref), count(*) - count(DISTINCT
                         new_ref), count(*) FILTER (old_ref IS NULL OR new_ref IS NULL),
                         count(*) FILTER (old_ref = new_ref) FROM _rekey""").fetchall()[0]
    if any(bad):
        raise BatchRefused(
            "contract_violation",
            f"{mapping}: the mapping is not one-to-one (duplicate, missing or unchanged refs)",
        )
    cols = _ref_columns(con)
    for t, c, a in cols:
        if a is not None:
            other = con.execute(
                f'SELECT count(*) FROM "{t}" x JOIN _rekey m ON x."{c}" = '
                f'm.old_ref WHERE x."{a}" <> ?',
                [vm.agency],
            ).fetchall()[0][0]
            if other:
                raise BatchRefused(
                    "contract_violation", f"{mapping}: maps refs the hub holds for another agency"
                )
        clash = con.execute(
            f'SELECT count(*) FROM "{t}" x JOIN _rekey m ON x."{c}" = m.new_ref'
        ).fetchall()[0][0]
        if clash:
            raise BatchRefused(
                "contract_violation", f"{mapping}: a new ref already exists in the warehouse"
            )
    done: dict[str, int] = {}
    con.execute("BEGIN TRANSACTION")
    try:
        for t, c, a in cols:
            where = f' AND x."{a}" = $agency' if a is not None else ""
            n = con.execute(
                f'UPDATE "{t}" AS x SET "{c}" = m.new_ref FROM _rekey m '
                f'WHERE x."{c}" = m.old_ref{where}',
                {"agency": vm.agency} if a is not None else {},
            ).fetchall()[0][0]
            done[f"{t}.{c}"] = int(n)
        n_map = con.execute("SELECT count(*) FROM _rekey").fetchall()[0][0]
        con.execute(
            """INSERT INTO batch (batch_id, agency, sequence, extract_kind, created_at,
                       ingested_at, manifest_sha256, mapping_version, encoding_spec_version,
                       link_key_version, ref_key_version, rows_read, rows_accepted,
                       rows_quarantined, identifiers_rows, related_rows, payload_rows)
                       VALUES (?, ?, ?, ?, ?, now(), ?, NULL, NULL, ?, ?, ?, ?, 0, 0, 0, 0)""",
            [
                vm.batch_id,
                vm.agency,
                vm.sequence,
                REKEY_KIND,
                vm.created_at,
                sha,
                vm.link_key_version,
                vm.ref_key_version,
                n_map,
                n_map,
            ],
        )
        sequence.release(con, vm.batch_dir)
        con.execute("COMMIT")
    except data_errors as exc:
        con.execute("ROLLBACK")
        raise BatchRefused("load_failed", type(exc).__name__) from None
    except BaseException:
        con.execute("ROLLBACK")  # the hub's fault: nothing applied, the batch stays
        raise
    finally:
        con.execute("DROP TABLE IF EXISTS _rekey")
    return done


def rekey_incoming(paths: HubPaths) -> Path:
    """Hub-private custody area for re-keying batches (0700, like hub/incoming/)."""
    return paths.hub / "incoming_rekey"


def take_rekey_custody(paths: HubPaths, only: set[tuple[str, str]] | None = None) -> Custody:
    """Unseal landed re-keying batches into hub custody (linkage.custody, no-follow fds);
    refused items are recorded (hub/refused/ + refused_batch) and removed from rekey_landing/."""
    custody = take_custody(
        rekey_landing(paths),
        rekey_incoming(paths),
        load_hub_sealing_keys(paths.keys),
        files=REKEY_FILES,
        only=only,
    )
    batch_store.record_custody_refusals(paths, custody.refused)
    return custody


def apply_pending_rekeys(paths: HubPaths) -> list[RekeyOutcome]:
    """Take every landed re-keying batch into custody, then apply each, per agency in
    sequence (batch id) order. One batch never stops the others."""
    custody = take_rekey_custody(paths)
    out = [
        RekeyOutcome(r.item, r.agency, "refused", r.reason_code, r.detail) for r in custody.refused
    ]
    for agency, b in hub_private_batches(rekey_incoming(paths)):
        try:
            out.append(apply_rekey(paths, b))
        except Exception as exc:  # noqa: BLE001 - one batch must never stop the others
            log.exception(
                "re-keying batch %s/%s not processed (%s); left in place",
                agency,
                b.name,
                type(exc).__name__,
            )
            out.append(RekeyOutcome(b.name, agency, "error", type(exc).__name__))
    return out
