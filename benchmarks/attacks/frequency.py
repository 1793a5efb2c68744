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


def _rank_blocks(counts: pd.Series) -> pd.DataFrame:
    """Per distinct value: where its tie block of equal counts starts in a descending ranking,
    and how many values share it."""
    per_count = counts.value_counts().sort_index(ascending=False)  # values sharing each count
    # values with a larger count rank before this block
    larger = per_count.cumsum().shift(fill_value=0)
    return pd.DataFrame(
        {
            "start": counts.map(larger).astype(np.int64),
            "size": counts.map(per_count).astype(np.int64),
        }
    )


def hit_probability(hub_values: np.ndarray, table: pd.Series, truth: np.ndarray) -> np.ndarray:
    """Per record, the chance that `align` (ties ordered at random on both sides) maps its hub
    value to its true plaintext: over the attacker's coin flips, a value at one of `a` tied
    hub ranks meets its plaintext at one of `b` tied table ranks with probability
    shared ranks / (a * b). Scoring this expectation instead of one draw keeps a measured
    share from moving with the tie order alone (fresh keys reorder the hub's values)."""
    hv = pd.Series(hub_values, dtype=object)
    counts = hv.dropna().value_counts()
    if counts.empty or table.empty:
        return np.zeros(len(hv))
    hub = _rank_blocks(counts)
    ref = _rank_blocks(table.sort_values(ascending=False))
    h = hub.reindex(hv.to_numpy())
    r = ref.reindex(pd.Series(truth, dtype=object).to_numpy())
    a0, a1 = h["start"].to_numpy(float), (h["start"] + h["size"]).to_numpy(float)
    b0, b1 = r["start"].to_numpy(float), (r["start"] + r["size"]).to_numpy(float)
    shared = np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0, None)
    p = shared / (h["size"].to_numpy(float) * r["size"].to_numpy(float))
    return np.nan_to_num(p, nan=0.0)
