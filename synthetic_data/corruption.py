"""Data-quality corruption applied when an agency records a person.

Every corruption is drawn per record with probability `rate * agency quality factor` and is
recorded as a boolean `cor_<kind>` flag in ground truth next to the clean value, so tests can
measure the realised rates against the configured ones.
"""

from __future__ import annotations

import string
from dataclasses import asdict, dataclass, fields

import numpy as np
import pandas as pd

from synthetic_data.names import NICKNAMES

# Optional identifier fields that an agency may simply not have filled in.
MISSABLE = ["middle_names", "nhs_number", "phone", "email", "postcode", "address_line_1"]


@dataclass(frozen=True)
class CorruptionRates:
    """Per-record probabilities before the agency's quality factor is applied."""

    typo: float = 0.02  # one character substituted/inserted/deleted in a name
    transposition: float = 0.01  # two adjacent letters swapped in a name
    nickname: float = 0.06  # informal form or variant (Bill for William)
    name_swap: float = 0.005  # given and family names in the wrong fields
    stale_surname: float = 0.2  # previous (maiden) surname, among people who have one
    case_noise: float = 0.04  # NAME IN CAPITALS or lower case
    whitespace_noise: float = 0.03  # leading/trailing/doubled spaces
    dob_day_month_swap: float = 0.01  # day and month swapped (only where both are <= 12)
    dob_default: float = 0.005  # unknown day and month entered as 01/01
    missing: float = 0.03  # each optional identifier field left blank
    stale_address: float = 0.15  # previous address, among households that moved
    postcode_typo: float = 0.01  # one postcode character mistyped

    def scaled(self, factor: float) -> CorruptionRates:
        return CorruptionRates(**{k: min(0.9, v * factor) for k, v in asdict(self).items()})

    @classmethod
    def from_dict(cls, data: dict[str, float]) -> CorruptionRates:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown corruption rates: {sorted(unknown)}; known: {sorted(known)}")
        bad = {k: v for k, v in data.items() if not 0.0 <= float(v) <= 1.0}
        if bad:
            raise ValueError(f"corruption rates must be within [0, 1]: {bad}")
        return cls(**{k: float(v) for k, v in data.items()})


_LETTERS = string.ascii_lowercase


def _typo(rng: np.random.Generator, s: str) -> str:
    if not s:
        return s
    i = int(rng.integers(0, len(s)))
    op = int(rng.integers(0, 3))
    c = _LETTERS[int(rng.integers(0, 26))]
    if op == 0 or len(s) < 3:  # substitute with a different letter
        if s[i].lower() == c:
            c = _LETTERS[(_LETTERS.index(c) + 1) % 26]
        return s[:i] + (c.upper() if s[i].isupper() else c) + s[i + 1 :]
    if op == 1:
        return s[:i] + s[i + 1 :]
    return s[:i] + c + s[i:]


def _transpose(rng: np.random.Generator, s: str) -> str:
    spots = [i for i in range(len(s) - 1) if s[i] != s[i + 1]]
    if not spots:
        return s
    i = spots[int(rng.integers(0, len(spots)))]
    return s[:i] + s[i + 1] + s[i] + s[i + 2 :]


def _postcode_typo(rng: np.random.Generator, s: str) -> str:
    spots = [i for i, ch in enumerate(s) if ch.isalnum()]
    i = spots[int(rng.integers(0, len(spots)))]
    pool = string.digits if s[i].isdigit() else "ABDEFGHJLNPQRSTUWXYZ"
    c = pool[int(rng.integers(0, len(pool)))]
    if c == s[i]:
        c = pool[(pool.index(c) + 1) % len(pool)]
    return s[:i] + c + s[i + 1 :]


def _apply(values: np.ndarray, mask: np.ndarray, fn, extra: np.ndarray | None = None) -> np.ndarray:
    """fn(value) (or fn(value, extra[i])) on the masked entries only: corruption is rare."""
    out = values.copy()
    for i in np.flatnonzero(mask):
        out[i] = fn(out[i]) if extra is None else fn(out[i], extra[i])
    return out


