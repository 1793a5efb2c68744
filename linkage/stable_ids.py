"""Ids that stay the same across runs: map this run's groups onto earlier ids by overlap.

Used for household_id (and the same rule as person_id): each new group takes the active earlier
id it shares most members with (ties: lowest earlier id, then lowest group); each earlier id goes
to at most one group; earlier ids nobody claims are retired and never handed out again; groups
left over get freshly minted ids from a sequence persisted in the warehouse.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pandas as pd


@dataclass(frozen=True)
class OverlapMapping:
    group_to_id: dict[str, str]
    retired: list[str]
    new_groups: list[str]
    lineage: pd.DataFrame  # group, previous_id, overlap


def match_by_overlap(
    new: pd.DataFrame, previous: pd.DataFrame | str, con: duckdb.DuckDBPyConnection | None = None
) -> OverlapMapping:
    """new: member, group. previous: member, id (active ids only; string ids): a frame, or
    a query over `con` giving those columns (a NULL member overlaps nothing).

    Overlaps, leftovers and retirements are counted in DuckDB (`con`, else an in-memory
    one): pandas merges and Python sets over a million string ids took ~1.5 s of a
    1M-record run. Only the greedy choice walks the overlap rows in Python."""
    con = con or duckdb.connect()
    con.register("_so_new", new[["member", "group"]])
    if isinstance(previous, str):
        prev = "_so_prev_q"
        con.execute(f"CREATE OR REPLACE TEMP VIEW {prev} AS {previous}")
    else:
        prev = "_so_prev"
        con.register(prev, previous[["member", "id"]])
    try:
        overlap = con.execute(f"""
            SELECT n."group", p.id, count(*) AS overlap FROM _so_new n
            JOIN {prev} p USING (member) GROUP BY ALL
            ORDER BY overlap DESC, p.id, n."group" """).df()
        chosen: dict = {}
        taken: set = set()
        for grp, pid in zip(overlap["group"].tolist(), overlap["id"].tolist(), strict=True):
            if grp in chosen or pid in taken:
                continue
            chosen[grp] = pid
            taken.add(pid)
        con.register(
            "_so_chosen",
            pd.DataFrame(
                {
                    "group": pd.Series(list(chosen), dtype=new["group"].dtype),
                    "id": pd.Series(list(chosen.values()), dtype=str),
                }
            ),
        )
        new_groups = [
            g
            for (g,) in con.execute("""
            SELECT DISTINCT "group" FROM _so_new WHERE "group" NOT IN (
                SELECT "group" FROM _so_chosen) ORDER BY 1""").fetchall()
        ]
        retired = [
            i
            for (i,) in con.execute(f"""
            SELECT DISTINCT id FROM {prev} WHERE id NOT IN (
                SELECT id FROM _so_chosen) ORDER BY 1""").fetchall()
        ]
    finally:
        for name in ("_so_new", "_so_prev", "_so_chosen"):
            con.unregister(name)
        con.execute("DROP VIEW IF EXISTS _so_prev_q")
    lineage = overlap.rename(columns={"id": "previous_id"})
    return OverlapMapping(chosen, retired, new_groups, lineage)


def mint_ids(con: duckdb.DuckDBPyConnection, sequence: str, prefix: str, n: int) -> list[str]:
    """n fresh ids from a warehouse sequence: never reused, even after retirement."""
    if n == 0:
        return []
    con.execute(f"CREATE SEQUENCE IF NOT EXISTS {sequence} START 1")
    rows = con.execute(
        f"SELECT printf('%s%09d', ?, nextval('{sequence}')) FROM range(?)", [prefix, n]
    ).fetchall()
    return [v for (v,) in rows]


def assign_stable_ids(
    con: duckdb.DuckDBPyConnection,
    new: pd.DataFrame,
    previous: pd.DataFrame,
    sequence: str,
    prefix: str,
) -> OverlapMapping:
    """match_by_overlap, then mint ids for the groups left over (included in group_to_id)."""
    m = match_by_overlap(new, previous, con)
    minted = mint_ids(con, sequence, prefix, len(m.new_groups))
    mapping = dict(m.group_to_id)
    mapping.update(zip(m.new_groups, minted, strict=True))
    return OverlapMapping(mapping, m.retired, m.new_groups, m.lineage)
