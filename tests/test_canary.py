"""Canary: a synthetic partnership runs every agency's bridge; nothing it lands may contain any
input identifier value, in any spelling we can render, as raw bytes or as decoded Parquet text.

Every landed file is sealed to the hub: the landed bytes are checked to be sealed (nothing
parses, no Parquet magic, no identifier of >= 8 bytes), and everything below is checked on what
the hub reads after opening them (`hub_view/`, opened with the hub's private key).

Token (tok_/blk_) and record_ref columns are random-looking hex/base64: any 4-character string
occurs in them by chance, so they are checked structurally (format, length) instead of by
substring. Names are matched as whole words in decoded text ("evie" in "review" is no
disclosure) and not in category columns (a vocabulary such as school names, where "Thornton
Primary" names no person). Localities and towns are not searched: they name areas, not people.
Raw Parquet bytes are compressed, so there only values of >= 8 bytes are searched
(column statistics and dictionary pages are where a plaintext column would show); the manifest
and decoded text are searched for every value of >= 4 characters.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sealed_batches import open_batch

from ig_bridge.encoding import Encoder, load_encoding_spec
from ig_bridge.keys import KeyStore
from ig_bridge.manifest import load_public_keys, verify_batch
from ig_bridge.reader import iter_chunks
from ig_bridge.sealing import MAGIC
from ig_bridge.split import run_bridge
from schemas.mapping import load_canonical, load_mapping
from synthetic_data.generate import generate_population
from synthetic_data.parties import provision_partnership

MAPPINGS = Path(__file__).resolve().parents[1] / "schemas" / "agencies"
NAME_FIELDS = {"given_name", "middle_names", "family_name", "full_name", "other_names"}
# Vocabularies, not values; and localities/towns, which name areas of thousands of people
# (school names such as "Thornton Primary School" legitimately contain them).
SKIP_FIELDS = {"title", "sex", "dob_is_estimated", "relationship", "address_line_2", "town"}
DATE_RENDERINGS = (
    "%d/%m/%Y",
    "%Y-%m-%d",
    "%d.%m.%Y",
    "%d-%m-%Y",
    "%d%m%Y",
    "%Y%m%d",
    "%d/%m/%y",
    "%-d/%-m/%y",
    "%-d/%-m/%Y",
    "%-d %B %Y",
    "%-d %b %Y",
    "%d %b %Y",
    "%B %-d, %Y",
    "%Y/%m/%d",
)
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_WORD = re.compile(r"[^\W\d_]+")


def renderings(field: str, value: str, formats: tuple[str, ...]) -> set[str]:
    """Every spelling of one identifier value we search for (lower-cased)."""
    v = value.strip()
    out = {v}
    if field in NAME_FIELDS:
        out |= set(re.split(r"[\s,]+", v))
    elif field == "date_of_birth":
        d = None
        for fmt in formats:
            d = pd.to_datetime(v, format=fmt, errors="coerce")
            if not pd.isna(d):
                break
        if d is not None and not pd.isna(d):
            out |= {d.strftime(f) for f in DATE_RENDERINGS}
    elif field == "postcode":
        compact = v.replace(" ", "").upper()
        out |= {compact, f"{compact[:-3]} {compact[-3:]}"}
    elif field in ("nhs_number", "phone"):
        digits = re.sub(r"\D", "", v)
        out |= {digits}
        if len(digits) == 10:
            out.add(f"{digits[:3]} {digits[3:6]} {digits[6:]}")
        if field == "phone" and len(digits) == 11:
            out |= {f"{digits[:5]} {digits[5:]}", f"+44{digits[1:]}", f"+44 {digits[1:]}"}
    elif field == "address":  # line 1 (number + street) and the whole; see module docstring
        out.add(v.split(",")[0].strip())
    return {x.lower() for x in out if len(x.strip()) >= 4}


@pytest.fixture(scope="module")
def partnership(tmp_path_factory: pytest.TempPathFactory):
    run = tmp_path_factory.mktemp("canary")
    summary = generate_population(run / "population", seed=20240607, people=400)
    codes = list(summary.agencies)
    provision_partnership(run, codes, passphrase="canary passphrase, synthetic only")
    needles: set[str] = set()
    results = {}
    for code, agency in summary.agencies.items():
        mapping_path = MAPPINGS / f"{code.lower()}.yaml"
        mapping = load_mapping(mapping_path)
        extract = run / "population" / agency.file
        fields = {
            c.source: c.field
            for c in mapping.columns
            if c.cls == "identifier" and c.field not in SKIP_FIELDS
        }
        for chunk in iter_chunks(extract, mapping.source):
            for src, field in fields.items():
                for value in chunk.frame[src].dropna().unique():
                    needles |= renderings(field, str(value), mapping.source.date_formats)
        results[code] = run_bridge(extract, mapping_path, run / "agency" / code, run / "landing")
    for res in results.values():  # what the hub reads, once it has opened each batch
        open_batch(res.landed_path, _opened(run, res), run / "hub" / "keys")
    return run, results, needles


def _opened(run: Path, res) -> Path:  # noqa: ANN001 - BatchResult
    return run / "hub_view" / res.agency / res.batch_id


def test_needles_cover_every_kind_of_identifier(partnership) -> None:
    _, _, needles = partnership
    assert len(needles) > 2000
    assert any(re.fullmatch(r"\d{3} \d{3} \d{4}", n) for n in needles)  # spaced NHS numbers
    assert any(re.fullmatch(r"\d{1,2}/\d{1,2}/\d{2}", n) for n in needles)  # d/m/yy DOBs
    assert any("@" in n for n in needles)


def test_landed_files_are_sealed_and_hold_no_identifier_bytes(partnership) -> None:
    """What a leaked or shared landing zone holds: sealed files only. Ciphertext is random, so
    a 4-byte needle occurs in it by chance; needles of >= 8 bytes cannot (2^-64 a position)."""
    run, results, needles = partnership
    landed = [p for p in (run / "landing").rglob("*") if p.is_file()]
    assert len(landed) == 5 * len(results)
    assert {p.name for p in landed} == {
        "identifiers.parquet.sealed",
        "related.parquet.sealed",
        "payload.parquet.sealed",
        "present.parquet.sealed",
        "manifest.json.sealed",
    }
    long_needles = [n.encode() for n in needles if len(n.encode()) >= 8]
    assert len(long_needles) > 500
    for path in landed:
        data = path.read_bytes()
        assert data.startswith(MAGIC) and b"PAR1" not in data and b"record_ref" not in data
        with pytest.raises(Exception):  # noqa: B017 - not Parquet to anyone but the hub
            pq.read_table(path)
        lowered = data.lower()
        assert [n for n in long_needles if n in data or n in lowered] == [], path


def test_no_identifier_bytes_in_any_file_the_hub_opens(partnership) -> None:
    run, _, needles = partnership
    files = [p for p in (run / "hub_view").rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {
        "identifiers.parquet",
        "related.parquet",
        "payload.parquet",
        "manifest.json",
    }
    # Name words inside a category value (school "Allerton Primary") are that vocabulary's.
    vocab = " | ".join(_category_values(run)).lower()
    long_needles = [
        n.encode()
        for n in needles
        if len(n.encode()) >= 8 and not (_WORD.fullmatch(n) and n in vocab)
    ]
    all_needles = [n.encode() for n in needles]
    leaks = []
    for path in files:
        data = _manifest_text(path) if path.name == "manifest.json" else path.read_bytes().lower()
        for n in long_needles if path.suffix == ".parquet" else all_needles:
            if n in data:
                leaks.append((path.relative_to(run), n.decode()))
    assert leaks == [], leaks[:20]


def _manifest_text(path: Path) -> bytes:
    """The manifest, lower-cased, with its random values checked by form and left out: the
    base64 signature, lower-cased, holds a given 4-letter word by chance (a CI run failed on
    'IslA' in one), and hex digests and batch-id suffixes are random too."""
    m = json.loads(path.read_text("utf-8"))
    assert len(base64.b64decode(m.pop("signature"), validate=True)) == 64
    for f in m["files"].values():
        assert re.fullmatch(r"[0-9a-f]{64}", f.pop("sha256"))
    prefix, suffix = m.pop("batch_id").rsplit("-", 1)
    assert re.fullmatch(r"[0-9a-f]{6}", suffix)
    return json.dumps({**m, "batch_id": prefix}).lower().encode()


def _category_values(run: Path) -> set[str]:
    kinds = load_canonical().payload_fields
    out: set[str] = set()
    for path in (run / "hub_view").rglob("payload.parquet"):
        table = pq.read_table(path)
        for name in table.column_names:
            if kinds.get(name, {}).get("type") == "category":
                out |= {v for v in table.column(name).to_pylist() if v is not None}
    return out


def test_no_identifier_in_decoded_parquet_text(partnership) -> None:
    run, _, needles = partnership
    link = KeyStore(run / "agency" / "GP" / "keys", "GP").link_key()
    enc = Encoder(link)
    bloom_bytes = {n: enc.bloom_bytes(n) for n in enc.columns if n.startswith("bf_")}
    leaks, checked = [], 0
    # A name inside another word ("evie" in "review") discloses nothing: names match as words.
    words = {n for n in needles if _WORD.fullmatch(n)}
    # Category payload columns are the agency system's vocabulary: a school called "Thornton
    # Primary" names no person called Thornton. Digits, dates, postcodes are still searched.
    categories = {f: spec["type"] for f, spec in load_canonical().payload_fields.items()}
    for path in (run / "hub_view").rglob("*.parquet"):
        table = pq.read_table(path)
        for name in table.column_names:
            values = [v for v in table.column(name).to_pylist() if v is not None]
            if name.startswith(("tok_", "blk_")):
                assert all(_HEX32.match(v) for v in values), (path, name)
            elif name == "record_ref":
                for v in values:
                    raw = base64.urlsafe_b64decode(v + "=" * (-len(v) % 4))
                    assert len(raw) > 16, (path, name)  # AES-SIV tag + ciphertext
            elif name.startswith("bf_"):
                assert all(len(v) == bloom_bytes[name] for v in values), (path, name)
            elif pa.types.is_string(table.schema.field(name).type):
                vocabulary = categories.get(name) == "category"
                for v in {str(x).lower() for x in values}:
                    checked += 1
                    in_v = set(_WORD.findall(v))
                    leaks += [
                        (path.name, name, n)
                        for n in needles
                        if n in v and (n not in words or (n in in_v and not vocabulary))
                    ]
    assert checked > 100
    assert leaks == [], leaks[:20]


def test_rows_accounted_and_every_batch_verifies(partnership) -> None:
    run, results, _ = partnership
    public = load_public_keys(run / "hub" / "public_keys")
    assert len(results) == 7
    for code, res in results.items():
        assert res.rows_read == res.rows_accepted + res.rows_quarantined > 0
        verified = verify_batch(_opened(run, res), public)
        assert verified.agency == code
        assert verified.rows == {
            "read": res.rows_read,
            "accepted": res.rows_accepted,
            "quarantined": res.rows_quarantined,
        }
        assert verified.encoding_spec_version == load_encoding_spec()["encoding_spec_version"]
        assert verified.link_key_version == 1
        assert verified.signing_key_id == f"{code}-ed25519-v1"
        manifest = json.loads((_opened(run, res) / "manifest.json").read_text())
        assert manifest["files"]["identifiers.parquet"]["rows"] == res.rows_accepted


def test_one_partnership_key_so_tokens_agree_across_agencies(partnership) -> None:
    """The same person's NHS-number token from two agencies is equal only because the link key is
    shared; the record refs differ because the ref keys do not."""
    run, results, _ = partnership
    ids = {
        c: pq.read_table(_opened(run, r) / "identifiers.parquet").to_pandas()
        for c, r in results.items()
    }
    shared = set(ids["GP"]["tok_nhs_number"].dropna()) & set(ids["HV"]["tok_nhs_number"].dropna())
    assert shared
    assert not set(ids["GP"]["record_ref"]) & set(ids["HV"]["record_ref"])
