"""Households: persons who share a current address, across agencies, on address tokens alone.

1. Every current record carries address evidence: its UPRN token and/or its address token
   (HMAC of normalised first line + postcode). A record holding both says the two keys are one
   property, so keys are joined into properties by connected components (Splink's clustering).
2. Each person's current property is the one most agencies agree on; ties go to the most recent
   evidence (event date, else extract date), then to the lowest property key (deterministic).
3. A household is the set of persons whose current property is the same; household_id is
   stable across runs by member overlap (linkage.stable_ids) and never reused once retired.

Writes `household` and `household_member` (and `household_lineage`). Reads `identifiers`,
`record_person`, `payload`, `batch`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import duckdb
import pandas as pd
from splink import DuckDBAPI
from splink.clustering import cluster_pairwise_predictions_at_threshold

from linkage.stable_ids import assign_stable_ids
from linkage.txn import atomic

HOUSEHOLD_SEQUENCE = "household_id_seq"

HOUSEHOLD_DDL = """
CREATE TABLE IF NOT EXISTS household (
    household_id VARCHAR PRIMARY KEY,
    status VARCHAR NOT NULL,              -- active | retired
    first_run_id VARCHAR NOT NULL,
    last_run_id VARCHAR NOT NULL,
    retired_run_id VARCHAR,
    property_key VARCHAR,                 -- pseudonymous: an address/UPRN token, hub only
    n_members INTEGER NOT NULL,
    n_agencies INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS household_member (
    household_id VARCHAR NOT NULL,
    person_id VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL,
    n_agencies_agreeing INTEGER NOT NULL  -- agencies whose records put the person here
);
CREATE TABLE IF NOT EXISTS household_lineage (
    run_id VARCHAR NOT NULL,
    household_id VARCHAR NOT NULL,
    previous_household_id VARCHAR NOT NULL,
    overlap INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class HouseholdResult:
    run_id: str
    n_households: int
    n_new: int
    n_retired: int
    n_persons_placed: int
    n_persons_without_address: int
    seconds: float


def _property_keys(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """address key -> property id, joining UPRN and address keys seen on one record."""
    keys = con.execute("""
        SELECT DISTINCT k AS key FROM (
            SELECT 'U' || tok_uprn AS k FROM identifiers WHERE tok_uprn IS NOT NULL
            UNION ALL
            SELECT 'A' || tok_address FROM identifiers WHERE tok_address IS NOT NULL)
        """).df()
    edges = con.execute("""
        SELECT DISTINCT 'U' || tok_uprn AS key_l, 'A' || tok_address AS key_r FROM identifiers
        WHERE tok_uprn IS NOT NULL AND tok_address IS NOT NULL
        """).df()
    if keys.empty:
        return pd.DataFrame(columns=["key", "property_key"])
    if edges.empty:
        return keys.assign(property_key=keys["key"])
    api = DuckDBAPI(connection=duckdb.connect())  # scratch connection: the warehouse stays clean
    clusters = cluster_pairwise_predictions_at_threshold(
        keys, edges, api, node_id_column_name="key",
        edge_id_column_name_left="key_l", edge_id_column_name_right="key_r",
    ).as_pandas_dataframe()
    clusters = clusters.rename(columns={"cluster_id": "property_key"})[["key", "property_key"]]
    return clusters


def current_property(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """person_id -> property_key, n_agencies_agreeing."""
    props = _property_keys(con)
    con.register("_prop_keys", props)
    try:
        return con.execute("""
            WITH ev AS (
                SELECT record_ref, max(event_date) AS event_date FROM payload GROUP BY record_ref
            ), rec AS (
                SELECT rp.person_id, i.agency,
                       coalesce('U' || i.tok_uprn, 'A' || i.tok_address) AS key,
                       coalesce(ev.event_date, TRY_CAST(b.created_at AS TIMESTAMP)::DATE)
                           AS seen
                FROM identifiers i
                JOIN record_person rp USING (record_ref)
                LEFT JOIN ev USING (record_ref)
                LEFT JOIN batch b ON b.batch_id = i.batch_id
                WHERE i.tok_uprn IS NOT NULL OR i.tok_address IS NOT NULL
            ), votes AS (
                SELECT r.person_id, k.property_key, count(DISTINCT r.agency) AS n_agencies,
                       max(r.seen) AS latest
                FROM rec r JOIN _prop_keys k USING (key)
                GROUP BY ALL
            ), placed AS (
                SELECT person_id, property_key, n_agencies AS n_agencies_agreeing
                FROM votes
                QUALIFY row_number() OVER (PARTITION BY person_id
                        ORDER BY n_agencies DESC, latest DESC NULLS LAST, property_key) = 1
            ), resident AS (
                -- postcode + family-name tokens of persons already placed, per property
                SELECT DISTINCT p.property_key, i.tok_postcode, i.tok_family_name
                FROM placed p JOIN record_person rp USING (person_id)
                JOIN identifiers i USING (record_ref)
                WHERE i.tok_postcode IS NOT NULL AND i.tok_family_name IS NOT NULL
            ), fallback AS (
                -- A person with no full address (the first line was not recorded) joins the
                -- one property in their postcode where someone of their family name lives;
                -- no agency vouches for it, so n_agencies_agreeing is 0.
                SELECT rp.person_id, min(r.property_key) AS property_key,
                       0 AS n_agencies_agreeing
                FROM record_person rp JOIN identifiers i USING (record_ref)
                JOIN resident r USING (tok_postcode, tok_family_name)
                WHERE rp.person_id NOT IN (SELECT person_id FROM placed)
                GROUP BY rp.person_id
                HAVING count(DISTINCT r.property_key) = 1
            )
            SELECT * FROM placed UNION ALL SELECT * FROM fallback
            """).df()
    finally:
        con.unregister("_prop_keys")


def build_households(con: duckdb.DuckDBPyConnection, run_id: str) -> HouseholdResult:
    t0 = time.perf_counter()
    con.execute(HOUSEHOLD_DDL)
    placed = current_property(con)
    n_persons = con.execute(
        "SELECT count(*) FROM person WHERE status = 'active'").fetchone()[0]
    new = placed.rename(columns={"person_id": "member", "property_key": "group"})
    prev = con.execute("""
        SELECT m.person_id AS member, m.household_id AS id
        FROM household_member m JOIN household h USING (household_id)
        WHERE h.status = 'active'""").df()
    mapping = assign_stable_ids(con, new[["member", "group"]], prev, HOUSEHOLD_SEQUENCE, "H")
    placed["household_id"] = placed["property_key"].map(mapping.group_to_id)
    agencies = con.execute("""
        SELECT rp.person_id, count(DISTINCT rp.agency) AS n FROM record_person rp GROUP BY 1
        """).df().set_index("person_id")["n"]
    placed["person_agencies"] = placed["person_id"].map(agencies).fillna(0).astype(int)
    stats = placed.groupby(["household_id", "property_key"]).agg(
        n_members=("person_id", "size"), n_agencies=("person_agencies", "max")).reset_index()
    lineage = mapping.lineage.assign(
        run_id=run_id, household_id=mapping.lineage["group"].map(mapping.group_to_id))
    lineage = lineage[["run_id", "household_id", "previous_id", "overlap"]]

    con.register("_hh_stats", stats)
    con.register("_hh_members", placed)
    con.register("_hh_lineage", lineage)
    try:
        with atomic(con):
            con.execute("""
                INSERT INTO household
                SELECT household_id, 'active', ?, ?, NULL, property_key, n_members, n_agencies
                FROM _hh_stats
                ON CONFLICT (household_id) DO UPDATE SET status = 'active',
                    last_run_id = excluded.last_run_id, property_key = excluded.property_key,
                    n_members = excluded.n_members, n_agencies = excluded.n_agencies
                """, [run_id, run_id])
            if mapping.retired:
                con.execute("UPDATE household SET status = 'retired', retired_run_id = ? "
                            "WHERE list_contains(?, household_id)", [run_id, mapping.retired])
            # household_member holds the current run's membership only; lineage keeps history.
            con.execute("DELETE FROM household_member")
            con.execute("""INSERT INTO household_member SELECT household_id, person_id, ?,
                           n_agencies_agreeing FROM _hh_members""", [run_id])
            con.execute("INSERT INTO household_lineage SELECT * FROM _hh_lineage")
    finally:
        for t in ("_hh_stats", "_hh_members", "_hh_lineage"):
            con.unregister(t)
    return HouseholdResult(
        run_id=run_id, n_households=len(stats), n_new=len(mapping.new_groups),
        n_retired=len(mapping.retired), n_persons_placed=len(placed),
        n_persons_without_address=max(0, int(n_persons) - len(placed)),
        seconds=time.perf_counter() - t0)
