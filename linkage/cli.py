"""`joinedup-hub`: the hub operator's command line, without Airflow.

    joinedup-hub run --run-dir var/run --mappings-dir my_mappings   # every stage, in order
    joinedup-hub ingest | link | households | marts | report  [--run-id ID]
    joinedup-hub export-refs --agency FH --out fh_refs.parquet   # for the agency's checks

Each command works on a run folder (`--run-dir`, default JOINEDUP_RUN_DIR, else var/airflow)
and the partnership's mappings folder (`--mappings-dir`, default JOINEDUP_MAPPINGS_DIR, else the
packaged schemas/agencies). It calls exactly the functions the hub DAG's tasks call
(linkage.orchestration), so a run by hand and a scheduled run give the same warehouse. A stage
is idempotent for its run id: `households`, `marts` and `report` default to the run id of the
last `link`, so the stages can be run one by one.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from linkage import orchestration as orch

STAGE_OF_COMMAND = {
    "link": "link_persons",
    "households": "households",
    "marts": "marts",
    "report": "report",
}


def _console(stderr: bool = False) -> Console:
    c = Console(stderr=stderr)  # outside a terminal: wide, so paths and log lines stay whole
    return c if c.is_terminal else Console(stderr=stderr, width=10_000)


err = _console(stderr=True)


def new_run_id() -> str:
    """A run id for a run by hand (Airflow's look like `manual__<timestamp>`)."""
    return "cli__" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def last_linked_run(base: Path, mappings: Path) -> str | None:
    """The run id of the last completed link stage in the warehouse, if any."""
    import duckdb

    warehouse = orch.hub_paths(base, mappings).warehouse
    if not warehouse.exists():
        return None
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        if not con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'pipeline_stage'"
        ).fetchone()[0]:
            return None
        row = con.execute(
            "SELECT run_id FROM pipeline_stage WHERE stage = 'link_persons' "
            "ORDER BY finished_at DESC LIMIT 1"
        ).fetchone()
        return row[0] if row else None
    finally:
        con.close()


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )


def ingest(base: Path, mappings: Path) -> dict[str, Any]:
    """Re-keying batches first, then every landed batch into custody, verified and loaded in
    per-agency sequence order: the hub DAG's apply_rekeys -> list_batches -> ingest tasks."""
    started = time.time()
    rekeys = orch.apply_rekeys(base, mappings)
    batches = orch.pending_batch_dirs(base, mappings)
    outcomes: dict[str, dict[str, Any]] = {}
    with _progress() as bar:
        task = bar.add_task("ingest", total=len(batches))
        for b in batches:
            bar.update(task, description=f"ingest {Path(b).parent.name}/{Path(b).name[:12]}")
            for o in orch.ingest_one(b, base, mappings)["outcomes"]:
                outcomes[o["batch_id"]] = o
            bar.advance(task)
    # Batches refused while being taken into custody never reach the list: read their records.
    refused_dir = orch.hub_paths(base, mappings).refused
    for rec in sorted(refused_dir.glob("*/*/refusal.json")) if refused_dir.is_dir() else []:
        if rec.stat().st_mtime >= started - 1 and rec.parent.name not in outcomes:
            doc = json.loads(rec.read_text("utf-8"))
            outcomes[rec.parent.name] = {
                "batch_id": rec.parent.name,
                "agency": doc.get("agency"),
                "status": "refused",
                "reason_code": doc.get("reason_code"),
                "detail": doc.get("detail"),
                "rows": {},
            }
    return {"rekeys": rekeys, "outcomes": list(outcomes.values())}


def _print_ingest(summary: dict[str, Any]) -> None:
    t = Table(title="Ingest")
    for c in ("agency", "batch", "status", "reason", "records loaded"):
        t.add_column(c, overflow="fold")
    for o in summary["outcomes"]:
        colour = {"accepted": "green", "refused": "red", "held": "yellow"}.get(o["status"], "")
        t.add_row(
            str(o.get("agency")),
            str(o["batch_id"]),
            f"[{colour}]{o['status']}[/{colour}]" if colour else o["status"],
            " ".join(str(x) for x in (o.get("reason_code"), o.get("detail")) if x),
            str((o.get("rows") or {}).get("identifiers", "")),
        )
    for r in summary["rekeys"]:
        t.add_row(
            str(r["agency"]),
            str(r["batch_id"]),
            f"re-keying: {r['status']}",
            str(r.get("reason_code") or ""),
            "",
        )
    if not summary["outcomes"] and not summary["rekeys"]:
        t.add_row("-", "-", "nothing landed", "", "")
    _console().print(t)


