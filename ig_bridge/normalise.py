"""Normalise identifier fields at the agency, before anything is encoded.

Every field normaliser is a pure `str -> (value..., reason)` function applied once per *distinct*
value (`pd.factorize`) and broadcast back: identifier columns repeat a lot (names, postcodes,
dates), so a 1M-row extract costs one Python call per distinct value, not per row.

Problems are reported as `(row_index, field, reason)`; a reason never contains the value.

Why not `recordlinkage.preprocessing.clean`: under pandas >= 2 it passes regexes to
`Series.str.replace` without `regex=True`, so they are treated as literals and nothing is
cleaned. Phonetic codes use jellyfish's NYSIIS directly (what recordlinkage wraps).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from importlib import resources

import numpy as np
import pandas as pd
import yaml

from ig_bridge.address import address_key, normalise_flat
from ig_bridge.address_normalise import _norm_whole_address, normalise_address_line
from ig_bridge.code_normalise import (
    normalise_bool,
    normalise_email,
    normalise_nhs_number,
    normalise_phone,
    normalise_postcode,
    normalise_relationship,
    normalise_sex,
    normalise_upn,
    normalise_uprn,
)

# Dates live in ig_bridge.dates (re-exported: the mapping's formats, partial and swapped dates).
from ig_bridge.dates import (  # noqa: F401
    DEFAULT_DATE_FORMATS,
    EARLIEST_DOB,
    PARTIAL_YEAR,
    PARTIAL_YM,
    SWAPPED,
    ParsedDates,
    _as_text,
    _obj_array,
    parse_dates,
    parse_dates_partial,
)
from ig_bridge.name_normalise import (
    PLACEHOLDER_NAME,
    _norm_family,
    _norm_given,
    _other_names,
    _ph,
    family_name_parts,
    is_placeholder_name,
    normalise_name_value,
    phonetic,
    split_full_name,
)

# ---------------------------------------------------------------------------------------------
# Frame-level entry point


@lru_cache(maxsize=1)
def identifier_fields() -> tuple[str, ...]:
    """Canonical identifier field names, from schemas/canonical_fields.yaml."""
    text = resources.files("schemas").joinpath("canonical_fields.yaml").read_text("utf-8")
    return tuple(yaml.safe_load(text)["identifier_fields"])


@lru_cache(maxsize=1)
def canonical_version() -> int:
    text = resources.files("schemas").joinpath("canonical_fields.yaml").read_text("utf-8")
    return int(yaml.safe_load(text)["version"])


#: The other birth years an estimated DOB's year stands for (police estimate an age: the
#: synthetic POL extract and real ones are off by up to two years).
ESTIMATED_YEAR_OFFSETS = {
    "dob_year_estimated_m2": -2,
    "dob_year_estimated_m1": -1,
    "dob_year_estimated_p1": 1,
    "dob_year_estimated_p2": 2,
}

NORMALISED_COLUMNS: tuple[str, ...] = (
    "record_id",
    "title",
    "given_name",
    "given_name_canonical",
    "given_name_phonetic",
    "given_name_initial",
    "given_name_canonical_initial",
    "given_name_final",
    "middle_names",
    "family_name",
    "family_name_parts",
    "family_name_phonetic",
    "family_name_initial",
    "other_names",
    "other_names_parts",
    "date_of_birth",
    "dob_year",
    "dob_month",
    "dob_day",
    "dob_year_estimated_m2",
    "dob_year_estimated_m1",
    "dob_year_estimated_p1",
    "dob_year_estimated_p2",
    "dob_is_estimated",
    "sex",
    "address_line_1",
    "address_line_2",
    "town",
    "address",
    "address_flat",
    "address_house_number",
    "address_street",
    "address_premises",
    "postcode",
    "postcode_outward",
    "postcode_district",
    "postcode_sector",
    "postcode_area",
    "postcode_valid",
    "uprn",
    "nhs_number",
    "upn",
    "phone",
    "email",
    "relationship",
)


@dataclass
class NormalisedFrame:
    """Normalised identifiers (columns NORMALISED_COLUMNS, index of the raw frame) and
    field-level problems `(row_index, field, reason)`; reasons never contain values.
    `nulled`: values set aside on purpose and reported, never a reason to refuse the row
    (placeholder names), same shape."""

    frame: pd.DataFrame
    problems: list[tuple[Hashable, str, str]]
    nulled: list[tuple[Hashable, str, str]] = field(default_factory=list)

    def problems_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.problems, columns=["row_index", "field", "reason"])

    def rows_with_problems(self, fields: Sequence[str] | None = None) -> pd.Index:
        rows = {r for r, f, _ in self.problems if fields is None or f in fields}
        return pd.Index([i for i in self.frame.index if i in rows])


# Results of the pure per-value normalisers, kept across chunks of one extract (names, towns,
# postcodes repeat from chunk to chunk). Bounded: cleared when it grows past _MEMO_MAX entries,
# so memory does not grow with the extract.
_MEMO: dict[str, dict[str, tuple]] = {}
_MEMO_MAX = 20_000


def _initial(name: str) -> str | None:
    """A normalised name's first letter (names are lower-case a-z, spaces and hyphens)."""
    return name[0] if name and name[0].isalpha() else None


