"""Households: persons who share a current address, across agencies, on address tokens alone.

1. Every current record carries address evidence: its UPRN token and/or its address token
   (HMAC of flat + premises + postcode). A record holding both says the two keys are one
   property, so keys are joined into properties by connected components (Splink's clustering).
   A record with neither is keyed by its town token (flat + premises + post town), which
   joins the one property its postcode-keyed records name (`_property_keys`).
2. Each person's current property is the one most agencies agree on; ties go to the most recent
   evidence (event date, else extract date), then to the lowest property key (deterministic).
3. A household is the set of persons whose current property is the same; household_id is
   stable across runs by member overlap (linkage.stable_ids) and never reused once retired.
   The address token carries the flat (ig_bridge.address), so flats of one building are
   separate properties, hence separate households.
4. Each member's relationship to the household lead (payload `relationship_to_lead`, a code
   the agency recoded: lead, partner, child, lodger = unrelated...) is taken from their latest
   record at that property and kept on household_member.
5. Group quarters (care homes, hostels, refuges) never form one household: a property where
   more persons live than any ordinary household holds (GROUP_QUARTERS_MIN_PERSONS) is split
   into its residents' families, the connected components of resolved relatives
   (linkage.family) living there, and everyone else alone. This reads only the number of
   persons placed and the relationship evidence, so it works on unfamiliar data with no
   address keywords (which are not at the hub).

Writes `household` and `household_member` (and `household_lineage`). Reads `identifiers`,
`record_person`, `payload`, `batch`.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
from splink import DuckDBAPI
from splink.clustering import cluster_pairwise_predictions_at_threshold

from linkage.config import default_mappings_dir
from linkage.family import resolve_related
from linkage.stable_ids import assign_stable_ids
from linkage.txn import atomic
from schemas.mapping import load_all_mappings

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
    n_agencies_agreeing INTEGER NOT NULL, -- agencies whose records put the person here
    relationship_to_lead VARCHAR          -- payload code from a record at this property
);
-- warehouses made before relationship_to_lead existed
ALTER TABLE household_member ADD COLUMN IF NOT EXISTS relationship_to_lead VARCHAR;
CREATE TABLE IF NOT EXISTS household_lineage (
    run_id VARCHAR NOT NULL,
    household_id VARCHAR NOT NULL,
    previous_household_id VARCHAR NOT NULL,
    overlap INTEGER NOT NULL
);
"""


#: A property with at least this many persons placed is group quarters. Ordinary households
#: of 8 or more are rare (well under 1% of households in England, Census 2021), and a large
#: family split here still keeps its members linked by relationships together; care homes,
#: hostels and refuges commonly hold 10-60 (some of whom the hub may not place there).
GROUP_QUARTERS_MIN_PERSONS = 8


@dataclass(frozen=True)
class HouseholdResult:
    run_id: str
    n_households: int
    n_new: int
    n_retired: int
    n_persons_placed: int
    n_persons_without_address: int
    seconds: float
    n_group_quarters: int = 0


