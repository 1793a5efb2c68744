"""The hub's audit-signing key (Ed25519, from `cryptography`) and the IG lead's trusted copy.

- Private key: `<hub>/keys/audit_signing.v<N>.json`, created 0600 with O_EXCL in a 0700 folder,
  refused on load when the group or others can read it. The newest version signs.
- Public record: `hub-audit-ed25519-v<N>.json` (key id, version, raw public key, SHA-256
  fingerprint), exported to a folder the IG lead keeps away from the hub. `verify` trusts only
  records given to it from there; nothing stored with the log is ever trusted.

Key material never appears in repr, logs or exception messages. Depends on `cryptography` only.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

KEY_FORMAT = "joinedup-hub-audit-key/1"
PUBLIC_FORMAT = "joinedup-audit-public-key/1"
_FILE = re.compile(r"^audit_signing\.v([1-9][0-9]{0,5})\.json$")
_KEY_ID = re.compile(r"^hub-audit-ed25519-v([1-9][0-9]{0,5})$")


class AuditKeyError(RuntimeError):
    """A hub audit key or a trusted public key record is missing, unsafe or malformed."""


def audit_key_id(version: int) -> str:
    return f"hub-audit-ed25519-v{version}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _raw(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


def fingerprint(pub: Ed25519PublicKey) -> str:
    """SHA-256 of the raw public key: what the IG lead reads out to confirm a record."""
    return hashlib.sha256(_raw(pub)).hexdigest()


@dataclass(frozen=True)
class HubAuditKey:
    version: int
    private_key: Ed25519PrivateKey = field(repr=False)
    created_at: str = ""

    @property
    def key_id(self) -> str:
        return audit_key_id(self.version)

    def __repr__(self) -> str:
        return f"HubAuditKey(key_id={self.key_id!r}, private_key=<redacted>)"

    __str__ = __repr__

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)

    def public_record(self) -> dict[str, object]:
        pub = self.private_key.public_key()
        return {
            "format": PUBLIC_FORMAT,
            "key_id": self.key_id,
            "version": self.version,
            "algorithm": "Ed25519",
            "public_key": _b64(_raw(pub)),
            "fingerprint_sha256": fingerprint(pub),
            "created_at": self.created_at,
        }


def _versions(keys_dir: Path) -> list[int]:
    if not keys_dir.is_dir():
        return []
    return sorted(int(m.group(1)) for p in keys_dir.iterdir() if (m := _FILE.match(p.name)))


def create_audit_key(keys_dir: str | Path, version: int | None = None) -> HubAuditKey:
    """A new key version in the hub's keys folder (never overwrites an existing file)."""
    keys_dir = Path(keys_dir)
    version = version or (max(_versions(keys_dir), default=0) + 1)
    key = HubAuditKey(
        version, Ed25519PrivateKey.generate(), dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    )
    raw = key.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    doc = {
        "format": KEY_FORMAT,
        "key_id": key.key_id,
        "version": version,
        "algorithm": "Ed25519",
        "secret": _b64(raw),
        "created_at": key.created_at,
    }
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(
        keys_dir / f"audit_signing.v{version}.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600
    )
    try:
        os.fchmod(fd, 0o600)  # independent of umask
        os.write(fd, json.dumps(doc, indent=1).encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


def load_audit_key(path: str | Path, version: int | None = None) -> HubAuditKey:
    """The signing key from a key file, or the newest (or given) version in a keys folder."""
    path = Path(path)
    if path.is_dir():
        versions = _versions(path)
        if not versions:
            raise AuditKeyError(
                f"{path}: no hub audit key (audit_signing.v<N>.json); create "
                f"one with `python -m governance.audit keygen --keys-dir {path}`"
            )
        path = path / f"audit_signing.v{version or versions[-1]}.json"
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AuditKeyError(
            f"{path}: key file mode is {stat.filemode(mode)}; it must be "
            f"readable by its owner only (chmod 600)"
        )
    try:
        doc = json.loads(path.read_text("utf-8"))
        if doc.get("format") != KEY_FORMAT:
            raise AuditKeyError(f"{path}: not a {KEY_FORMAT} key file")
        key = HubAuditKey(
            int(doc["version"]),
            Ed25519PrivateKey.from_private_bytes(base64.b64decode(doc["secret"])),
            str(doc.get("created_at", "")),
        )
    except AuditKeyError:
        raise
    except (ValueError, TypeError, LookupError) as exc:  # no key material in the message
        raise AuditKeyError(f"{path}: malformed key file ({type(exc).__name__})") from None
    if doc.get("key_id") != key.key_id:
        raise AuditKeyError(f"{path}: key id does not match its version")
    return key


def export_public_record(key: HubAuditKey, destination: str | Path) -> Path:
    """Write the key's public record for the IG lead (a folder, or an explicit file name)."""
    dest = Path(destination)
    if dest.is_dir() or not dest.suffix:
        dest = dest / f"{key.key_id}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.write_text(json.dumps(key.public_record(), indent=1), "utf-8")
    tmp.replace(dest)
    return dest


class TrustedKeys(Mapping[str, Ed25519PublicKey]):
    """The hub audit public keys the IG lead trusts, by key id (several after a rotation)."""

    def __init__(self, keys: Mapping[str, Ed25519PublicKey], source: str) -> None:
        self._keys = dict(keys)
        self.source = source

    def __getitem__(self, key_id: str) -> Ed25519PublicKey:
        return self._keys[key_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def describe(self) -> str:
        return ", ".join(sorted(self._keys)) or "none"

    @classmethod
    def of(cls, records: Iterable[Mapping[str, object]], source: str = "given") -> TrustedKeys:
        keys: dict[str, Ed25519PublicKey] = {}
        for rec in records:
            kid, raw = _parse_record(rec, source)
            keys[kid] = Ed25519PublicKey.from_public_bytes(raw)
        return cls(keys, source)


def _parse_record(rec: Mapping[str, object], source: str) -> tuple[str, bytes]:
    try:
        if rec.get("format") != PUBLIC_FORMAT or rec.get("algorithm") != "Ed25519":
            raise ValueError("format")
        kid = str(rec["key_id"])
        if not _KEY_ID.match(kid):
            raise ValueError("key_id")
        raw = base64.b64decode(str(rec["public_key"]), validate=True)
        if len(raw) != 32:
            raise ValueError("length")
        want = rec.get("fingerprint_sha256")
        if want is not None and hashlib.sha256(raw).hexdigest() != want:
            raise ValueError("fingerprint")
        return kid, raw
    except (ValueError, TypeError, LookupError) as exc:
        raise AuditKeyError(
            f"{source}: not a hub audit public key record "
            f"({exc.args[0] if exc.args else type(exc).__name__})"
        ) from None


def load_trusted_keys(path: str | Path) -> TrustedKeys:
    """Trusted public key records from one record file or a folder of them (`*.json`)."""
    path = Path(path)
    if not path.exists():
        raise AuditKeyError(f"{path}: no such trusted key file or folder")
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    records = []
    for f in files:
        try:
            records.append(json.loads(f.read_text("utf-8")))
        except (OSError, ValueError) as exc:
            raise AuditKeyError(
                f"{f}: unreadable trusted key record ({type(exc).__name__})"
            ) from None
    keys = TrustedKeys.of(records, str(path)) if records else TrustedKeys({}, str(path))
    if not keys:
        raise AuditKeyError(f"{path}: no hub audit public key record found")
    return keys
