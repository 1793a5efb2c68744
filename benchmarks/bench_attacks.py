"""Attacks a curious hub can run on what it holds: measured re-identification.

    python benchmarks/bench_attacks.py --people 5000 --seed 7 [--run var/attacks/p5000]
                                       [--overlaps 0.25,0.5,1.0] [--no-graph] [--json out.json]

Plays the partnership once (synthetic population, keys, every agency's bridge, hub ingest),
then plays the hub: it reads the warehouse's identifiers and payload tables, holds plaintext
for a share of the same people (overlap) and public-style name tables, and runs
frequency alignment (every tok_/blk_ column), Bloom pattern mining and the graph matching
attack (every bf_ column), structure leaks (DOB-part tokens, tok_sex, school year group) and a
combined re-identification over the decoded quasi-identifiers. Each guess is scored against
ground truth (record_refs decrypted with each agency's own key: evaluation only).

Prints per attack and overlap the share of records and of distinct hub values correctly
re-identified, then `max re-identification: X%` (over every attack, 100% overlap).
Attack code: benchmarks/attacks/ (also run small in tests/test_attacks.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

from benchmarks.attacks.suite import Context, max_reidentification, run_suite  # noqa: E402

console = Console()
if not console.is_terminal:  # piped to a file: keep the column names whole
    console = Console(width=120)


def prepare(run: Path, people: int, seed: int) -> None:
    """A real bridge run + hub ingest (skipped when the run folder already has a warehouse)."""
    from benchmarks.attacks.data import bridge_and_ingest

    if (run / "hub" / "warehouse.duckdb").exists():
        console.print(f"reusing {run}")
        return
    bridge_and_ingest(run, people=people, seed=seed)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--people", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--run", type=Path, default=None, help="run folder (default var/attacks/...)")
    ap.add_argument("--overlaps", default="0.25,0.5,1.0")
    ap.add_argument("--no-graph", action="store_true", help="skip the graph matching attack")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = ap.parse_args(argv)
    run = args.run or ROOT / "var" / "attacks" / f"p{args.people}_s{args.seed}"
    overlaps = [float(x) for x in args.overlaps.split(",")]
    t0 = time.perf_counter()
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), TimeElapsedColumn(),
                  console=console) as bar:
        job = bar.add_task(f"bridge + ingest {args.people} people", total=None)
        prepare(run, args.people, args.seed)
        bar.update(job, description="loading the hub's warehouse")
        ctx = Context(run)
        results = run_suite(ctx, overlaps, seed=args.seed, graph=not args.no_graph,
                            step=lambda s: bar.update(job, description=s))
    table = Table(title=f"Attacks on the hub's holdings ({args.people} people, seed "
                        f"{args.seed}, encoding spec v{ctx.spec['encoding_spec_version']})")
    for c, j in (("attack", "left"), ("target", "left"), ("overlap", "left"),
                 ("records", "right"), ("distinct values", "right"), ("n rec/val", "right")):
        table.add_column(c, justify=j, no_wrap=True)  # type: ignore[arg-type]
    for r in sorted(results, key=lambda r: (r.attack, r.target, r.overlap)):
        style = "red" if r.records > 0.01 else ""
        table.add_row(r.attack, r.target, r.overlap, f"[{style}]{r.records:.1%}" if style
                      else f"{r.records:.1%}", f"{r.values:.1%}", f"{r.n_records}/{r.n_values}")
    console.print(table)
    for ov in overlaps:
        label = f"{round(ov * 100)}%"
        console.print(f"max at {label} overlap: {max_reidentification(results, label):.1%}")
        whole = [r.records for r in results if r.attack == "combined" and r.overlap == label]
        if whole:
            console.print(f"  whole records (combined quasi-identifiers) at {label}: "
                          f"{max(whole):.1%}")
    worst = max(results, key=lambda r: r.records)
    console.print(f"worst: {worst.attack} on {worst.target} ({worst.overlap}) "
                  f"in {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"people": args.people, "seed": args.seed,
                                         "encoding_spec_version": ctx.spec[
                                             "encoding_spec_version"],
                                         "results": [r.as_dict() for r in results]}, indent=1))
    top = max_reidentification(results, "100%" if 1.0 in overlaps else None)
    print(f"max re-identification: {top:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
