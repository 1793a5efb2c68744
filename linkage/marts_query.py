"""Query the analyst marts from the command line with the installed Python duckdb package
(the install ships no `duckdb` CLI):

    .venv/bin/python -m linkage.marts_query var/demo/hub/marts/analyst.duckdb "SELECT ..."
    .venv/bin/python -m linkage.marts_query var/demo/hub/marts/analyst.duckdb --csv < query.sql

The file is opened read-only, so a query can never change the published marts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import duckdb


def run_query(marts: Path | str, sql: str) -> duckdb.DuckDBPyRelation | None:
    """Not used for writing: the connection is read-only."""
    con = duckdb.connect(str(marts), read_only=True)
    return con.sql(sql)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m linkage.marts_query",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("marts", type=Path, help="the analyst.duckdb file")
    p.add_argument("sql", nargs="?", help="the query (default: read it from standard input)")
    p.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    p.add_argument("--max-rows", type=int, default=100, help="rows shown in table output")
    a = p.parse_intermixed_args(argv)
    if not a.marts.is_file():
        print(f"error: {a.marts}: no such marts file", file=sys.stderr)
        return 2
    sql = a.sql if a.sql is not None else sys.stdin.read()
    try:
        rel = run_query(a.marts, sql)
        if rel is None:
            return 0
        if a.csv:
            rel.df().to_csv(sys.stdout, index=False)
        else:
            rel.show(max_rows=a.max_rows, max_width=10_000)
    except duckdb.Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
