"""Graph matching attack on Bloom-filter encodings (after Vidanage, Christen, Ranbaduge and
Schnell, CIKM 2020): own code, written from the paper.

The hub builds a similarity graph over the distinct Bloom encodings it holds (Dice of bit
vectors); the attacker builds one over its plaintext reference values (Dice of the same q-gram
sets the public spec prescribes). Similarities are calibrated between the two graphs by quantile
mapping (both thresholded at the same share of pairs), every node gets structural features
(degree, similarity histogram, neighbourhood degrees, clustering, own size), features are
rank-normalised within each graph, and a minimum-cost bipartite matching of feature vectors
(scipy linear_sum_assignment, or greedy when too large) maps encodings to plaintext values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from scipy.stats import rankdata

SEP = "\x1f"
SALT = "\x1e"  # benchmarks.attacks.data.SALT
N_BINS = 5
LSA_MAX = 7000  # larger graphs: greedy matching (LSA time grows ~ n^3)


def qgram_matrix(values: list[str], col: dict[str, Any]) -> sp.csr_matrix:
    """Rows: values (SEP-joined sources), columns: (source, q-gram) as the bridge forms them."""
    q, compact = int(col["q"]), bool(col.get("compact"))
    vocab: dict[tuple[int, str], int] = {}
    rows, cols = [], []
    for r, v in enumerate(values):
        grams: set[tuple[int, str]] = set()
        # A salted encoding's q-grams are hashed with the salt: the same q-gram under two
        # salts is two unrelated features (the attacker knows the public spec).
        v, _, salt = v.partition(SALT)
        for i, part in enumerate(v.split(SEP)):
            words = part.split()
            if compact and words:
                words = ["".join(words)]
            for w in words:
                p = f"_{w}_"
                grams.update((i, salt + p[j : j + q]) for j in range(max(1, len(p) - q + 1)))
        for g in grams:
            rows.append(r)
            cols.append(vocab.setdefault(g, len(vocab)))
    data = np.ones(len(rows), dtype=np.float32)
    return sp.csr_matrix((data, (rows, cols)), shape=(len(values), max(1, len(vocab))))


def _sim(inter: np.ndarray, si: np.ndarray, sj: np.ndarray, width: int | None) -> np.ndarray:
    """Dice of two sets (width None), or Hamming similarity of two width-bit vectors (for
    encodings whose density carries no meaning, e.g. after a diffusion layer)."""
    denom = si + sj
    if width:
        return 1.0 - (denom - 2.0 * inter) / width
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2.0 * inter / denom, 0.0)


def _dice_block(
    x: Any, allx: Any, sizes: np.ndarray, lo: int, hi: int, width: int | None = None
) -> np.ndarray:
    inter = x[lo:hi] @ allx.T
    inter = inter.toarray() if sp.issparse(inter) else np.asarray(inter)
    return _sim(inter, sizes[lo:hi, None], sizes[None, :], width).astype(np.float32)


def _sample_sims(
    x: Any, sizes: np.ndarray, rng: np.random.Generator, n: int, width: int | None = None
) -> np.ndarray:
    m = x.shape[0]
    i, j = rng.integers(0, m, n), rng.integers(0, m, n)
    keep = i != j
    i, j = i[keep], j[keep]
    if sp.issparse(x):
        inter = np.asarray(x[i].multiply(x[j]).sum(axis=1)).ravel()
    else:  # in slices: 200,000 dense rows of a 1,024-bit filter twice would be 1.6 GB
        inter = np.concatenate(
            [
                (x[i[lo : lo + 8192]] * x[j[lo : lo + 8192]]).sum(axis=1)
                for lo in range(0, len(i), 8192)
            ]
            or [np.zeros(0, dtype=np.float32)]
        )
    return _sim(inter, sizes[i], sizes[j], width)


def similarity_graph(
    x: Any,
    threshold: float,
    calibrate: Callable[[np.ndarray], np.ndarray],
    width: int | None = None,
) -> sp.csr_matrix:
    """Symmetric graph of pairs with Dice >= threshold, edge weight = calibrated similarity."""
    sizes = np.asarray(x.sum(axis=1)).ravel().astype(np.float32)
    n = x.shape[0]
    block = max(64, min(1024, 20_000_000 // max(n, 1)))
    rows, cols, vals = [], [], []
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        d = _dice_block(x, x, sizes, lo, hi, width)
        d[np.arange(hi - lo), np.arange(lo, hi)] = 0.0
        r, c = np.nonzero(d >= threshold)
        rows.append(r + lo)
        cols.append(c)
        vals.append(calibrate(d[r, c]))
    g = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )
    return g


def node_features(g: sp.csr_matrix, own_size: np.ndarray, lo: float) -> np.ndarray:
    """Structural features per node, rank-normalised within the graph (so graphs of different
    sizes and similarity scales compare)."""
    n = g.shape[0]
    a = (g > 0).astype(np.float32).tocsr()
    deg = np.asarray(a.sum(axis=1)).ravel()
    strength = np.asarray(g.sum(axis=1)).ravel()
    mx = np.asarray(g.max(axis=1).todense()).ravel()
    mean = np.divide(strength, deg, out=np.zeros(n), where=deg > 0)
    edges = np.linspace(lo, 1.0 + 1e-6, N_BINS + 1)
    hist = np.zeros((n, N_BINS))
    coo = g.tocoo()
    b = np.clip(np.searchsorted(edges, coo.data, side="right") - 1, 0, N_BINS - 1)
    np.add.at(hist, (coo.row, b), 1.0)
    nbr_deg = np.asarray(a @ deg).ravel()
    nbr_mean = np.divide(nbr_deg, deg, out=np.zeros(n), where=deg > 0)
    nbr_max = np.asarray(a.multiply(deg[None, :]).max(axis=1).todense()).ravel()
    tri = np.asarray((a @ a).multiply(a).sum(axis=1)).ravel() / 2.0
    poss = deg * (deg - 1) / 2.0
    clust = np.divide(tri, poss, out=np.zeros(n), where=poss > 0)
    two_hop = np.asarray(((a @ a) > 0).sum(axis=1)).ravel()
    feats = np.column_stack(
        [deg, strength, mx, mean, hist, nbr_mean, nbr_max, clust, two_hop, own_size]
    )
    return np.column_stack([rankdata(f) / n for f in feats.T])


def match(fe: np.ndarray, fp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(encoded node, plaintext node) pairs, minimum total feature distance, one-to-one."""
    if max(len(fe), len(fp)) <= LSA_MAX:
        cost = cdist(fe, fp)
        r, c = linear_sum_assignment(cost)
        return r, c
    # Greedy: each encoded node's nearest plaintext node, most confident first, one-to-one.
    best = np.empty(len(fe), dtype=np.int64)
    dist = np.empty(len(fe))
    for lo in range(0, len(fe), 2048):
        d = cdist(fe[lo : lo + 2048], fp)
        best[lo : lo + 2048] = d.argmin(axis=1)
        dist[lo : lo + 2048] = d.min(axis=1)
    taken = np.zeros(len(fp), dtype=bool)
    rows, cols = [], []
    for i in np.argsort(dist, kind="stable"):
        if not taken[best[i]]:
            taken[best[i]] = True
            rows.append(i)
            cols.append(best[i])
    return np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64)


