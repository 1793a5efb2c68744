"""Agency-side keys, all from `cryptography` (see docs/keys.md for the procedures).

- LinkKey: the partnership linkage key K_link (256-bit, versioned, shared by the bridges, never
  sent to the hub). Per-field subkeys by HKDF-SHA256, info = b"joinedup/" + field + b"/v" + version.
- RefKey: the agency's AES-SIV (RFC 5297) key for record refs.
- SigningKey: the agency's Ed25519 manifest signing key.

Key files are JSON, created 0600 with O_EXCL and refused on load when group/world readable.
Keys never appear in repr, logs or exception messages.
"""

from __future__ import annotations

import base64
import json
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

KEY_FILE_FORMAT = "joinedup-key/1"
WRAPPED_FORMAT = "joinedup-wrapped-link-key/1"
_AGENCY = re.compile(r"^[A-Z]{2,8}$")
_FIELD = re.compile(r"^[a-z0-9_.:-]{1,64}$")  # no "/": keeps HKDF info strings unambiguous


class KeyFileError(Exception):
    """Key handling errors; messages never carry key material."""


class LoosePermissionsError(KeyFileError):
    """A key file is readable by group or others."""


class WrongPassphraseError(KeyFileError):
    """A wrapped key did not decrypt: wrong passphrase or altered file."""


