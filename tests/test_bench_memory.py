"""Benchmark sides report their own peak memory, not the parent's (issue: every side of
bench_linkage printed the same 1.05 GB, the parent's size at fork)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, resource, sys
sys.path.insert(0, "benchmarks")
from peak_memory import peak_rss_kib
print(json.dumps({"own": peak_rss_kib(), "ru_maxrss": resource.getrusage(
    resource.RUSAGE_SELF).ru_maxrss}))
"""


def test_child_peak_is_its_own_not_the_parents() -> None:
    ballast = bytearray(400 * 1024 * 1024)  # the parent holds 400 MiB when it forks
    ballast[::4096] = b"x" * len(ballast[::4096])
    out = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=ROOT, check=True, capture_output=True, text=True
    )
    got = json.loads(out.stdout)
    del ballast
    assert got["ru_maxrss"] > 350 * 1024  # what the old figure would have said
    assert got["own"] < 150 * 1024  # a bare interpreter's own peak
