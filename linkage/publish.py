"""Write-audit-publish for the warehouse: readers never open the file a hub stage writes.

DuckDB lets one process write a database file and, while it does, nobody else can open it, not
even read-only. So the practitioner workspace reads a *published* copy: at the end of each hub
run (after the report stage's audit checkpoint) `publish` copies the warehouse into
`hub/published/warehouse-<stamp>.duckdb` through DuckDB itself (a consistent state, WAL
included), checks the copy (the tables a view reads exist and agree with the source's row
counts), makes it read-only and only then points `hub/published/current.json` at it with an
atomic rename. `current` returns the latest published copy; older copies are kept a while so a
page that opened one a moment ago finishes on it.

    python -m linkage.publish var/demo             # publish now (no hub stage may be running)
    python -m linkage.publish var/demo --if-missing
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import duckdb

from linkage.config import HubPaths, private_dir, private_umask

#: What a governed view reads: the copy must have every one with the source's row count.
VIEW_TABLES = ("person", "record_person", "household", "household_member", "payload", "batch")
KEEP = 3  # published copies kept (the newest first)


class PublishError(RuntimeError):
    """The copy failed its checks; `current` still points at the previous good copy."""


def published_dir(paths: HubPaths) -> Path:
    return paths.hub / "published"


def _pointer(paths: HubPaths) -> Path:
    return published_dir(paths) / "current.json"


def _counts(con: duckdb.DuckDBPyConnection, db: str) -> dict[str, int]:
    out = {}
    for t in VIEW_TABLES:
        try:
            out[t] = int(con.execute(f'SELECT count(*) FROM "{db}".main."{t}"').fetchone()[0])
        except duckdb.CatalogException:
            out[t] = -1
    return out


def publish(paths: HubPaths, run_id: str | None = None) -> Path:
    """Copy, check, then publish the warehouse; returns the published file."""
    out_dir = private_dir(published_dir(paths))
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = out_dir / f"warehouse-{stamp}.duckdb"
    with private_umask():
        con = duckdb.connect()
        try:
            con.execute("ATTACH ? AS src (READ_ONLY)", [str(paths.warehouse)])
            con.execute("ATTACH ? AS dst", [str(target)])
            con.execute("COPY FROM DATABASE src TO dst")
            src, dst = _counts(con, "src"), _counts(con, "dst")
        finally:
            con.close()
    missing = [t for t, n in src.items() if n < 0]
    differs = [t for t in VIEW_TABLES if src[t] != dst[t]]
    if missing or differs:
        target.unlink(missing_ok=True)
        raise PublishError(
            f"{paths.warehouse}: not published: "
            + (f"tables missing: {missing} " if missing else "")
            + (f"copy differs in: {differs}" if differs else "")
        )
    target.chmod(0o400)  # a published copy is never written again
    tmp = _pointer(paths).with_suffix(".tmp")
    tmp.write_text(
        json.dumps(
            {
                "file": target.name,
                "run_id": run_id,
                "published_at": dt.datetime.now(dt.UTC).isoformat(),
                "row_counts": dst,
            }
        ),
        "utf-8",
    )
    os.replace(tmp, _pointer(paths))  # readers see the old pointer or the new, never half
    for old in sorted(out_dir.glob("warehouse-*.duckdb"), reverse=True)[KEEP:]:
        old.unlink(missing_ok=True)
    return target


def current(paths: HubPaths) -> Path | None:
    """The latest published copy, or None if the hub has not published one yet."""
    try:
        info = json.loads(_pointer(paths).read_text("utf-8"))
    except FileNotFoundError:
        return None
    path = published_dir(paths) / Path(str(info["file"])).name
    return path if path.exists() else None


def reader(warehouse: Path | str) -> Callable[[], Path]:
    """For a reader configured with the hub's live warehouse (the governance API): on each
    call, the latest copy published from it, else the live file (nothing published yet, or
    not a hub's warehouse.duckdb), so a running hub stage does not block its requests."""
    warehouse = Path(warehouse)
    paths = HubPaths(hub=warehouse.parent, landing=warehouse.parent / "landing")
    if paths.warehouse != warehouse:
        return lambda: warehouse
    return lambda: current(paths) or warehouse


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m linkage.publish",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", type=Path)
    p.add_argument(
        "--if-missing", action="store_true", help="only if no copy has been published yet"
    )
    a = p.parse_args(argv)
    paths = HubPaths.for_run(a.run_dir)
    if a.if_missing and current(paths) is not None:
        print(f"published: {current(paths)}")
        return 0
    if not paths.warehouse.exists():
        print(f"{paths.warehouse}: no warehouse (run make demo first)", file=sys.stderr)
        return 1
    try:
        print(f"published: {publish(paths)}")
    except PublishError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
