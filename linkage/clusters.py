"""Clusters -> person_id: chaining guard and person ids stable across runs.

Connected components come from Splink; this module only (1) flags clusters that an agency's
own data says hold two different people and optionally splits them at their weakest edges,
and (2) maps each run's clusters onto earlier person_ids by record overlap, minting new ids
from a sequence persisted in the warehouse so an id is never reused.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd

from linkage.stable_ids import assign_stable_ids
from linkage.warehouse import ensure_keyless_table

PERSON_SEQUENCE = "person_id_seq"

# One row per person_id (the writer below inserts only ids not yet present).
PERSON_COLUMNS = """
    person_id VARCHAR NOT NULL,
    status VARCHAR NOT NULL,            -- active | retired
    first_run_id VARCHAR NOT NULL,
    last_run_id VARCHAR NOT NULL,
    retired_run_id VARCHAR,
    n_records INTEGER NOT NULL,
    n_agencies INTEGER NOT NULL
"""
PERSON_DDL = f"""
CREATE SEQUENCE IF NOT EXISTS {PERSON_SEQUENCE} START 1;
CREATE TABLE IF NOT EXISTS person_lineage (
    run_id VARCHAR NOT NULL,
    person_id VARCHAR NOT NULL,
    previous_person_id VARCHAR NOT NULL,
    overlap INTEGER NOT NULL
);
"""


def conflict_pairs(records: pd.DataFrame, trusted: pd.DataFrame | None = None) -> pd.DataFrame:
    """Same-cluster record pairs that their agency says are different people.

    `records` has unique_id, cluster_id, agency, batch_id, tok_nhs_number, tok_dob.
    A pair conflicts when both come from one agency and either carry different NHS-number
    tokens, or sit in the same batch (one snapshot) with different DOB tokens.
    A DOB conflict is dropped when the pair is itself one of `trusted` (unique_id_l,
    unique_id_r: auto-match edges the caller vouches for, `linkage.guards.dob_conflict_trusted`):
    the model matched those two records directly, names and all, so they are one agency's
    duplicate with a mis-keyed DOB (a day typo, a default 1 January), not two people
    chained together through others.
    Returns cluster_id, unique_id_l, unique_id_r (l < r).
    """
    cols = ["unique_id", "cluster_id", "agency", "batch_id", "tok_nhs_number", "tok_dob"]
    r = records[cols]
    # Records sharing their cluster with another of their agency's (a hash pass: a groupby
    # transform took 0.7 s at 1M records).
    r = r[r.duplicated(["cluster_id", "agency"], keep=False)]
    pairs = r.merge(r, on=["cluster_id", "agency"], suffixes=("_l", "_r"))
    pairs = pairs[pairs["unique_id_l"] < pairs["unique_id_r"]]
    nhs = (
        pairs["tok_nhs_number_l"].notna()
        & pairs["tok_nhs_number_r"].notna()
        & (pairs["tok_nhs_number_l"] != pairs["tok_nhs_number_r"])
    )
    dob = (
        (pairs["batch_id_l"] == pairs["batch_id_r"])
        & pairs["tok_dob_l"].notna()
        & pairs["tok_dob_r"].notna()
        & (pairs["tok_dob_l"] != pairs["tok_dob_r"])
    )
    if trusted is not None and dob.any() and len(trusted):
        a, b = trusted["unique_id_l"].to_numpy(), trusted["unique_id_r"].to_numpy()
        first = a < b
        direct = pd.MultiIndex.from_arrays([np.where(first, a, b), np.where(first, b, a)])
        dob &= ~pd.MultiIndex.from_arrays([pairs["unique_id_l"], pairs["unique_id_r"]]).isin(direct)
    out = pairs[nhs | dob][["cluster_id", "unique_id_l", "unique_id_r"]]
    return out.reset_index(drop=True)


def _split_cluster(
    members: list[str], ordered: list[tuple[str, str]], conflicts: set[frozenset[str]]
) -> dict[str, str]:
    """Rebuild one cluster from its strongest edges (`ordered`: strongest first), skipping any
    edge that would join two records (or groups) known to be different people: the weakest
    links are the ones cut."""
    parent = {m: m for m in members}
    groups: dict[str, set[str]] = {m: {m} for m in members}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in ordered:
        ra, rb = find(a), find(b)
        if ra == rb:
            continue
        if any(frozenset((x, y)) in conflicts for x in groups[ra] for y in groups[rb]):
            continue
        parent[rb] = ra
        groups[ra] |= groups.pop(rb)
    return {m: min(groups[find(m)]) for m in members}


def guard_chains(
    records: pd.DataFrame,
    edges: pd.DataFrame,
    *,
    split: bool = True,
    trusted: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Flag (and optionally split) clusters that chain different people together.

    records: unique_id, cluster_id, agency, batch_id, tok_nhs_number, tok_dob.
    edges: unique_id_l, unique_id_r, match_weight: the auto-match edges that built clusters.
    trusted: edges whose own DOB disagreement is no conflict (`conflict_pairs`).
    Returns (records with a possibly refined cluster_id, flagged clusters with
    cluster_id, n_conflicts, n_records, split_into).
    """
    conflicts = conflict_pairs(records, trusted)
    out = records.copy()
    if conflicts.empty:
        empty = pd.DataFrame(columns=["cluster_id", "n_conflicts", "n_records", "split_into"])
        return out, empty
    flagged_rows = []
    # Members and internal edges of every flagged cluster gathered once (per-cluster masks
    # over all records were quadratic: minutes at 100k records, hours at 1M).
    flagged = out[out["cluster_id"].isin(set(conflicts["cluster_id"]))]
    members_of = flagged.groupby("cluster_id", sort=False)["unique_id"].agg(sorted)
    where = dict(zip(flagged["unique_id"], flagged["cluster_id"], strict=True))
    e_l, e_r = edges["unique_id_l"].map(where), edges["unique_id_r"].map(where)
    keep = (e_l.notna() & (e_l == e_r)).to_numpy()
    # Sorted once, strongest first (ties by ids, so the result is deterministic); grouping
    # keeps that order within each cluster. One pandas sort per cluster took 10 s at 1M.
    inner = (
        edges[keep]
        .assign(_c=e_l[keep].to_numpy())
        .sort_values(["match_weight", "unique_id_l", "unique_id_r"], ascending=[False, True, True])
    )
    edges_of: dict[str, list[tuple[str, str]]] = {}
    for c, a, b in zip(inner["_c"], inner["unique_id_l"], inner["unique_id_r"], strict=True):
        edges_of.setdefault(c, []).append((a, b))
    new_ids: dict[str, str] = {}
    for cluster_id, grp in conflicts.groupby("cluster_id", sort=True):
        members = members_of[cluster_id]
        n_parts = 1
        if split:
            e = edges_of.get(cluster_id, [])
            cset = {frozenset(p) for p in zip(grp["unique_id_l"], grp["unique_id_r"], strict=True)}
            roots = _split_cluster(members, e, cset)
            new_ids.update(roots)
            n_parts = len(set(roots.values()))
        flagged_rows.append(
            {
                "cluster_id": cluster_id,
                "n_conflicts": len(grp),
                "n_records": len(members),
                "split_into": n_parts,
            }
        )
    if new_ids:
        mask = out["unique_id"].isin(new_ids.keys())
        out.loc[mask, "cluster_id"] = out.loc[mask, "unique_id"].map(new_ids)
    return out, pd.DataFrame(flagged_rows)


