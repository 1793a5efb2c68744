"""joinedup-synth: generate a synthetic population, or (re)write the agency mapping files."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from synthetic_data.corruption import CorruptionRates
from synthetic_data.generate import generate_population
from synthetic_data.mappings import write_mappings
from synthetic_data.messy import PROFILES


def _rates(path: str | None) -> CorruptionRates:
    if path is None:
        return CorruptionRates()
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return CorruptionRates.from_dict(data)
    except (OSError, ValueError, TypeError) as exc:
        raise SystemExit(f"error: --rates {path}: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="joinedup-synth", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write extracts and ground truth for a population")
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument("--people", type=int, default=5000)
    gen.add_argument("--out", type=Path, default=Path("var/pop"))
    gen.add_argument("--rates", help="JSON file of corruption rates overriding the defaults")
    gen.add_argument(
        "--profile",
        choices=PROFILES,
        default="default",
        help="messy: real exports' errors at documented rates (flats, care homes, "
        "placeholder names, copied identifiers...)",
    )
    maps = sub.add_parser("mappings", help="write schemas/agencies/<code>.yaml from the specs")
    maps.add_argument("--out", type=Path, default=Path("schemas/agencies"))
    args = parser.parse_args(argv)
    console = Console(stderr=True)

    if args.command == "mappings":
        for p in write_mappings(args.out):
            console.print(f"wrote {p}")
        return 0

    t0 = time.perf_counter()
    try:
        s = generate_population(
            args.out,
            args.seed,
            args.people,
            _rates(args.rates) if args.rates else None,
            progress=True,
            profile=args.profile,
        )
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    table = Table(
        title=f"population seed={s.seed} people={s.people:,} "
        f"households={s.households:,} in {time.perf_counter() - t0:.1f}s"
    )
    for col in ("agency", "records", "people", "file", "format", "encoding", "bytes"):
        table.add_column(col, justify="right" if col in ("records", "people", "bytes") else "left")
    for a in s.agencies.values():
        table.add_row(
            a.code,
            f"{a.records:,}",
            f"{a.people:,}",
            a.file,
            a.file_format,
            a.encoding or "-",
            f"{a.bytes:,}",
        )
    Console().print(table)
    console.print(f"ground truth: {', '.join(s.ground_truth)} under {s.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