class RecordRefError(ValueError):
    """A record_ref does not decrypt under this agency's ref key(s)."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _check_version(version: int) -> None:
    if not isinstance(version, int) or version < 1:
        raise ValueError("key version must be an integer >= 1")


def _check_agency(agency: str) -> None:
    if not isinstance(agency, str) or not _AGENCY.match(agency):
        raise ValueError("agency code must be 2-8 upper-case letters")


# ---------------------------------------------------------------------------------------------
# Key objects


@dataclass(frozen=True, repr=False)
class LinkKey:
    version: int
    secret: bytes = field(repr=False)
    created_at: str = ""

    kind = "link"

    def __post_init__(self) -> None:
        _check_version(self.version)
        if len(self.secret) != 32:
            raise ValueError("linkage key must be 32 bytes")

    def __repr__(self) -> str:
        return f"LinkKey(version={self.version}, secret=<redacted>)"

    __str__ = __repr__

    def subkey(self, field_name: str) -> bytes:
        """HKDF-SHA256 subkey for one field/domain of this key version."""
        return derive_subkey(self, field_name)

    @cached_property
    def key_check(self) -> str:
        """Non-secret check value (HKDF-derived, 8 hex) to confirm two bridges hold the same key."""
        return self.subkey("key-check")[:4].hex()


@dataclass(frozen=True, repr=False)
class RefKey:
    agency: str
    version: int
    secret: bytes = field(repr=False)
    created_at: str = ""

    kind = "ref"

    def __post_init__(self) -> None:
        _check_agency(self.agency)
        _check_version(self.version)
        if len(self.secret) != 64:
            raise ValueError("record-ref key must be 64 bytes (AES-256-SIV)")

    def __repr__(self) -> str:
        return f"RefKey(agency={self.agency!r}, version={self.version}, secret=<redacted>)"

    __str__ = __repr__

    @cached_property
    def _siv(self) -> AESSIV:
        return AESSIV(self.secret)

    @property
    def associated_data(self) -> list[bytes]:
        return [self.agency.encode("ascii"), f"v{self.version}".encode("ascii")]

    def encrypt(self, local_id: str) -> str:
        return encrypt_record_ref(self, local_id)

    def decrypt(self, record_ref: str) -> str:
        return decrypt_record_ref(record_ref, self)


@dataclass(frozen=True, repr=False)
class SigningKey:
    agency: str
    version: int
    private_key: Ed25519PrivateKey = field(repr=False)
    created_at: str = ""

    kind = "signing"

    def __post_init__(self) -> None:
        _check_agency(self.agency)
        _check_version(self.version)

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id!r}, private_key=<redacted>)"

    __str__ = __repr__

    @property
    def key_id(self) -> str:
        return signing_key_id(self.agency, self.version)

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)

    def public_bytes(self) -> bytes:
        return self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def public_record(self) -> dict[str, object]:
        """What the hub keeps (hub/public_keys/<key_id>.json)."""
        return {
            "format": "joinedup-public-key/1",
            "agency": self.agency,
            "version": self.version,
            "key_id": self.key_id,
            "algorithm": "Ed25519",
            "public_key": _b64(self.public_bytes()),
            "created_at": self.created_at,
        }


def signing_key_id(agency: str, version: int) -> str:
    return f"{agency}-ed25519-v{version}"


# ---------------------------------------------------------------------------------------------
# Generation and derivation


def generate_link_key(version: int = 1) -> LinkKey:
    return LinkKey(version, os.urandom(32), _now())


def generate_ref_key(agency: str, version: int = 1) -> RefKey:
    return RefKey(agency, version, AESSIV.generate_key(512), _now())


def generate_signing_key(agency: str, version: int = 1) -> SigningKey:
    return SigningKey(agency, version, Ed25519PrivateKey.generate(), _now())


def derive_subkey(link_key: LinkKey, field_name: str) -> bytes:
    """HKDF-SHA256(K_link, info = b"joinedup/" + field + b"/v" + version), 32 bytes."""
    if not _FIELD.match(field_name):
        raise ValueError("subkey field names are 1-64 chars of [a-z0-9_.:-]")
    info = b"joinedup/" + field_name.encode("ascii") + b"/v" + str(link_key.version).encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(link_key.secret)


# ---------------------------------------------------------------------------------------------
# Record refs


def encrypt_record_ref(key: RefKey, local_id: str) -> str:
    """record_ref = base64url(AES-SIV(local id, AD = [agency, 'v' + version])), no padding."""
    if not isinstance(local_id, str) or not local_id:
        raise ValueError("local record id must be a non-empty string")
    ct = key._siv.encrypt(local_id.encode("utf-8"), key.associated_data)
    return base64.urlsafe_b64encode(ct).rstrip(b"=").decode("ascii")


def encrypt_record_refs(key: RefKey, local_ids: Iterable[str]) -> list[str]:
    siv, ad = key._siv, key.associated_data
    return [
        base64.urlsafe_b64encode(siv.encrypt(i.encode("utf-8"), ad)).rstrip(b"=").decode("ascii")
        for i in local_ids
    ]


def decrypt_record_ref(record_ref: str, keys: RefKey | Sequence[RefKey]) -> str:
    """Local record id for one of this agency's refs; tries every given key version.

    Raises RecordRefError (without the ref's plaintext, which is unknown anyway) when the ref
    belongs to another agency, another key, or was altered.
    """
    candidates = [keys] if isinstance(keys, RefKey) else list(keys)
    if not candidates:
        raise RecordRefError("no record-ref key given")
    try:
        raw = base64.urlsafe_b64decode(record_ref + "=" * (-len(record_ref) % 4))
    except (ValueError, TypeError):
        raise RecordRefError("record_ref is not base64url text") from None
    if len(raw) <= 16:
        raise RecordRefError("record_ref is too short to be an AES-SIV ciphertext")
    for key in candidates:
        try:
            return key._siv.decrypt(raw, key.associated_data).decode("utf-8")
        except InvalidTag:
            continue
    agencies = sorted({k.agency for k in candidates})
    versions = sorted({k.version for k in candidates})
    raise RecordRefError(
        f"record_ref does not decrypt under {'/'.join(agencies)} ref key version(s) "
        f"{versions}: it belongs to another agency or key, or was altered"
    )


# ---------------------------------------------------------------------------------------------
# Files


def _write_private(path: Path, payload: bytes) -> None:
    """Create a new file readable by the owner only (never overwrites)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # independent of umask
        os.write(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)


def check_private_file(path: str | Path) -> None:
    """Refuse a key file that the group or others can read or write."""
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise LoosePermissionsError(
            f"{path}: key file mode is {stat.filemode(mode)}; it must be readable by its owner "
            f"only (chmod 600 {path})"
        )


def _key_document(key: LinkKey | RefKey | SigningKey) -> dict[str, object]:
    doc: dict[str, object] = {
        "format": KEY_FILE_FORMAT,
        "kind": key.kind,
        "version": key.version,
        "created_at": key.created_at,
    }
    if isinstance(key, LinkKey):
        doc.update(
            algorithm="HKDF-SHA256/HMAC-SHA256", secret=_b64(key.secret), key_check=key.key_check
        )
    elif isinstance(key, RefKey):
        doc.update(agency=key.agency, algorithm="AES-SIV-512", secret=_b64(key.secret))
    else:
        from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

        raw = key.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        doc.update(
            agency=key.agency,
            algorithm="Ed25519",
            key_id=key.key_id,
            secret=_b64(raw),
            public_key=_b64(key.public_bytes()),
        )
    return doc


def save_key(key: LinkKey | RefKey | SigningKey, path: str | Path) -> Path:
    path = Path(path)
    _write_private(path, json.dumps(_key_document(key), indent=1).encode("utf-8"))
    return path


def load_key(path: str | Path) -> LinkKey | RefKey | SigningKey:
    path = Path(path)
    check_private_file(path)
    try:
        doc = json.loads(path.read_text("utf-8"))
        if doc.get("format") != KEY_FILE_FORMAT:
            raise KeyFileError(f"{path}: not a {KEY_FILE_FORMAT} key file")
        kind, version = doc["kind"], int(doc["version"])
        secret = _unb64(doc["secret"])
        created = str(doc.get("created_at", ""))
        if kind == "link":
            return LinkKey(version, secret, created)
        if kind == "ref":
            return RefKey(str(doc["agency"]), version, secret, created)
        if kind == "signing":
            return SigningKey(
                str(doc["agency"]), version, Ed25519PrivateKey.from_private_bytes(secret), created
            )
        raise KeyFileError(f"{path}: unknown key kind {kind!r}")
    except KeyFileError:
        raise
    except (ValueError, TypeError, LookupError) as exc:  # no key material in the message
        raise KeyFileError(f"{path}: malformed key file ({type(exc).__name__})") from None


# ---------------------------------------------------------------------------------------------
# Passphrase wrap for moving K_link between the partnership's bridges


def wrap_link_key(key: LinkKey, passphrase: str, *, scrypt_n: int = 2**15) -> bytes:
    """Wrap K_link for transfer: scrypt(passphrase) -> AES-256-GCM, header bound as AAD."""
    if len(passphrase) < 12:
        raise ValueError("passphrase must be at least 12 characters")
    salt, nonce = os.urandom(16), os.urandom(12)
    header = {
        "format": WRAPPED_FORMAT,
        "kind": "link",
        "version": key.version,
        "created_at": key.created_at,
        "key_check": key.key_check,
        "kdf": {"name": "scrypt", "n": scrypt_n, "r": 8, "p": 1, "salt": _b64(salt)},
        "aead": {"name": "AES-256-GCM", "nonce": _b64(nonce)},
    }
    kek = Scrypt(salt=salt, length=32, n=scrypt_n, r=8, p=1).derive(passphrase.encode("utf-8"))
    aad = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    ct = AESGCM(kek).encrypt(nonce, key.secret, aad)
    return json.dumps({**header, "ciphertext": _b64(ct)}, indent=1).encode("utf-8")


def unwrap_link_key(blob: bytes, passphrase: str) -> LinkKey:
    try:
        doc = json.loads(blob)
        header = {k: v for k, v in doc.items() if k != "ciphertext"}
        if header.get("format") != WRAPPED_FORMAT:
            raise WrongPassphraseError("not a wrapped joinedup linkage key")
        kdf = header["kdf"]
        kek = Scrypt(
            salt=_unb64(kdf["salt"]), length=32, n=int(kdf["n"]), r=int(kdf["r"]), p=int(kdf["p"])
        ).derive(passphrase.encode("utf-8"))
        aad = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
        secret = AESGCM(kek).decrypt(
            _unb64(header["aead"]["nonce"]), _unb64(doc["ciphertext"]), aad
        )
    except WrongPassphraseError:
        raise
    except InvalidTag:
        raise WrongPassphraseError(
            "wrapped linkage key did not decrypt: wrong passphrase or the file was altered"
        ) from None
    except (ValueError, TypeError, LookupError) as exc:
        raise WrongPassphraseError(f"malformed wrapped key ({type(exc).__name__})") from None
    return LinkKey(int(header["version"]), secret, str(header.get("created_at", "")))


# ---------------------------------------------------------------------------------------------
# A bridge's key directory: var/<run>/agency/<CODE>/keys/


class KeyStore:
    """Versioned keys of one agency's bridge, one file per key and version, all 0600.

    Rotation adds a new version alongside the old ones; `link_key()` / `ref_key()` /
    `signing_key()` return the newest unless a version is asked for.
    """

    def __init__(self, directory: str | Path, agency: str) -> None:
        _check_agency(agency)
        self.directory = Path(directory)
        self.agency = agency

    def __repr__(self) -> str:
        return f"KeyStore({str(self.directory)!r}, agency={self.agency!r})"

    def _path(self, kind: str, version: int) -> Path:
        if kind == "link":
            return self.directory / f"link_key.v{version}.json"
        return self.directory / f"{kind}_key.{self.agency}.v{version}.json"

    def versions(self, kind: str) -> list[int]:
        pattern = (
            re.compile(r"^link_key\.v(\d+)\.json$")
            if kind == "link"
            else re.compile(rf"^{kind}_key\.{self.agency}\.v(\d+)\.json$")
        )
        if not self.directory.is_dir():
            return []
        found = (pattern.match(p.name) for p in self.directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def _next(self, kind: str, version: int | None) -> int:
        return version if version is not None else max(self.versions(kind), default=0) + 1

    def _load(self, kind: str, version: int | None):  # noqa: ANN202 - typed by callers
        versions = self.versions(kind)
        if not versions:
            raise KeyFileError(f"{self.directory}: no {kind} key for {self.agency}")
        v = versions[-1] if version is None else version
        if v not in versions:
            raise KeyFileError(f"{self.directory}: no {kind} key version {v} for {self.agency}")
        return load_key(self._path(kind, v))

    def create_link_key(self, version: int | None = None) -> LinkKey:
        key = generate_link_key(self._next("link", version))
        save_key(key, self._path("link", key.version))
        return key

    def import_link_key(self, wrapped: bytes, passphrase: str) -> LinkKey:
        key = unwrap_link_key(wrapped, passphrase)
        save_key(key, self._path("link", key.version))
        return key

    def create_ref_key(self, version: int | None = None) -> RefKey:
        key = generate_ref_key(self.agency, self._next("ref", version))
        save_key(key, self._path("ref", key.version))
        return key

    def create_signing_key(self, version: int | None = None) -> SigningKey:
        key = generate_signing_key(self.agency, self._next("signing", version))
        save_key(key, self._path("signing", key.version))
        return key

    def link_key(self, version: int | None = None) -> LinkKey:
        return self._load("link", version)

    def ref_key(self, version: int | None = None) -> RefKey:
        return self._load("ref", version)

    def ref_keys(self) -> list[RefKey]:
        """Every ref key version, newest first (for decrypting refs issued before rotation)."""
        return [self._load("ref", v) for v in reversed(self.versions("ref"))]

    def signing_key(self, version: int | None = None) -> SigningKey:
        return self._load("signing", version)

    def ensure(self) -> None:
        """Create version 1 of any missing key (first run of a bridge)."""
        if not self.versions("link"):
            self.create_link_key()
        if not self.versions("ref"):
            self.create_ref_key()
        if not self.versions("signing"):
            self.create_signing_key()

    def export_public_key(self, destination: str | Path, version: int | None = None) -> Path:
        """Write the signing key's public record for the hub (hub/public_keys/<key_id>.json)."""
        key = self.signing_key(version)
        dest = Path(destination)
        if dest.is_dir() or not dest.suffix:
            dest = dest / f"{key.key_id}.json"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps(key.public_record(), indent=1), encoding="utf-8")
        return dest


def describe_public_key(key: SigningKey) -> str:
    """One line for an operator to read out to the hub when registering the agency."""
    pub = Ed25519PublicKey.from_public_bytes(key.public_bytes())
    raw = pub.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return f"{key.key_id} Ed25519 {_b64(raw)}"
