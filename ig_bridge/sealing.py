"""Sealing batch files to the hub: only the hub's private key opens a landed file.

Construction (all libsodium, through PyNaCl; no home-made primitive):
- per file, a random 256-bit key for crypto_secretstream_xchacha20poly1305 (chunked AEAD, so a
  file of hundreds of MB is sealed and opened 1 MiB at a time, never whole in memory);
- that key sealed to the hub's X25519 public key with `nacl.public.SealedBox`;
- associated data on every chunk: format, hub key id, agency, batch id and file name, so a file
  sealed for one batch, agency or file name does not open as another's (no swapping);
- the last chunk carries TAG_FINAL and must end the file, so a truncated stream is refused.

Layout of a sealed file (`<name>.sealed`): MAGIC, u16 big-endian length + JSON header
(`{"format", "hub_key_id"}`), the 80-byte sealed file key, the 24-byte secretstream header, then
chunks of CHUNK plaintext bytes + 17 (the last may be shorter).

Keys: the hub's pair lives in the hub's keys folder (`sealing_key.v<N>.json`, 0600); the public
record (`joinedup-hub-sealing-key/1`) is imported into every bridge's keys folder
(`hub_sealing_key.v<N>.json`). Core deps only: the bridge seals, the hub opens, same module.
"""

from __future__ import annotations

import base64
import json
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import nacl.bindings as sodium
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from ig_bridge.keys import KeyFileError, _write_private, check_private_file

MAGIC = b"JOINEDUP-SEALED\x01"
SEALED_FORMAT = "joinedup-sealed/1"
PUBLIC_FORMAT = "joinedup-hub-sealing-key/1"
PRIVATE_FORMAT = "joinedup-key/1"
SEALED_SUFFIX = ".sealed"
CHUNK = 1 << 20
_ABYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
_SS_HEADER = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
_TAG_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
_TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
_SEALED_KEY_BYTES = 32 + 48  # SealedBox: ephemeral public key + MAC over the 32-byte key
_MAX_HEADER = 1024
_KEY_ID = re.compile(r"^hub-x25519-v([1-9][0-9]{0,5})$")
_CONTEXT_PART = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class SealError(Exception):
    """A sealed file does not open. `reason_code` is what the hub records; the message names
    files and key ids only."""

    def __init__(self, reason_code: str, detail: str) -> None:
        super().__init__(f"{reason_code}: {detail}")
        self.reason_code = reason_code
        self.detail = detail


class HubKeyMissing(KeyFileError):
    """The bridge has no hub sealing key (or the hub has no private one): nothing lands."""


def hub_key_id(version: int) -> str:
    return f"hub-x25519-v{int(version)}"


def sealed_name(name: str) -> str:
    return name + SEALED_SUFFIX


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True, repr=False)
class HubPublicKey:
    version: int
    public: bytes = field(repr=False)
    created_at: str = ""

    @property
    def key_id(self) -> str:
        return hub_key_id(self.version)

    @property
    def fingerprint(self) -> str:
        """Read out between hub and agency to confirm the imported key (not secret)."""
        import hashlib

        return hashlib.sha256(self.public).hexdigest()[:16]

    def record(self) -> dict[str, object]:
        return {
            "format": PUBLIC_FORMAT,
            "key_id": self.key_id,
            "version": self.version,
            "algorithm": "X25519",
            "public_key": base64.b64encode(self.public).decode(),
            "created_at": self.created_at,
        }

    def __repr__(self) -> str:
        return f"HubPublicKey({self.key_id}, fingerprint={self.fingerprint})"


@dataclass(frozen=True, repr=False)
class HubSealingKey:
    version: int
    private: PrivateKey = field(repr=False)
    created_at: str = ""

    @property
    def key_id(self) -> str:
        return hub_key_id(self.version)

    def public_key(self) -> HubPublicKey:
        return HubPublicKey(self.version, bytes(self.private.public_key), self.created_at)

    def __repr__(self) -> str:
        return f"HubSealingKey({self.key_id}, private=<redacted>)"

    __str__ = __repr__


def parse_public_record(blob: bytes) -> HubPublicKey:
    try:
        doc = json.loads(blob)
        if doc.get("format") != PUBLIC_FORMAT or doc.get("algorithm") != "X25519":
            raise KeyFileError(f"not a {PUBLIC_FORMAT} record")
        version = int(doc["version"])
        raw = base64.b64decode(doc["public_key"], validate=True)
        PublicKey(raw)  # 32 bytes or refused
    except KeyFileError:
        raise
    except (ValueError, TypeError, LookupError, AttributeError, CryptoError) as exc:
        raise KeyFileError(f"malformed hub sealing key record ({type(exc).__name__})") from None
    if doc.get("key_id") != hub_key_id(version):
        raise KeyFileError("hub sealing key record: key_id does not match its version")
    return HubPublicKey(version, raw, str(doc.get("created_at", "")))


