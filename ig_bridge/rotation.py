"""Key rotation at the agency: record-ref key re-keying batches and K_link re-tokenisation.

Record-ref key (one agency's): a new version is created alongside the old ones
(`start_ref_key_rotation`). The hub sends the agency the refs it holds for it
(`linkage.rekey.export_agency_refs`); only the agency can decrypt them, so only it can build the
`old_ref -> new_ref` mapping (`build_rekey_batch`). The mapping travels as a signed batch
(`rekey.parquet` + `manifest.json`, extract_kind "rekey") into the re-keying landing area; the
hub verifies it like any batch and rewrites every ref it holds in one transaction
(`linkage.rekey.apply_rekey`). Refs never contain plaintext, and neither does the mapping.

K_link (the partnership's): every bridge imports v<N+1> and re-runs its current snapshot under
it (`retokenise_snapshot`); the hub moves its accepted link key versions to the new one and a
full relink follows. See docs/keys.md.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ig_bridge.keys import KeyStore, RecordRefError, RefKey, decrypt_record_ref, encrypt_record_ref
from ig_bridge.landing import sealed_batch
from ig_bridge.manifest import MANIFEST_NAME, sha256_file, sign_manifest, write_manifest

REKEY_FILE = "rekey.parquet"
REKEY_KIND = "rekey"
REKEY_SCHEMA = pa.schema(
    [
        pa.field("old_ref", pa.string(), nullable=False),
        pa.field("new_ref", pa.string(), nullable=False),
    ]
)

__all__ = [
    "REKEY_FILE",
    "REKEY_KIND",
    "RekeyBatch",
    "RotationError",
    "build_rekey_batch",
    "read_refs_file",
    "retokenise_snapshot",
    "start_ref_key_rotation",
]


class RotationError(ValueError):
    """A rotation step cannot go ahead; names the file/row, never a ref's plaintext."""


@dataclass
class RekeyBatch:
    batch_id: str
    agency: str
    sequence: int
    path: Path
    from_versions: list[int]
    to_version: int
    mapped: int
    already_current: int


def start_ref_key_rotation(agency_dir: Path | str, code: str) -> RefKey:
    """Create the next record-ref key version alongside the old ones (which stay, so refs
    issued before the change keep decrypting)."""
    return KeyStore(Path(agency_dir) / "keys", code).create_ref_key()


def read_refs_file(path: Path | str) -> list[str]:
    """Refs the hub exported for this agency: Parquet with a `record_ref` column, or text with
    one ref per line."""
    path = Path(path)
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        if "record_ref" not in table.column_names:
            raise RotationError(f"{path}: no record_ref column")
        refs = table.column("record_ref").to_pylist()
    else:
        refs = [line.strip() for line in path.read_text("utf-8").splitlines()]
    for i, r in enumerate(refs, start=1):
        if not r:
            raise RotationError(f"{path}: row {i}: empty record_ref")
    return refs


def build_rekey_batch(
    agency_dir: Path | str,
    code: str,
    rekey_landing: Path | str,
    refs: Iterable[str],
    *,
    source: str = "<refs>",
) -> RekeyBatch:
    """Map every given ref (issued under any older ref key version) to the newest version and
    land the mapping as a signed re-keying batch in `rekey_landing/<CODE>/<batch_id>/`.

    Refs already under the newest version are left out (re-running is harmless). A ref that
    decrypts under none of this agency's keys stops the batch: it names the row, and nothing
    is written.
    """
    from ig_bridge.bridge_state import (
        _next_sequence,
        _save_sequence,
        load_bridge_keys,
        load_hub_key,
    )

    agency_dir = Path(agency_dir)
    store = KeyStore(agency_dir / "keys", code)
    keys = load_bridge_keys(agency_dir, code)  # newest ref + signing key, link key present
    hub_key = load_hub_key(agency_dir)  # the mapping lands sealed to the hub, like any batch
    new: RefKey = keys.ref  # type: ignore[assignment]
    older = [k for k in store.ref_keys() if k.version != new.version]
    if not older:
        raise RotationError(
            f"{store.directory}: only ref key v{new.version}; start the "
            "rotation first (keys rotate --kind ref)"
        )
    old_refs: list[str] = []
    new_refs: list[str] = []
    from_versions: set[int] = set()
    current = 0
    seen: set[str] = set()
    for row, ref in enumerate(refs, start=1):
        if ref in seen:
            continue
        seen.add(ref)
        try:
            decrypt_record_ref(ref, new)
            current += 1
            continue
        except RecordRefError:
            pass
        for key in older:
            try:
                local_id = decrypt_record_ref(ref, key)
            except RecordRefError:
                continue
            old_refs.append(ref)
            new_refs.append(encrypt_record_ref(new, local_id))
            from_versions.add(key.version)
            break
        else:
            raise RotationError(
                f"{source}: row {row}: record_ref does not decrypt under any "
                f"{code} ref key version; it is not this agency's"
            )
    seq = _next_sequence(agency_dir, code)
    created = datetime.now(UTC)
    batch_id = f"{code}-{seq:06d}-{created:%Y%m%dT%H%M%SZ}-rekey-{uuid.uuid4().hex[:6]}"
    signing = keys.signing
    with sealed_batch(rekey_landing, code, batch_id, hub_key, agency_dir / "work") as tmp:
        path = tmp / REKEY_FILE
        pq.write_table(
            pa.table({"old_ref": old_refs, "new_ref": new_refs}, schema=REKEY_SCHEMA),
            path,
            compression="zstd",
        )
        n = len(old_refs)
        manifest = {
            "batch_id": batch_id,
            "agency": code,
            "sequence": seq,
            "extract_kind": REKEY_KIND,
            "created_at": created.isoformat(timespec="seconds"),
            # Not an extract: no mapping; the other versions say what the bridge holds now.
            "mapping_version": 0,
            "canonical_version": 0,
            "encoding_spec_version": 0,
            "link_key_version": keys.link.version,  # type: ignore[attr-defined]
            "ref_key_version": new.version,
            "rekey": {
                "from_ref_key_versions": sorted(from_versions),
                "to_ref_key_version": new.version,
            },
            "signing_key_id": signing.key_id,  # type: ignore[attr-defined]
            "rows": {"read": n, "accepted": n, "quarantined": 0},
            "files": {
                REKEY_FILE: {"sha256": sha256_file(path), "bytes": path.stat().st_size, "rows": n}
            },
        }
        assert MANIFEST_NAME not in manifest["files"]
        write_manifest(tmp, sign_manifest(manifest, signing))  # type: ignore[arg-type]
    _save_sequence(agency_dir, code, seq, batch_id)
    return RekeyBatch(
        batch_id,
        code,
        seq,
        Path(rekey_landing) / code / batch_id,
        sorted(from_versions),
        new.version,
        len(old_refs),
        current,
    )


def retokenise_snapshot(
    extract_path: Path | str,
    mapping_path: Path | str,
    agency_dir: Path | str,
    landing_dir: Path | str,
    *,
    link_key_version: int | None = None,
    progress: bool = False,
):  # noqa: ANN201
    """K_link rotation: re-run the agency's current extract as a full snapshot under the given
    (default: newest) link key version. Returns the bridge's BatchResult."""
    from ig_bridge.split import run_bridge

    agency_dir = Path(agency_dir)
    return run_bridge(
        extract_path,
        mapping_path,
        agency_dir,
        landing_dir,
        extract_kind="snapshot",
        progress=progress,
        link_key_version=link_key_version,
    )