def _has_town_key(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the identifiers carry tok_address_town (encoding spec v3, fourth amendment;
    a warehouse loaded before it has none)."""
    return bool(
        con.execute(
            "SELECT count(*) FROM duckdb_columns() WHERE table_name = 'identifiers' "
            "AND column_name = 'tok_address_town' AND database_name = current_database()"
        ).fetchall()[0][0]
    )


def _record_key_sql(con: duckdb.DuckDBPyConnection, alias: str = "i") -> str:
    """A record's address key, strongest first: UPRN, flat + premises + postcode, and only
    for a record with neither, flat + premises + post town."""
    keys = [f"'U' || {alias}.tok_uprn", f"'A' || {alias}.tok_address"]
    if _has_town_key(con):
        keys.append(f"'T' || {alias}.tok_address_town")
    return f"coalesce({', '.join(keys)})"


def _property_keys(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """address key -> property id (+ `weak`), joining UPRN and address keys seen on one record.

    A town key (flat + premises + post town: the address of a record without a postcode)
    joins the one property that the records carrying it beside a UPRN or postcode key name,
    so an address recorded with and without its postcode is one property, never two. Where
    no such record exists, or they name several properties (one street name in two parts
    of a town), the town key is a property of its own and `weak`: current_property counts
    it only for persons with no other address evidence, so it can never pull a person away
    from a postcode-keyed home."""
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
        props = pd.DataFrame(columns=["key", "property_key"])
    elif edges.empty:
        props = keys.assign(property_key=keys["key"])
    else:
        api = DuckDBAPI(connection=duckdb.connect())  # scratch connection: warehouse stays clean
        clusters = cluster_pairwise_predictions_at_threshold(
            keys,
            edges,
            api,
            node_id_column_name="key",
            edge_id_column_name_left="key_l",
            edge_id_column_name_right="key_r",
        ).as_pandas_dataframe()
        props = clusters.rename(columns={"cluster_id": "property_key"})[["key", "property_key"]]
    props = props.assign(weak=False)
    if not _has_town_key(con):
        return props
    con.register("_strong_keys", props[["key", "property_key"]])
    try:
        town = con.execute("""
            WITH t AS (
                SELECT DISTINCT 'T' || i.tok_address_town AS key, s.property_key
                FROM identifiers i
                LEFT JOIN _strong_keys s
                    ON s.key = coalesce('U' || i.tok_uprn, 'A' || i.tok_address)
                WHERE i.tok_address_town IS NOT NULL)
            SELECT key,
                   CASE WHEN count(DISTINCT property_key) = 1 THEN min(property_key)
                        ELSE key END AS property_key,
                   count(DISTINCT property_key) <> 1 AS weak
            FROM t GROUP BY key
            """).df()
    finally:
        con.unregister("_strong_keys")
    return pd.concat([props, town], ignore_index=True)


# How often a related person of each kind shares the subject's home, used as the weight of
# their evidence (measured on the synthetic ground truth: partners, children, household
# members and step-parents always did, mothers 93%, fathers 76%: non-resident fathers).
RELATIVE_WEIGHTS: dict[str, float] = {
    "partner": 1.0,
    "child": 1.0,
    "household_member": 1.0,
    "step_parent": 1.0,
    "mother": 0.9,
    "parent": 0.8,
    "carer": 0.8,
    "father": 0.6,
}
OTHER_RELATIVE_WEIGHT = 0.5


def tenancy_agencies(mappings_dir: Path | None = None) -> list[str]:
    """Agencies whose related persons are the members of a tenancy at the record's address
    (mapping kind `housing`): the landlord's own statement of who lives there. Default: the
    hub's mappings folder (`JOINEDUP_MAPPINGS_DIR`, else the packaged one)."""
    directory = mappings_dir or default_mappings_dir()
    return sorted(code for code, m in load_all_mappings(directory).items() if m.kind == "housing")


def current_property(
    con: duckdb.DuckDBPyConnection,
    tenancies: Collection[str] = (),
    props: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """person_id -> property_key, n_agencies_agreeing.

    Evidence, strongest first: the person's own records (one vote per agency; a tenancy's
    member list counts as the housing agency's record of the member); then their resolved
    relatives (family.resolve_related) where those live, weighted by how often such a
    relative shares a home (RELATIVE_WEIGHTS). A person placed only by their own records at
    an address no relative confirms, while co-resident relatives agree on another one,
    moves there (a stale address); a person with no address evidence at all joins the home
    of their relatives. (A last fallback, the one property of their postcode where their
    family name lives, needed a surname + postcode key; spec v3's eighth amendment dropped
    it, as families sharing it let the hub join year-salted surname tokens back together;
    household F1 moved -0.0004 to +0.0009 without it.) `props`: _property_keys(con), when
    the caller has it already."""
    props = _property_keys(con) if props is None else props
    resolve_related(con)
    weights = pd.DataFrame(
        {"relationship": list(RELATIVE_WEIGHTS), "w": list(RELATIVE_WEIGHTS.values())}
    )
    con.register("_prop_keys", props)
    con.register("_rel_weights", weights)
    key = _record_key_sql(con)
    try:
        return con.execute(
            f"""
            WITH ev AS (
                SELECT record_ref, max(event_date) AS event_date FROM payload GROUP BY record_ref
            ), rec_all AS (
                SELECT i.record_ref, i.agency, {key} AS key,
                       coalesce(ev.event_date, TRY_CAST(b.created_at AS TIMESTAMP)::DATE)
                           AS seen
                FROM identifiers i
                LEFT JOIN ev USING (record_ref)
                LEFT JOIN batch b ON b.batch_id = i.batch_id
                WHERE {key} IS NOT NULL
            ), rec AS (
                SELECT rp.person_id, r.agency, r.key, r.seen
                FROM rec_all r JOIN record_person rp USING (record_ref)
                UNION ALL
                -- tenancy members live at the tenancy's property
                SELECT c.candidate, r.agency, r.key, r.seen
                FROM _rel rel JOIN _cand c USING (rel_id)
                JOIN rec_all r ON r.record_ref = rel.record_ref
                WHERE list_contains(?, rel.agency)
            ), votes AS (
                -- a town key no postcode-keyed record confirms (weak) counts only for a
                -- person with no other address evidence
                SELECT person_id, property_key, n_agencies, latest FROM (
                    SELECT r.person_id, k.property_key, bool_and(k.weak) AS weak,
                           count(DISTINCT r.agency) AS n_agencies, max(r.seen) AS latest
                    FROM rec r JOIN _prop_keys k USING (key)
                    GROUP BY r.person_id, k.property_key)
                QUALIFY NOT weak OR bool_and(weak) OVER (PARTITION BY person_id)
            ), own AS (
                SELECT person_id, property_key, n_agencies, latest
                FROM votes
                QUALIFY row_number() OVER (PARTITION BY person_id
                        ORDER BY n_agencies DESC, latest DESC NULLS LAST, property_key) = 1
            ), kin AS (
                -- resolved relatives, both directions, with the kind's weight
                SELECT DISTINCT rel.subject_person_id AS person_id, c.candidate AS relative,
                       rel.relationship, coalesce(w.w, ?) AS w
                FROM _rel rel JOIN _cand c USING (rel_id)
                LEFT JOIN _rel_weights w USING (relationship)
                UNION
                SELECT DISTINCT c.candidate, rel.subject_person_id, rel.relationship,
                       coalesce(w.w, ?)
                FROM _rel rel JOIN _cand c USING (rel_id)
                LEFT JOIN _rel_weights w USING (relationship)
            ), kin_votes AS (
                -- Relatives of one kind at one property state one fact (three children
                -- naming the same father say once that he is their father): the kind's
                -- weight counts once per property; different kinds add up.
                SELECT person_id, property_key, sum(w) AS w FROM (
                    SELECT k.person_id, f.property_key, k.relationship, max(k.w) AS w
                    FROM kin k JOIN own f ON f.person_id = k.relative
                    GROUP BY ALL)
                GROUP BY ALL
            ), scored AS (
                SELECT coalesce(v.person_id, k.person_id) AS person_id,
                       coalesce(v.property_key, k.property_key) AS property_key,
                       coalesce(v.n_agencies, 0) AS n_agencies, v.latest,
                       coalesce(v.n_agencies, 0) + coalesce(k.w, 0) AS score
                FROM votes v FULL JOIN kin_votes k USING (person_id, property_key)
            ), chosen AS (
                SELECT person_id, property_key, n_agencies AS n_agencies_agreeing
                FROM scored
                QUALIFY row_number() OVER (PARTITION BY person_id
                        ORDER BY score DESC, n_agencies DESC, latest DESC NULLS LAST,
                                 property_key) = 1
            )
            SELECT * FROM chosen
            """,
            [list(tenancies), OTHER_RELATIVE_WEIGHT, OTHER_RELATIVE_WEIGHT],
        ).df()
    finally:
        con.unregister("_prop_keys")
        con.unregister("_rel_weights")


def relationship_to_lead(
    con: duckdb.DuckDBPyConnection, placed: pd.DataFrame, props: pd.DataFrame
) -> pd.Series:
    """person_id -> relationship_to_lead, from the person's latest record (event date, else
    extract date) whose address is the property they were placed at. Empty when no agency
    sends the field (or the warehouse predates it)."""
    has = con.execute(
        "SELECT count(*) FROM duckdb_columns() WHERE table_name = 'payload' "
        "AND column_name = 'relationship_to_lead' "
        "AND database_name = current_database()"
    ).fetchall()[0][0]
    if not has or placed.empty:
        return pd.Series(dtype=object)
    con.register("_rtl_keys", props[["key", "property_key"]])
    con.register("_rtl_placed", placed[["person_id", "property_key"]])
    key = _record_key_sql(con)
    try:
        got = con.execute(f"""
            SELECT rp.person_id, p.relationship_to_lead AS rel
            FROM payload p JOIN record_person rp USING (record_ref)
            JOIN identifiers i ON i.record_ref = p.record_ref
            JOIN _rtl_keys k ON k.key = {key}
            JOIN _rtl_placed pl ON pl.person_id = rp.person_id
                AND pl.property_key = k.property_key
            LEFT JOIN batch b ON b.batch_id = p.batch_id
            WHERE p.relationship_to_lead IS NOT NULL
            QUALIFY row_number() OVER (PARTITION BY rp.person_id ORDER BY
                coalesce(p.event_date, TRY_CAST(b.created_at AS TIMESTAMP)::DATE) DESC NULLS LAST,
                p.relationship_to_lead) = 1
            """).df()
    finally:
        con.unregister("_rtl_keys")
        con.unregister("_rtl_placed")
    return got.set_index("person_id")["rel"]


def household_groups(
    con: duckdb.DuckDBPyConnection,
    placed: pd.DataFrame,
    min_persons: int = GROUP_QUARTERS_MIN_PERSONS,
) -> pd.DataFrame:
    """`placed` (person_id, property_key, ...) + `group`: the property for an ordinary home;
    in group quarters (`min_persons` or more persons placed at one property) one group per
    family of resolved relatives living there, and one per person without any. Needs the
    `_rel`/`_cand` tables of `family.resolve_related` (built by `current_property`)."""
    placed = placed.assign(group=placed["property_key"])
    size = placed.groupby("property_key")["person_id"].transform("size")
    gq = placed[size >= min_persons]
    if gq.empty:
        return placed
    con.register("_gq", gq[["person_id", "property_key"]])
    try:
        edges = con.execute("""
            SELECT DISTINCT least(a.person_id, b.person_id) AS person_id_l,
                            greatest(a.person_id, b.person_id) AS person_id_r
            FROM _rel rel JOIN _cand c USING (rel_id)
            JOIN _gq a ON a.person_id = rel.subject_person_id
            JOIN _gq b ON b.person_id = c.candidate
            WHERE a.property_key = b.property_key AND a.person_id <> b.person_id""").df()
    finally:
        con.unregister("_gq")
    nodes = gq[["person_id"]].drop_duplicates()
    if edges.empty:
        family = nodes.assign(cluster_id=nodes["person_id"])
    else:
        family = cluster_pairwise_predictions_at_threshold(
            nodes,
            edges,
            DuckDBAPI(connection=duckdb.connect()),
            node_id_column_name="person_id",
            edge_id_column_name_left="person_id_l",
            edge_id_column_name_right="person_id_r",
        ).as_pandas_dataframe()
    family = family.set_index("person_id")["cluster_id"]
    in_gq = size >= min_persons
    placed.loc[in_gq, "group"] = (
        placed.loc[in_gq, "property_key"]
        + "/"
        + placed.loc[in_gq, "person_id"].map(family).astype(str)
    )
    return placed


def build_households(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    tenancies: Collection[str] | None = None,
    mappings_dir: Path | None = None,
    group_quarters_min_persons: int = GROUP_QUARTERS_MIN_PERSONS,
) -> HouseholdResult:
    """Households for the current persons. `tenancies`: agencies whose related persons are
    tenancy members (default: the agencies of kind housing in `mappings_dir`, the hub's
    mappings folder)."""
    t0 = time.perf_counter()
    con.execute(HOUSEHOLD_DDL)
    props = _property_keys(con)
    placed = current_property(
        con, tenancy_agencies(mappings_dir) if tenancies is None else tenancies, props
    )
    placed["relationship_to_lead"] = (
        placed["person_id"].map(relationship_to_lead(con, placed, props)).astype(object)
    )
    placed = household_groups(con, placed, group_quarters_min_persons)
    n_gq = int(placed.loc[placed["group"] != placed["property_key"], "property_key"].nunique())
    n_persons = con.execute("SELECT count(*) FROM person WHERE status = 'active'").fetchone()[0]
    new = placed.rename(columns={"person_id": "member"})
    prev = con.execute("""
        SELECT m.person_id AS member, m.household_id AS id
        FROM household_member m JOIN household h USING (household_id)
        WHERE h.status = 'active'""").df()
    mapping = assign_stable_ids(con, new[["member", "group"]], prev, HOUSEHOLD_SEQUENCE, "H")
    placed["household_id"] = placed["group"].map(mapping.group_to_id)
    agencies = (
        con.execute("""
        SELECT rp.person_id, count(DISTINCT rp.agency) AS n FROM record_person rp GROUP BY 1
        """)
        .df()
        .set_index("person_id")["n"]
    )
    placed["person_agencies"] = placed["person_id"].map(agencies).fillna(0).astype(int)
    stats = (
        placed.groupby(["household_id", "property_key"])
        .agg(n_members=("person_id", "size"), n_agencies=("person_agencies", "max"))
        .reset_index()
    )
    lineage = mapping.lineage.assign(
        run_id=run_id, household_id=mapping.lineage["group"].map(mapping.group_to_id)
    )
    lineage = lineage[["run_id", "household_id", "previous_id", "overlap"]]

    con.register("_hh_stats", stats)
    con.register("_hh_members", placed)
    con.register("_hh_lineage", lineage)
    try:
        with atomic(con):
            con.execute(
                """
                INSERT INTO household
                SELECT household_id, 'active', ?, ?, NULL, property_key, n_members, n_agencies
                FROM _hh_stats
                ON CONFLICT (household_id) DO UPDATE SET status = 'active',
                    last_run_id = excluded.last_run_id, property_key = excluded.property_key,
                    n_members = excluded.n_members, n_agencies = excluded.n_agencies
                """,
                [run_id, run_id],
            )
            if mapping.retired:
                con.execute(
                    "UPDATE household SET status = 'retired', retired_run_id = ? "
                    "WHERE list_contains(?, household_id)",
                    [run_id, mapping.retired],
                )
            # household_member holds the current run's membership only; lineage keeps history.
            con.execute("DELETE FROM household_member")
            con.execute(
                """INSERT INTO household_member (household_id, person_id, run_id,
                           n_agencies_agreeing, relationship_to_lead)
                           SELECT household_id, person_id, ?, n_agencies_agreeing,
                           relationship_to_lead FROM _hh_members""",
                [run_id],
            )
            con.execute("INSERT INTO household_lineage SELECT * FROM _hh_lineage")
    finally:
        for t in ("_hh_stats", "_hh_members", "_hh_lineage"):
            con.unregister(t)
    return HouseholdResult(
        run_id=run_id,
        n_households=len(stats),
        n_new=len(mapping.new_groups),
        n_retired=len(mapping.retired),
        n_persons_placed=len(placed),
        n_persons_without_address=max(0, int(n_persons) - len(placed)),
        seconds=time.perf_counter() - t0,
        n_group_quarters=n_gq,
    )
