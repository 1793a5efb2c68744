"""Dates of birth (and other dates) in the mapping's formats, with the fallbacks real extracts
need: day and month swapped where only the swapped reading is a date, and partial dates (year,
year-month) kept as what the source knows. Reasons never contain the value.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import pandas as pd

DEFAULT_DATE_FORMATS = (
    "%Y-%m-%d",
    "%d/%m/%Y",
    "%d-%m-%Y",
    "%d.%m.%Y",
    "%d %m %Y",
    "%Y%m%d",
    "%d/%m/%y",
    "%d-%b-%Y",
    "%d %b %Y",
    "%d %B %Y",
    "%d-%b-%y",
    "%Y/%m/%d",
    "%B %d, %Y",
)
_TIME_SUFFIX = re.compile(r"[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?$")
EARLIEST_DOB = pd.Timestamp("1900-01-01")
#: 1 January 1900 is what many systems store for "date of birth not known".
PLACEHOLDER_DOB = pd.Timestamp("1900-01-01")
SWAPPED = "day and month swapped (only the swapped reading is a date)"
PARTIAL_YEAR = "partial date: year only (kept as the year)"
PARTIAL_YM = "partial date: year and month only (kept as year and month)"
_SEP = r"[-/. ]"
# Partial dates as sources write them: year only, year-month either way round, a month name,
# or a full date with 00 for the unknown day/month (common in health systems).
_PARTIAL = (
    (re.compile(r"(\d{4})"), "y"),
    (re.compile(rf"(\d{{4}}){_SEP}?0{{1,2}}{_SEP}?0{{1,2}}"), "y"),
    (re.compile(rf"0{{1,2}}{_SEP}0{{1,2}}{_SEP}(\d{{4}})"), "y"),
    (re.compile(rf"(\d{{4}}){_SEP}(\d{{1,2}})"), "ym"),
    (re.compile(rf"(\d{{4}}){_SEP}?(\d{{2}}){_SEP}?0{{1,2}}"), "ym"),
    (re.compile(rf"(\d{{1,2}}){_SEP}(\d{{4}})"), "my"),
    (re.compile(rf"0{{1,2}}{_SEP}(\d{{1,2}}){_SEP}(\d{{4}})"), "my"),
    (re.compile(r"([A-Za-z]{3,9})\.?[-/ ,]+(\d{4})"), "namey"),
)
_MONTHS = {
    m: i
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}


@dataclass
class ParsedDates:
    """Full dates (NaT where not known), the year and month where the source gives them (also
    for partial dates), and one reason per value (None when clean; a swapped or partial date
    keeps its value and still carries a reason, so it is reported)."""

    parsed: pd.Series
    year: pd.Series
    month: pd.Series
    reasons: pd.Series


def parse_dates(
    values: pd.Series,
    formats: Sequence[str],
    *,
    today: date | None = None,
    field: str = "date_of_birth",
) -> tuple[pd.Series, pd.Series]:
    """Full dates and reasons (see parse_dates_partial); partial dates are NaT here."""
    got = parse_dates_partial(values, formats, today=today, field=field)
    return got.parsed, got.reasons


def parse_dates_partial(
    values: pd.Series,
    formats: Sequence[str],
    *,
    today: date | None = None,
    field: str = "date_of_birth",
) -> ParsedDates:
    """Parse with the mapping's formats, tried in order; then, for a value none of them reads,
    the same formats with day and month swapped (only where the mapping's reading is not a
    date, so the swapped one is the only reading); then partial dates (year, year-month).

    Two-digit years are read as the most recent past year. Dates in the future, before 1900 or
    the 1 January 1900 placeholder are nulled with a reason.
    """
    if not formats:
        raise ValueError(f"{field}: no date formats given")
    today_ts = pd.Timestamp(today or date.today())
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = (
            pd.to_datetime(values).dt.tz_localize(None)
            if getattr(values.dt, "tz", None)
            else pd.to_datetime(values)
        )
        reasons = pd.Series([None] * len(values), index=values.index, dtype=object)
        parsed, reasons = _check_date_range(parsed.astype("datetime64[us]"), reasons, today_ts)
        return ParsedDates(
            parsed,
            pd.Series(pd.array(parsed.dt.year, dtype="Int64"), index=values.index),
            pd.Series(pd.array(parsed.dt.month, dtype="Int64"), index=values.index),
            reasons,
        )

    text = _as_text(values)
    codes, uniques = pd.factorize(text)
    uniq = pd.Series(uniques, dtype=object)
    has_time_fmt = any("%H" in f for f in formats)
    if not has_time_fmt:
        uniq = uniq.str.replace(_TIME_SUFFIX, "", regex=True)
    out = pd.Series(pd.NaT, index=uniq.index, dtype="datetime64[us]")
    u_reason = pd.Series([None] * len(uniq), index=uniq.index, dtype=object)

    def try_formats(fmts: Sequence[str], reason: str | None) -> None:
        for fmt in fmts:
            todo = out.isna()
            if not todo.any():
                return
            got = pd.to_datetime(uniq[todo], format=fmt, errors="coerce").astype("datetime64[us]")
            if "%y" in fmt:
                future = got > today_ts
                got = got.where(~future, got - pd.DateOffset(years=100))
            out[todo] = got
            if reason is not None:
                u_reason[todo & out.notna()] = reason

    try_formats(formats, None)
    swapped = [
        f.replace("%d", "\0").replace("%m", "%d").replace("\0", "%m")
        for f in formats
        if "%d" in f and "%m" in f
    ]
    try_formats(swapped, SWAPPED)
    u_year = np.full(len(uniq), None, dtype=object)
    u_month = np.full(len(uniq), None, dtype=object)
    full = out.notna().to_numpy()
    for i in np.flatnonzero(~full):
        part = _partial_date(str(uniq.iat[i]))
        if part is None:
            u_reason.iat[i] = _classify_unparsed(str(uniq.iat[i]), formats)
        else:
            u_year[i], u_month[i] = part
            u_reason.iat[i] = PARTIAL_YEAR if part[1] is None else PARTIAL_YM

    def expand(arr: pd.Series | np.ndarray) -> pd.Series:
        vals = np.asarray(arr)
        res = vals[np.where(codes < 0, 0, codes)] if len(vals) else np.full(len(codes), None)
        ser = pd.Series(res, index=values.index)
        return ser.where(codes >= 0)

    parsed = expand(out).astype("datetime64[us]")
    reasons = expand(u_reason).astype(object)
    reasons = reasons.where(reasons.notna(), None)
    parsed, reasons = _check_date_range(parsed, reasons, today_ts)
    year = pd.Series(pd.array(expand(u_year), dtype="Int64"), index=values.index)
    month = pd.Series(pd.array(expand(u_month), dtype="Int64"), index=values.index)
    # Partial dates get the same range checks as full ones, at their own precision.
    future = (year > today_ts.year) | ((year == today_ts.year) & (month > today_ts.month))
    early = year < EARLIEST_DOB.year
    future, early = future.fillna(False).to_numpy(bool), early.fillna(False).to_numpy(bool)
    reasons[future] = "date in the future"
    reasons[early] = "date before 1900"
    year[future | early] = pd.NA
    month[future | early | year.isna().to_numpy()] = pd.NA
    has_full = parsed.notna()
    year[has_full] = parsed.dt.year[has_full].astype("Int64")
    month[has_full] = parsed.dt.month[has_full].astype("Int64")
    return ParsedDates(parsed, year, month, reasons)


def _partial_date(text: str) -> tuple[int, int | None] | None:
    """(year, month or None) of a partial date, or None when the text is not one."""
    for rx, kind in _PARTIAL:
        m = rx.fullmatch(text.strip())
        if not m:
            continue
        if kind == "y":
            return int(m.group(1)), None
        if kind == "namey":
            month = _MONTHS.get(m.group(1)[:3].lower())
            if month is None:
                continue
            return int(m.group(2)), month
        y, mo = (m.group(1), m.group(2)) if kind == "ym" else (m.group(2), m.group(1))
        if 1 <= int(mo) <= 12:
            return int(y), int(mo)
    return None


def _classify_unparsed(text: str, formats: Sequence[str]) -> str:
    for fmt in formats:
        try:
            datetime.strptime(text, fmt)  # noqa: DTZ007 - naive calendar date
        except ValueError as exc:
            if "out of range" in str(exc):
                return "impossible date (no such day)"
        else:  # parses in Python but pandas refused it: out of its range
            return "date out of supported range"
    return "unparseable date (matches none of the mapping's date_formats)"


def _check_date_range(
    parsed: pd.Series, reasons: pd.Series, today_ts: pd.Timestamp
) -> tuple[pd.Series, pd.Series]:
    future = parsed > today_ts
    early = parsed < EARLIEST_DOB
    placeholder = parsed == PLACEHOLDER_DOB
    reasons = reasons.copy()
    reasons[future] = "date in the future"
    reasons[early] = "date before 1900"
    reasons[placeholder] = "placeholder date (1 January 1900)"
    parsed = parsed.where(~(future | early | placeholder))
    return parsed, reasons


def _as_text(series: pd.Series) -> pd.Series:
    """Any column -> object Series of stripped str or None (ints stay ints: 123.0 -> '123')."""

    def conv(v: object) -> str | None:
        if isinstance(v, str):
            s = v.strip()
        elif isinstance(v, float | np.floating):
            s = str(int(v)) if float(v).is_integer() else repr(float(v))
        elif isinstance(v, bytes):
            s = v.decode("utf-8", "replace").strip()
        else:
            s = str(v).strip()
        return s or None

    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    # One bulk conversion out of Arrow, not an element-wise iteration over the Arrow array.
    values = np.asarray(uniques, dtype=object) if not isinstance(uniques, np.ndarray) else uniques
    mapped = _obj_array([conv(u) for u in values] + [None])
    return pd.Series(mapped[codes], index=series.index, dtype=object)


def _obj_array(items: Sequence[object]) -> np.ndarray:
    """1-D object array even when the items are equal-length tuples/lists."""
    arr = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        arr[i] = item
    return arr
