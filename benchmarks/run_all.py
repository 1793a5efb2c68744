"""Every benchmark once, at sizes that finish in minutes on a 2-core machine (`make bench`).

Each script prints its own table of ratios measured in the same run; run a script directly
for the large sizes (e.g. `python benchmarks/bench_linkage.py --sizes 100000,1000000`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rich.console import Console

HERE = Path(__file__).resolve().parent

RUNS: list[list[str]] = [
    ["bench_bridge_crypto.py"],
    ["bench_synthetic.py", "--people", "100000"],
    ["bench_bridge.py", "--rows", "100000"],
    ["bench_linkage.py", "--sizes", "100000"],
    ["evaluate_linkage.py"],
]


def main() -> int:
    console = Console()
    failed = []
    for script, *args in RUNS:
        console.rule(f"{script} {' '.join(args)}")
        if subprocess.run([sys.executable, str(HERE / script), *args], check=False).returncode:
            failed.append(script)
    if failed:
        console.print(f"[red]failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