def _print_stage(name: str, summary: dict[str, Any]) -> None:
    """A stage's scalar figures (its summary is the same dict the DAG keeps as an XCom)."""
    t = Table(title=f"{name}{' (already done for this run id)' if summary.get('skipped') else ''}")
    t.add_column("item")
    t.add_column("value", justify="right", overflow="fold")

    def add(prefix: str, d: dict[str, Any]) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                add(f"{prefix}{k}.", v)
            elif not isinstance(v, list) and k != "skipped":
                t.add_row(prefix + k, f"{v:.2f}" if isinstance(v, float) else str(v))

    add("", summary)
    _console().print(t)


def stage(name: str, run_id: str, base: Path, mappings: Path) -> dict[str, Any]:
    with _progress() as bar:
        task = bar.add_task(f"{name} (run {run_id})", total=1)
        out = orch.run_stage(name, run_id, base, mappings)
        bar.advance(task)
    return out


def _resolve_run_id(a: argparse.Namespace) -> str:
    if a.run_id:
        return a.run_id
    if a.cmd in ("link", "run"):
        return new_run_id()
    found = last_linked_run(a.run_dir, a.mappings_dir)
    if found is None:
        raise SystemExit(
            f"no linkage run in {orch.hub_paths(a.run_dir, a.mappings_dir).warehouse}"
            f": run `joinedup-hub link` first, or give --run-id"
        )
    return found


def _export_refs(a: argparse.Namespace) -> int:
    """An agency's refs as the hub holds them (Parquet `record_ref`), for the agency's own
    checks (`joinedup-bridge reidentify --out`) or a ref-key rotation (docs/keys.md)."""
    from linkage.rekey import export_agency_refs

    if a.out.exists():
        raise SystemExit(f"{a.out} exists; give a new file")
    out = export_agency_refs(orch.hub_paths(a.run_dir, a.mappings_dir), a.agency, a.out)
    import pyarrow.parquet as pq

    _console().print(
        f"{pq.read_metadata(out).num_rows:,} record refs of {a.agency} written to {out}"
    )
    return 0


def _run(a: argparse.Namespace) -> int:
    base, mappings = a.run_dir, a.mappings_dir
    if not mappings.is_dir():
        raise SystemExit(f"mappings folder {mappings} does not exist")
    if a.cmd == "export-refs":
        return _export_refs(a)
    if a.cmd in ("ingest", "run"):
        _print_ingest(ingest(base, mappings))
    if a.cmd == "ingest":
        return 0
    run_id = _resolve_run_id(a)
    names = list(orch.HUB_STAGES) if a.cmd == "run" else [STAGE_OF_COMMAND[a.cmd]]
    for name in names:
        _print_stage(name, stage(name, run_id, base, mappings))
    if a.cmd in ("report", "run"):
        out = orch.hub_outputs(base, mappings)
        _console().print("\n".join(f"{k}: {v}" for k, v in out.items()))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="joinedup-hub",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help=f"run folder (default ${orch.RUN_DIR_ENV}, else "
        f"{orch.DEFAULT_RUN_DIR}); JOINEDUP_HUB_DIR / _LANDING_DIR "
        "override its parts",
    )
    common.add_argument(
        "--mappings-dir",
        type=Path,
        default=None,
        help="the partnership's agency mappings (default "
        "$JOINEDUP_MAPPINGS_DIR, else the packaged schemas/agencies)",
    )
    common.add_argument("-v", "--verbose", action="store_true", help="log stage progress")
    sub = p.add_subparsers(dest="cmd", required=True)
    helps = {
        "ingest": "take landed batches into custody, verify and load them",
        "link": "link persons (Splink) for a new run id",
        "households": "households and family networks for a run",
        "marts": "analyst marts (suppressed) for a run",
        "report": "consent refresh, audit checkpoint and the IG linkage report",
        "run": "ingest, link, households, marts, report, in order",
        "export-refs": "an agency's record refs as the hub holds them (Parquet), for "
        "the agency's own checks",
    }
    for name, text in helps.items():
        sp = sub.add_parser(name, help=text, parents=[common])
        if name == "export-refs":
            sp.add_argument("--agency", required=True)
            sp.add_argument("--out", type=Path, required=True, help="a new .parquet file")
        elif name != "ingest":
            sp.add_argument(
                "--run-id",
                help="linkage run id (default: a new one for link and "
                "run, the last linked run for the others)",
            )
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    a.run_dir = (a.run_dir or orch.run_dir()).resolve()
    a.mappings_dir = (a.mappings_dir or orch.mappings_dir()).resolve()
    logging.basicConfig(
        level=logging.INFO if a.verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err)],
    )
    try:
        return _run(a)
    except SystemExit:
        raise
    except Exception as exc:  # an operator's error: name it, no traceback (-v shows it)
        if a.verbose:
            err.print_exception()
        err.print(f"[red]failed[/red] {a.cmd}: {type(exc).__name__}: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
