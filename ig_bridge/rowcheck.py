"""Every row check of the bridge on one chunk, shared by `run` and the `validate` dry run.

Field level first: a bad identifier or payload value (unparseable or impossible date, a date in
the future or before 1900, a malformed NHS number / postcode / phone / email, a placeholder,
an oversized value, a payload value outside its vocabulary) is nulled and reported per field
and reason with its line; the record goes on with what remains. Row level only then: a row is
quarantined when it cannot be linked at all (no record id, a duplicate record id, or fewer
identifying fields than the mapping's `validation.min_identifying_fields`). GX judges the
row-level statuses (ig_bridge.validate). Reasons never contain a value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ig_bridge.dates import SWAPPED
from ig_bridge.normalise import normalise_identifiers
from ig_bridge.recode import recode_identifiers
from ig_bridge.validate import OK, RowValidator
from schemas.mapping import SUBJECT, Mapping, PayloadPolicy

#: Longest identifier value read (characters): a name, address or number longer than this is
#: junk or a mis-mapped column (a free-text note), nulled and reported.
MAX_IDENTIFIER_CHARS = 1_000
#: Longest payload value kept (characters): case notes run to a few pages, not megabytes.
MAX_PAYLOAD_CHARS = 100_000
OVERSIZED = "oversized value (nulled)"
UNKNOWN_CODE = "code not in the mapping's recode table (nulled)"
#: Identifier fields that link a record (after normalisation; a partial date of birth counts).
IDENTIFYING = (
    "given_name",
    "family_name",
    "date_of_birth",
    "nhs_number",
    "upn",
    "uprn",
    "postcode",
    "address_line_1",
    "phone",
    "email",
)
ROW_STATUS = (f"{SUBJECT}.record_id", f"{SUBJECT}.identifying_fields")
_BOOL = {
    "y": True,
    "yes": True,
    "true": True,
    "1": True,
    "t": True,
    "n": False,
    "no": False,
    "false": False,
    "0": False,
    "f": False,
}
_LISTED = 10_000  # field problems listed with their line in a report; all are counted


@dataclass
class FieldProblems:
    """Field problems of a batch: counts per field and reason, and the first lines."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    rows: list[tuple[int, str, str]] = field(default_factory=list)

    def add(self, name: str, reasons: np.ndarray, lines: np.ndarray) -> None:
        hit = np.flatnonzero(reasons != OK)
        if not len(hit):
            return
        per = self.counts.setdefault(name, {})
        vals, n = np.unique(reasons[hit].astype(str), return_counts=True)
        for v, c in zip(vals, n, strict=True):
            per[str(v)] = per.get(str(v), 0) + int(c)
        room = _LISTED - len(self.rows)
        for i in hit[: max(room, 0)]:
            self.rows.append((int(lines[i]), name, str(reasons[i])))

    @property
    def total(self) -> int:
        return sum(sum(v.values()) for v in self.counts.values())

    def by_field(self) -> dict[str, int]:
        return {f: sum(v.values()) for f, v in sorted(self.counts.items())}


class SeenIds:
    """Record ids already accepted or refused in this batch, for the duplicate check across
    chunks, in constant-size form: two keyed 64-bit hashes per id (vectorised, pandas), kept as
    one sorted array of 16-byte keys. 8x smaller than a set of str, and a lookup is a binary
    search instead of `Series.isin(set)` (which converted the whole set on every chunk)."""

    def __init__(self) -> None:
        # Random per batch: the hashes never leave the process; random keys make a crafted
        # collision pointless. 16 hex chars = the 16-byte siphash key pandas expects.
        self._keys = (os.urandom(8).hex(), os.urandom(8).hex())
        self._sorted = np.empty(0, dtype="S16")

    def _digest(self, ids: np.ndarray) -> np.ndarray:
        h = [pd.util.hash_array(ids, hash_key=k, categorize=False) for k in self._keys]
        return np.ascontiguousarray(np.stack(h, axis=1)).view("S16").ravel()

    def seen(self, ids: np.ndarray) -> np.ndarray:
        """Boolean mask: which ids were added before."""
        if not len(ids) or not len(self._sorted):
            return np.zeros(len(ids), dtype=bool)
        d = self._digest(ids)
        pos = np.searchsorted(self._sorted, d)
        hit = pos < len(self._sorted)
        hit[hit] = self._sorted[pos[hit]] == d[hit]
        return hit

    def add(self, ids: np.ndarray) -> None:
        if not len(ids):
            return
        d = np.unique(self._digest(ids))
        d = d[~np.isin(d, self._sorted)] if len(self._sorted) else d
        self._sorted = np.insert(self._sorted, np.searchsorted(self._sorted, d), d)


