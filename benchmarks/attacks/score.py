"""Scoring: the share of records and of distinct hub values an attack re-identified correctly."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class AttackResult:
    attack: str  # e.g. "frequency", "graph", "pattern", "structure", "combined"
    target: str  # the hub column(s) attacked
    overlap: str  # "25%" / "50%" / "100%" / "public"
    records: float  # share of attackable records whose plaintext was recovered
    values: float  # share of distinct hub values decoded to their true plaintext
    n_records: int
    n_values: int
    # Attacks whose classes are large (salt chaining) score a blind guess too: the commonest
    # names for the biggest classes. `records` is then what they re-identified beyond the
    # larger of `chance` (the same class sizes, members drawn at random) and `linked` (the
    # same alignment on the classes the hub's record links give with no name value at all:
    # what linking records tells whatever the names' encoding); `raw` is before subtracting.
    chance: float | None = None
    raw: float | None = None
    linked: float | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def score(
    attack: str,
    target: str,
    overlap: str,
    hub_values: np.ndarray,
    guesses: np.ndarray,
    truth: np.ndarray,
    attackable: np.ndarray,
    probability: np.ndarray | None = None,
) -> AttackResult:
    """hub_values: the hub's value per record (token / Bloom bytes; None = missing);
    guesses: the attacker's plaintext guess per record (None = no guess); truth: the true
    plaintext per record (None = unknown). Records count when the hub holds a value, the truth
    is known and `attackable` (the person is in the attacker's reference set). `probability`
    (per record, the chance the attack's guess is right) scores an attack's expectation over
    its own coin flips instead of the one draw in `guesses`."""
    hv = pd.Series(hub_values, dtype=object)
    ok = hv.notna().to_numpy() & pd.notna(truth) & attackable
    n = int(ok.sum())
    if not n:
        return AttackResult(attack, target, overlap, 0.0, 0.0, 0, 0)
    g, t = guesses[ok], truth[ok]
    if probability is None:
        hit = np.array([a is not None and a == b for a, b in zip(g, t, strict=True)], dtype=float)
    else:
        hit = probability[ok].astype(float)
    # A distinct value counts as decoded when the guess equals the plaintext most of its
    # records carry (corrupted variants of a name are values of their own).
    df = pd.DataFrame({"v": hv[ok].to_numpy(), "t": t, "p": hit})
    # (counted per (value, plaintext) at once: a value_counts per value took minutes)
    counts = df.groupby(["v", "t"], sort=False).size()
    top = counts[counts == counts.groupby(level=0, sort=False).transform("max")]
    top = top[~top.index.get_level_values(0).duplicated()]  # ties: first plaintext seen
    mode = pd.Series(top.index.get_level_values(1), index=top.index.get_level_values(0))
    # a record carrying its value's mode plaintext: hit when the value is decoded
    p_of = df.drop_duplicates(["v", "t"]).set_index(["v", "t"])["p"]
    vhit = p_of.reindex(pd.MultiIndex.from_arrays([mode.index, mode.to_numpy()])).to_numpy()
    return AttackResult(
        attack, target, overlap, float(hit.mean()), float(vhit.mean()), n, len(mode)
    )
