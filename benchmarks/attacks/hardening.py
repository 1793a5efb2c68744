"""Prototype hardenings, applied to what the hub holds so that the attacks can measure them
before any spec change (issue 16, phase 2). Not for production encoding: the bridge would
derive the diffusion layer from its HKDF subkey (ig_bridge/encoding.py), not numpy's RNG."""

from __future__ import annotations

import hashlib

import numpy as np
from scipy.stats import rankdata


def diffuse(bits: np.ndarray, t: int, secret: bytes, out_bits: int | None = None) -> np.ndarray:
    """Diffusion layer (Armknecht, Heng, Schnell, PoPETs 2023): output bit j is the XOR of t
    secret, randomly chosen input bits. (n, m) bool -> (n, out_bits) bool."""
    m = bits.shape[1]
    out_bits = out_bits or m
    seed = int.from_bytes(hashlib.sha256(secret + t.to_bytes(2, "big")).digest()[:8], "big")
    rng = np.random.default_rng(seed)
    taps = np.stack([rng.choice(m, size=t, replace=False) for _ in range(out_bits)])
    out = np.zeros((bits.shape[0], out_bits), dtype=bool)
    for i in range(t):
        out ^= bits[:, taps[:, i]]
    return out


def pair_separation(
    bits: np.ndarray,
    null: np.ndarray,
    person: np.ndarray,
    *,
    hamming: bool,
    seed: int = 0,
    n_neg: int = 200_000,
) -> dict[str, float]:
    """Quality proxy for one encoding: similarity of true pairs (two records of one person)
    against random pairs: the AUC (ties count half; random pairs often share a common name
    exactly, so a recall at a fixed false-positive rate says little per field)."""
    rng = np.random.default_rng(seed)
    ok = np.flatnonzero(~null & (person >= 0))
    p = person[ok]
    order = np.argsort(p, kind="stable")
    ps = p[order]
    same = np.flatnonzero(ps[1:] == ps[:-1])
    pos_i, pos_j = ok[order[same]], ok[order[same + 1]]
    neg_i, neg_j = rng.choice(ok, n_neg), rng.choice(ok, n_neg)
    keep = person[neg_i] != person[neg_j]
    neg_i, neg_j = neg_i[keep], neg_j[keep]
    x = bits.astype(np.float32)
    pc = x.sum(axis=1)

    def sim(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        inter = (x[i] * x[j]).sum(axis=1)
        if hamming:
            return 1.0 - (pc[i] + pc[j] - 2 * inter) / x.shape[1]
        d = pc[i] + pc[j]
        return np.where(d > 0, 2 * inter / np.maximum(d, 1), 0.0)

    sp_, sn = sim(pos_i, pos_j), sim(neg_i, neg_j)
    ranks = rankdata(np.concatenate([sp_, sn]))
    auc = (ranks[: len(sp_)].sum() - len(sp_) * (len(sp_) + 1) / 2) / (len(sp_) * len(sn))
    return {"auc": float(auc), "true_pairs": float(len(sp_))}
