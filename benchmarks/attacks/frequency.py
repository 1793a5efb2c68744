"""Frequency alignment: rank the hub's token frequencies against the attacker's frequency table
(its plaintext reference set, or a public census-style table) and read off each token's value."""

from __future__ import annotations

import numpy as np
import pandas as pd


def align(hub_values: np.ndarray, table: pd.Series) -> dict[object, str]:
    """hub value -> plaintext, by rank: the i-th most frequent hub value is guessed to be the
    i-th most frequent plaintext of `table` (plaintext -> count or share)."""
    counts = pd.Series(hub_values, dtype=object).dropna().value_counts(sort=True)
    ranked = table.sort_values(ascending=False, kind="stable").index.tolist()
    return dict(zip(counts.index.tolist(), ranked, strict=False))


def reference_table(ref_values: np.ndarray) -> pd.Series:
    """Plaintext -> count in the attacker's reference set (one row per reference person)."""
    return pd.Series(ref_values, dtype=object).dropna().value_counts()


def guesses(hub_values: np.ndarray, mapping: dict[object, str]) -> np.ndarray:
    out = np.empty(len(hub_values), dtype=object)
    out[:] = [mapping.get(v) if v is not None and v == v else None for v in hub_values]
    return out
