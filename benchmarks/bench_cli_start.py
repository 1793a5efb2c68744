"""How fast `joinedup-bridge` starts, against a bare `python -c pass` in the same run.

    .venv/bin/python benchmarks/bench_cli_start.py --repeat 5
    .venv/bin/python benchmarks/bench_cli_start.py --source /tmp/older-checkout   # compare

For each command (`--help`, `keys init` on a fresh folder, and the imports `validate`/`run`
pay before reading a row) prints the median wall time over `--repeat` interleaved rounds and its
ratio to `python -c pass`, then the import time measured by `python -X importtime` (sum of the
top-level imports, which includes the interpreter's own site imports) and its ratio to the same
measure of `python -c pass`, and which heavy libraries each command loaded. The machine is
shared, so the ratios, not the seconds, are the figure. `--source` runs another checkout's code
(PYTHONPATH) with this interpreter, for a before/after comparison.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
HEAVY = (
    "great_expectations",
    "presidio_analyzer",
    "spacy",
    "pyspark",
    "pandas",
    "duckdb",
    "splink",
)
# What the console script `joinedup-bridge` runs (pyproject.toml [project.scripts]).
BRIDGE = (
    "import sys; from ig_bridge.cli import main; sys.argv[0] = 'joinedup-bridge'; sys.exit(main())"
)
LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)$")


def _env(source: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOINEDUP")}
    env["PYTHONPATH"] = str(source)
    return env


def commands(tmp: Path) -> dict[str, list[str]]:
    """name -> argv (after the interpreter). `keys init` gets a fresh folder each round."""
    n = len(list(tmp.iterdir()))
    return {
        "python -c pass (baseline)": ["-c", "pass"],
        "joinedup-bridge --help": ["-c", BRIDGE, "--help"],
        "joinedup-bridge keys init": [
            "-c",
            BRIDGE,
            "keys",
            "init",
            "--agency-dir",
            str(tmp / f"a{n}"),
            "--agency",
            "BENCH",
        ],
        "imports before validate/run read a row": ["-c", "import ig_bridge.split"],
    }


def wall(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    # cwd: an empty folder, since `python -c` puts the working directory first on sys.path
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, *argv],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    return time.perf_counter() - t


def import_profile(
    argv: list[str],
    env: dict[str, str],
    cwd: Path,
) -> tuple[float, list[str]]:
    """(seconds of imports by -X importtime, heavy top-level packages imported)."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", *argv],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    total, heavy = 0, set()
    for line in out.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        if not m.group(3):  # top level: its cumulative time includes everything it imported
            total += int(m.group(2))
        root = m.group(4).split(".")[0]
        if root in HEAVY:
            heavy.add(root)
    return total / 1e6, sorted(heavy)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--source", type=Path, default=ROOT, help="checkout whose code to time")
    a = p.parse_args(argv)
    env = _env(a.source.resolve())
    console = Console(width=150)
    with (
        tempfile.TemporaryDirectory(prefix="bench_cli_") as d,
        tempfile.TemporaryDirectory(prefix="bench_cli_cwd_") as cwd,
    ):
        tmp = Path(d)
        names = list(commands(tmp))
        times: dict[str, list[float]] = {n: [] for n in names}
        imports: dict[str, tuple[float, list[str]]] = {}
        for _ in range(a.repeat):  # interleaved: load on the shared machine hits all alike
            for name, args in commands(tmp).items():
                times[name].append(wall(args, env, Path(cwd)))
        for name, args in commands(tmp).items():
            imports[name] = import_profile(args, env, Path(cwd))
    base_wall = statistics.median(times[names[0]])
    base_imp = imports[names[0]][0]
    t = Table(title=f"joinedup-bridge start-up, {a.repeat} rounds, code from {a.source}")
    for c in (
        "command",
        "wall s (median)",
        "wall / python -c pass",
        "imports s",
        "imports / python -c pass",
        "heavy libraries loaded",
    ):
        t.add_column(c, justify="left" if c in ("command", "heavy libraries loaded") else "right")
    for name in names:
        w = statistics.median(times[name])
        imp, heavy = imports[name]
        t.add_row(
            name,
            f"{w:.2f}",
            f"{w / base_wall:.1f}x",
            f"{imp:.2f}",
            f"{imp / base_imp:.1f}x",
            ", ".join(heavy) or "-",
        )
    console.print(t)
    console.print(
        "wall ranges: " + "; ".join(f"{n}: {min(v):.2f}-{max(v):.2f} s" for n, v in times.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
