"""Generation time and peak memory of synthetic_data for 100k and 1M people.

Each size runs in a fresh subprocess; its VmHWM (benchmarks/peak_memory.py) is that run's
peak alone. Figures are printed as ratios against a 10k-person baseline measured in the same
run (machines differ; ratios travel).
Usage: python benchmarks/bench_synthetic.py [--people 100000 1000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

CHILD = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, "benchmarks")
from peak_memory import peak_rss_kib
from synthetic_data.generate import generate_population
t0 = time.perf_counter()
s = generate_population(Path(sys.argv[1]), seed=7, people=int(sys.argv[2]))
secs = time.perf_counter() - t0
peak = peak_rss_kib() / 1024  # this process's own high-water mark, MiB
recs = sum(a.records for a in s.agencies.values())
print(json.dumps({"seconds": secs, "peak_mib": peak, "records": recs}))
"""


def run(people: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(Path(tmp) / "pop"), str(people)],
            check=True,
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--people", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--baseline", type=int, default=10_000)
    args = ap.parse_args()
    console = Console()
    base = run(args.baseline)
    table = Table(title=f"synthetic_data generation (baseline {args.baseline:,} people)")
    for c in (
        "people",
        "records",
        "seconds",
        "x baseline time",
        "s per 100k people",
        "peak MiB",
        "x baseline peak",
    ):
        table.add_column(c, justify="right")
    for n in [args.baseline, *args.people]:
        r = base if n == args.baseline else run(n)
        table.add_row(
            f"{n:,}",
            f"{r['records']:,}",
            f"{r['seconds']:.1f}",
            f"{r['seconds'] / base['seconds']:.1f}",
            f"{r['seconds'] / n * 100_000:.1f}",
            f"{r['peak_mib']:.0f}",
            f"{r['peak_mib'] / base['peak_mib']:.1f}",
        )
        console.print(f"done {n:,}: {r['seconds']:.1f}s, peak {r['peak_mib']:.0f} MiB")
    console.print(table)


if __name__ == "__main__":
    main()
