"""Frequency alignment: rank the hub's token frequencies against the attacker's frequency table
(its plaintext reference set, or a public census-style table) and read off each token's value."""

from __future__ import annotations

import numpy as np
import pandas as pd


def align(hub_values: np.ndarray, table: pd.Series, seed: int = 0) -> dict[object, str]:
    """hub value -> plaintext, by rank: the i-th most frequent hub value is guessed to be the
    i-th most frequent plaintext of `table` (plaintext -> count or share).

    Values of equal frequency carry nothing to tell them apart, so the attacker orders each tie
    at random (seeded) on both sides. Keeping the tables' storage order instead scored chance
    alignments of that order: on a column of 575 all-distinct values (every count 1) it
    "decoded" 6 records, where a random order expects one."""
    rng = np.random.default_rng(seed)
    counts = pd.Series(hub_values, dtype=object).dropna().value_counts(sort=False)
    counts = counts.iloc[rng.permutation(len(counts))].sort_values(ascending=False, kind="stable")
    table = table.iloc[rng.permutation(len(table))]
    ranked = table.sort_values(ascending=False, kind="stable").index.tolist()
    return dict(zip(counts.index.tolist(), ranked, strict=False))


def reference_table(ref_values: np.ndarray) -> pd.Series:
    """Plaintext -> count in the attacker's reference set (one row per reference person)."""
    return pd.Series(ref_values, dtype=object).dropna().value_counts()


def guesses(hub_values: np.ndarray, mapping: dict[object, str]) -> np.ndarray:
    out = np.empty(len(hub_values), dtype=object)
    out[:] = [mapping.get(v) if v is not None and v == v else None for v in hub_values]
    return out
