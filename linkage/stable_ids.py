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


def match_by_overlap(new: pd.DataFrame, previous: pd.DataFrame) -> OverlapMapping:
    """new: member, group. previous: member, id (active ids only)."""
    joined = new.merge(previous, on="member", how="inner")
    overlap = joined.groupby(["group", "id"]).size().rename("overlap").reset_index()
    overlap = overlap.sort_values(["overlap", "id", "group"], ascending=[False, True, True])
    chosen: dict[str, str] = {}
    taken: set[str] = set()
    for grp, pid in zip(overlap["group"], overlap["id"], strict=True):
        if grp in chosen or pid in taken:
            continue
        chosen[grp] = pid
        taken.add(pid)
    new_groups = sorted(set(new["group"]) - set(chosen))
    retired = sorted(set(previous["id"]) - taken)
    lineage = overlap.rename(columns={"id": "previous_id"})
    return OverlapMapping(chosen, retired, new_groups, lineage)


def mint_ids(con: duckdb.DuckDBPyConnection, sequence: str, prefix: str, n: int) -> list[str]:
    """n fresh ids from a warehouse sequence: never reused, even after retirement."""
    if n == 0:
        return []
    con.execute(f"CREATE SEQUENCE IF NOT EXISTS {sequence} START 1")
    rows = con.execute(f"SELECT nextval('{sequence}') FROM range(?)", [n]).fetchall()
    return [f"{prefix}{v:09d}" for (v,) in rows]


def assign_stable_ids(con: duckdb.DuckDBPyConnection, new: pd.DataFrame,
                      previous: pd.DataFrame, sequence: str, prefix: str) -> OverlapMapping:
    """match_by_overlap, then mint ids for the groups left over (included in group_to_id)."""
    m = match_by_overlap(new, previous)
    minted = mint_ids(con, sequence, prefix, len(m.new_groups))
    mapping = dict(m.group_to_id)
    mapping.update(zip(m.new_groups, minted, strict=True))
    return OverlapMapping(mapping, m.retired, m.new_groups, m.lineage)
