"""Turn normalised identifiers into keyed match tokens, blocking keys and Bloom encodings.

Driven by the partnership encoding spec (schemas/encoding_spec.yaml). HMACs are the stdlib's
OpenSSL-backed `hmac.digest`; each distinct value is hashed once per key domain (`pd.factorize`)
and broadcast, and each Bloom q-gram is hashed once per (domain, salt), so the cost per row stays
well under one HMAC per output cell.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import yaml

from ig_bridge.keys import LinkKey

_SEP = "\x1f"  # unit separator between combined fields: cannot occur in normalised values
_DERIVED = {"dob_iso", "dob_swapped_iso", "dob_ym", "dob_md"}
_QGRAM_CACHE_MAX = 100_000  # (domain, salt, q-gram) positions kept across chunks


#: Flags: yes/no facts about the data's quality the hub's comparisons need (an agency's "this
#: DOB is an estimate"), sent as booleans, never hashed: they name no value of an identifier.
FLAG_PREFIX = "flag_"
FLAG_SOURCES = frozenset({"dob_is_estimated"})


class EncodingSpecError(ValueError):
    """The encoding spec is malformed (names the file and the key path)."""


#: A partnership that pins its own spec file (every bridge and the hub the same file, e.g.
#: while an encoding spec change is rolled out) names it here; default: the packaged spec.
SPEC_ENV = "JOINEDUP_ENCODING_SPEC"


def load_encoding_spec(path: str | Path | None = None) -> dict[str, Any]:
    path = path or os.environ.get(SPEC_ENV) or None
    if path is None:
        text = resources.files("schemas").joinpath("encoding_spec.yaml").read_text("utf-8")
        source = "schemas/encoding_spec.yaml"
    else:
        text, source = Path(path).read_text("utf-8"), str(path)
    spec = yaml.safe_load(text)
    validate_encoding_spec(spec, source)
    return spec


def validate_encoding_spec(spec: Any, source: str = "<spec>") -> None:
    from ig_bridge.normalise import NORMALISED_COLUMNS

    known = set(NORMALISED_COLUMNS) | _DERIVED

    def fail(where: str, msg: str) -> None:
        raise EncodingSpecError(f"{source}: {where}: {msg}")

    if not isinstance(spec, dict) or not isinstance(spec.get("encoding_spec_version"), int):
        fail("encoding_spec_version", "missing or not an integer")
    extra = set(spec) - {"encoding_spec_version", "tokens", "blocking", "bloom", "flags"}
    if extra:
        fail(str(sorted(extra)[0]), "unknown key")
    for name, col in ((spec.get("flags") or {}).get("columns") or {}).items():
        where = f"flags.columns.{name}"
        if not name.startswith(FLAG_PREFIX):
            fail(where, f"column names in flags start with {FLAG_PREFIX}")
        if (
            not isinstance(col, dict)
            or col.get("source") not in FLAG_SOURCES
            or set(col) - {"source"}
        ):
            fail(where, f"a flag has one source, one of {sorted(FLAG_SOURCES)}")
    for section, prefix in (("tokens", "tok_"), ("blocking", "blk_"), ("bloom", "bf_")):
        sec = spec.get(section) or {}
        cols = sec.get("columns") or {}
        if section != "bloom" and sec.get("truncate_bits", 128) not in (64, 128, 256):
            fail(f"{section}.truncate_bits", "must be 64, 128 or 256")
        for name, col in cols.items():
            where = f"{section}.columns.{name}"
            if not name.startswith(prefix):
                fail(where, f"column names in {section} start with {prefix}")
            sources = col.get("sources") or [col.get("source")]
            for s in sources:
                if s not in known:
                    fail(where, f"unknown source {s!r}")
            optional = col.get("optional")
            if optional is not None and (
                section == "bloom"
                or not isinstance(optional, list)
                or len(sources) < 2
                or not set(optional) < set(sources)
            ):
                fail(
                    where,
                    "optional (tokens and blocking keys of several sources) lists the "
                    "sources that may be missing, never all of them",
                )
            if col.get("part") not in (None, "first", "last"):
                fail(where, "part must be first or last")
            unordered = col.get("unordered")
            if unordered is not None and (
                section != "blocking"
                or not isinstance(unordered, int)
                or not 2 <= unordered <= len(sources)
            ):
                fail(
                    where,
                    "unordered (blocking keys only) is how many leading sources are "
                    "sorted before hashing: 2..number of sources",
                )
            if section == "bloom":
                bits, k, fold, q = col.get("bits"), col.get("k"), col.get("fold", 0), col.get("q")
                if not isinstance(bits, int) or bits < 64 or bits & (bits - 1):
                    fail(where, "bits must be a power of two >= 64")
                if not isinstance(k, int) or not 1 <= k <= 16:
                    fail(where, "k must be 1..16 (16-bit words of one SHA-256 digest)")
                if not isinstance(q, int) or not 1 <= q <= 4:
                    fail(where, "q must be 1..4")
                if not isinstance(fold, int) or fold < 0 or bits >> fold < 64:
                    fail(where, "fold leaves fewer than 64 bits")
                if bits > 65536:
                    fail(where, "bits must be <= 65536")
                salt = col.get("salt")
                if salt is not None and not (
                    (isinstance(salt, str) and salt in known)
                    or (isinstance(salt, list) and salt and all(s in known for s in salt))
                ):
                    fail(where, f"salt must be a known source or a list of them, not {salt!r}")
                if col.get("salt_required") not in (None, True, False) or (
                    col.get("salt_required") and not col.get("salt")
                ):
                    fail(where, "salt_required is true or false, and needs a salt")


def dice(a: bytes | None, b: bytes | None) -> float | None:
    """Dice coefficient of two Bloom encodings (None if either is missing)."""
    if a is None or b is None:
        return None
    x, y = int.from_bytes(a, "big"), int.from_bytes(b, "big")
    total = x.bit_count() + y.bit_count()
    return 2 * (x & y).bit_count() / total if total else 0.0


def _obj(values: list) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr


def _recode(codes: np.ndarray, texts: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """Codes over old uniques + their texts (None = missing) -> codes over distinct texts."""
    new, uniq = pd.factorize(_obj(texts), use_na_sentinel=True)
    return np.append(new, -1).astype(np.int64)[codes], _obj(list(uniq))


def _combine_codes(codes: list[np.ndarray], sizes: list[int], shift: bool) -> np.ndarray:
    """One code per distinct tuple of codes. shift=False: -1 where any part is missing;
    shift=True: missing parts are a value of their own (code -1 kept distinct)."""
    key = np.zeros(len(codes[0]), dtype=np.int64)
    bad = np.zeros(len(codes[0]), dtype=bool)
    for c, size in zip(codes, sizes, strict=True):
        if shift:
            c, size = c + 1, size + 1
        else:
            bad |= c < 0
        # re-factorised at every step, so key * size stays far below 2**63
        key = pd.factorize(key * size + np.maximum(c, 0))[0].astype(np.int64)
    if not shift:
        key[bad] = -1
    return key


def _first_rows(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(dense codes 0..k-1, one row index per code). Rows sharing a code are identical."""
    dense, _ = pd.factorize(codes)
    rep = np.empty(int(dense.max()) + 1 if len(dense) else 0, dtype=np.int64)
    rep[dense] = np.arange(len(dense))
    return dense.astype(np.int64), rep


