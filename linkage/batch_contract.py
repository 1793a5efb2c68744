"""What the hub accepts in a landed batch, checked before anything is loaded (linkage.ingest):
the per-agency contracts, the encoding spec and key versions, and each file's column contract
(the hub refuses information outside the data-sharing agreement)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ig_bridge.manifest import BatchRefused, VerifiedManifest
from linkage.config import EncodingContract, HubPaths
from schemas.mapping import HubContract, hub_contract, load_all_mappings, load_canonical


@dataclass(frozen=True)
class HubExpectations:
    """What the hub accepts: per-agency contracts, the encoding spec, key versions."""

    contracts: dict[str, HubContract]
    encoding: EncodingContract
    canonical_version: int
    link_key_versions: frozenset[int] = frozenset({1})

    @classmethod
    def load(
        cls, paths: HubPaths, link_key_versions: Iterable[int] | None = None
    ) -> HubExpectations:
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


#: Refs of records the agency still holds whose row it quarantined ("present, not updated"):
#: a snapshot keeps their records as they are instead of retiring them (docs/contracts.md).
PRESENT_FILE = "present.parquet"
PRESENT_COLUMNS = frozenset({"record_ref", "agency", "batch_id"})


def _columns(path: Path) -> set[str]:
    return set(pq.read_schema(path).names)


def _check_flag_types(schema: pa.Schema, name: str, flags: Iterable[str]) -> None:
    """Flags are booleans: a flag column of any other type could carry text (a name) past
    every token check, so the batch is refused before a value is read."""
    for col in flags:
        typ = schema.field(col).type
        if not pa.types.is_boolean(typ):
            raise BatchRefused("column_type", f"{name}: {col} is {typ}, not boolean")


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
        raise BatchRefused(
            "version_mismatch", f"link_key_version {vm.link_key_version} not accepted by the hub"
        )
    if vm.extract_kind not in ("snapshot", "delta"):
        raise BatchRefused("manifest_invalid", f"extract_kind {vm.extract_kind!r}")
    allowed = {
        "identifiers.parquet": expect.encoding.identifiers_columns,
        "related.parquet": expect.encoding.related_columns,
        "payload.parquet": contract.payload_columns,
    }
    for name, cols_allowed in allowed.items():
        path = vm.batch_dir / name
        if name not in vm.files:
            raise BatchRefused("missing_file", f"{name} is required")
        try:
            schema = pq.read_schema(path)
        except (pa.ArrowException, OSError, ValueError):
            raise BatchRefused("file_unreadable", f"{name}: not a readable Parquet file") from None
        cols = set(schema.names)
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
        if name != "payload.parquet":
            _check_flag_types(schema, name, expect.encoding.flag_columns)
    if PRESENT_FILE in vm.files:  # optional: bridges before the snapshot guards send none
        try:
            cols = _columns(vm.batch_dir / PRESENT_FILE)
        except (pa.ArrowException, OSError, ValueError):
            raise BatchRefused(
                "file_unreadable", f"{PRESENT_FILE}: not a readable Parquet file"
            ) from None
        if cols != PRESENT_COLUMNS:  # refs only: no payload, no identifiers
            raise BatchRefused(
                "column_not_in_agreement" if cols - PRESENT_COLUMNS else "column_missing",
                f"{PRESENT_FILE}: {sorted(cols)}",
            )
    # Row labels (agency, batch_id, refs) are checked on the staged rows: row_checks.
