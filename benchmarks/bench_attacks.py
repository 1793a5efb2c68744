"""Attacks a curious hub can run on what it holds: measured re-identification.

    python benchmarks/bench_attacks.py --people 5000 --seed 7 [--run var/attacks/p5000]
                                       [--overlaps 0.25,0.5,1.0] [--no-graph] [--json out.json]

Plays the partnership once (synthetic population, keys, every agency's bridge, hub ingest),
then plays the hub: it reads the warehouse's identifiers and payload tables, holds plaintext
for a share of the same people (overlap) and public-style name tables, and runs
frequency alignment (every tok_/blk_ column), Bloom pattern mining and the graph matching
attack (every bf_ column), structure leaks (DOB-part tokens, tok_sex, school year group), salt
chaining (every name column salted by the DOB, its values merged through the records that
carry them and every column that joins records without a DOB, scored beyond the blind guess
of the commonest names for the biggest classes: benchmarks/attacks/chaining.py) and a
combined re-identification over the decoded quasi-identifiers. Each guess is scored against
ground truth (record_refs decrypted with each agency's own key: evaluation only).

Prints per attack and overlap the share of records and of distinct hub values correctly
re-identified (frequency alignment: the expectation over the attacker's random tie orders) on
the current spec, beside the same attack on the old spec (v2, kept in benchmarks/attacks/specs/;
`--no-baseline` skips it), then `max re-identification: X.XX%`
(over every attack on the current spec, 100% overlap). Figures carry two decimals so a share
is checked against the 1% target as measured, not after rounding (1.04% is not 1.0%).
Attack code: benchmarks/attacks/ (also run small in tests/test_attacks.py).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

from benchmarks.attacks.score import AttackResult  # noqa: E402
from benchmarks.attacks.suite import Context, max_reidentification, run_suite  # noqa: E402

console = Console()
if not console.is_terminal:  # piped to a file: keep the column names whole
    console = Console(width=120)


BASELINE_SPEC = ROOT / "benchmarks" / "attacks" / "specs" / "encoding_spec_v2.yaml"


def _columns_held(warehouse: Path) -> set[str]:
    """The token, blocking-key and Bloom columns of a warehouse's identifiers table."""
    import duckdb

    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        cols = [r[0] for r in con.execute("DESCRIBE identifiers").fetchall()]
    finally:
        con.close()
    return {c for c in cols if c.startswith(("tok_", "blk_", "bf_", "flag_"))}


def prepare(run: Path, people: int, seed: int, spec: Path | None = None) -> None:
    """A real bridge run + hub ingest (skipped when the run folder already has a warehouse),
    every bridge and the hub on `spec` (default: the packaged spec)."""
    import os

    from benchmarks.attacks.data import bridge_and_ingest
    from ig_bridge.encoding import SPEC_ENV, load_encoding_spec
    from linkage.config import EncodingContract

    warehouse = run / "hub" / "warehouse.duckdb"
    if warehouse.exists():
        sent = set(EncodingContract(load_encoding_spec(spec)).encoded_columns)
        if _columns_held(warehouse) == sent:
            console.print(f"reusing {run}")
            return
        # Built under another spec: its columns are not the ones to attack (a new key would
        # silently go unattacked), so the parties play again.
        console.print(f"rebuilding {run}: the encoding spec's columns changed")
        shutil.rmtree(run)
    old = os.environ.get(SPEC_ENV)
    if spec is not None:
        os.environ[SPEC_ENV] = str(spec)
    try:
        bridge_and_ingest(run, people=people, seed=seed)
    finally:
        if old is None:
            os.environ.pop(SPEC_ENV, None)
        else:
            os.environ[SPEC_ENV] = old