@dataclass
class CheckedChunk:
    """One chunk after every row check: what the bridge encodes and writes for `good` rows."""

    persons: dict[str, pd.DataFrame]  # raw identifier columns per person, oversized nulled
    norm: dict[str, pd.DataFrame]  # normalised, bad values nulled
    payload: pd.DataFrame  # typed payload, bad values nulled
    status: pd.DataFrame  # row-level statuses (ROW_STATUS), what GX judged
    reasons: dict[int, list[str]]  # quarantine reasons by row position
    good: np.ndarray  # rows accepted
    field_status: dict[str, np.ndarray]  # "<person>.<field>" / "payload.<field>" -> reason|OK
    payload_nulled: dict[str, np.ndarray]  # payload field -> mask of values nulled


def min_identifying(mapping: Mapping) -> int:
    return mapping.min_identifying_fields


def identifying_count(norm: pd.DataFrame) -> np.ndarray:
    """How many identifying fields a normalised record still has."""
    n = np.zeros(len(norm), dtype=np.int64)
    for f in IDENTIFYING:
        present = norm[f].notna().to_numpy(dtype=bool)
        if f == "date_of_birth":  # a partial date (year, year-month) still links
            present = present | norm["dob_year"].notna().to_numpy(dtype=bool)
        elif f == "address_line_1":
            present = present | norm["address"].notna().to_numpy(dtype=bool)
        n += present
    return n


def _oversized(frame: pd.DataFrame, limit: int) -> dict[str, np.ndarray]:
    out = {}
    for c in frame.columns:
        s = frame[c]
        if s.dtype == object or pd.api.types.is_string_dtype(s):
            long = (s.str.len() > limit).fillna(False).to_numpy(dtype=bool)
            if long.any():
                out[c] = long
    return out


def _status(n: int) -> np.ndarray:
    return np.full(n, OK, dtype=object)


def check_chunk(
    raw: pd.DataFrame,
    lines: np.ndarray,
    mapping: Mapping,
    policies: dict[str, PayloadPolicy],
    seen: SeenIds,
    validator: RowValidator,
) -> CheckedChunk:
    """Field checks (nulled and reported), then the row checks GX judges."""
    n = len(raw)
    fstat: dict[str, np.ndarray] = {}

    def note(name: str, mask: np.ndarray, reason: str) -> None:
        st = fstat.setdefault(name, _status(n))
        st[mask & (st == OK)] = reason

    # The mapping's recode tables first (codes -> canonical values; the quarantine keeps raw).
    coded, unknown_codes = recode_identifiers(raw, mapping)
    for key, mask in unknown_codes.items():
        note(
            key if "." in key else f"{SUBJECT}.{key}", np.asarray(mask, dtype=bool), UNKNOWN_CODE
        )  # counted with every field problem; listed by line below
    persons: dict[str, pd.DataFrame] = {}
    norm: dict[str, pd.DataFrame] = {}
    for person in [SUBJECT, *mapping.slots]:
        cols = mapping.identifier_columns(person)
        frame = pd.DataFrame({f: coded[src] for f, src in cols.items()})
        for f, mask in _oversized(frame, MAX_IDENTIFIER_CHARS).items():
            frame[f] = frame[f].mask(mask)
            note(f"{person}.{f}", mask, OVERSIZED)
        persons[person] = frame
        nf = normalise_identifiers(frame, mapping.source.date_formats)
        pos = {ix: i for i, ix in enumerate(frame.index)}
        # `nulled` (where the normaliser has it): values set aside on purpose, e.g. names on
        # the partnership's placeholder list; counted like any other field problem.
        for row, f, reason in [*nf.problems, *getattr(nf, "nulled", [])]:
            if f == "record_id":
                continue  # a row-level check, below
            st = fstat.setdefault(f"{person}.{f}", _status(n))
            if st[pos[row]] == OK:
                st[pos[row]] = reason
        norm[person] = nf.frame

    rid = norm[SUBJECT]["record_id"]
    ids = rid.dropna().to_numpy(dtype=object)
    dup = rid.duplicated().to_numpy().copy()
    dup[rid.notna().to_numpy()] |= seen.seen(ids)
    seen.add(ids)
    k = min_identifying(mapping)
    few = identifying_count(norm[SUBJECT]) < k
    status = pd.DataFrame(
        {
            ROW_STATUS[0]: np.where(
                rid.isna().to_numpy(), "missing", np.where(dup, "duplicate", OK)
            ),
            ROW_STATUS[1]: np.where(
                few, f"fewer than {k} identifying fields (the mapping's min_identifying_fields)", OK
            ),
        }
    ).astype("category")

    # Values nulled by a vocabulary or recode table (field -> mask), listed by line in the
    # bridge report: identifier codes first ("sex", "<slot>.relationship"), then payload.
    payload_nulled: dict[str, np.ndarray] = {
        k: np.asarray(m, dtype=bool) for k, m in unknown_codes.items()
    }
    payload = _payload(raw, mapping, policies, fstat, payload_nulled)
    checked = validator.check(status)
    good = np.ones(n, dtype=bool)
    good[sorted(checked.reasons)] = False
    reasons = checked.reasons
    # A quarantined row's reason also names its field problems: why it had too few fields.
    for pos in reasons:
        extra = [f"{name}: {st[pos]}" for name, st in sorted(fstat.items()) if st[pos] != OK]
        reasons[pos] = reasons[pos] + extra
    return CheckedChunk(persons, norm, payload, status, reasons, good, fstat, payload_nulled)