class Encoder:
    """`Encoder(link_key, spec).encode(normalised_frame) -> DataFrame` of tok_*, blk_*, bf_*.

    The output always has every spec column (null where the source is missing), indexed like
    the input, so identifiers files of all agencies share one schema.
    """

    def __init__(self, link_key: LinkKey, spec: Mapping[str, Any] | str | Path | None = None):
        if spec is None or isinstance(spec, str | Path):
            spec = load_encoding_spec(spec)
        else:
            validate_encoding_spec(spec)
        self.link_key = link_key
        self.spec = dict(spec)
        self.version = int(self.spec["encoding_spec_version"])
        self._subkeys: dict[str, bytes] = {}
        self._qgram_cache: dict[tuple[str, str, str], np.ndarray] = {}

    def __repr__(self) -> str:
        return f"Encoder(spec_version={self.version}, link_key_version={self.link_key.version})"

    def _key(self, domain: str) -> bytes:
        key = self._subkeys.get(domain)
        if key is None:
            key = self._subkeys[domain] = self.link_key.subkey(domain)
        return key

    @property
    def columns(self) -> list[str]:
        return [
            name
            for section in ("tokens", "blocking", "bloom", "flags")
            for name in ((self.spec.get(section) or {}).get("columns") or {})
        ]

    # -- sources ---------------------------------------------------------------------------
    # Every source is carried as (codes, uniques): codes index the distinct non-null strings
    # (-1 = missing), so every Python-level step below runs once per distinct value, never per
    # row (h11: the row loops here were most of the bridge's time at 200k rows).

    def _source(
        self, frame: pd.DataFrame, name: str, col: Mapping[str, Any]
    ) -> tuple[np.ndarray, np.ndarray]:
        n = len(frame)
        missing = (np.full(n, -1, dtype=np.int64), _obj([]))
        if name in _DERIVED:
            dob = frame.get("date_of_birth")
            if dob is None:
                return missing
            codes, days = pd.factorize(pd.to_datetime(dob), use_na_sentinel=True)
            days = pd.DatetimeIndex(days)
            if name == "dob_iso":
                text = days.strftime("%Y-%m-%d")
            elif name == "dob_ym":
                text = days.strftime("%Y-%m")
            elif name == "dob_md":
                text = days.strftime("%m-%d")
            else:  # day/month swapped, only where the swap gives another valid date
                ok = (days.day <= 12) & (days.day != days.month)
                text = pd.Index(days.strftime("%Y-%d-%m")).where(ok)
            vals = pd.Index(text).to_numpy(dtype=object, na_value=None)  # not element-wise
            return _recode(codes, list(vals))
        if name not in frame:
            return missing
        values = frame[name].to_numpy(dtype=object)
        part = col.get("part")
        try:
            codes, uniques = pd.factorize(values, use_na_sentinel=True)
        except TypeError:  # list-valued column (name parts): take the part row by row first
            values = _obj(
                [
                    (v[0] if part != "last" else v[-1])
                    if isinstance(v, list | tuple | np.ndarray) and len(v)
                    else (None if isinstance(v, list | tuple | np.ndarray) else v)
                    for v in values
                ]
            )
            codes, uniques = pd.factorize(values, use_na_sentinel=True)
        out = []
        for v in uniques:
            if isinstance(v, list | tuple | np.ndarray):
                v = (v[0] if part != "last" else v[-1]) if len(v) else None
            if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
                out.append(None)
                continue
            s = str(int(v)) if isinstance(v, int | np.integer) else str(v)
            if col.get("first_word"):
                s = s.split()[0] if s.split() else ""
            if col.get("compact"):
                s = s.replace(" ", "")
            out.append(s or None)
        return _recode(codes, out)

    def _combined(
        self, frame: pd.DataFrame, col: Mapping[str, Any]
    ) -> tuple[np.ndarray, np.ndarray]:
        sources = col.get("sources") or [col["source"]]
        parts = [self._source(frame, s, col) for s in sources]
        if len(parts) == 1:
            return parts[0]
        # An `optional` source that is missing joins as "" (a flat-less address keeps its
        # token); it still takes its place, so values cannot shift between parts.
        optional = set(col.get("optional") or ())
        parts = [
            (np.where(c < 0, len(u), c), np.append(u, _obj([""]))) if s in optional else (c, u)
            for s, (c, u) in zip(sources, parts, strict=True)
        ]
        # A combined value exists only where every part does; join once per distinct combination.
        codes = _combine_codes([c for c, _ in parts], [len(u) for _, u in parts], shift=False)
        out = np.full(len(frame), -1, dtype=np.int64)
        valid = np.flatnonzero(codes >= 0)
        if not len(valid):
            return out, _obj([])
        key, rep = _first_rows(codes[valid])
        out[valid] = key
        cols = [u[c[valid][rep]] for c, u in parts]
        n = int(col.get("unordered") or 0)
        if n:
            # The leading n values are sorted, so a key agrees when they were entered in the
            # wrong fields (a given name typed as the family name and vice versa).
            return out, _obj([_SEP.join([*sorted(p[:n]), *p[n:]]) for p in zip(*cols, strict=True)])
        return out, _obj([_SEP.join(p) for p in zip(*cols, strict=True)])

    # -- tokens --------------------------------------------------------------------------------

    def _tokens(
        self, source: tuple[np.ndarray, np.ndarray], domain: str, truncate_bits: int
    ) -> pa.Array:
        codes, uniques = source
        key, nbytes = self._key(domain), truncate_bits // 8
        digest = hmac.digest
        toks = pa.array(
            [digest(key, u.encode("utf-8"), "sha256")[:nbytes].hex() for u in uniques] + [None],
            type=pa.string(),
        )
        return toks.take(pa.array(np.where(codes < 0, len(uniques), codes)))

    # -- Bloom filters -------------------------------------------------------------------------

    def _qgram_positions(self, domain: str, salt: str, gram: str, k: int, bits: int) -> np.ndarray:
        ck = (domain, salt, gram)
        pos = self._qgram_cache.get(ck)
        if pos is None:
            if len(self._qgram_cache) > _QGRAM_CACHE_MAX:  # bounded: salts make it grow
                self._qgram_cache.clear()
            d = hmac.digest(self._key(domain), f"{salt}{_SEP}{gram}".encode(), "sha256")
            # k independent positions: successive 16-bit words of one digest, mod bits (a power
            # of two dividing 2**16, so unbiased).
            # uint16 (bits <= 65536): the cache is the encoder's largest cross-chunk state
            pos = (np.frombuffer(d, dtype=">u2")[:k] % bits).astype(np.uint16)
            self._qgram_cache[ck] = pos
        return pos

    def salt_source(
        self, frame: pd.DataFrame, col: Mapping[str, Any]
    ) -> tuple[np.ndarray, np.ndarray]:
        """A Bloom column's salt per row as (codes, uniques): one source, or several joined
        (missing where any of them is)."""
        salt = col["salt"]
        return self._combined(frame, {"sources": [salt] if isinstance(salt, str) else salt})

    def _bloom(self, frame: pd.DataFrame, name: str, col: Mapping[str, Any]) -> np.ndarray:
        sources = col.get("sources") or [col["source"]]
        q, k, bits, fold = int(col["q"]), int(col["k"]), int(col["bits"]), int(col.get("fold", 0))
        parts = [self._source(frame, s, {**col, "compact": False}) for s in sources]
        salt = (
            self.salt_source(frame, col)
            if col.get("salt")
            else (np.full(len(frame), -1, dtype=np.int64), _obj([]))
        )
        # One filter per distinct (values, salt); a row with no value at all has none.
        n = len(frame)
        present = np.zeros(n, dtype=bool)
        for c, _ in parts:
            present |= c >= 0
        if col.get("salt_required"):
            # An unsalted filter would repeat across everyone without the salt: frequency bait.
            present &= salt[0] >= 0
        rows = np.flatnonzero(present)
        result = np.full(n, None, dtype=object)
        if not len(rows):
            return result
        allp = [*parts, salt]
        codes = _combine_codes([c[rows] for c, _ in allp], [len(u) for _, u in allp], shift=True)
        key, rep = _first_rows(codes)
        reps = [
            np.where(c[rows][rep] >= 0, u[np.maximum(c[rows][rep], 0)] if len(u) else "", "")
            for c, u in allp
        ]
        domains = [f"bloom.{name}.{s}" for s in sources]
        out_bytes = (bits >> fold) // 8
        encoded: list[bytes] = []
        word_cache: dict[tuple[str, str, str], np.ndarray] = {}
        empty = np.zeros(0, dtype=np.uint16)

        def word_positions(dom: str, salt: str, word: str) -> np.ndarray:
            wk = (dom, salt, word)
            got = word_cache.get(wk)
            if got is None:
                padded = f"_{word}_"
                grams = {padded[i : i + q] for i in range(max(1, len(padded) - q + 1))}
                got = np.concatenate(
                    [self._qgram_positions(dom, salt, g, k, bits) for g in sorted(grams)]
                )
                word_cache[wk] = got
            return got

        chunk = 8192
        n_keys = len(rep)
        for start in range(0, n_keys, chunk):
            stop = min(start + chunk, n_keys)
            per_row: list[np.ndarray] = []
            for j in range(start, stop):
                salt_j = reps[-1][j]
                pieces = []
                for dom, vals in zip(domains, reps[:-1], strict=True):
                    words = vals[j].split()
                    if col.get("compact") and words:
                        words = ["".join(words)]
                    pieces.extend(word_positions(dom, salt_j, w) for w in words)
                per_row.append(np.concatenate(pieces) if pieces else empty)
            lens = np.fromiter((len(p) for p in per_row), dtype=np.int64, count=len(per_row))
            m = np.zeros((stop - start, bits), dtype=bool)
            if lens.sum():
                m[np.repeat(np.arange(stop - start), lens), np.concatenate(per_row)] = True
            for _ in range(fold):
                half = m.shape[1] // 2
                m = m[:, :half] ^ m[:, half:]
            packed = np.packbits(m, axis=1)
            if packed.shape[1] != out_bytes:
                raise EncodingSpecError(f"bloom.columns.{name}: encoded length mismatch")
            encoded.extend(row.tobytes() for row in packed)
        result[rows] = _obj(encoded)[key]
        return result

    # -- entry point ---------------------------------------------------------------------------

    def encode(self, normalised: pd.DataFrame) -> pd.DataFrame:
        out: dict[str, Any] = {}
        for section in ("tokens", "blocking"):
            sec = self.spec.get(section) or {}
            bits = int(sec.get("truncate_bits", 128))
            for name, col in (sec.get("columns") or {}).items():
                domain = col.get("domain") or name
                # Arrow strings straight into the frame: no per-cell object -> str conversion.
                out[name] = pd.array(
                    self._tokens(self._combined(normalised, col), domain, bits), dtype="str"
                )
        for name, col in ((self.spec.get("bloom") or {}).get("columns") or {}).items():
            out[name] = self._bloom(normalised, name, col)
        for name, col in ((self.spec.get("flags") or {}).get("columns") or {}).items():
            # Only a "yes" from the agency sets a flag; unknown is no.
            got = normalised.get(col["source"])
            flag = pd.array(got if got is not None else [None] * len(normalised), "boolean")
            out[name] = flag.fillna(False).astype(bool)
        return pd.DataFrame(out, index=normalised.index, columns=self.columns)

    def bloom_bytes(self, name: str) -> int:
        col = self.spec["bloom"]["columns"][name]
        return (int(col["bits"]) >> int(col.get("fold", 0))) // 8

    def arrow_fields(self) -> list:
        """pyarrow fields for the encoded columns (tok_/blk_ string, bf_ binary, flag_
        boolean), so that an all-null column in one batch keeps the same Parquet type as in
        every other batch."""
        return [pa.field(n, arrow_type_of(n)) for n in self.columns]


def arrow_type_of(column: str) -> pa.DataType:
    """Parquet type of an encoded column, by its prefix."""
    if column.startswith("bf_"):
        return pa.binary()
    return pa.bool_() if column.startswith(FLAG_PREFIX) else pa.string()
