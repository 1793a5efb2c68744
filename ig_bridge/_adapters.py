"""Thin adapters between the bridge pipeline (split.py) and engineer B's modules.

ig_bridge.normalise / encoding / keys / manifest had not landed when the pipeline was written.
These adapters keep the pipeline runnable with the same primitives the design names
(stdlib/`cryptography` HMAC-SHA256 with HKDF subkeys, AES-SIV record refs, Ed25519 manifest
signature) and should be replaced by calls into B's modules once they exist. No Bloom
encodings (bf_*) are produced here; that is B's encoder.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ig_bridge.scrub import _GENERIC

OK = "ok"
_POSTCODE = re.compile(r"^[A-Z]{1,2}\d[A-Z\d]?\d[A-Z]{2}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SEX = {"m": "M", "male": "M", "f": "F", "female": "F", "u": "U", "unknown": "U", "x": "U",
        "not known": "U", "i": "U"}
TOKEN_FIELDS = ("given_name", "middle_names", "family_name", "other_names", "date_of_birth", "sex",
                "postcode", "uprn", "nhs_number", "upn", "phone", "email", "address")


def parse_dates(s: pd.Series, formats: tuple[str, ...]) -> pd.Series:
    out = pd.Series(pd.NaT, index=s.index, dtype="datetime64[s]")
    for fmt in formats:
        todo = out.isna() & s.notna()
        if not todo.any():
            break
        out[todo] = pd.to_datetime(s[todo], format=fmt, errors="coerce")
    return out


def _nhs_ok(d: str) -> bool:
    if len(d) != 10:
        return False
    total = sum(int(c) * w for c, w in zip(d[:9], range(10, 1, -1), strict=True))
    check = 11 - total % 11
    check = 0 if check == 11 else check
    return check != 10 and check == int(d[9])


def normalise(df: pd.DataFrame, formats: tuple[str, ...], status: dict[str, np.ndarray],
              person: str) -> pd.DataFrame:
    """Canonical identifier values for one person; problems become status reason codes.

    Uses engineer B's ig_bridge.normalise when present, the local fallback otherwise.
    """
    try:
        from ig_bridge.normalise import normalise_identifiers

        nf = normalise_identifiers(df, formats)
    except (ImportError, OSError) as exc:
        # B's module could not load its resources here; say so (no values) and use the fallback.
        logging.getLogger(__name__).warning("ig_bridge.normalise unavailable (%s); fallback used",
                                            type(exc).__name__)
        return _normalise_fallback(df, formats, status, person)
    pos = {ix: i for i, ix in enumerate(df.index)}
    for f in df.columns:
        if f not in ("record_id", "relationship"):
            status.setdefault(f"{person}.{f}", np.full(len(df), OK, dtype=object))
    for row, f, reason in nf.problems:
        key = f"{person}.{f}"
        status.setdefault(key, np.full(len(df), OK, dtype=object))
        if status[key][pos[row]] == OK:
            status[key][pos[row]] = reason
    out = nf.frame
    keep = [c for c in out.columns if c in TOKEN_FIELDS or c == "relationship"]
    out = out[keep].copy()
    if "date_of_birth" in out:
        out["date_of_birth"] = pd.to_datetime(out["date_of_birth"]).dt.date
    if "relationship" in df.columns and "relationship" not in out:
        out["relationship"] = df["relationship"]
    return out


def _normalise_fallback(df: pd.DataFrame, formats: tuple[str, ...],
                        status: dict[str, np.ndarray], person: str) -> pd.DataFrame:
    out = pd.DataFrame(index=df.index)
    today = pd.Timestamp(date.today())
    for f in df.columns:
        s = df[f].astype("string")
        present = s.notna().to_numpy()
        st = np.full(len(df), OK, dtype=object)
        if f in ("given_name", "middle_names", "family_name", "other_names", "full_name"):
            v = s.str.upper().str.replace(r"[^A-Z\- ']", "", regex=True).str.strip()
            if f == "full_name":
                parts = v.str.split()
                out["given_name"] = parts.str[0]
                out["family_name"] = parts.str[-1]
                continue
            out[f] = v
        elif f == "date_of_birth":
            d = parse_dates(s, formats)
            st[present & d.isna().to_numpy()] = "unparseable date"
            impossible = (d > today) | (d < pd.Timestamp("1900-01-01"))
            st[impossible.fillna(False).to_numpy()] = "impossible date"
            out[f] = d.where(~impossible).dt.date
        elif f == "postcode":
            v = s.str.upper().str.replace(r"\s", "", regex=True)
            st[present & ~v.str.match(_POSTCODE.pattern).fillna(False).to_numpy()] = "malformed"
            out[f] = v
        elif f == "nhs_number":
            v = s.str.replace(r"[\s\-]", "", regex=True)
            ok = v.map(lambda x: _nhs_ok(x) if isinstance(x, str) else True).to_numpy(dtype=bool)
            st[present & ~ok] = "bad check digit"
            out[f] = v
        elif f == "phone":
            v = s.str.replace(r"\D", "", regex=True).str.replace(r"^44", "0", regex=True)
            bad = present & ~v.str.len().between(10, 11).fillna(False).to_numpy()
            st[bad] = "malformed"
            out[f] = v
        elif f == "email":
            v = s.str.lower()
            st[present & ~v.str.match(_EMAIL.pattern).fillna(False).to_numpy()] = "malformed"
            out[f] = v
        elif f == "sex":
            out[f] = s.str.lower().map(_SEX)
            st[present & out[f].isna().to_numpy()] = "unknown code"
        elif f == "uprn":
            st[present & ~s.str.fullmatch(r"\d{1,12}").fillna(False).to_numpy()] = "malformed"
            out[f] = s.str.lstrip("0")
        elif f in ("address", "address_line_1", "address_line_2", "town"):
            out[f] = s.str.upper().str.replace(r"[^A-Z0-9 ]", " ", regex=True).str.split().str.join(
                " ")
        else:
            out[f] = s
        if f != "record_id":
            status[f"{person}.{f}"] = st
    if {"address_line_1", "address_line_2", "town"} & set(out.columns) and "address" not in out:
        parts = [out[c] for c in ("address_line_1", "address_line_2", "town") if c in out]
        out["address"] = pd.concat(parts, axis=1).apply(
            lambda r: " ".join(x for x in r if isinstance(x, str)) or None, axis=1)
    return out.drop(columns=["record_id"], errors="ignore")


@dataclass
class Keys:
    link_key: bytes
    ref_key: bytes
    signing_key: Ed25519PrivateKey
    agency: str
    link_key_version: int = 1
    ref_key_version: int = 1
    encoding_spec_version: int = 1

    @property
    def signing_key_id(self) -> str:
        pub = self.signing_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"{self.agency}-ed25519-{hashlib.sha256(pub).hexdigest()[:16]}"


def _write_secret(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def load_keys(key_dir: Path, agency: str) -> Keys:
    """Load the agency's keys, creating them (0600) on first use."""
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    link, ref, sig = key_dir / "link.key", key_dir / "ref.key", key_dir / "signing.pem"
    if not link.exists():
        _write_secret(link, os.urandom(32))
    if not ref.exists():
        _write_secret(ref, AESSIV.generate_key(512))
    if not sig.exists():
        _write_secret(sig, Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
    sk = serialization.load_pem_private_key(sig.read_bytes(), password=None)
    assert isinstance(sk, Ed25519PrivateKey)
    return Keys(link.read_bytes(), ref.read_bytes(), sk, agency)


class Encoder:
    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self._siv = AESSIV(keys.ref_key)
        self._ad = f"{keys.agency}|{keys.ref_key_version}".encode()
        self._sub: dict[str, bytes] = {}

    def _subkey(self, name: str) -> bytes:
        if name not in self._sub:
            self._sub[name] = HKDF(hashes.SHA256(), 32, salt=None,
                                   info=f"joinedup|{name}|v{self.keys.link_key_version}".encode(),
                                   ).derive(self.keys.link_key)
        return self._sub[name]

    def record_refs(self, ids: list[str]) -> list[str]:
        return [base64.urlsafe_b64encode(self._siv.encrypt(str(i).encode(), [self._ad]))
                .decode().rstrip("=") for i in ids]

    def _tok(self, name: str, values: pd.Series) -> list[str | None]:
        key = self._subkey(name)
        return [None if v is None or (not isinstance(v, str) and pd.isna(v))
                else hmac.digest(key, str(v).encode(), "sha256").hex()[:32] for v in values]

    def encode(self, df: pd.DataFrame) -> pd.DataFrame:
        out: dict[str, list[str | None]] = {}
        for f in TOKEN_FIELDS:
            if f in df:
                out[f"tok_{f}"] = self._tok(f, df[f].astype(object))
        if "date_of_birth" in df:
            dob = df["date_of_birth"].astype(object)
            sex = df["sex"].astype(object) if "sex" in df else pd.Series([""] * len(df))
            combo = [None if d is None or pd.isna(d) else f"{d}|{'' if pd.isna(s) else s}"
                     for d, s in zip(dob, sex, strict=True)]
            out["blk_dob_sex"] = self._tok("blk_dob_sex", pd.Series(combo, dtype=object))
        if "postcode" in df:
            out["blk_postcode"] = self._tok("blk_postcode", df["postcode"].astype(object))
        return pd.DataFrame(out)


def make_encoder(keys: Keys) -> Encoder:
    return Encoder(keys)


def write_manifest(folder: Path, manifest: dict, keys: Keys, rows: dict[str, int]) -> Path:
    files = {}
    for name, n in rows.items():
        data = (folder / name).read_bytes()
        files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "rows": n, "bytes": len(data)}
    body = {**manifest, "files": files}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    body["signature"] = base64.b64encode(keys.signing_key.sign(canonical.encode())).decode()
    path = folder / "manifest.json"
    path.write_text(json.dumps(body, indent=2, sort_keys=True), encoding="utf-8")
    return path


def scrub(text: str, rx: re.Pattern[str], placeholders: list[str]) -> str:
    if placeholders:
        text = rx.sub(lambda m: placeholders[(m.lastindex or 1) - 1], text)
    for generic, placeholder in _GENERIC:
        text = generic.sub(placeholder, text)
    return text


class _Bar:
    def __init__(self, enabled: bool, path: Path) -> None:
        self.progress = None
        if enabled:
            from rich.progress import Progress
            self.progress = Progress()
            self.progress.start()
            self.task = self.progress.add_task(f"bridging {path.name}", total=None)

    def advance(self, n: int) -> None:
        if self.progress is not None:
            self.progress.advance(self.task, n)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def progress_bar(enabled: bool, path: Path) -> _Bar:
    return _Bar(enabled, path)
