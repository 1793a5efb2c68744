"""Ingest: verify landed batches and load the accepted ones into the DuckDB warehouse.

A batch is accepted whole or refused whole. Refusal reasons (machine-readable codes):
signature/checksum/file problems from `ig_bridge.manifest.verify_batch`, plus the hub's own
checks here: version mismatches, the column contract (the hub does not accept information it
should not have), rows that do not belong to the signing agency or payload values of the wrong
type (linkage.row_checks), and replay. Every check runs on the hub's own copy: a landed batch
is first taken into custody (linkage.custody: unsealed into hub/incoming/ through no-follow
fds), and verified and loaded from there. A refused batch leaves only its manifest and a
`refusal.json` in `hub/refused/<CODE>/<batch_id>/` (linkage.batch_store: its data files are
destroyed); an accepted one moves to `hub/ingested/`; a verified batch that arrives before an
earlier sequence number is held in `hub/held/` until the gap is filled (linkage.sequence).
Loading happens in one DuckDB transaction, so nothing is ever half-loaded, and re-ingesting a
batch that is already in is a no-op. A malformed batch is refused with a reason and the queue
goes on; a hub-side failure on one batch leaves it where it is (status "error") and goes on.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from ig_bridge.manifest import (
    FORCED_KEY,
    MANIFEST_NAME,
    BatchRefused,
    VerifiedManifest,
    load_public_keys,
    read_manifest_bytes,
)
from ig_bridge.manifest import verify_batch as verify_signed_batch
from ig_bridge.sealing import load_hub_sealing_keys
from linkage import batch_store, sequence, snapshot_hold
from linkage.batch_contract import (
    PRESENT_FILE,
    HubExpectations,
    _columns,
    check_contract,
)
from linkage.config import HubPaths, private_file, private_umask
from linkage.custody import Custody, hub_private_batches, take_custody
from linkage.row_checks import check_ownership, check_payload_types
from linkage.warehouse import ensure_schema, record_field_problems

log = logging.getLogger(__name__)


@dataclass
class BatchOutcome:
    batch_id: str
    agency: str
    status: str  # accepted | already_ingested | refused | held | error
    reason_code: str | None = None
    detail: str | None = None
    rows: dict[str, int] = field(default_factory=dict)


@dataclass
class IngestReport:
    outcomes: list[BatchOutcome] = field(default_factory=list)

    def by_status(self, status: str) -> list[BatchOutcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def accepted(self) -> list[BatchOutcome]:
        return self.by_status("accepted")

    @property
    def refused(self) -> list[BatchOutcome]:
        return self.by_status("refused")

    def to_dict(self) -> dict[str, Any]:
        return {"outcomes": [asdict(o) for o in self.outcomes]}


def _manifest_sha(batch_dir: Path) -> str:
    return hashlib.sha256(read_manifest_bytes(batch_dir / MANIFEST_NAME)).hexdigest()


def _load(
    con: duckdb.DuckDBPyConnection, vm: VerifiedManifest, sha: str, expect: HubExpectations
) -> dict[str, int]:
    """Load one verified batch inside the caller's transaction."""
    d = vm.batch_dir
    ident, rel, pay = (
        str(d / n) for n in ("identifiers.parquet", "related.parquet", "payload.parquet")
    )
    enc = expect.encoding
    sel = ", ".join(
        [
            f'"{c}"::BIT AS "{c}"' if c in enc.bloom_columns else f'"{c}"'
            for c in ["record_ref", "agency", "batch_id", *enc.encoded_columns]
        ]
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _new_ident AS SELECT {sel} FROM read_parquet(?)", [ident]
    )
    rel_sel = sel + ', "slot", "relationship"'
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _new_rel AS SELECT {rel_sel} FROM read_parquet(?)", [rel]
    )
    pay_cols = _columns(Path(pay))
    con.execute("CREATE OR REPLACE TEMP TABLE _new_pay AS SELECT * FROM read_parquet(?)", [pay])
    if PRESENT_FILE in vm.files:
        con.execute(
            """CREATE OR REPLACE TEMP TABLE _new_present AS SELECT
                       CAST(record_ref AS VARCHAR) AS record_ref, agency, batch_id
                       FROM read_parquet(?)""",
            [str(d / PRESENT_FILE)],
        )
    else:
        con.execute("""CREATE OR REPLACE TEMP TABLE _new_present (record_ref VARCHAR,
                       agency VARCHAR, batch_id VARCHAR)""")
    pay_types = dict(
        con.execute(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'payload' "
            "AND database_name = current_database()"
        ).fetchall()
    )
    # Every row the signing agency's, this batch's, typed as agreed: or nothing is written.
    check_ownership(con, vm)
    check_payload_types(con, sorted(pay_cols - {"record_ref", "agency", "batch_id"}), pay_types)

    # Every retire, delete and upsert is scoped to (signing agency, record_ref).
    retired = 0
    if vm.extract_kind == "snapshot":
        # A snapshot is the agency's whole current picture: records it no longer sends retire,
        # except those it lists as present but quarantined (kept as they are). One that would
        # retire too many waits for an operator (linkage.snapshot_hold: raises RetirementHeld).
        retired = snapshot_hold.check(con, vm, sha, expect.contracts[vm.agency].max_retire_share)
        con.execute(
            """INSERT INTO record_retired
                       SELECT record_ref, agency, ?, now() FROM identifiers x
                       WHERE agency = ? AND NOT EXISTS (
                           SELECT 1 FROM _new_ident n WHERE n.record_ref = x.record_ref)
                       AND NOT EXISTS (
                           SELECT 1 FROM _new_present p WHERE p.record_ref = x.record_ref)
                    """,
            [vm.batch_id, vm.agency],
        )
        for t in ("identifiers", "related", "payload"):
            con.execute(
                f"""DELETE FROM {t} x WHERE agency = ? AND NOT EXISTS (
                            SELECT 1 FROM _new_present p WHERE p.record_ref = x.record_ref)""",
                [vm.agency],
            )
    else:
        for t in ("identifiers", "related", "payload"):
            con.execute(
                f"DELETE FROM {t} WHERE agency = ? AND record_ref IN "
                "(SELECT record_ref FROM _new_ident)",
                [vm.agency],
            )

    cols = ", ".join(f'"{c}"' for c in ["record_ref", "agency", "batch_id", *enc.encoded_columns])
    con.execute(f"INSERT INTO identifiers ({cols}) SELECT {cols} FROM _new_ident")
    con.execute(
        f'INSERT INTO related ({cols}, "slot", "relationship") '
        f'SELECT {cols}, "slot", "relationship" FROM _new_rel'
    )
    pcols = ", ".join(f'"{c}"' for c in sorted(pay_cols))
    # CAST, not TRY_CAST: check_payload_types refused any value that would become NULL.
    casts = ", ".join(f'CAST("{c}" AS {pay_types[c]})' for c in sorted(pay_cols))
    con.execute(f"INSERT INTO payload ({pcols}) SELECT {casts} FROM _new_pay")
    counts = {
        t: con.execute(f"SELECT count(*) FROM {src}").fetchone()[0]
        for t, src in (
            ("identifiers", "_new_ident"),
            ("related", "_new_rel"),
            ("payload", "_new_pay"),
            ("present", "_new_present"),
        )
    }
    # Signed and shape-checked by verify_batch (ig_bridge.manifest): guards, reason, figures.
    forced = vm.raw.get(FORCED_KEY)
    con.execute(
        """INSERT INTO batch (batch_id, agency, sequence, extract_kind, created_at,
                   ingested_at, manifest_sha256, mapping_version, encoding_spec_version,
                   link_key_version, ref_key_version, rows_read, rows_accepted, rows_quarantined,
                   identifiers_rows, related_rows, payload_rows, forced_guards, forced_reason,
                   present_refs, records_retired)
                   VALUES (?, ?, ?, ?, ?, now(), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [
            vm.batch_id,
            vm.agency,
            vm.sequence,
            vm.extract_kind,
            vm.created_at,
            sha,
            vm.mapping_version,
            vm.encoding_spec_version,
            vm.link_key_version,
            vm.ref_key_version,
            vm.rows.get("read"),
            vm.rows.get("accepted"),
            vm.rows.get("quarantined"),
            counts["identifiers"],
            counts["related"],
            counts["payload"],
            ",".join(forced["guards"]) if forced else None,
            forced["reason"] if forced else None,
            counts["present"],
            retired,
        ],
    )
    record_field_problems(con, vm.batch_id, vm.agency, vm.raw)
    snapshot_hold.mark_applied(con, vm)
    for t in ("_new_ident", "_new_rel", "_new_pay", "_new_present"):
        con.execute(f"DROP TABLE {t}")
    return counts


def _refuse(
    con: duckdb.DuckDBPyConnection, paths: HubPaths, batch_dir: Path, agency: str, exc: BatchRefused
) -> BatchOutcome:
    """Refuse a batch whole: its manifest and the reason are kept, its data files destroyed
    (linkage.batch_store.refuse); `agency` is the folder it landed in."""
    _dest, reason = batch_store.refuse(con, paths, batch_dir, agency, exc)
    return BatchOutcome(batch_dir.name, agency, "refused", exc.reason_code, str(reason["detail"]))


def _sequence_hint(batch_dir: Path) -> tuple[int, str]:
    """Order batches by the (not yet verified) manifest sequence; verification comes after."""
    try:  # never more than the manifest size cap is read
        seq = int(json.loads(read_manifest_bytes(batch_dir / MANIFEST_NAME))["sequence"])
    except Exception:  # noqa: BLE001 - an unreadable manifest is refused when verified
        seq = -1
    return seq, batch_dir.name


def receive_landing(
    paths: HubPaths,
    con: duckdb.DuckDBPyConnection | None = None,
    only: Iterable[tuple[str, str]] | None = None,
) -> Custody:
    """Take landed batches (all, or the given (agency, batch) pairs) into hub custody:
    unsealed into hub/incoming/ through no-follow fds (linkage.custody). Items refused on the
    way are recorded (refused/ + the refused_batch table) and removed from the landing zone."""
    keys = load_hub_sealing_keys(paths.keys)
    custody = take_custody(
        paths.landing, paths.incoming, keys, only=set(only) if only is not None else None
    )
    batch_store.record_custody_refusals(paths, custody.refused, con)
    return custody


def pending_batches(
    paths: HubPaths, con: duckdb.DuckDBPyConnection | None = None
) -> list[tuple[str, Path]]:
    """Take custody of everything landed, then (agency, hub-private batch folder) for every
    batch in custody, per agency in (unverified) manifest sequence order."""
    receive_landing(paths, con)
    return batches_in_custody(paths)


def batches_in_custody(paths: HubPaths) -> list[tuple[str, Path]]:
    by_agency: dict[str, list[Path]] = {}
    for agency, b in hub_private_batches(paths.incoming):
        by_agency.setdefault(agency, []).append(b)
    return [(a, b) for a in sorted(by_agency) for b in sorted(by_agency[a], key=_sequence_hint)]


def _refused_outcomes(custody: Custody) -> list[BatchOutcome]:
    return [
        BatchOutcome(r.item, r.agency, "refused", r.reason_code, r.detail) for r in custody.refused
    ]


def _custody_of(
    paths: HubPaths,
    con: duckdb.DuckDBPyConnection,
    batch_dirs: Iterable[Path],
    report: IngestReport,
) -> list[tuple[str, Path]]:
    """The hub-private folders for the given batches: a landed one is taken into custody
    first (refusals go to the report), one already in custody is used as it is."""
    given = [Path(b) for b in batch_dirs]
    landing = paths.landing.resolve()
    landed = {(b.parent.name, b.name) for b in given if b.parent.parent.resolve() == landing}
    if landed:
        report.outcomes.extend(_refused_outcomes(receive_landing(paths, con, only=landed)))
    return [
        (
            b.parent.name,
            paths.incoming / b.parent.name / b.name if (b.parent.name, b.name) in landed else b,
        )
        for b in given
    ]


#: What a malformed batch can make the readers raise: the batch's fault, refused with a reason.
BATCH_FAULTS = (
    pa.ArrowException,
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    UnicodeError,
    RecursionError,
)
#: DuckDB errors that mean the batch's values do not fit (refused), not that the hub failed.
DATA_ERRORS = (
    duckdb.ConversionException,
    duckdb.ConstraintException,
    duckdb.InvalidInputException,
    duckdb.OutOfRangeException,
)


def ingest_batch(
    con: duckdb.DuckDBPyConnection,
    paths: HubPaths,
    batch_dir: Path,
    expect: HubExpectations,
    public_keys: dict[str, bytes],
    *,
    landed_agency: str | None = None,
) -> BatchOutcome:
    """Verify one batch in hub-private storage and load it, hold it or refuse it whole.

    `landed_agency`: the agency folder it landed in (default: `batch_dir`'s parent's name);
    the signed agency must equal it."""
    agency = batch_dir.parent.name if landed_agency is None else landed_agency
    vm: VerifiedManifest | None = None
    try:
        vm = verify_signed_batch(batch_dir, public_keys, landed_agency=agency)
        check_contract(vm, expect)
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
        batch_store.destroy(batch_dir)  # the same signed bytes are already in (or waiting)
        return BatchOutcome(vm.batch_id, vm.agency, decision)
    if decision == "hold":
        where, waiting_for = sequence.hold(con, paths, vm, sha)
        log.warning(
            "held batch %s/%s: sequence %s waits for %s",
            vm.agency,
            vm.batch_id,
            vm.sequence,
            waiting_for,
        )
        return BatchOutcome(
            vm.batch_id,
            vm.agency,
            "held",
            "sequence_gap",
            f"sequence {vm.sequence} waits for {waiting_for}; kept at {where}",
        )
    con.execute("BEGIN TRANSACTION")
    try:
        counts = _load(con, vm, sha, expect)
        sequence.release(con, batch_dir)
        con.execute("COMMIT")
    except snapshot_hold.RetirementHeld as held:
        con.execute("ROLLBACK")  # nothing applied, nothing retired
        snapshot_hold.record_hold(con, vm, sha, held)
        where, _ = sequence.hold(
            con, paths, vm, sha, reason=f"{snapshot_hold.REASON_CODE}: {held.detail}"
        )
        return BatchOutcome(
            vm.batch_id,
            vm.agency,
            "held",
            snapshot_hold.REASON_CODE,
            f"{held.detail}; kept at {where}",
        )
    except BatchRefused as exc:
        con.execute("ROLLBACK")
        return _refuse(con, paths, batch_dir, agency, batch_store.spent(exc, vm))
    except DATA_ERRORS as exc:
        con.execute("ROLLBACK")
        # A type or constraint failure is the batch's fault: refuse it whole, load nothing.
        return _refuse(
            con,
            paths,
            batch_dir,
            agency,
            batch_store.spent(BatchRefused("load_failed", type(exc).__name__), vm),
        )
    except BaseException:
        # Anything else is the hub's (a bug, a full disk): nothing loaded, the batch stays
        # where it is for the next run, never refused and destroyed for the hub's fault.
        con.execute("ROLLBACK")
        raise
    batch_store.move_into(batch_dir, paths.ingested, vm.agency)
    return BatchOutcome(vm.batch_id, vm.agency, "accepted", rows=counts)


def _guarded(step, batch_dir: Path, agency: str) -> BatchOutcome:  # noqa: ANN001
    """Run one batch's step; a failure that is not the batch's (disk, warehouse) leaves the
    batch where it is for the next run and lets the queue go on."""
    try:
        return step()
    except Exception as exc:  # noqa: BLE001 - one batch must never stop the others
        log.exception(
            "batch %s/%s not processed (%s); left in place for the next run",
            agency,
            batch_dir.name,
            type(exc).__name__,
        )
        return BatchOutcome(batch_dir.name, agency, "error", type(exc).__name__)


def release_held(
    con: duckdb.DuckDBPyConnection,
    paths: HubPaths,
    expect: HubExpectations,
    public_keys: dict[str, bytes],
) -> list[BatchOutcome]:
    """Load (or refuse) every held batch whose turn has come, in sequence order, until none
    is ready. Held re-keying batches are applied here too (they share the counter)."""
    out: list[BatchOutcome] = []
    # A batch that failed (status "error") waits for the next run; a snapshot held for mass
    # retirement waits for an operator's confirmation (linkage.snapshot_hold).
    tried: set[Path] = snapshot_hold.awaiting_confirmation(con)
    while (held := sequence.ready(con, skip=tried)) is not None:
        tried.add(held.path)
        if held.extract_kind == "rekey":
            from linkage.rekey import apply_rekey_with

            def step(h: sequence.Held = held) -> BatchOutcome:
                r = apply_rekey_with(con, paths, h.path, public_keys)
                return BatchOutcome(
                    r.batch_id, r.agency, r.status, r.reason_code, r.detail, rows=r.rows or {}
                )
        else:

            def step(h: sequence.Held = held) -> BatchOutcome:
                return ingest_batch(con, paths, h.path, expect, public_keys)

        out.append(_guarded(step, held.path, held.agency))
    return out


def ingest_landing(
    paths: HubPaths,
    *,
    batch_dirs: Iterable[Path] | None = None,
    progress: bool = False,
    expectations: HubExpectations | None = None,
) -> IngestReport:
    """Take every landed batch (or the given ones) into hub custody, verify and load each
    into the warehouse, then every held batch whose turn has come. `batch_dirs=[]` only
    releases held batches."""
    with private_umask():
        paths.ensure()
        expect = expectations or HubExpectations.load(paths)
        public_keys = load_public_keys(paths.public_keys)
        report = IngestReport()
        con = duckdb.connect(str(paths.warehouse))
        private_file(paths.warehouse)
        try:
            ensure_schema(con, expect.encoding, paths.mappings)
            if batch_dirs is not None:
                todo = _custody_of(paths, con, batch_dirs, report)
            else:
                report.outcomes.extend(_refused_outcomes(receive_landing(paths, con)))
                todo = batches_in_custody(paths)
            if progress:
                from rich.progress import track

                items: Iterable[tuple[str, Path]] = track(todo, description="Ingesting batches")
            else:
                items = todo
            for agency, bdir in items:
                if not bdir.exists() and not bdir.is_symlink():  # moved by an earlier run
                    continue
                report.outcomes.append(
                    _guarded(
                        lambda b=bdir: ingest_batch(con, paths, b, expect, public_keys),
                        bdir,
                        agency,
                    )
                )
            report.outcomes.extend(release_held(con, paths, expect, public_keys))
            if report.accepted:
                refresh_linkage_input(con)
        finally:
            con.close()
    return report


def refresh_linkage_input(con: duckdb.DuckDBPyConnection) -> None:
    """Convert the records just loaded into the linkage representation now, once, instead of
    in every linkage run (`person_linkage.prepare_input` converts only changed records)."""
    from linkage.person_linkage import prepare_input

    try:
        prepare_input(con)
    except ValueError as exc:
        # A malformed token is the linkage run's to refuse, naming the row and field (refs
        # and field names only, never a value); the batches passed every contract check.
        log.warning("linkage input not refreshed: %s", exc)