# -- the hub's key pair (hub/keys/) ----------------------------------------------------------


def _hub_key_path(keys_dir: Path, version: int) -> Path:
    return keys_dir / f"sealing_key.v{version}.json"


def hub_key_versions(keys_dir: Path | str, prefix: str = "sealing_key") -> list[int]:
    d = Path(keys_dir)
    if not d.is_dir():
        return []
    pat = re.compile(rf"^{prefix}\.v([1-9][0-9]{{0,5}})\.json$")
    return sorted(int(m.group(1)) for m in (pat.match(p.name) for p in d.iterdir()) if m)


def create_hub_sealing_key(keys_dir: Path | str) -> HubSealingKey:
    """The hub's next sealing key version, private file 0600 in its own keys folder."""
    keys_dir = Path(keys_dir)
    version = max(hub_key_versions(keys_dir), default=0) + 1
    key = HubSealingKey(version, PrivateKey.generate(), _now())
    doc = {
        "format": PRIVATE_FORMAT,
        "kind": "hub-sealing",
        "version": version,
        "key_id": key.key_id,
        "algorithm": "X25519",
        "created_at": key.created_at,
        "secret": base64.b64encode(bytes(key.private)).decode(),
        "public_key": base64.b64encode(bytes(key.private.public_key)).decode(),
    }
    _write_private(_hub_key_path(keys_dir, version), json.dumps(doc, indent=1).encode())
    keys_dir.chmod(0o700)
    return key


def load_hub_sealing_keys(keys_dir: Path | str) -> dict[str, HubSealingKey]:
    """Every version the hub holds, by key id (older ones open batches sealed before a
    rotation). Refuses key files others can read."""
    out: dict[str, HubSealingKey] = {}
    for v in hub_key_versions(keys_dir):
        path = _hub_key_path(Path(keys_dir), v)
        check_private_file(path)
        try:
            doc = json.loads(path.read_text("utf-8"))
            if doc.get("kind") != "hub-sealing" or int(doc["version"]) != v:
                raise KeyFileError(f"{path}: not a hub sealing key v{v}")
            key = HubSealingKey(
                v,
                PrivateKey(base64.b64decode(doc["secret"], validate=True)),
                str(doc.get("created_at", "")),
            )
        except KeyFileError:
            raise
        except (ValueError, TypeError, LookupError, CryptoError) as exc:
            raise KeyFileError(
                f"{path}: malformed hub sealing key ({type(exc).__name__})"
            ) from None
        out[key.key_id] = key
    return out


def export_hub_public_key(keys_dir: Path | str, dest: Path | str) -> Path:
    """Write the newest hub public record for the bridges (not secret)."""
    keys = load_hub_sealing_keys(keys_dir)
    if not keys:
        raise HubKeyMissing(f"{keys_dir}: no hub sealing key")
    newest = max(keys.values(), key=lambda k: k.version).public_key()
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / f"hub_sealing_key.v{newest.version}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(newest.record(), indent=1), "utf-8")
    return dest


# -- a bridge's copy of the hub public key (agency/<CODE>/keys/) ------------------------------


def import_hub_public_key(bridge_keys_dir: Path | str, blob: bytes) -> HubPublicKey:
    """Store the hub's public record in the bridge's own keys folder. A different key under a
    version already imported is refused (a swapped record would send batches to someone else)."""
    key = parse_public_record(blob)
    d = Path(bridge_keys_dir)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = d / f"hub_sealing_key.v{key.version}.json"
    if path.exists():
        held = parse_public_record(path.read_bytes())
        if held.public != key.public:
            raise KeyFileError(f"{path}: a different hub key {key.key_id} is already imported")
        return held
    _write_private(path, json.dumps(key.record(), indent=1).encode())
    return key


def bridge_hub_key(bridge_keys_dir: Path | str) -> HubPublicKey:
    """The newest hub public key the bridge imported; HubKeyMissing when none (never lands)."""
    d = Path(bridge_keys_dir)
    versions = hub_key_versions(d, "hub_sealing_key")
    if not versions:
        raise HubKeyMissing(
            f"{d}: no hub sealing key; import the hub's public key first: joinedup-bridge keys "
            "import-hub-key --file <hub_sealing_key.vN.json>"
        )
    return parse_public_record((d / f"hub_sealing_key.v{versions[-1]}.json").read_bytes())


# -- sealing and opening -----------------------------------------------------------------------


def _ad(key_id: str, agency: str, batch_id: str, file_name: str) -> bytes:
    for part in (key_id, agency, batch_id, file_name):
        if not _CONTEXT_PART.match(part):
            raise ValueError("sealing context parts are 1-128 chars of [A-Za-z0-9._-]")
    return "\0".join((SEALED_FORMAT, key_id, agency, batch_id, file_name)).encode("ascii")