def graph_attack(
    enc_bits: np.ndarray,
    plain_values: list[str],
    col: dict[str, Any],
    *,
    mean_degree: float = 20.0,
    seed: int = 0,
    hamming: bool = False,
) -> dict[int, str]:
    """enc_bits: (n_enc, bits) bool, one row per distinct encoding the hub holds;
    plain_values: distinct plaintext reference values. Returns encoded row -> plaintext.
    hamming: compare encodings by Hamming similarity instead of Dice."""
    width = enc_bits.shape[1] if hamming else None
    rng = np.random.default_rng(seed)
    xe = enc_bits.astype(np.float32)
    xp = qgram_matrix(plain_values, col)
    se = xe.sum(axis=1)
    spl = np.asarray(xp.sum(axis=1)).ravel().astype(np.float32)
    npairs = 200_000
    sim_e = _sample_sims(xe, se, rng, npairs, width)
    sim_p = _sample_sims(xp, spl, rng, npairs)
    # Same share of pairs above the threshold in both graphs: the quantile calibration.
    share = min(0.5, mean_degree / max(len(plain_values), 2))
    qs = np.linspace(0.0, 1.0, 201)
    qe, qp = np.quantile(sim_e, qs), np.quantile(sim_p, qs)
    te, tp = float(np.quantile(sim_e, 1 - share)), float(np.quantile(sim_p, 1 - share))
    te, tp = max(te, 1e-6), max(tp, 1e-6)
    ge = similarity_graph(xe, te, lambda s: np.interp(s, qe, qp).astype(np.float32), width)
    gp = similarity_graph(xp, tp, lambda s: s.astype(np.float32))
    fe = node_features(ge, se, tp)
    fp = node_features(gp, spl, tp)
    r, c = match(fe, fp)
    return {int(i): plain_values[int(j)] for i, j in zip(r, c, strict=True)}
