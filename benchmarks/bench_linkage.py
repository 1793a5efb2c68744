"""Hub person linkage at scale: wall time and peak memory against plaintext Splink.

    python benchmarks/bench_linkage.py --sizes 100000,1000000 [--repeat 3] [--seed 7]
        [--out var/bench_linkage]

For each size (records across all agencies; about 0.68 people per record):
1. parties: generate the population, provision the partnership's keys and run every
   agency's bridge (benchmarks/evaluate_linkage.play_partnership); the hub ingests the
   landed batches, which converts them for linkage (`linkage.ingest.refresh_linkage_input`).
   Reused when the run folder already holds an ingested warehouse.
2. evaluation only: the accepted records' normalised plaintext identifiers, read from the
   agencies' own extracts (what the agencies hold, never the hub), to `plaintext.parquet`.
3. measured, each in its own subprocess, peak RSS from that process's own VmHWM
   (benchmarks/peak_memory.py; ru_maxrss would carry this parent's peak across exec):
   - hub: `link_persons` (prepare, EM training, scoring, clustering, person ids) on a copy
     of the ingested warehouse;
   - hub, stored model: the same without training, as a routine re-run on a copy of the
     warehouse the full run linked (earlier person ids kept, its tables rewritten);
   - plaintext: `linkage.evaluation.plaintext_baseline` (the same training, blocking ideas,
     comparisons with Jaro-Winkler instead of Bloom Dice, clustering and chaining guard).

The figures are ratios measured in the same run on the same machine: hub / plaintext wall
time (target <= 1.0) and peak RSS of each (target <= 6 GB at 1M records).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from evaluate_linkage import decrypt_refs, plaintext_records, play_partnership  # noqa: E402
from peak_memory import peak_rss_gb  # noqa: E402

from linkage.config import HubPaths  # noqa: E402
from linkage.ingest import ingest_landing, refresh_linkage_input  # noqa: E402

PEOPLE_PER_RECORD = 0.68
TARGET_RATIO = 1.0
TARGET_RSS_GB_AT_1M = 6.0


# --------------------------------------------------------------------------- workers


def _link_copy(run: Path, model: dict[str, Any] | None) -> dict[str, Any]:
    from linkage.person_linkage import LinkageSettings, link_persons
    from linkage.person_model import model_to_json

    # A full run links the ingested warehouse for the first time and leaves its result for
    # the stored-model run, which is then a routine re-run: earlier person ids to keep,
    # record_person and person rewritten.
    linked = run / "bench" / "warehouse_linked.duckdb"
    src = linked if model is not None and linked.exists() else HubPaths.for_run(run).warehouse
    work = run / "bench" / "warehouse_hub.duckdb"
    work.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, work)
    con = duckdb.connect(str(work))
    try:
        t = time.perf_counter()
        res = link_persons(
            con, f"bench-{time.time_ns()}", LinkageSettings(show_progress=False, model=model)
        )
        secs = time.perf_counter() - t
        con.close()
        if model is None:
            work.replace(linked)
    finally:
        con.close()
        work.unlink(missing_ok=True)
    if model is None:
        (run / "bench" / "model.json").write_text(model_to_json(res.model), "utf-8")
    return {
        "seconds": secs,
        "peak_rss_gb": peak_rss_gb(),
        "n_records": res.n_records,
        "n_pairs": res.n_scored_pairs,
        "n_persons": res.n_persons,
        "stages": {k: round(v, 2) for k, v in res.timings.items()},
    }


def _work_hub(run: Path) -> dict[str, Any]:
    """The full hub run: prepare, EM training, scoring, clustering, person ids."""
    return _link_copy(run, None)


def _work_hub_model(run: Path) -> dict[str, Any]:
    """A routine re-run with the stored model (training skipped), as production runs do: on
    the warehouse the full run linked."""
    from linkage.person_linkage import load_model

    return _link_copy(run, load_model(run / "bench" / "model.json"))


def _work_plain(run: Path) -> dict[str, Any]:
    from linkage.evaluation import plaintext_baseline

    con = duckdb.connect()
    try:
        con.execute(
            "CREATE TABLE plaintext_records AS SELECT * FROM read_parquet(?)",
            [str(run / "bench" / "plaintext.parquet")],
        )
        n = con.execute("SELECT count(*) FROM plaintext_records").fetchone()[0]
        t = time.perf_counter()
        out = plaintext_baseline(con, "plaintext_records", threshold=0.95)
        secs = time.perf_counter() - t
    finally:
        con.close()
    return {
        "seconds": secs,
        "peak_rss_gb": peak_rss_gb(),
        "n_records": n,
        "n_persons": int(out["cluster_id"].nunique()),
    }


WORKERS = {"hub": _work_hub, "hub_model": _work_hub_model, "plain": _work_plain}


def _measure(kind: str, run: Path) -> dict[str, Any]:
    """Run one measured side in a fresh interpreter; its own RSS high-water mark."""
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", kind, "--out", str(run)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} worker failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- set-up


def prepare(run: Path, size: int, seed: int, progress: Progress) -> dict[str, float]:
    """Parties and hub ingest (once per run folder), plaintext side file; returns timings."""
    timings: dict[str, float] = {}
    paths = HubPaths.for_run(run)
    task = progress.add_task(f"{size:,}: parties", total=None)
    if not paths.warehouse.exists():
        landed = paths.landing.exists() and any(paths.landing.iterdir())
        if not landed:
            t = time.perf_counter()
            play_partnership(run, people=round(size * PEOPLE_PER_RECORD), seed=seed)
            timings["parties"] = time.perf_counter() - t
        progress.update(task, description=f"{size:,}: hub ingest")
        t = time.perf_counter()
        report = ingest_landing(paths)
        if report.refused:
            raise RuntimeError(f"hub refused batches: {[o.agency for o in report.refused]}")
        timings["ingest"] = time.perf_counter() - t
    # Ingest converts what it loads for linkage (refresh_linkage_input); a run folder
    # ingested before it did gets that here, once (a no-op check otherwise).
    progress.update(task, description=f"{size:,}: linkage input as ingest leaves it")
    t = time.perf_counter()
    con = duckdb.connect(str(paths.warehouse))
    try:
        refresh_linkage_input(con)
    finally:
        con.close()
    timings["ingest_linkage_input"] = time.perf_counter() - t
    plain = run / "bench" / "plaintext.parquet"
    if not plain.exists():
        progress.update(task, description=f"{size:,}: plaintext side (evaluation only)")
        con = duckdb.connect(str(paths.warehouse), read_only=True)
        try:
            refs = con.execute("SELECT DISTINCT agency, record_ref FROM identifiers").df()
        finally:
            con.close()
        records = plaintext_records(run, decrypt_refs(run, refs))
        plain.parent.mkdir(parents=True, exist_ok=True)
        records.to_parquet(plain, index=False)
    progress.remove_task(task)
    return timings


def bench(size: int, seed: int, out: Path, console: Console, repeat: int = 1) -> dict[str, Any]:
    """One row per size; with `repeat`, each side is measured that many times, interleaved
    (hub, stored model, plaintext, hub, ...), and each ratio is taken within one round, so a
    noisy machine shows as a range rather than as one lucky or unlucky figure."""
    run = out / f"n{size}"
    rounds = []
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        setup = prepare(run, size, seed, progress)
        task = progress.add_task(f"{size:,}", total=None)
        for i in range(repeat):
            tag = f"{size:,} (round {i + 1} of {repeat})"
            progress.update(task, description=f"{tag}: hub linkage (pseudonymised)")
            hub = _measure("hub", run)
            progress.update(task, description=f"{tag}: hub linkage with the stored model")
            hub_model = _measure("hub_model", run)
            progress.update(task, description=f"{tag}: plaintext Splink baseline")
            plain = _measure("plain", run)
            rounds.append(
                {
                    "hub": hub,
                    "hub_model": hub_model,
                    "plain": plain,
                    "ratio": hub["seconds"] / plain["seconds"],
                    "ratio_stored_model": hub_model["seconds"] / plain["seconds"],
                }
            )
        progress.remove_task(task)
    # The round with the median full-run ratio stands for the size; all rounds are kept.
    mid = sorted(rounds, key=lambda r: r["ratio"])[(len(rounds) - 1) // 2]
    return {"size": size, "setup": setup, **mid, "rounds": rounds}


def render(rows: list[dict[str, Any]], console: Console) -> None:
    table = Table(title="hub linkage vs plaintext Splink (same records, same machine, same run)")
    for c in (
        "records",
        "persons (hub)",
        "hub s",
        "hub, stored model s",
        "plaintext s",
        "hub / plaintext",
        "stored model / plaintext",
        "hub peak GB",
        "plaintext peak GB",
    ):
        table.add_column(c, justify="right")
    for r in rows:
        h, hm, p = r["hub"], r["hub_model"], r["plain"]
        table.add_row(
            f"{h['n_records']:,}",
            f"{h['n_persons']:,}",
            f"{h['seconds']:.1f}",
            f"{hm['seconds']:.1f}",
            f"{p['seconds']:.1f}",
            f"{r['ratio']:.2f}",
            f"{r['ratio_stored_model']:.2f}",
            f"{h['peak_rss_gb']:.2f}",
            f"{p['peak_rss_gb']:.2f}",
        )
    console.print(table)
    for r in rows:
        if len(r.get("rounds", [])) > 1:
            full = sorted(x["ratio"] for x in r["rounds"])
            stored = sorted(x["ratio_stored_model"] for x in r["rounds"])
            console.print(
                f"{r['size']:,} over {len(full)} rounds: hub / plaintext "
                f"{full[0]:.2f}-{full[-1]:.2f}, stored model / plaintext "
                f"{stored[0]:.2f}-{stored[-1]:.2f} (the table shows the median round)"
            )
    for r in rows:
        console.print(
            f"{r['size']:,} hub stages (s): "
            + ", ".join(f"{k} {v:.1f}" for k, v in r["hub"]["stages"].items())
        )
    console.print(
        f"targets: hub / plaintext <= {TARGET_RATIO}; "
        f"hub peak RSS <= {TARGET_RSS_GB_AT_1M} GB at 1M records"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100000", help="comma-separated record counts")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=ROOT / "var" / "bench_linkage")
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure each side this many times, interleaved; prints the range",
    )
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args.out)))
        return 0
    console = Console()
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        rows.append(bench(size, args.seed, args.out, console, max(1, args.repeat)))
        (args.out / "bench_linkage.json").write_text(json.dumps(rows, indent=1), "utf-8")
    render(rows, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
