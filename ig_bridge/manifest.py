"""Batch manifests: build and sign at the bridge, verify at the hub (docs/contracts.md).

The hub imports `verify_batch` from here, so this module depends only on `cryptography`,
pyarrow and the standard library.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

MANIFEST_NAME = "manifest.json"
BATCH_FILES = ("identifiers.parquet", "related.parquet", "payload.parquet")
REQUIRED_KEYS = (
    "batch_id", "agency", "sequence", "extract_kind", "created_at", "mapping_version",
    "canonical_version", "encoding_spec_version", "link_key_version", "ref_key_version",
    "signing_key_id", "rows", "files",
)


class Signer(Protocol):
    def sign(self, data: bytes) -> bytes: ...


class BatchRefused(Exception):  # noqa: N818 - the name the hub and the contract use
    """The hub must refuse (and quarantine) the whole batch."""

    def __init__(self, reason_code: str, detail: str) -> None:
        super().__init__(f"{reason_code}: {detail}")
        self.reason_code = reason_code
        self.detail = detail


@dataclass(frozen=True)
class VerifiedManifest:
    batch_dir: Path
    batch_id: str
    agency: str
    sequence: int
    extract_kind: str
    created_at: str
    mapping_version: int
    canonical_version: int
    encoding_spec_version: int
    link_key_version: int
    ref_key_version: int
    signing_key_id: str
    rows: dict[str, int]
    files: dict[str, dict[str, Any]]
    raw: dict[str, Any] = field(repr=False)


def canonical_json(obj: Mapping[str, Any]) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the exact bytes that are signed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.read_metadata(path).num_rows)


def build_manifest(batch_dir: str | Path, *, batch_id: str, agency: str, sequence: int,
                   extract_kind: str, mapping_version: int, canonical_version: int,
                   encoding_spec_version: int, link_key_version: int, ref_key_version: int,
                   signing_key_id: str, rows: Mapping[str, int],
                   created_at: str | None = None) -> dict[str, Any]:
    """Unsigned manifest over every file now in batch_dir (except manifest.json)."""
    batch_dir = Path(batch_dir)
    if extract_kind not in ("snapshot", "delta"):
        raise ValueError("extract_kind must be snapshot or delta")
    missing = {"read", "accepted", "quarantined"} - set(rows)
    if missing:
        raise ValueError(f"rows lacks {sorted(missing)}")
    if rows["read"] != rows["accepted"] + rows["quarantined"]:
        raise ValueError("rows: read != accepted + quarantined")
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(batch_dir.iterdir()):
        if path.name == MANIFEST_NAME:
            continue
        if not path.is_file():
            raise ValueError(f"{path}: batch folders hold files only")
        files[path.name] = {
            "sha256": sha256_file(path), "bytes": path.stat().st_size,
            "rows": _parquet_rows(path) if path.suffix == ".parquet" else None,
        }
    return {
        "batch_id": batch_id, "agency": agency, "sequence": int(sequence),
        "extract_kind": extract_kind,
        "created_at": created_at or datetime.now(UTC).isoformat(timespec="seconds"),
        "mapping_version": int(mapping_version), "canonical_version": int(canonical_version),
        "encoding_spec_version": int(encoding_spec_version),
        "link_key_version": int(link_key_version), "ref_key_version": int(ref_key_version),
        "signing_key_id": signing_key_id,
        "rows": {k: int(rows[k]) for k in ("read", "accepted", "quarantined")},
        "files": files,
    }


def sign_manifest(manifest: Mapping[str, Any], signer: Signer) -> dict[str, Any]:
    """Return the manifest with `signature` = base64 Ed25519 over canonical JSON of the rest."""
    body = {k: v for k, v in manifest.items() if k != "signature"}
    return {**body, "signature": base64.b64encode(signer.sign(canonical_json(body))).decode()}


def write_manifest(batch_dir: str | Path, manifest: Mapping[str, Any]) -> Path:
    if "signature" not in manifest:
        raise ValueError("refusing to write an unsigned manifest")
    path = Path(batch_dir) / MANIFEST_NAME
    path.write_bytes(json.dumps(manifest, sort_keys=True, indent=1).encode("utf-8"))
    return path


def load_public_keys(directory: str | Path) -> dict[str, bytes]:
    """Hub side: {signing_key_id: raw Ed25519 public key} from hub/public_keys/*.json."""
    keys: dict[str, bytes] = {}
    for path in sorted(Path(directory).glob("*.json")):
        try:
            doc = json.loads(path.read_text("utf-8"))
            raw = base64.b64decode(doc["public_key"], validate=True)
            Ed25519PublicKey.from_public_bytes(raw)
            keys[str(doc["key_id"])] = raw
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise ValueError(f"{path}: not a joinedup public key record ({exc})") from None
    return keys


def _refuse(code: str, detail: str) -> BatchRefused:
    return BatchRefused(code, detail)


def verify_batch(batch_dir: str | Path, public_keys: Mapping[str, bytes]) -> VerifiedManifest:
    """Verify a landed batch folder; raise BatchRefused(reason_code, detail) on any doubt.

    `public_keys` maps signing_key_id (e.g. "SCH-ed25519-v1") -- or, for a single-key
    agency, its agency code -- to the raw 32-byte Ed25519 public key.
    Reason codes: manifest_missing, manifest_invalid, unknown_agency, unknown_signing_key,
    bad_signature, path_mismatch, missing_file, extra_file, checksum_mismatch, size_mismatch,
    row_count_mismatch.
    """
    batch_dir = Path(batch_dir)
    mpath = batch_dir / MANIFEST_NAME
    if not mpath.is_file():
        raise _refuse("manifest_missing", f"{batch_dir}: no {MANIFEST_NAME}")
    try:
        manifest = json.loads(mpath.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _refuse("manifest_invalid", f"{mpath}: not UTF-8 JSON ({exc.__class__.__name__})"
                      ) from None
    if not isinstance(manifest, dict):
        raise _refuse("manifest_invalid", f"{mpath}: not a JSON object")
    missing = [k for k in (*REQUIRED_KEYS, "signature") if k not in manifest]
    if missing:
        raise _refuse("manifest_invalid", f"{mpath}: missing keys {missing}")
    agency, key_id = manifest["agency"], manifest["signing_key_id"]
    if not isinstance(agency, str) or not re.fullmatch(r"[A-Z]{2,8}", agency):
        raise _refuse("manifest_invalid", f"{mpath}: agency is not an agency code")

    # The signing key must be the claimed agency's own: a key of agency A never vouches for B.
    pub = None
    if isinstance(key_id, str) and key_id.startswith(f"{agency}-") and key_id in public_keys:
        pub = public_keys[key_id]
    elif agency in public_keys and key_id == f"{agency}-ed25519-v1":
        pub = public_keys[agency]
    if pub is None:
        known = any(k == agency or k.startswith(f"{agency}-") for k in public_keys)
        if not known:
            raise _refuse("unknown_agency", f"{mpath}: no public key registered for {agency}")
        raise _refuse("unknown_signing_key",
                      f"{mpath}: signing key {key_id!r} is not registered for {agency}")
    try:
        signature = base64.b64decode(manifest["signature"], validate=True)
        body = {k: v for k, v in manifest.items() if k != "signature"}
        Ed25519PublicKey.from_public_bytes(pub).verify(signature, canonical_json(body))
    except (InvalidSignature, ValueError, TypeError, binascii.Error):
        raise _refuse("bad_signature",
                      f"{mpath}: signature does not verify with {key_id}") from None

    # Signed content from here on; the folder must be what it claims to be.
    if batch_dir.name != manifest["batch_id"]:
        raise _refuse("path_mismatch", f"{batch_dir}: folder name differs from the batch_id")
    parent = batch_dir.parent.name
    if re.fullmatch(r"[A-Z]{2,8}", parent) and parent != agency:
        raise _refuse("path_mismatch", f"{batch_dir}: landed under {parent}, signed by {agency}")
    files = manifest["files"]
    if not isinstance(files, dict):
        raise _refuse("manifest_invalid", f"{mpath}: files is not an object")
    present = {p.name for p in batch_dir.iterdir()} - {MANIFEST_NAME}
    if set(files) - present:
        raise _refuse("missing_file",
                      f"{batch_dir}: listed but missing: {sorted(set(files) - present)}")
    if present - set(files):
        raise _refuse("extra_file",
                      f"{batch_dir}: not listed in the manifest: {sorted(present - set(files))}")
    for name, meta in sorted(files.items()):
        path = batch_dir / name
        if path.stat().st_size != meta.get("bytes"):
            raise _refuse("size_mismatch", f"{path}: size differs from the manifest")
        if sha256_file(path) != meta.get("sha256"):
            raise _refuse("checksum_mismatch", f"{path}: SHA-256 differs from the manifest")
        if path.suffix == ".parquet" and meta.get("rows") is not None:
            try:
                rows = _parquet_rows(path)
            except Exception:  # noqa: BLE001 - any unreadable file is a refusal
                raise _refuse("manifest_invalid", f"{path}: not a readable Parquet file"
                              ) from None
            if rows != meta["rows"]:
                raise _refuse("row_count_mismatch", f"{path}: row count differs")
    try:
        return VerifiedManifest(
            batch_dir=batch_dir, batch_id=str(manifest["batch_id"]), agency=agency,
            sequence=int(manifest["sequence"]), extract_kind=str(manifest["extract_kind"]),
            created_at=str(manifest["created_at"]),
            mapping_version=int(manifest["mapping_version"]),
            canonical_version=int(manifest["canonical_version"]),
            encoding_spec_version=int(manifest["encoding_spec_version"]),
            link_key_version=int(manifest["link_key_version"]),
            ref_key_version=int(manifest["ref_key_version"]),
            signing_key_id=str(key_id), rows={k: int(v) for k, v in manifest["rows"].items()},
            files=files, raw=manifest)
    except (TypeError, ValueError, AttributeError) as exc:
        raise _refuse("manifest_invalid", f"{mpath}: bad field type ({exc.__class__.__name__})"
                      ) from None