def attack(
    run: Path,
    args: argparse.Namespace,
    overlaps: list[float],
    spec: Path | None,
    bar: Progress,
    job: Any,
    label: str,
) -> tuple[dict[str, Any], list[AttackResult]]:
    from ig_bridge.encoding import load_encoding_spec

    bar.update(job, description=f"{label}: bridge + ingest {args.people} people")
    prepare(run, args.people, args.seed, spec)
    bar.update(job, description=f"{label}: loading the hub's warehouse")
    loaded = load_encoding_spec(spec)
    ctx = Context(run, spec=loaded)
    results = run_suite(
        ctx,
        overlaps,
        seed=args.seed,
        graph=not args.no_graph,
        step=lambda st: bar.update(job, description=f"{label}: {st}"),
    )
    return loaded, results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--people", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--run", type=Path, default=None, help="run folder (default var/attacks/...)")
    ap.add_argument("--overlaps", default="0.25,0.5,1.0")
    ap.add_argument("--no-graph", action="store_true", help="skip the graph matching attack")
    ap.add_argument(
        "--baseline-spec",
        type=Path,
        default=BASELINE_SPEC,
        help="an older spec attacked the same way, shown beside (default: v2)",
    )
    ap.add_argument("--no-baseline", action="store_true", help="attack the current spec only")
    ap.add_argument(
        "--json",
        type=Path,
        default=None,
        help="write the figures here (e.g. schemas/pseudonym_strength.json, read by the IG report)",
    )
    args = ap.parse_args(argv)
    run = args.run or ROOT / "var" / "attacks" / f"p{args.people}_s{args.seed}"
    overlaps = [float(x) for x in args.overlaps.split(",")]
    t0 = time.perf_counter()
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        job = bar.add_task("starting", total=None)
        spec, results = attack(run, args, overlaps, None, bar, job, "current spec")
        base: list[AttackResult] = []
        base_version = None
        if not args.no_baseline:
            bspec, base = attack(
                run.with_name(run.name + "_baseline"),
                args,
                overlaps,
                args.baseline_spec,
                bar,
                job,
                "baseline spec",
            )
            base_version = bspec["encoding_spec_version"]
    version = spec["encoding_spec_version"]
    table = Table(
        title=f"Attacks on the hub's holdings ({args.people} people, seed "
        f"{args.seed}): share of records re-identified"
    )
    cols = [
        ("attack", "left"),
        ("target", "left"),
        ("overlap", "left"),
        (f"spec v{version}", "right"),
        ("distinct values", "right"),
        ("n rec/val", "right"),
        ("raw / chance / links", "right"),
    ]
    if base:
        cols.append((f"spec v{base_version}", "right"))
    for c, j in cols:
        table.add_column(c, justify=j, no_wrap=True)  # type: ignore[arg-type]
    now = {(r.attack, r.target, r.overlap): r for r in results}
    old = {(r.attack, r.target, r.overlap): r for r in base}
    for key in sorted(set(now) | set(old)):
        r, b = now.get(key), old.get(key)
        row = list(key)
        if r is None:
            row += ["(no such column)", "", "", ""]
        else:
            style = "red" if r.records > 0.01 else ""
            row += [
                f"[{style}]{r.records:.2%}" if style else f"{r.records:.2%}",
                f"{r.values:.2%}",
                f"{r.n_records}/{r.n_values}",
                ""
                if r.chance is None
                else f"{r.raw:.2%} / {r.chance:.2%}"
                + ("" if r.linked is None else f" / {r.linked:.2%}"),
            ]
        if base:
            row.append("-" if b is None else f"{b.records:.2%}")
        table.add_row(*row)
    console.print(table)
    for ov in overlaps:
        label = f"{round(ov * 100)}%"
        line = f"max at {label} overlap: v{version} {max_reidentification(results, label):.2%}"
        if base:
            line += f" (v{base_version}: {max_reidentification(base, label):.2%})"
        console.print(line)
        whole = [r.records for r in results if r.attack == "combined" and r.overlap == label]
        if whole:
            console.print(
                f"  whole records (combined quasi-identifiers) at {label}: {max(whole):.2%}"
            )
    worst = max(results, key=lambda r: r.records)
    console.print(
        f"worst: {worst.attack} on {worst.target} ({worst.overlap}) {worst.records:.2%} "
        f"in {time.perf_counter() - t0:.0f} s"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "people": args.people,
                    "seed": args.seed,
                    "encoding_spec_version": version,
                    "measured_on": datetime.date.today().isoformat(),
                    "results": [r.as_dict() for r in results],
                    "baseline": None
                    if not base
                    else {
                        "encoding_spec_version": base_version,
                        "results": [r.as_dict() for r in base],
                    },
                },
                indent=1,
            )
            + "\n"
        )
    top = max_reidentification(results, "100%" if 1.0 in overlaps else None)
    if base:
        print(
            f"baseline (spec v{base_version}) max re-identification: "
            f"{max_reidentification(base, '100%' if 1.0 in overlaps else None):.2%}"
        )
    print(f"max re-identification: {top:.2%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