def assign_person_ids(
    con: duckdb.DuckDBPyConnection,
    clusters: pd.DataFrame,
    run_id: str,
    *,
    record_order: str | None = None,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Give every cluster a person_id, stable across runs.

    clusters: unique_id, cluster_id and, unless `record_order` is given, record_ref and
    agency (unique_id = agency:record_ref). With `record_order`, a table (ord, agency,
    record_ref), unique_ids and cluster_ids are its `ord` ranks. Earlier ids come from the
    current `record_person` table (the previous run's result). Each new cluster takes the
    active earlier id it shares most records with (ties: lowest person_id, then lowest
    cluster_id); each earlier id goes to at most one cluster. Unclaimed earlier ids are
    retired and never handed out again; clusters left over get ids minted from
    `person_id_seq`.
    Updates `person` and `person_lineage`; returns (clusters + person_id, counts).
    """
    con.execute(PERSON_DDL)
    ensure_keyless_table(con, "person", PERSON_COLUMNS)
    have_prev = bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'record_person'"
        ).fetchall()[0][0]
    )
    c = clusters[["unique_id", "cluster_id"] + ([] if record_order else ["record_ref", "agency"])]
    c = c.copy()
    # A record of the previous run is its unique_id (or its rank; NULL when it is no longer
    # in the input, so it overlaps nothing).
    member = "o.ord" if record_order else "rp.agency || ':' || rp.record_ref"
    order_join = f"LEFT JOIN {record_order} o USING (agency, record_ref)" if record_order else ""
    prev: pd.DataFrame | str
    if have_prev:
        prev = f"""SELECT {member} AS member, rp.person_id AS id
                   FROM record_person rp {order_join}
                   JOIN person p USING (person_id) WHERE p.status = 'active'"""
    else:
        prev = pd.DataFrame(
            {"member": pd.Series(dtype=c["unique_id"].dtype), "id": pd.Series(dtype=str)}
        )
    # Same overlap rule as household ids (linkage.stable_ids).
    mapping = assign_stable_ids(
        con,
        pd.DataFrame({"member": c["unique_id"], "group": c["cluster_id"]}),
        prev,
        PERSON_SEQUENCE,
        "P",
    )
    chosen, retired, new_clusters = mapping.group_to_id, mapping.retired, mapping.new_groups
    # A plain lookup: Series.map(dict) first builds an index of the dict (~0.8 s at 1M).
    c["person_id"] = [chosen[g] for g in c["cluster_id"].tolist()]

    lineage = mapping.lineage.assign(run_id=run_id, person_id=mapping.lineage["group"].map(chosen))
    lineage = lineage.rename(columns={"previous_id": "previous_person_id"})[
        ["run_id", "person_id", "previous_person_id", "overlap"]
    ]

    # Per-person counts in DuckDB: a pandas groupby with nunique over 1M records took ~1 s.
    if record_order:
        con.register("_new_person_records", c[["unique_id", "person_id"]])
        records = (
            f"SELECT n.person_id, o.agency FROM _new_person_records n "
            f"JOIN {record_order} o ON o.ord = n.unique_id"
        )
    else:
        con.register("_new_person_records", c[["person_id", "agency"]])
        records = "SELECT person_id, agency FROM _new_person_records"
    con.register("_new_lineage", lineage)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _person_counts AS
        SELECT person_id, count(*) AS n, count(DISTINCT agency) AS a
        FROM ({records}) GROUP BY person_id""")
    con.execute(
        """UPDATE person SET status = 'active', last_run_id = ?, n_records = c.n,
                   n_agencies = c.a FROM _person_counts c WHERE person.person_id = c.person_id""",
        [run_id],
    )
    con.execute(
        """INSERT INTO person SELECT person_id, 'active', ?, ?, NULL, n, a
                   FROM _person_counts c WHERE NOT EXISTS (
                       SELECT 1 FROM person p WHERE p.person_id = c.person_id)""",
        [run_id, run_id],
    )
    con.execute("DROP TABLE _person_counts")
    if retired:
        con.execute(
            "UPDATE person SET status = 'retired', retired_run_id = ? "
            "WHERE list_contains(?, person_id)",
            [run_id, retired],
        )
    con.execute("INSERT INTO person_lineage SELECT * FROM _new_lineage")
    con.unregister("_new_person_records")
    con.unregister("_new_lineage")
    counts = {
        "n_persons": len(chosen),
        "n_new_persons": len(new_clusters),
        "n_retired_persons": len(retired),
    }
    return c, counts
