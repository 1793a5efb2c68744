"""Ingest: verify landed batches and load the accepted ones into the DuckDB warehouse.

A batch is accepted whole or refused whole. Refusal reasons (machine-readable codes):
signature/checksum/file problems from `ig_bridge.manifest.verify_batch`, plus the hub's own
checks here: version mismatches, the column contract (the hub does not accept information it
should not have), and replay. Every check runs on the hub's own copy: a landed batch is first
taken into custody (linkage.custody: unsealed into hub/incoming/ through no-follow fds), and
verified and loaded from there. A refused batch is moved to `hub/refused/<CODE>/<batch_id>/` with a
`refusal.json`; an accepted one to `hub/ingested/`. Loading happens in one DuckDB transaction, so
nothing is ever half-loaded, and re-ingesting a batch that is already in is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from ig_bridge.manifest import MANIFEST_NAME, BatchRefused, VerifiedManifest, load_public_keys
from ig_bridge.manifest import verify_batch as verify_signed_batch
from ig_bridge.sealing import load_hub_sealing_keys
from linkage.config import EncodingContract, HubPaths
from linkage.custody import Custody, hub_private_batches, record_refusals, take_custody
from linkage.warehouse import ensure_schema
from schemas.mapping import HubContract, hub_contract, load_all_mappings, load_canonical

log = logging.getLogger(__name__)


@dataclass
class BatchOutcome:
    batch_id: str
    agency: str
    status: str  # accepted | already_ingested | refused
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


@dataclass(frozen=True)
class HubExpectations:
    """What the hub accepts: per-agency contracts, the encoding spec, key versions."""

    contracts: dict[str, HubContract]
    encoding: EncodingContract
    canonical_version: int
    link_key_versions: frozenset[int] = frozenset({1})

    @classmethod
    def load(cls, paths: HubPaths,
             link_key_versions: Iterable[int] | None = None) -> HubExpectations:
        if link_key_versions is None:  # the hub's config (hub/link_keys.json), v1 by default
            from linkage.rekey import accepted_link_key_versions

            link_key_versions = accepted_link_key_versions(paths)
        mappings = load_all_mappings(paths.mappings)
        return cls(
            contracts={code: hub_contract(m) for code, m in mappings.items()},
            encoding=EncodingContract.load(),
            canonical_version=int(load_canonical().version),
            link_key_versions=frozenset(link_key_versions),
        )


def _manifest_sha(batch_dir: Path) -> str:
    return hashlib.sha256((batch_dir / MANIFEST_NAME).read_bytes()).hexdigest()


def _columns(path: Path) -> set[str]:
    return set(pq.read_schema(path).names)


def check_contract(vm: VerifiedManifest, expect: HubExpectations) -> None:
    """Versions and the column contract. Raises BatchRefused; details carry names, not values."""
    contract = expect.contracts.get(vm.agency)
    if contract is None:
        raise BatchRefused("unknown_agency", f"{vm.agency} has no onboarding mapping at the hub")
    checks = [
        ("canonical_version", vm.canonical_version, expect.canonical_version),
        ("encoding_spec_version", vm.encoding_spec_version, expect.encoding.version),
        ("mapping_version", vm.mapping_version, contract.mapping_version),
    ]
    for name, got, want in checks:
        if got != want:
            raise BatchRefused("version_mismatch", f"{name} {got} != hub's {want}")
    if vm.link_key_version not in expect.link_key_versions:
        raise BatchRefused("version_mismatch",
                           f"link_key_version {vm.link_key_version} not accepted by the hub")
    if vm.extract_kind not in ("snapshot", "delta"):
        raise BatchRefused("manifest_invalid", f"extract_kind {vm.extract_kind!r}")
    allowed = {
        "identifiers.parquet": expect.encoding.identifiers_columns,
        "related.parquet": expect.encoding.related_columns,
        "payload.parquet": contract.payload_columns,
    }
    for name, cols_allowed in allowed.items():
        path = vm.batch_dir / name
        if not path.exists():
            raise BatchRefused("missing_file", f"{name} is required")
        cols = _columns(path)
        extra = sorted(cols - cols_allowed)
        if extra:
            # The hub refuses information outside the data-sharing agreement.
            raise BatchRefused("column_not_in_agreement", f"{name}: {extra}")
        required = {"record_ref", "agency", "batch_id"}
        if name != "payload.parquet":
            required = set(cols_allowed)
        missing = sorted(required - cols)
        if missing:
            raise BatchRefused("column_missing", f"{name}: {missing}")
    ids = pq.read_table(vm.batch_dir / "identifiers.parquet", columns=["agency", "batch_id"])
    agencies = set(ids.column("agency").to_pylist())
    batches = set(ids.column("batch_id").to_pylist())
    if agencies - {vm.agency} or batches - {vm.batch_id}:
        raise BatchRefused("manifest_invalid", "rows name another agency or batch")


def _check_replay(con: duckdb.DuckDBPyConnection, vm: VerifiedManifest, sha: str) -> str | None:
    """None if new; 'already_ingested' if this exact batch is in; raises on a replay."""
    row = con.execute("SELECT manifest_sha256 FROM batch WHERE batch_id = ?",
                      [vm.batch_id]).fetchone()
    if row is not None:
        if row[0] == sha:
            return "already_ingested"
        raise BatchRefused("replay", f"batch_id {vm.batch_id} was ingested with another manifest")
    last = con.execute("SELECT max(sequence) FROM batch WHERE agency = ?",
                       [vm.agency]).fetchone()[0]
    if last is not None and vm.sequence <= last:
        raise BatchRefused("replay", f"sequence {vm.sequence} <= last ingested {last}")
    return None


def _load(con: duckdb.DuckDBPyConnection, vm: VerifiedManifest, sha: str,
          expect: HubExpectations) -> dict[str, int]:
    """Load one verified batch inside the caller's transaction."""
    d = vm.batch_dir
    ident, rel, pay = (str(d / n) for n in ("identifiers.parquet", "related.parquet",
                                             "payload.parquet"))
    enc = expect.encoding
    sel = ", ".join(
        [f'"{c}"::BIT AS "{c}"' if c in enc.bloom_columns else f'"{c}"'
         for c in ["record_ref", "agency", "batch_id", *enc.encoded_columns]])
    con.execute(f"CREATE OR REPLACE TEMP TABLE _new_ident AS SELECT {sel} FROM read_parquet(?)",
                [ident])
    rel_sel = sel + ', "slot", "relationship"'
    con.execute(f"CREATE OR REPLACE TEMP TABLE _new_rel AS SELECT {rel_sel} FROM read_parquet(?)",
                [rel])
    pay_cols = _columns(Path(pay))
    con.execute("CREATE OR REPLACE TEMP TABLE _new_pay AS SELECT * FROM read_parquet(?)", [pay])

    if vm.extract_kind == "snapshot":
        # A snapshot is the agency's whole current picture: records it no longer sends retire.
        con.execute("""INSERT INTO record_retired
                       SELECT record_ref, agency, ?, now() FROM identifiers
                       WHERE agency = ? AND record_ref NOT IN (SELECT record_ref FROM _new_ident)
                    """, [vm.batch_id, vm.agency])
        for t in ("identifiers", "related", "payload"):
            con.execute(f"DELETE FROM {t} WHERE agency = ?", [vm.agency])
    else:
        for t in ("identifiers", "related", "payload"):
            con.execute(f"DELETE FROM {t} WHERE record_ref IN (SELECT record_ref FROM _new_ident)")

    cols = ", ".join(f'"{c}"' for c in ["record_ref", "agency", "batch_id", *enc.encoded_columns])
    con.execute(f"INSERT INTO identifiers ({cols}) SELECT {cols} FROM _new_ident")
    con.execute(f'INSERT INTO related ({cols}, "slot", "relationship") '
                f'SELECT {cols}, "slot", "relationship" FROM _new_rel')
    pcols = ", ".join(f'"{c}"' for c in sorted(pay_cols))
    pay_types = dict(con.execute("SELECT column_name, data_type FROM duckdb_columns() "
                                 "WHERE table_name = 'payload'").fetchall())
    casts = ", ".join(f'TRY_CAST("{c}" AS {pay_types[c]})' for c in sorted(pay_cols))
    con.execute(f"INSERT INTO payload ({pcols}) SELECT {casts} FROM _new_pay")
    counts = {t: con.execute(f"SELECT count(*) FROM {src}").fetchone()[0]
              for t, src in (("identifiers", "_new_ident"), ("related", "_new_rel"),
                             ("payload", "_new_pay"))}
    con.execute("""INSERT INTO batch (batch_id, agency, sequence, extract_kind, created_at,
                   ingested_at, manifest_sha256, mapping_version, encoding_spec_version,
                   link_key_version, ref_key_version, rows_read, rows_accepted, rows_quarantined,
                   identifiers_rows, related_rows, payload_rows)
                   VALUES (?, ?, ?, ?, ?, now(), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                [vm.batch_id, vm.agency, vm.sequence, vm.extract_kind, vm.created_at, sha,
                 vm.mapping_version, vm.encoding_spec_version, vm.link_key_version,
                 vm.ref_key_version, vm.rows.get("read"), vm.rows.get("accepted"),
                 vm.rows.get("quarantined"), counts["identifiers"], counts["related"],
                 counts["payload"]])
    for t in ("_new_ident", "_new_rel", "_new_pay"):
        con.execute(f"DROP TABLE {t}")
    return counts


def _move(src: Path, dest_root: Path, agency: str) -> Path:
    dest = dest_root / agency / src.name
    n = 1
    while dest.exists():  # a refused folder of the same name is kept, never overwritten
        dest = dest_root / agency / f"{src.name}.{n}"
        n += 1
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(src), str(dest))
    return dest


def _refuse(con: duckdb.DuckDBPyConnection, paths: HubPaths, batch_dir: Path, agency: str,
            exc: BatchRefused) -> BatchOutcome:
    dest = _move(batch_dir, paths.refused, agency)
    reason = {"batch_id": batch_dir.name, "agency": agency, "reason_code": exc.reason_code,
              "detail": exc.detail.replace(str(batch_dir), str(dest)),
              "refused_at": datetime.now(UTC).isoformat()}
    (dest / "refusal.json").write_text(json.dumps(reason, indent=1), "utf-8")
    con.execute("INSERT INTO refused_batch VALUES (?, ?, ?, ?, now(), ?)",
                [batch_dir.name, agency, exc.reason_code, reason["detail"], str(dest)])
    log.warning("refused batch %s/%s: %s", agency, batch_dir.name, exc.reason_code)
    return BatchOutcome(batch_dir.name, agency, "refused", exc.reason_code, reason["detail"])


def _sequence_hint(batch_dir: Path) -> tuple[int, str]:
    """Order batches by the (not yet verified) manifest sequence; verification comes after."""
    try:
        seq = int(json.loads((batch_dir / MANIFEST_NAME).read_text("utf-8"))["sequence"])
    except Exception:  # noqa: BLE001 - an unreadable manifest is refused when verified
        seq = -1
    return seq, batch_dir.name


def receive_landing(paths: HubPaths, con: duckdb.DuckDBPyConnection | None = None,
                    only: Iterable[tuple[str, str]] | None = None) -> Custody:
    """Take landed batches (all, or the given (agency, batch) pairs) into hub custody:
    unsealed into hub/incoming/ through no-follow fds (linkage.custody). Items refused on the
    way are recorded (refused/ + the refused_batch table) and removed from the landing zone."""
    keys = load_hub_sealing_keys(paths.keys)
    custody = take_custody(paths.landing, paths.incoming, keys,
                           only=set(only) if only is not None else None)
    if custody.refused:
        dirs = record_refusals(paths.refused, custody.refused)
        c = con if con is not None else duckdb.connect(str(paths.warehouse))
        try:
            if con is None:
                ensure_schema(c, EncodingContract.load())
            for r, d in zip(custody.refused, dirs, strict=True):
                c.execute("INSERT INTO refused_batch VALUES (?, ?, ?, ?, now(), ?)",
                          [r.item, r.agency, r.reason_code, r.detail, str(d)])
        finally:
            if con is None:
                c.close()
    return custody


def pending_batches(paths: HubPaths, con: duckdb.DuckDBPyConnection | None = None
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
    return [BatchOutcome(r.item, r.agency, "refused", r.reason_code, r.detail)
            for r in custody.refused]


def _custody_of(paths: HubPaths, con: duckdb.DuckDBPyConnection, batch_dirs: Iterable[Path],
                report: IngestReport) -> list[tuple[str, Path]]:
    """The hub-private folders for the given batches: a landed one is taken into custody
    first (refusals go to the report), one already in custody is used as it is."""
    given = [Path(b) for b in batch_dirs]
    landing = paths.landing.resolve()
    landed = {(b.parent.name, b.name) for b in given if b.parent.parent.resolve() == landing}
    if landed:
        report.outcomes.extend(_refused_outcomes(receive_landing(paths, con, only=landed)))
    return [(b.parent.name, paths.incoming / b.parent.name / b.name
             if (b.parent.name, b.name) in landed else b) for b in given]


def ingest_batch(con: duckdb.DuckDBPyConnection, paths: HubPaths, batch_dir: Path,
                 expect: HubExpectations, public_keys: dict[str, bytes]) -> BatchOutcome:
    agency = batch_dir.parent.name
    try:
        vm = verify_signed_batch(batch_dir, public_keys)
        check_contract(vm, expect)
        sha = _manifest_sha(batch_dir)
        if _check_replay(con, vm, sha) == "already_ingested":
            _move(batch_dir, paths.ingested, vm.agency)
            return BatchOutcome(vm.batch_id, vm.agency, "already_ingested")
    except BatchRefused as exc:
        return _refuse(con, paths, batch_dir, agency, exc)
    con.execute("BEGIN TRANSACTION")
    try:
        counts = _load(con, vm, sha, expect)
        con.execute("COMMIT")
    except duckdb.Error as exc:
        con.execute("ROLLBACK")
        # A type or constraint failure is the batch's fault: refuse it whole, load nothing.
        return _refuse(con, paths, batch_dir, agency,
                       BatchRefused("load_failed", type(exc).__name__))
    _move(batch_dir, paths.ingested, vm.agency)
    return BatchOutcome(vm.batch_id, vm.agency, "accepted", rows=counts)


def ingest_landing(paths: HubPaths, *, batch_dirs: Iterable[Path] | None = None,
                   progress: bool = False,
                   expectations: HubExpectations | None = None) -> IngestReport:
    """Verify and load every pending batch (or the given ones) into the warehouse."""
    paths.ensure()
    expect = expectations or HubExpectations.load(paths)
    public_keys = load_public_keys(paths.public_keys)
    report = IngestReport()
    con = duckdb.connect(str(paths.warehouse))
    try:
        ensure_schema(con, expect.encoding)
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
        for _agency, bdir in items:
            if not bdir.exists():  # already moved by an earlier (re-)run
                continue
            report.outcomes.append(ingest_batch(con, paths, bdir, expect, public_keys))
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