def _final(name: str) -> str | None:
    """A normalised name's last letter."""
    return name[-1] if name and name[-1].isalpha() else None


def _per_unique(
    series: pd.Series | None,
    index: pd.Index,
    fn: Callable[[str], tuple],
    width: int,
    memo: str | None = None,
) -> list[np.ndarray]:
    """Apply fn once per distinct non-null value; returns `width` object arrays aligned to index.

    `memo` names a cache for fn's results across calls; only for pure fns of the value alone.
    """
    if series is None:
        return [np.full(len(index), None, dtype=object) for _ in range(width)]
    text = _as_text(series)
    codes, uniques = pd.factorize(text, use_na_sentinel=True)
    if memo is None:
        results = [fn(u) for u in uniques]
    else:
        cache = _MEMO.setdefault(memo, {})
        if len(cache) > _MEMO_MAX:
            cache.clear()
        results = []
        for u in uniques:
            r = cache.get(u)
            if r is None:
                r = cache[u] = fn(u)
            results.append(r)
    out = []
    for j in range(width):
        col = np.empty(len(uniques) + 1, dtype=object)
        for i, r in enumerate(results):
            col[i] = r[j]
        col[len(uniques)] = None  # the NA sentinel (-1) lands here
        out.append(col[codes])
    return out


def _collect(problems: list, index: pd.Index, field: str, reasons: np.ndarray) -> None:
    for pos in np.flatnonzero(pd.notna(reasons)):
        problems.append((index[pos], field, str(reasons[pos])))


