"""Batch manifests: build and sign at the bridge, verify at the hub (docs/contracts.md).

The hub imports `verify_batch` from here, so this module depends only on `cryptography`,
pyarrow and the standard library.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import stat
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
    "batch_id",
    "agency",
    "sequence",
    "extract_kind",
    "created_at",
    "mapping_version",
    "canonical_version",
    "encoding_spec_version",
    "link_key_version",
    "ref_key_version",
    "signing_key_id",
    "rows",
    "files",
)
#: Optional manifest entry: the snapshot guards the data officer forced (ig_bridge.snapshot_guard).
FORCED_KEY = "forced"
FORCEABLE_GUARDS = frozenset({"min_share", "problem_rate"})
# A forced reason travels to the hub: short free text, nothing that looks like an identifier
# (no run of 4+ digits: dates, NHS numbers, phone numbers; no '@': e-mail addresses).
FORCE_REASON = re.compile(r"[A-Za-z0-9 .,:;()/#'_-]{3,200}")
IDENTIFYING = re.compile(r"\d{4,}|@")


class Signer(Protocol):
    def sign(self, data: bytes) -> bytes: ...


class BatchRefused(Exception):  # noqa: N818 - the name the hub and the contract use
    """The hub must refuse (and quarantine) the whole batch."""

    def __init__(self, reason_code: str, detail: str) -> None:
        super().__init__(f"{reason_code}: {detail}")
        self.reason_code = reason_code
        self.detail = detail
        # Set when the signature verified: whose sequence number this refusal spends.
        self.signed_agency: str | None = None
        self.signed_sequence: int | None = None


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
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.read_metadata(path).num_rows)


def build_manifest(
    batch_dir: str | Path,
    *,
    batch_id: str,
    agency: str,
    sequence: int,
    extract_kind: str,
    mapping_version: int,
    canonical_version: int,
    encoding_spec_version: int,
    link_key_version: int,
    ref_key_version: int,
    signing_key_id: str,
    rows: Mapping[str, int],
    created_at: str | None = None,
    field_problems: Mapping[str, Mapping[str, int]] | None = None,
    forced: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Unsigned manifest over every file now in batch_dir (except manifest.json).
    `field_problems`: counts per field and reason of values the bridge nulled or flagged in
    accepted rows (ig_bridge.rowcheck), counts only, never a value; `forced`: the snapshot
    guards the data officer forced, with the reason."""
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
            "sha256": sha256_file(path),
            "bytes": path.stat().st_size,
            "rows": _parquet_rows(path) if path.suffix == ".parquet" else None,
        }
    out: dict[str, Any] = {} if forced is None else {FORCED_KEY: dict(forced)}
    return {
        **out,
        "batch_id": batch_id,
        "agency": agency,
        "sequence": int(sequence),
        "extract_kind": extract_kind,
        "created_at": created_at or datetime.now(UTC).isoformat(timespec="seconds"),
        "mapping_version": int(mapping_version),
        "canonical_version": int(canonical_version),
        "encoding_spec_version": int(encoding_spec_version),
        "link_key_version": int(link_key_version),
        "ref_key_version": int(ref_key_version),
        "signing_key_id": signing_key_id,
        "rows": {k: int(rows[k]) for k in ("read", "accepted", "quarantined")},
        "files": files,
        **(
            {"field_problems": {f: _plain_reasons(v) for f, v in field_problems.items()}}
            if field_problems
            else {}
        ),
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


#: The largest manifest the hub reads (a genuine one is a few KiB): a bigger one is refused
#: after reading at most this many bytes + 1, so a planted 300 MB manifest costs nothing.
MANIFEST_MAX_BYTES = 1 << 20
#: Names a batch may use for itself and for its files: no separators, no leading dot.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
AGENCY_CODE = re.compile(r"[A-Z]{2,8}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def read_manifest_bytes(mpath: Path, limit: int = MANIFEST_MAX_BYTES) -> bytes:
    """The manifest's bytes, read without following a symlink and never more than limit + 1;
    raises BatchRefused when it is not a regular file or is bigger than `limit`."""
    try:
        fd = os.open(mpath, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise _refuse("manifest_missing", f"{mpath.parent}: no {MANIFEST_NAME}") from None
    except OSError:
        raise _refuse("manifest_invalid", f"{mpath}: not a regular file") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise _refuse("manifest_invalid", f"{mpath}: not a regular file")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise _refuse("manifest_too_large", f"{mpath}: larger than {limit} bytes")
    return data


def _check_fields(m: Mapping[str, Any], mpath: Path) -> None:
    """Every field of a signed manifest has the type the contract gives it; the detail names
    the field, never its value. A signature vouches for who wrote it, not that it is sane."""

    def bad(field_name: str, want: str) -> BatchRefused:
        return _refuse("manifest_invalid", f"{mpath}: {field_name} must be {want}")

    for k in ("batch_id", "extract_kind", "created_at", "signing_key_id"):
        if not isinstance(m[k], str) or not m[k]:
            raise bad(k, "a non-empty string")
    if not SAFE_NAME.fullmatch(m["batch_id"]):
        raise bad("batch_id", "a plain folder name")
    if not _is_int(m["sequence"]) or m["sequence"] < 1:
        raise bad("sequence", "an integer >= 1")
    for k in (
        "mapping_version",
        "canonical_version",
        "encoding_spec_version",
        "link_key_version",
        "ref_key_version",
    ):
        if not _is_int(m[k]) or m[k] < 0:
            raise bad(k, "an integer >= 0")
    rows = m["rows"]
    if (
        not isinstance(rows, dict)
        or set(rows) != {"read", "accepted", "quarantined"}
        or not all(_is_int(v) and v >= 0 for v in rows.values())
    ):
        raise bad("rows", "{read, accepted, quarantined} integers >= 0")
    if rows["read"] != rows["accepted"] + rows["quarantined"]:
        raise bad("rows", "read = accepted + quarantined")
    if "field_problems" in m:
        _check_field_problems(m["field_problems"], bad)
    files = m["files"]
    if not isinstance(files, dict) or not files:
        raise bad("files", "a non-empty object")
    for name, meta in files.items():
        if not SAFE_NAME.fullmatch(name) or name == MANIFEST_NAME:
            raise bad("files", "plain file names")
        if not isinstance(meta, dict):
            raise bad(f"files.{name}", "an object")
        if not isinstance(meta.get("sha256"), str) or not _SHA256.fullmatch(meta["sha256"]):
            raise bad(f"files.{name}.sha256", "64 lower-case hex digits")
        if not _is_int(meta.get("bytes")) or meta["bytes"] < 0:
            raise bad(f"files.{name}.bytes", "an integer >= 0")
        n = meta.get("rows")
        if (n is not None or name.endswith(".parquet")) and (not _is_int(n) or n < 0):
            raise bad(f"files.{name}.rows", "an integer >= 0")
    if FORCED_KEY in m and not _forced_ok(m[FORCED_KEY]):
        raise bad(
            FORCED_KEY,
            "{guards: [min_share|problem_rate], reason: short text with no "
            "run of 4+ digits and no '@', figures: {guard: {name: number}}}",
        )


def _forced_ok(f: object) -> bool:
    """The shape of a `forced` entry; its reason must not look identifying (it is kept and
    shown at the hub)."""
    if not isinstance(f, dict) or set(f) != {"guards", "reason", "figures"}:
        return False
    guards, reason, figures = f["guards"], f["reason"], f["figures"]
    if (
        not isinstance(guards, list)
        or not guards
        or len(set(guards)) != len(guards)
        or not all(isinstance(g, str) and g in FORCEABLE_GUARDS for g in guards)
    ):
        return False
    if (
        not isinstance(reason, str)
        or not FORCE_REASON.fullmatch(reason)
        or IDENTIFYING.search(reason)
    ):
        return False
    if not isinstance(figures, dict) or set(figures) != set(guards):
        return False
    return all(
        isinstance(v, dict)
        and len(v) <= 8
        and all(
            isinstance(k, str)
            and len(k) <= 32
            and isinstance(x, int | float)
            and not isinstance(x, bool)
            for k, x in v.items()
        )
        for v in figures.values()
    )


_FIELD_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}\.[a-z][a-z0-9_]{0,63}")
_REASON = re.compile(r"[A-Za-z0-9 _.,:;()'/+%&=#-]{1,160}")


def _plain_reasons(per: Mapping[str, int]) -> dict[str, int]:
    """Reasons in the characters the hub accepts (a new reason text never refuses a batch)."""
    out: dict[str, int] = {}
    for r, n in per.items():
        key = re.sub(r"[^A-Za-z0-9 _.,:;()'/+%&=#-]", " ", r)[:160] or "unspecified"
        out[key] = out.get(key, 0) + int(n)
    return out


def _check_field_problems(fp: object, bad: Any) -> None:
    """Optional `field_problems`: {"<person|payload>.<field>": {reason: count}}, bounded."""
    if not isinstance(fp, dict) or len(fp) > 500:
        raise bad("field_problems", "an object of at most 500 fields")
    for name, per in fp.items():
        if not isinstance(name, str) or not _FIELD_NAME.fullmatch(name):
            raise bad("field_problems", "keyed by <person>.<field> names")
        if not isinstance(per, dict) or len(per) > 50:
            raise bad(f"field_problems.{name}", "an object of at most 50 reasons")
        for reason, n in per.items():
            if not isinstance(reason, str) or not _REASON.fullmatch(reason):
                raise bad(f"field_problems.{name}", "keyed by short plain-text reasons")
            if not _is_int(n) or n < 0:
                raise bad(f"field_problems.{name}", "integer counts >= 0")


def _sha256_nofollow(path: Path) -> str:
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_batch(
    batch_dir: str | Path, public_keys: Mapping[str, bytes], *, landed_agency: str | None = None
) -> VerifiedManifest:
    """Verify a landed batch folder; raise BatchRefused(reason_code, detail) on any doubt.

    `public_keys` maps signing_key_id (e.g. "SCH-ed25519-v1") -- or, for a single-key
    agency, its agency code -- to the raw 32-byte Ed25519 public key. `landed_agency` is the
    agency folder the batch landed in (default: the batch folder's parent's name); it must be
    the signing agency, whatever it looks like.
    Reason codes: manifest_missing, manifest_invalid, manifest_too_large, unknown_agency,
    unknown_signing_key, bad_signature, path_mismatch, missing_file, extra_file, not_a_file,
    checksum_mismatch, size_mismatch, row_count_mismatch. A refusal raised after the signature
    verified carries `signed_agency` and `signed_sequence` (the hub's sequence ledger).
    """
    batch_dir = Path(batch_dir)
    mpath = batch_dir / MANIFEST_NAME
    if batch_dir.is_symlink() or not batch_dir.is_dir():
        raise _refuse("manifest_missing", f"{batch_dir}: not a batch folder")
    raw = read_manifest_bytes(mpath)
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _refuse(
            "manifest_invalid", f"{mpath}: not UTF-8 JSON ({exc.__class__.__name__})"
        ) from None
    if not isinstance(manifest, dict):
        raise _refuse("manifest_invalid", f"{mpath}: not a JSON object")
    missing = [k for k in (*REQUIRED_KEYS, "signature") if k not in manifest]
    if missing:
        raise _refuse("manifest_invalid", f"{mpath}: missing keys {missing}")
    agency, key_id = manifest["agency"], manifest["signing_key_id"]
    if not isinstance(agency, str) or not AGENCY_CODE.fullmatch(agency):
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
        raise _refuse(
            "unknown_signing_key", f"{mpath}: signing key {key_id!r} is not registered for {agency}"
        )
    try:
        signature = base64.b64decode(manifest["signature"], validate=True)
        body = {k: v for k, v in manifest.items() if k != "signature"}
        Ed25519PublicKey.from_public_bytes(pub).verify(signature, canonical_json(body))
    except (InvalidSignature, ValueError, TypeError, binascii.Error, RecursionError):
        raise _refuse(
            "bad_signature", f"{mpath}: signature does not verify with {key_id}"
        ) from None

    # Signed content from here on: the agency wrote it, so its sequence is spent whatever
    # else is wrong (the hub's ledger); the batch must still be sane and what it claims to be.
    seq = manifest["sequence"]
    try:
        return _verify_signed(batch_dir, mpath, manifest, landed_agency)
    except BatchRefused as exc:
        exc.signed_agency = agency
        exc.signed_sequence = seq if _is_int(seq) and seq >= 1 else None
        raise


def _verify_signed(
    batch_dir: Path, mpath: Path, manifest: dict[str, Any], landed_agency: str | None
) -> VerifiedManifest:
    agency = manifest["agency"]
    _check_fields(manifest, mpath)
    if batch_dir.name != manifest["batch_id"]:
        raise _refuse("path_mismatch", f"{batch_dir}: folder name differs from the batch_id")
    landed = batch_dir.parent.name if landed_agency is None else landed_agency
    if landed != agency:  # always, whatever the folder is called
        raise _refuse(
            "path_mismatch",
            f"{batch_dir}: landed under another folder than the signing agency {agency}",
        )
    files: dict[str, dict[str, Any]] = manifest["files"]
    entries = {p.name: p for p in batch_dir.iterdir()}
    entries.pop(MANIFEST_NAME, None)
    if set(files) - set(entries):
        raise _refuse(
            "missing_file", f"{batch_dir}: listed but missing: {sorted(set(files) - set(entries))}"
        )
    if set(entries) - set(files):
        raise _refuse(
            "extra_file",
            f"{batch_dir}: not listed in the manifest: {sorted(set(entries) - set(files))}",
        )
    for name, meta in sorted(files.items()):
        path = entries[name]
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode):  # a directory, symlink, device or pipe
            raise _refuse("not_a_file", f"{path}: not a regular file")
        if st.st_size != meta["bytes"]:
            raise _refuse("size_mismatch", f"{path}: size differs from the manifest")
        try:
            digest = _sha256_nofollow(path)
        except OSError:
            raise _refuse("not_a_file", f"{path}: not a readable regular file") from None
        if digest != meta["sha256"]:
            raise _refuse("checksum_mismatch", f"{path}: SHA-256 differs from the manifest")
        if path.suffix == ".parquet":
            try:
                rows = _parquet_rows(path)
            except Exception:  # noqa: BLE001 - any unreadable file is a refusal
                raise _refuse("manifest_invalid", f"{path}: not a readable Parquet file") from None
            if rows != meta["rows"]:
                raise _refuse("row_count_mismatch", f"{path}: row count differs")
    return VerifiedManifest(
        batch_dir=batch_dir,
        batch_id=manifest["batch_id"],
        agency=agency,
        sequence=manifest["sequence"],
        extract_kind=manifest["extract_kind"],
        created_at=manifest["created_at"],
        mapping_version=manifest["mapping_version"],
        canonical_version=manifest["canonical_version"],
        encoding_spec_version=manifest["encoding_spec_version"],
        link_key_version=manifest["link_key_version"],
        ref_key_version=manifest["ref_key_version"],
        signing_key_id=manifest["signing_key_id"],
        rows=dict(manifest["rows"]),
        files=files,
        raw=manifest,
    )