def parse_payload_dates(s: pd.Series, formats: tuple[str, ...]) -> tuple[pd.Series, np.ndarray]:
    """Payload dates in the mapping's formats, then day/month swapped where that is the only
    reading; (dates, mask of swapped values). No range check: event dates may lie ahead."""
    out = pd.Series(pd.NaT, index=s.index, dtype="datetime64[s]")
    swapped = np.zeros(len(s), dtype=bool)
    flipped = [
        f.replace("%d", "\0").replace("%m", "%d").replace("\0", "%m")
        for f in formats
        if "%d" in f and "%m" in f
    ]
    for fmts, is_swap in ((formats, False), (flipped, True)):
        for fmt in fmts:
            todo = out.isna() & s.notna()
            if not todo.any():
                break
            out[todo] = pd.to_datetime(s[todo], format=fmt, errors="coerce")
            if is_swap:
                swapped |= (todo & out.notna()).to_numpy()
    return out, swapped


def _payload(
    raw: pd.DataFrame,
    mapping: Mapping,
    policies: dict[str, PayloadPolicy],
    fstat: dict[str, np.ndarray],
    nulled: dict[str, np.ndarray],
) -> pd.DataFrame:
    """Typed payload columns; a value that does not fit its type or vocabulary (after the
    mapping's recodes) is nulled, its reason put in `fstat` and its position in `nulled`."""
    out: dict[str, pd.Series] = {}
    n = len(raw)
    for fname, src in mapping.payload_columns().items():
        pol = policies[fname]
        s = raw[src]
        key = f"payload.{fname}"
        st = _status(n)
        long = (s.str.len() > MAX_PAYLOAD_CHARS).fillna(False).to_numpy(dtype=bool)
        if long.any():
            s = s.mask(long)
            st[long] = OVERSIZED
        present = s.notna().to_numpy()
        if pol.type == "date":
            parsed, swapped = parse_payload_dates(s, mapping.source.date_formats)
            bad = present & parsed.isna().to_numpy()
            st[bad & (st == OK)] = "unparseable date (nulled)"
            st[swapped & (st == OK)] = SWAPPED
            out[fname] = parsed.dt.date
        elif pol.type == "number":
            num = pd.to_numeric(s.str.replace(",", "", regex=False), errors="coerce")
            bad = present & num.isna().to_numpy()
            st[bad] = "not a number (nulled)"
            out[fname] = num.astype("float64")
        elif pol.type == "boolean":
            b = s.str.lower().map(_BOOL)
            bad = present & b.isna().to_numpy()
            st[bad] = "not a yes/no value (nulled)"
            out[fname] = b.astype("boolean")
        elif pol.kind == "closed":
            v = closed_values(s, pol)
            bad = present & v.isna().to_numpy()
            st[bad] = "not in the vocabulary (nulled)"
            out[fname] = v
        else:  # scrubbed later, with the record's own identifiers at hand
            bad = np.zeros(n, dtype=bool)
            out[fname] = s.astype("string")
        bad = bad | long
        if bad.any():
            nulled[fname] = bad
        if (st != OK).any():
            fstat[key] = st
    return pd.DataFrame(out, index=raw.index)


def closed_values(s: pd.Series, pol: PayloadPolicy) -> pd.Series:
    """Each value in its vocabulary's spelling, or null. Resolved once per distinct value (a
    category column holds a handful), so a 1M-row extract pays for a factorize, not 1M folds."""
    codes, uniques = pd.factorize(s)
    resolved = np.empty(len(uniques) + 1, dtype=object)  # last slot: missing (code -1)
    for i, u in enumerate(uniques):
        word = " ".join(str(u).split())
        hit = pol.lookup.get(word.lower())
        if hit is None and pol.pattern is not None and pol.pattern.fullmatch(word):
            hit = word
        resolved[i] = hit
    return pd.Series(resolved[codes], index=s.index, dtype="string")
