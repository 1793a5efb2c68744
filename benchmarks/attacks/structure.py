"""Structure leaks: what the hub learns from the *shape* of its tokens, with no frequency table.

- Calendar: separate tok_dob_month / tok_dob_day tokens co-occur on records, so the month token
  never seen with the day-31 token's partners is short, February is the short month with the
  fewest day tokens, day 31 is the day token seen with the fewest months, day 30 the one never
  seen with February. tok_dob_swapped is present only when day <= 12 (and != month) and shares
  the tok_dob domain, so it pairs each day token 1-12 with the month token of the same number.
- School year group (a plaintext payload field) fixes the academic cohort, so it decodes every
  school-age tok_dob_year exactly, and splits month tokens into Sep-Dec / Jan-Aug.
- tok_sex: the sex token carried by most records with (decoded) female given names is F.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

ALL_MONTHS = frozenset(range(1, 13))
LONG = frozenset({1, 3, 5, 7, 8, 10, 12})
AUTUMN = frozenset({9, 10, 11, 12})


def _year_group(values: pd.Series) -> pd.Series:
    s = values.astype("string").str.strip().str.upper()
    return pd.to_numeric(s.replace({"R": "0", "N": "-1", "RECEPTION": "0"}), errors="coerce")


def decode_years(rec: pd.DataFrame, ref_year: int = 2025) -> dict[str, int]:
    """tok_dob_year -> year, from school year groups (academic year starting Sep ref_year-1:
    Jan-Aug births of year Y are in group ref_year-5-Y, the most common group for Y)."""
    df = pd.DataFrame({"t": rec["tok_dob_year"], "g": _year_group(rec["year_group"])}).dropna()
    df = df[(df["g"] >= 1) & (df["g"] <= 12)]  # 0 and 13 hold clipped ages too
    mode = df.groupby("t")["g"].agg(lambda s: int(s.value_counts().index[0]))
    return {t: ref_year - 5 - g for t, g in mode.items()}


def decode_calendar(
    rec: pd.DataFrame, years: dict[str, int]
) -> tuple[dict[str, frozenset[int]], dict[str, frozenset[int]]]:
    """(month token -> candidate months, day token -> candidate days)."""
    md = rec[["tok_dob_month", "tok_dob_day"]].dropna().drop_duplicates()
    months = set(md["tok_dob_month"])
    days = set(md["tok_dob_day"])
    m_cands: dict[str, frozenset[int]] = {m: ALL_MONTHS for m in months}
    d_cands: dict[str, frozenset[int]] = {d: frozenset(range(1, 32)) for d in days}
    if len(months) < 12 or len(days) < 29:
        return m_cands, d_cands
    per_day = md.groupby("tok_dob_day")["tok_dob_month"].agg(set)
    per_month = md.groupby("tok_dob_month")["tok_dob_day"].agg(set)
    d31 = min(per_day.index, key=lambda d: len(per_day[d]))
    long_m = per_day[d31]
    short_m = months - long_m
    feb = min(short_m, key=lambda m: len(per_month[m]))
    for m in months:
        m_cands[m] = (
            LONG if m in long_m else (frozenset({2}) if m == feb else frozenset({4, 6, 9, 11}))
        )
    d_cands[d31] = frozenset({31})
    not_feb = [d for d in days if d != d31 and feb not in per_day[d]]
    for d in not_feb:
        d_cands[d] = frozenset({30}) if len(not_feb) == 1 else frozenset({29, 30})
    # Year groups split months into Sep-Dec (group ref-6-Y) and Jan-Aug (group ref-5-Y).
    g = _year_group(rec["year_group"])
    y = rec["tok_dob_year"].map(years)
    autumn = (g == 2019 - y).to_numpy()
    spring = (g == 2020 - y).to_numpy()
    votes = pd.DataFrame({"m": rec["tok_dob_month"], "a": autumn, "s": spring}).dropna()
    votes = votes.groupby("m")[["a", "s"]].sum()
    for m, row in votes.iterrows():
        if row["a"] + row["s"] >= 2 and m != feb:
            side = AUTUMN if row["a"] > row["s"] else ALL_MONTHS - AUTUMN
            m_cands[m] = (m_cands[m] & side) or m_cands[m]
    # Swapped DOB tokens pair day token d (1-12) with the month token of the same number.
    sw = rec[["tok_dob_swapped", "tok_dob_day"]].dropna()
    other = rec[["tok_dob", "tok_dob_month"]].dropna().drop_duplicates("tok_dob")
    pairs = sw.merge(other, left_on="tok_dob_swapped", right_on="tok_dob")
    pair = pairs.groupby("tok_dob_day")["tok_dob_month"].agg(lambda s: s.value_counts().index[0])
    low = set(sw["tok_dob_day"])
    for d in low:
        d_cands[d] = m_cands.get(pair.get(d), ALL_MONTHS) if d in pair else ALL_MONTHS
    for d in days - low - {d31} - set(not_feb):
        d_cands[d] = frozenset(range(13, 30))
    return m_cands, d_cands


def decode_sex(rec: pd.DataFrame, given_guess: np.ndarray) -> dict[str, str]:
    """tok_sex -> M/F/U from which decoded given names each sex token carries."""
    from ig_bridge.name_normalise import normalise_name_value
    from synthetic_data.names import FEMALE, MALE

    fem = {(normalise_name_value(n) or "").split()[0] for n in FEMALE}
    mal = {(normalise_name_value(n) or "").split()[0] for n in MALE}
    df = pd.DataFrame({"s": rec["tok_sex"], "g": given_guess}).dropna()
    df["f"] = df["g"].isin(fem)
    df["m"] = df["g"].isin(mal)
    share = df.groupby("s")[["f", "m"]].mean()
    if share.empty:
        return {}
    out = {s: "U" for s in share.index}
    ftok = share["f"].idxmax()
    out[ftok] = "F"
    rest = share.drop(index=ftok)
    if not rest.empty:
        out[rest["m"].idxmax()] = "M"
    return out


def exact(cands: dict[str, frozenset[int]]) -> dict[str, str]:
    return {t: str(next(iter(c))) for t, c in cands.items() if len(c) == 1}
