"""Bridge crypto cost: normalise + encode N rows vs a bare HMAC-SHA256 loop over as many digests.

Prints ratios against the baseline measured in the same run (target: encode <= 2x baseline).
Usage: python benchmarks/bench_bridge_crypto.py [rows]
"""

from __future__ import annotations

import hmac
import os
import sys
import time

import numpy as np
import pandas as pd
from rich.console import Console

from ig_bridge.encoding import Encoder
from ig_bridge.keys import generate_link_key
from ig_bridge.normalise import normalise_identifiers


def synthetic(n: int, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    given = np.array(
        [
            "Oliver",
            "Amelia",
            "Jack",
            "Isla",
            "Harry",
            "Ava",
            "Zoë",
            "Łukasz",
            "Mohammed",
            "Katie",
            "Bill",
            "Peggy",
        ]
        + [f"Name{i}" for i in range(3000)]
    )
    family = np.array(
        ["Smith", "Jones", "Taylor", "Brown", "O'Neil", "Smith-Jones"]
        + [f"Fam{i}" for i in range(20000)]
    )
    streets = np.array([f"{i} {s}" for s in ("High St", "Mill Rd") for i in range(1, 300)])
    days = rng.integers(0, 365 * 18, n)
    dob = (pd.Timestamp("2006-01-01") + pd.to_timedelta(days, unit="D")).strftime("%d/%m/%Y")
    sectors = [f"M{d} {s}" for d in range(1, 40) for s in range(10)]
    return pd.DataFrame(
        {
            "record_id": [f"R{i}" for i in range(n)],
            "given_name": rng.choice(given, n),
            "family_name": rng.choice(family, n),
            "date_of_birth": dob,
            "sex": rng.choice(["M", "F", "U"], n),
            "postcode": [
                f"{rng.choice(sectors)}{a}{b}"
                for a, b in zip(
                    rng.choice(list("ABDEFGHJ"), n), rng.choice(list("ABDEFGHJ"), n), strict=True
                )
            ],
            "address_line_1": rng.choice(streets, n),
            "nhs_number": None,
        }
    )


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    console = Console()
    with console.status(f"building {n} synthetic rows"):
        raw = synthetic(n)
    enc = Encoder(generate_link_key())
    with console.status("normalising"):
        t0 = time.perf_counter()
        frame = normalise_identifiers(raw.drop(columns=["record_id"]), ["%d/%m/%Y"]).frame
        t_norm = time.perf_counter() - t0
    with console.status("encoding"):
        t0 = time.perf_counter()
        out = enc.encode(frame)
        t_enc = time.perf_counter() - t0
    cells = int(out.filter(regex="^(tok|blk)_").notna().to_numpy().sum())
    bf_rows = int(out.filter(regex="^bf_").notna().to_numpy().sum())
    digests = cells + bf_rows  # at least one digest per Bloom cell
    key = os.urandom(32)
    msgs = [f"value-{i % 50000}".encode() for i in range(digests)]
    with console.status(f"baseline: {digests} bare HMAC-SHA256 digests"):
        t0 = time.perf_counter()
        digest = hmac.digest
        for m in msgs:
            digest(key, m, "sha256")
        t_base = time.perf_counter() - t0
    console.print(f"rows={n} token cells={cells} bloom cells={bf_rows} baseline digests={digests}")
    console.print(f"encode / bare HMAC loop          = {t_enc / t_base:.2f}x  (target <= 2)")
    console.print(f"normalise+encode / bare HMAC loop = {(t_norm + t_enc) / t_base:.2f}x")
    console.print(f"normalise / encode                = {t_norm / t_enc:.2f}x")


if __name__ == "__main__":
    main()
