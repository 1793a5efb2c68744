"""Small-number suppression for every published aggregate, and the disclosure check.

Aggregate tables in the marts are long: dimension columns (VARCHAR), one count column `n` and a
`suppressed` marker. Rules, for threshold t (default 10):

1. primary: a cell with 0 < n < t is suppressed (n becomes NULL, suppressed = true);
2. secondary: for every dimension d, the cells that differ only in d form a group whose total
   an analyst may know from elsewhere. A group holding exactly one suppressed cell (and other
   cells) would give it away by subtraction, so the next-smallest published cell of that group
   (non-zero first) is suppressed too; repeated until no group has a lone suppressed cell;
3. totals: any published total is the sum of the *published* cells of its group, so a total
   minus its published cells is always 0; `n_suppressed_cells` says how many cells it leaves
   out (a lower bound when > 0). A group whose every non-zero cell is suppressed has no
   published total at all (n NULL, suppressed = true): a 0 there would be a false zero.

`mart_catalog` in the marts file says which tables are row-level and which are aggregates or
totals; `python -m linkage.disclosure check <marts.duckdb>` scans every table against these
rules (and that nothing uncatalogued or identifying is published) and exits non-zero on any
breach.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

DEFAULT_THRESHOLD = 10
CATALOG = "mart_catalog"
TOTAL_MARK = "ALL"
# Column names that must never appear in a published table.
FORBIDDEN_PREFIXES = ("tok_", "bf_", "blk_")
FORBIDDEN_COLUMNS = frozenset(
    {
        "record_ref",
        "record_ref_l",
        "record_ref_r",
        "property_key",
        "related_key",
        "case_notes",
        "incident_notes",
    }
)

CATALOG_DDL = f"""CREATE TABLE IF NOT EXISTS {CATALOG} (
    table_name VARCHAR PRIMARY KEY, kind VARCHAR NOT NULL,  -- rows | aggregate | total
    dims VARCHAR[], parent VARCHAR, threshold INTEGER NOT NULL, run_id VARCHAR,
    description VARCHAR)"""


class DisclosureError(ValueError):
    """An aggregate could not be suppressed as asked (bad input); names the table and column."""


def _groups(df: pd.DataFrame, dims: list[str], d: str) -> pd.core.groupby.DataFrameGroupBy:
    others = [c for c in dims if c != d]
    if not others:
        return df.groupby(pd.Series(0, index=df.index))
    return df.groupby(others, dropna=False, sort=False)


def suppress(
    df: pd.DataFrame,
    dims: list[str],
    threshold: int = DEFAULT_THRESHOLD,
    count: str = "n",
    table: str = "<frame>",
) -> pd.DataFrame:
    """Primary and secondary suppression. Returns a copy with `count` as nullable Int64 (NULL
    where suppressed) and a boolean `suppressed` column; dims are left as they are."""
    if threshold < 1:
        raise DisclosureError(f"{table}: threshold must be >= 1, got {threshold}")
    missing = [c for c in [*dims, count] if c not in df.columns]
    if missing:
        raise DisclosureError(f"{table}: missing column(s) {missing}")
    out = df.reset_index(drop=True).copy()
    n = pd.to_numeric(out[count], errors="coerce")
    if n.isna().any() or (n < 0).any():
        row = int(n[n.isna() | (n < 0)].index[0])
        raise DisclosureError(f"{table}: row {row + 1}: field {count}: not a non-negative count")
    out[count] = n.astype("int64")
    supp = (out[count] > 0) & (out[count] < threshold)
    changed = True
    while changed:
        changed = False
        for d in dims:
            work = out.assign(_s=supp, _i=range(len(out)))
            g = _groups(work, dims, d)
            n_s = g["_s"].transform("sum")
            size = g["_s"].transform("size")
            lone = (n_s == 1) & (size > 1)
            if not lone.any():
                continue
            cand = work[lone & ~work["_s"]].assign(_zero=lambda x: x[count] == 0)
            if cand.empty:
                continue
            cand = cand.sort_values(["_zero", count, "_i"])
            pick = _groups(cand, dims, d).head(1)["_i"].to_numpy()
            supp.iloc[pick] = True
            changed = True
    out[count] = out[count].astype("Int64").mask(supp)
    out["suppressed"] = supp.to_numpy()
    return out


def totals(cells: pd.DataFrame, dims: list[str], count: str = "n") -> pd.DataFrame:
    """Totals over each dimension in turn, from published cells only. Same columns as `cells`
    (the summed dimension set to 'ALL') plus `total_over` and `n_suppressed_cells`."""
    parts = []
    for d in dims:
        others = [c for c in dims if c != d]
        pub = cells.assign(
            _pub=cells[count].fillna(0).astype("int64"), _s=cells["suppressed"].astype(int)
        )
        if others:
            t = (
                pub.groupby(others, dropna=False, sort=True)
                .agg(n=("_pub", "sum"), n_suppressed_cells=("_s", "sum"))
                .reset_index()
            )
        else:
            t = pd.DataFrame(
                {"n": [int(pub["_pub"].sum())], "n_suppressed_cells": [int(pub["_s"].sum())]}
            )
        t[d] = TOTAL_MARK
        t["total_over"] = d
        parts.append(t.rename(columns={"n": count}))
    if not parts:
        return pd.DataFrame(columns=[*dims, count, "total_over", "n_suppressed_cells"])
    res = pd.concat(parts, ignore_index=True)[[*dims, count, "total_over", "n_suppressed_cells"]]
    res[count] = res[count].astype("Int64")
    false_zero = (res[count] == 0) & (res["n_suppressed_cells"] > 0)
    res[count] = res[count].mask(false_zero)
    res["suppressed"] = false_zero.to_numpy()
    return res


# --------------------------------------------------------------------------- writing


def write_aggregate(
    con: duckdb.DuckDBPyConnection,
    name: str,
    df: pd.DataFrame,
    dims: list[str],
    threshold: int,
    run_id: str,
    description: str,
) -> int:
    """Suppress, write `name` and `name_totals`, and catalogue both. Returns cells suppressed."""
    raw = df[[*dims, "n"]].copy()
    for c in dims:  # dims are labels; VARCHAR keeps the totals' 'ALL' row in the same column
        raw[c] = raw[c].astype("string")
    cells = suppress(raw, dims, threshold, table=name)
    tot = totals(cells, dims)
    con.execute(CATALOG_DDL)
    for tname, frame, kind, parent in (
        (name, cells, "aggregate", None),
        (f"{name}_totals", tot, "total", name),
    ):
        con.register("_agg", frame)
        try:
            cols = ", ".join(f'"{c}"::VARCHAR AS "{c}"' for c in dims)
            extra = (
                ', "total_over", "n_suppressed_cells"::BIGINT AS n_suppressed_cells'
                if kind == "total"
                else ""
            )
            con.execute(
                f'CREATE OR REPLACE TABLE "{tname}" AS SELECT {cols}, '
                f'"n"::BIGINT AS n, "suppressed"::BOOLEAN AS suppressed{extra} FROM _agg'
            )
        finally:
            con.unregister("_agg")
        con.execute(
            f"INSERT OR REPLACE INTO {CATALOG} VALUES (?, ?, ?, ?, ?, ?, ?)",
            [tname, kind, dims, parent, threshold, run_id, description],
        )
    return int(cells["suppressed"].sum())


def register_rows(
    con: duckdb.DuckDBPyConnection, name: str, threshold: int, run_id: str, description: str
) -> None:
    con.execute(CATALOG_DDL)
    con.execute(
        f"INSERT OR REPLACE INTO {CATALOG} VALUES (?, ?, NULL, NULL, ?, ?, ?)",
        [name, "rows", threshold, run_id, description],
    )


# --------------------------------------------------------------------------- checking


@dataclass(frozen=True)
class Violation:
    table: str
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.table}: {self.rule}: {self.detail}"


def _where(dims: list[str], row: pd.Series) -> str:
    return ", ".join(f"{d}={row[d]!r}" for d in dims)


def check_connection(
    con: duckdb.DuckDBPyConnection, threshold: int | None = None
) -> list[Violation]:
    """Every breach of the suppression rules in an open marts database."""
    out: list[Violation] = []
    tables = {
        r[0]
        for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
        ).fetchall()
    }
    if CATALOG not in tables:
        return [Violation(CATALOG, "no_catalog", "marts file has no mart_catalog table")]
    cat = con.execute(f"SELECT table_name, kind, dims, parent, threshold FROM {CATALOG}").df()
    listed = set(cat["table_name"])
    for t in sorted(tables - listed - {CATALOG}):
        out.append(Violation(t, "uncatalogued", "table is not in mart_catalog"))
    for t in sorted(listed - tables):
        out.append(Violation(t, "missing", "catalogued table does not exist"))
    for row in cat.itertuples(index=False):
        name = row.table_name
        if name not in tables:
            continue
        t = int(threshold if threshold is not None else row.threshold)
        cols = [r[0] for r in con.execute(f'DESCRIBE "{name}"').fetchall()]
        for c in cols:
            if c in FORBIDDEN_COLUMNS or c.startswith(FORBIDDEN_PREFIXES):
                out.append(Violation(name, "forbidden_column", f"column {c} must not be published"))
        if row.kind == "rows":
            continue
        dims = list(row.dims)
        df = con.execute(f'SELECT * FROM "{name}"').df()
        if "n" not in df or "suppressed" not in df:
            out.append(Violation(name, "shape", "aggregate lacks n or suppressed column"))
            continue
        n = df["n"]
        small = n.notna() & (n > 0) & (n < t)
        for i in df.index[small]:
            out.append(
                Violation(
                    name, "small_cell", f"row {i + 1} ({_where(dims, df.loc[i])}): n below {t}"
                )
            )
        mism = df["suppressed"].astype(bool) != n.isna()
        for i in df.index[mism]:
            out.append(
                Violation(name, "marker", f"row {i + 1}: suppressed marker disagrees with n")
            )
        if row.kind == "aggregate":
            work = df.assign(_s=n.isna())
            for d in dims:
                g = _groups(work, dims, d)
                n_s, size = g["_s"].transform("sum"), g["_s"].transform("size")
                for i in work.index[(n_s == 1) & (size > 1) & work["_s"]]:
                    out.append(
                        Violation(
                            name,
                            "lone_suppressed_cell",
                            f"row {i + 1} ({_where(dims, df.loc[i])}) is the only suppressed cell "
                            f"of its group over {d}: its total would reveal it",
                        )
                    )
        elif row.kind == "total":
            parent = con.execute(f'SELECT * FROM "{row.parent}"').df()
            for d in dims:
                others = [c for c in dims if c != d]
                sub = df[df["total_over"] == d]
                pub = parent.assign(_p=parent["n"].fillna(0).astype("int64"))
                if others:
                    exp = pub.groupby(others, dropna=False)["_p"].sum().reset_index()
                    m = sub.merge(exp, on=others, how="left")
                else:
                    m = sub.assign(_p=int(pub["_p"].sum()))
                published = m["_p"].fillna(0).astype("int64")
                n_supp = (
                    m["n_suppressed_cells"].fillna(0).astype("int64")
                    if "n_suppressed_cells" in m
                    else pd.Series(0, index=m.index)
                )
                # A withheld total is right only where nothing of its group is published.
                withheld_ok = m["n"].isna() & (published == 0) & (n_supp > 0)
                bad = ~withheld_ok & (m["n"].fillna(-1).astype("int64") != published)
                for i in m.index[bad]:
                    out.append(
                        Violation(
                            name,
                            "total_not_from_published",
                            f"total over {d} ({_where(others, m.loc[i])}) differs from the sum of "
                            "its published cells",
                        )
                    )
                for i in m.index[(m["n"].fillna(-1) == 0) & (n_supp > 0)]:
                    out.append(
                        Violation(
                            name,
                            "false_zero",
                            f"total over {d} ({_where(others, m.loc[i])}) is 0 but its group has "
                            f"{int(n_supp[i])} suppressed cell(s)",
                        )
                    )
    return out


def check_marts(path: Path | str, threshold: int | None = None) -> list[Violation]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such marts file")
    con = duckdb.connect(str(path), read_only=True)
    try:
        return check_connection(con, threshold)
    finally:
        con.close()


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    p = argparse.ArgumentParser(
        prog="python -m linkage.disclosure",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="scan every aggregate of a marts file")
    c.add_argument("marts", type=Path)
    c.add_argument(
        "--threshold",
        type=int,
        default=None,
        help="override the threshold recorded in mart_catalog",
    )
    a = p.parse_args(argv)
    console = Console(stderr=True)
    try:
        problems = check_marts(a.marts, a.threshold)
    except (FileNotFoundError, duckdb.Error) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    if not problems:
        console.print(f"[green]OK[/green]: {a.marts}: every aggregate obeys suppression")
        return 0
    for v in problems:
        console.print(f"[red]BREACH[/red] {v}", highlight=False)
    console.print(f"{len(problems)} breach(es) in {a.marts}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