def seal_stream(
    src: BinaryIO,
    dst: BinaryIO,
    hub_key: HubPublicKey,
    *,
    agency: str,
    batch_id: str,
    file_name: str,
) -> int:
    """Seal everything `src` yields into `dst`; returns plaintext bytes sealed."""
    ad = _ad(hub_key.key_id, agency, batch_id, file_name)
    file_key = sodium.crypto_secretstream_xchacha20poly1305_keygen()
    header = json.dumps(
        {"format": SEALED_FORMAT, "hub_key_id": hub_key.key_id}, sort_keys=True
    ).encode()
    dst.write(MAGIC + struct.pack(">H", len(header)) + header)
    dst.write(SealedBox(PublicKey(hub_key.public)).encrypt(file_key))
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    dst.write(sodium.crypto_secretstream_xchacha20poly1305_init_push(state, file_key))
    total = 0
    chunk = src.read(CHUNK)
    while True:
        nxt = src.read(CHUNK) if len(chunk) == CHUNK else b""
        tag = _TAG_MESSAGE if nxt else _TAG_FINAL
        dst.write(sodium.crypto_secretstream_xchacha20poly1305_push(state, chunk, ad, tag))
        total += len(chunk)
        if tag == _TAG_FINAL:
            return total
        chunk = nxt


def seal_file(
    src: Path | str,
    dst: Path | str,
    hub_key: HubPublicKey,
    *,
    agency: str,
    batch_id: str,
    file_name: str | None = None,
) -> int:
    src, dst = Path(src), Path(dst)
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        n = seal_stream(
            fin, fout, hub_key, agency=agency, batch_id=batch_id, file_name=file_name or src.name
        )
        fout.flush()
        os.fsync(fout.fileno())
    return n


def _read_exact(src: BinaryIO, n: int) -> bytes:
    buf = src.read(n)
    if len(buf) != n:
        raise SealError("truncated", "sealed file ends inside its header")
    return buf


def unseal_stream(
    src: BinaryIO,
    dst: BinaryIO,
    hub_keys: Mapping[str, HubSealingKey],
    *,
    agency: str,
    batch_id: str,
    file_name: str,
    max_bytes: int | None = None,
) -> int:
    """Open a sealed stream into `dst`; returns plaintext bytes. Raises SealError with
    not_sealed | unknown_hub_key | unseal_failed | truncated | too_large. Whatever was written
    to `dst` before an error must be discarded by the caller."""
    if src.read(len(MAGIC)) != MAGIC:
        raise SealError("not_sealed", f"{file_name}: not a sealed joinedup file")
    (hlen,) = struct.unpack(">H", _read_exact(src, 2))
    if hlen > _MAX_HEADER:
        raise SealError("not_sealed", f"{file_name}: sealed header too long")
    try:
        header = json.loads(_read_exact(src, hlen))
        key_id = header["hub_key_id"]
        ok = header.get("format") == SEALED_FORMAT and isinstance(key_id, str)
    except (ValueError, TypeError, LookupError, AttributeError):
        ok, key_id = False, ""
    if not ok or not _KEY_ID.match(key_id):
        raise SealError("not_sealed", f"{file_name}: malformed sealed header")
    key = hub_keys.get(key_id)
    if key is None:
        raise SealError(
            "unknown_hub_key", f"{file_name}: sealed for {key_id}, which the hub does not hold"
        )
    try:
        file_key = SealedBox(key.private).decrypt(_read_exact(src, _SEALED_KEY_BYTES))
    except CryptoError:
        raise SealError(
            "unseal_failed", f"{file_name}: file key does not open with {key_id}"
        ) from None
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    sodium.crypto_secretstream_xchacha20poly1305_init_pull(
        state, _read_exact(src, _SS_HEADER), file_key
    )
    ad = _ad(key_id, agency, batch_id, file_name)
    total = 0
    while True:
        c = src.read(CHUNK + _ABYTES)
        if not c:
            raise SealError("truncated", f"{file_name}: sealed stream ends before its final chunk")
        try:
            m, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(state, c, ad)
        except (CryptoError, ValueError):
            raise SealError(
                "unseal_failed",
                f"{file_name}: a chunk does not authenticate for "
                f"{agency}/{batch_id} (altered, truncated, or another batch's "
                "file)",
            ) from None
        total += len(m)
        if max_bytes is not None and total > max_bytes:
            raise SealError("too_large", f"{file_name}: more than {max_bytes} bytes")
        dst.write(m)
        if tag == _TAG_FINAL:
            if src.read(1):
                raise SealError("unseal_failed", f"{file_name}: bytes after the final chunk")
            return total
        if len(c) != CHUNK + _ABYTES:
            raise SealError("truncated", f"{file_name}: short chunk before the final one")