def corrupt(
    clean: pd.DataFrame, rng: np.random.Generator, rates: CorruptionRates, addresses: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (dirty copy of `clean`, cor_* flags). Columns absent from `clean` are skipped.

    `clean` holds canonical values; `prev_address_id` (-1 if none) enables stale addresses.
    """
    n = len(clean)
    d = clean.copy()
    flags: dict[str, np.ndarray] = {}

    def draw(rate: float, eligible: np.ndarray | None = None) -> np.ndarray:
        m = rng.random(n) < rate
        return m if eligible is None else m & eligible

    has = clean.columns.__contains__
    if has("family_name") and has("other_names"):
        ok = clean["other_names"].notna().to_numpy()
        m = draw(rates.stale_surname, ok)
        d.loc[m, "family_name"] = clean.loc[m, "other_names"]
        flags["cor_stale_surname"] = m
    if has("given_name"):
        g = d["given_name"].to_numpy(dtype=object)
        ok = np.fromiter((x in NICKNAMES for x in g), bool, n)
        m = draw(rates.nickname, ok)
        pick = rng.integers(0, 3, n)
        d["given_name"] = _apply(g, m, lambda x, k: NICKNAMES[x][k % len(NICKNAMES[x])], pick)
        flags["cor_nickname"] = m
    if has("given_name") and has("family_name"):
        m = draw(rates.name_swap)
        g, f = d["given_name"].to_numpy(dtype=object), d["family_name"].to_numpy(dtype=object)
        d["given_name"], d["family_name"] = np.where(m, f, g), np.where(m, g, f)
        flags["cor_name_swap"] = m
    for col in ("given_name", "family_name"):
        if not has(col):
            continue
        m = draw(rates.typo, d[col].notna().to_numpy())
        d[col] = _apply(d[col].to_numpy(dtype=object), m, lambda s: _typo(rng, s))
        flags[f"cor_typo_{col}"] = m
        m = draw(rates.transposition, d[col].notna().to_numpy())
        d[col] = _apply(d[col].to_numpy(dtype=object), m, lambda s: _transpose(rng, s))
        flags[f"cor_transpose_{col}"] = m
    if has("date_of_birth"):
        dob = pd.to_datetime(d["date_of_birth"])
        default = draw(rates.dob_default)
        swappable = (dob.dt.day <= 12) & (dob.dt.day != dob.dt.month)
        swap = draw(rates.dob_day_month_swap, swappable.to_numpy() & ~default)
        new = dob.copy()
        new[default] = pd.to_datetime(dict(year=dob[default].dt.year, month=1, day=1))
        new[swap] = pd.to_datetime(
            dict(year=dob[swap].dt.year, month=dob[swap].dt.day, day=dob[swap].dt.month)
        )
        d["date_of_birth"] = new.astype(clean["date_of_birth"].dtype)
        flags["cor_dob_default"], flags["cor_dob_swap"] = default, swap
    if has("prev_address_id") and has("address_id"):
        m = draw(rates.stale_address, clean["prev_address_id"].to_numpy() >= 0)
        d.loc[m, "address_id"] = clean.loc[m, "prev_address_id"]
        stale = addresses.set_index("address_id").loc[d.loc[m, "address_id"]]
        for col in ("address_line_1", "address_line_2", "town", "postcode", "uprn"):
            if has(col):
                d.loc[m, col] = stale[col].to_numpy()
        flags["cor_stale_address"] = m
    if has("postcode"):
        m = draw(rates.postcode_typo, d["postcode"].notna().to_numpy())
        d["postcode"] = _apply(
            d["postcode"].to_numpy(dtype=object), m, lambda s: _postcode_typo(rng, s)
        )
        flags["cor_postcode_typo"] = m
    for col in MISSABLE:
        if has(col):
            m = draw(rates.missing, clean[col].notna().to_numpy())
            d[col] = d[col].where(~m, None)
            flags[f"cor_missing_{col}"] = m
    for col in ("given_name", "family_name", "address_line_1"):
        if not has(col):
            continue
        m = draw(rates.case_noise, d[col].notna().to_numpy())
        upper = rng.random(n) < 0.75
        v = d[col].to_numpy(dtype=object)
        d[col] = _apply(v, m, lambda s, u: s.upper() if u else s.lower(), upper)
        flags[f"cor_case_{col}"] = m
        m = draw(rates.whitespace_noise, d[col].notna().to_numpy())
        kind = rng.integers(0, 3, n)
        d[col] = _apply(
            d[col].to_numpy(dtype=object),
            m,
            lambda s, k: (" " + s, s + "  ", s.replace(" ", "  ", 1) if " " in s else s + " ")[k],
            kind,
        )
        flags[f"cor_space_{col}"] = m
    return d, pd.DataFrame(flags, index=clean.index)
