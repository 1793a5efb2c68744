"""Value recoding of identifier columns (a mapping's `recode` tables), before normalisation.

A real export holds codes ("1"/"2"/"9" for sex, "01".."12" for a relationship); the mapping
says what each means. A value listed in the table (or already a canonical value) is replaced
by its canonical value; any other value is nulled and counted for the report (never shown): the
row goes on with its other fields, as a payload value outside its vocabulary does.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from schemas.mapping import SUBJECT, Mapping, fold_code


def _text(v: object) -> str | None:
    if v is None or (not isinstance(v, str) and pd.isna(v)):  # type: ignore[arg-type]
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)  # a code column read as numbers: 1.0 -> "1"
    s = str(v).strip()
    return s or None


def recode_identifiers(
    raw: pd.DataFrame, mapping: Mapping
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """(raw with recoded columns, report key -> mask of rows whose code was unknown and nulled).
    Report keys are the canonical field (`sex`) for the subject, `<slot>.<field>` otherwise."""
    tables = mapping.identifier_recodes()
    if not tables:
        return raw, {}
    out = raw.copy()
    unknown: dict[str, np.ndarray] = {}
    for src, col in tables.items():
        lookup = col.recode_lookup()
        codes, uniques = pd.factorize(raw[src], use_na_sentinel=True)
        resolved = np.empty(len(uniques) + 1, dtype=object)
        bad_u = np.zeros(len(uniques) + 1, dtype=bool)
        for i, u in enumerate(uniques):
            text = _text(u)
            if text is None:
                resolved[i] = None
                continue
            key = fold_code(text)
            if key in lookup:
                resolved[i] = lookup[key]
            else:
                resolved[i], bad_u[i] = None, True
        resolved[-1] = None
        out[src] = pd.Series(resolved[codes], index=raw.index, dtype=object)
        bad = bad_u[codes]
        if bad.any():
            key = col.field if col.person == SUBJECT else f"{col.person}.{col.field}"
            unknown[str(key)] = bad
    return out, unknown