def _fill(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(pd.isna(a), b, a)


def normalise_identifiers(
    raw: pd.DataFrame, date_formats: Sequence[str] | None = None, *, today: date | None = None
) -> NormalisedFrame:
    """Normalise the identifier columns of one person slot (columns = canonical field names)."""
    unknown = [c for c in raw.columns if c not in identifier_fields()]
    if unknown:
        raise ValueError(f"not canonical identifier fields: {sorted(map(str, unknown))}")
    formats = list(date_formats or DEFAULT_DATE_FORMATS)
    idx = raw.index
    col = raw.get
    problems: list[tuple[Hashable, str, str]] = []
    out: dict[str, object] = {}

    # record_id: stripped only (it becomes record_ref; its exact bytes matter).
    (rid,) = _per_unique(col("record_id"), idx, lambda v: (v,), 1)
    out["record_id"] = rid
    (out["title"],) = _per_unique(
        col("title"), idx, lambda v: (normalise_name_value(v),), 1, "name_value"
    )

    sex, reason = _per_unique(col("sex"), idx, normalise_sex, 2, "sex")
    _collect(problems, idx, "sex", reason)
    out["sex"] = sex

    given, extra_given = _per_unique(col("given_name"), idx, _norm_given, 2, "given")
    (middle,) = _per_unique(
        col("middle_names"), idx, lambda v: (normalise_name_value(v),), 1, "name_value"
    )
    if col("given_name") is not None:
        # Either part alone is already a normalised, non-placeholder name; only rows with both
        # need joining (and the join can itself be a placeholder: "n" + "a").
        e_na, m_na = pd.isna(extra_given), pd.isna(middle)
        merged = np.where(e_na, middle, extra_given)
        both = np.flatnonzero(~e_na & ~m_na)
        if len(both):
            merged[both] = _obj_array(
                [_ph(f"{e} {m}") for e, m in zip(extra_given[both], middle[both], strict=True)]
            )
        middle = merged
    family, fam_parts = _per_unique(col("family_name"), idx, _norm_family, 2, "family")
    fg, fm, ff = _per_unique(col("full_name"), idx, split_full_name, 3, "full")
    out["full_name"] = None
    given = _fill(given, fg)
    middle = _fill(middle, fm)
    fam_from_full = pd.isna(family) & pd.notna(ff)
    if fam_from_full.any():
        family = _fill(family, ff)
        fam_parts = _obj_array(
            [
                tuple(family_name_parts(f.split())) if use else p
                for f, p, use in zip(family, fam_parts, fam_from_full, strict=True)
            ]
        )
    nulled: list[tuple[Hashable, str, str]] = []
    placeholder = np.zeros(len(idx), dtype=bool)
    for name in ("given_name", "middle_names", "family_name", "full_name", "other_names"):
        (hit,) = _per_unique(
            col(name), idx, lambda v: (is_placeholder_name(v) or None,), 1, "placeholder"
        )
        for pos in np.flatnonzero(pd.notna(hit)):
            nulled.append((idx[pos], name, PLACEHOLDER_NAME))
            if name in ("given_name", "full_name"):
                placeholder[pos] = True
    if col("given_name") is not None or col("full_name") is not None:
        # A placeholder given name is reported as such (nulled), not as a missing one.
        for pos in np.flatnonzero(pd.isna(given) & pd.notna(family) & ~placeholder):
            problems.append((idx[pos], "given_name", "missing given name"))
    out["given_name"], out["middle_names"], out["family_name"] = given, middle, family
    out["family_name_parts"] = _obj_array(
        [list(p) if isinstance(p, tuple) else None for p in fam_parts]
    )

    from ig_bridge.nicknames import default_lexicon  # lexicon normalises with this module

    lex = default_lexicon()
    pairs = pd.Series(list(zip(given, sex, strict=True)), index=idx, dtype=object)
    codes, uniques = pd.factorize(pairs)
    canon = _obj_array([lex.canonical(g, s) for g, s in uniques] + [None])
    out["given_name_canonical"] = canon[codes]
    out["given_name_phonetic"] = _map_unique(given, phonetic)
    out["family_name_phonetic"] = _map_unique(family, phonetic)
    # First letters, only ever hashed with the DOB (encoding spec, seventh amendment): a typo
    # in both names changes every exact and phonetic code but rarely both first letters.
    out["given_name_initial"] = _map_unique(given, _initial)
    # The canonical forename's first letter (Bill and William: w), a salt of the surname
    # sound's token (encoding spec, eighth amendment).
    out["given_name_canonical_initial"] = _map_unique(out["given_name_canonical"], _initial)
    # ...and the forename's last letter: a typo in the first letter (ioliver, csla) rarely
    # hits the last one too (encoding spec, eighth amendment: blk_family_phonetic_dob_final).
    out["given_name_final"] = _map_unique(given, _final)
    out["family_name_initial"] = _map_unique(family, _initial)

    other, other_parts = _per_unique(col("other_names"), idx, lambda v: _other_names(v), 2)
    out["other_names"] = other
    out["other_names_parts"] = _obj_array(
        [list(p) if isinstance(p, tuple) else None for p in other_parts]
    )

    # Dates
    # A partial date (year, year-month) leaves date_of_birth empty (so no full-date token or
    # key is made from a guess) but keeps dob_year / dob_month for what the source knows.
    if col("date_of_birth") is not None:
        got = parse_dates_partial(col("date_of_birth"), formats, today=today)
        _collect(problems, idx, "date_of_birth", got.reasons.to_numpy())
        dob = got.parsed
        out["dob_year"] = pd.array(got.year, dtype="Int64")
        out["dob_month"] = pd.array(got.month, dtype="Int64")
    else:
        dob = pd.Series(pd.NaT, index=idx, dtype="datetime64[us]")
        out["dob_year"] = pd.array(dob.dt.year, dtype="Int64")
        out["dob_month"] = pd.array(dob.dt.month, dtype="Int64")
    out["date_of_birth"] = dob.to_numpy()
    out["dob_day"] = pd.array(dob.dt.day, dtype="Int64")
    est, reason = _per_unique(col("dob_is_estimated"), idx, normalise_bool, 2)
    _collect(problems, idx, "dob_is_estimated", reason)
    out["dob_is_estimated"] = pd.array(est, dtype="boolean")
    # An estimated DOB (an age guessed into 1 January) has a birth year that is itself a
    # guess: the years around it, only for such records, so their year-salted name tokens
    # can meet another record's (spec v3, eighth amendment). Nothing for a real DOB.
    year = pd.Series(out["dob_year"], dtype="Int64")
    guessed = out["dob_is_estimated"].fillna(False).to_numpy(dtype=bool)
    for name, offset in ESTIMATED_YEAR_OFFSETS.items():
        out[name] = (year + offset).where(guessed).array

    # Addresses
    whole, line1_from_whole, pc_from_whole, line2_from_whole, town_from_whole = _per_unique(
        col("address"), idx, _norm_whole_address, 5
    )
    for name in ("address_line_1", "address_line_2", "town"):
        (out[name],) = _per_unique(
            col(name), idx, lambda v: (normalise_address_line(v),), 1, "address_line"
        )
    out["address_line_1"] = _fill(out["address_line_1"], line1_from_whole)
    out["address_line_2"] = _fill(out["address_line_2"], line2_from_whole)
    out["town"] = _fill(out["town"], town_from_whole)
    out["address"] = whole
    (flat_col,) = _per_unique(
        col("flat"), idx, lambda v: (normalise_flat(normalise_address_line(v)),), 1, "flat"
    )
    # Flat from its own column or parsed out of line 1/2; premises = house number + street
    # (ig_bridge.address): flats of one building differ, "12 High St" = "12 High Street".
    triples = pd.Series(
        list(zip(out["address_line_1"], out["address_line_2"], flat_col, strict=True)),
        index=idx,
        dtype=object,
    )
    t_codes, t_uniq = pd.factorize(triples)
    keyed = [address_key(*t) for t in t_uniq] + [(None, None, None, None)]
    for j, name in enumerate(
        ("address_flat", "address_house_number", "address_street", "address_premises")
    ):
        out[name] = _obj_array([k[j] for k in keyed])[t_codes]

    pc_src = col("postcode")
    if pc_src is None and col("address") is not None:
        pc_src = pd.Series(pc_from_whole, index=idx, dtype=object)
    elif pc_src is not None and col("address") is not None:
        pc_src = pd.Series(_fill(_as_text(pc_src).to_numpy(), pc_from_whole), index=idx)
    pcs = _per_unique(pc_src, idx, normalise_postcode, 7, "postcode")
    for name, arr in zip(
        ("postcode", "postcode_outward", "postcode_district", "postcode_sector", "postcode_area"),
        pcs[:5],
        strict=True,
    ):
        out[name] = arr
    out["postcode_valid"] = pd.array(np.where(pd.isna(pcs[0]), None, pcs[5]), dtype="boolean")
    _collect(problems, idx, "postcode", pcs[6])
    # An unusable postcode must not become a token (it would match only the same typo).
    out["postcode"] = np.where(pcs[5] == True, pcs[0], None)  # noqa: E712 - object array

    for name, fn in (
        ("uprn", normalise_uprn),
        ("nhs_number", normalise_nhs_number),
        ("upn", normalise_upn),
        ("phone", normalise_phone),
        ("email", normalise_email),
        ("relationship", normalise_relationship),
    ):
        value, reason = _per_unique(col(name), idx, fn, 2)
        _collect(problems, idx, name, reason)
        out[name] = value

    if col("record_id") is not None:
        for pos in np.flatnonzero(pd.isna(rid)):
            problems.append((idx[pos], "record_id", "missing record_id"))

    frame = pd.DataFrame({c: out.get(c) for c in NORMALISED_COLUMNS}, index=idx)
    for c in NORMALISED_COLUMNS:
        if frame[c].dtype == object:
            frame[c] = frame[c].where(frame[c].notna(), None)
    problems.sort(key=lambda p: (idx.get_loc(p[0]) if idx.is_unique else 0, p[1]))
    nulled.sort(key=lambda p: (idx.get_loc(p[0]) if idx.is_unique else 0, p[1]))
    return NormalisedFrame(frame=frame, problems=problems, nulled=nulled)


def _map_unique(values: np.ndarray, fn: Callable[[str], str | None]) -> np.ndarray:
    codes, uniques = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=True)
    return _obj_array([fn(u) for u in uniques] + [None])[codes]
