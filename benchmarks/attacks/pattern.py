"""Bloom-filter pattern mining (after Christen, Schnell, Vatsalan, Ranbaduge: PAKDD 2017, and
Christen, Ranbaduge, Vatsalan, Schnell 2018): own code, written from the papers.

The most frequent q-gram of the plaintext reference sets its k bit positions in (at least) the
filters of every value containing it, so the set of k positions that are set together in the
most filters is taken to be that q-gram's; the filters holding all k positions contain it. Going
down the q-grams by frequency gives each filter a vector of "contains q-gram g" bits, and a
filter is re-identified when exactly one reference value has the nearest vector.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.attacks.graph import qgram_matrix


def mine_positions(bits: np.ndarray, weight: np.ndarray, k: int, n_grams: int) -> list[np.ndarray]:
    """The k positions set together in the most filters, then the next k among the positions
    left, ... (greedy frequent itemsets): the i-th set is taken for the i-th most frequent
    q-gram. Exact for the first q-gram on unfolded filters; later sets mix q-grams (no
    conditional re-mining), so this is a lower bound on the published attack's power."""
    w = weight.astype(np.float64)
    # float64 once (a bool matrix in `@` is converted on every product); the support sums only
    # the filters still in S, which shrinks fast.
    dense = np.asarray(bits, dtype=np.float64)
    used = np.zeros(bits.shape[1], dtype=bool)
    out = []
    for _ in range(n_grams):
        s = np.ones(len(bits), dtype=bool)
        picked = []
        for _ in range(k):
            support = w[s] @ dense[s]  # weighted count of filters in S with each position set
            support[used] = -1.0
            p = int(np.argmax(support))
            if support[p] <= 0:
                break
            used[p] = True
            picked.append(p)
            s &= bits[:, p]
        out.append(np.array(picked, dtype=np.int64))
    return out


def pattern_mining(
    enc_bits: np.ndarray,
    enc_weight: np.ndarray,
    plain_values: list[str],
    plain_weight: np.ndarray,
    col: dict[str, Any],
    *,
    top: int = 30,
    max_distance: int = 2,
) -> dict[int, str]:
    """enc_bits: (u, m) distinct hub filters with their record counts; plain_values: distinct
    reference values with counts. Returns filter row -> plaintext for unique decodings."""
    k = int(col["k"])
    r = qgram_matrix(plain_values, col).tocsc()
    freq = np.asarray(r.multiply(plain_weight[:, None]).sum(axis=0)).ravel()
    order = np.argsort(-freq, kind="stable")[:top]
    positions = mine_positions(enc_bits, enc_weight, k, len(order))
    has = np.column_stack([enc_bits[:, p].all(axis=1) for p in positions])
    ref = r[:, order].toarray() > 0
    # Nearest reference pattern (Hamming over the mined q-grams), kept when it is the unique
    # nearest and close: a few mis-mined q-grams must not hide every filter.
    out: dict[int, str] = {}
    rf = ref.astype(np.float32)
    for lo in range(0, len(has), 4096):
        h = has[lo : lo + 4096].astype(np.float32)
        dist = h.sum(1)[:, None] + rf.sum(1)[None, :] - 2.0 * (h @ rf.T)
        best = dist.argmin(axis=1)
        dmin = dist[np.arange(len(h)), best]
        ties = (dist == dmin[:, None]).sum(axis=1)
        for i in np.flatnonzero((ties == 1) & (dmin <= max_distance)):
            out[lo + int(i)] = plain_values[int(best[i])]
    return out
