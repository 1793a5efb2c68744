"""Family networks: related-person tokens carried in records (a pupil's parent/carer, a child's
mother) joined to linked persons, so a parent who lives elsewhere still joins the child's network.

A related person is resolved to a person_id by the first rule, in order of strength, that finds
exactly one candidate other than the record's own subject:
  nhs      NHS-number token
  name_dob family name + canonical given name + DOB tokens
  name_phone canonical given name + phone token
  email    email token
  name_postcode both names + postcode key (blk_names_postcode), not salted by the DOB;
           a relative named without an address carries the naming record's own postcode in
           that key (the bridge fills it: a lead adult named by an Early Help record lives
           at the child's address unless the record says otherwise)
Unresolved relatives keep a pseudonymous key over their tokens, so two agencies naming the same
unregistered father still meet in one network. Writes `family_edge`, `family_network`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import duckdb
from splink import DuckDBAPI
from splink.clustering import cluster_pairwise_predictions_at_threshold

from linkage.txn import atomic

RULES: list[tuple[str, list[str]]] = [
    ("nhs", ["tok_nhs_number"]),
    ("name_dob", ["tok_family_name", "tok_given_name_canonical", "tok_dob"]),
    ("name_phone", ["blk_given_canonical_phone"]),
    ("email", ["tok_email"]),
    # Spec v3 has no standalone postcode token, and its name tokens are salted by the DOB
    # (no DOB, no name token), so this rule uses the names + postcode key, which carries no
    # DOB: most relatives are named without one (a school contact, an Early Help lead adult).
    ("name_postcode", ["blk_names_postcode"]),
]

FAMILY_DDL = """
CREATE TABLE IF NOT EXISTS family_edge (
    run_id VARCHAR NOT NULL,
    subject_person_id VARCHAR NOT NULL,
    related_person_id VARCHAR,          -- null when the relative is not a linked person
    related_key VARCHAR,                -- pseudonymous key of an unresolved relative
    relationship VARCHAR,
    agency VARCHAR NOT NULL,
    record_ref VARCHAR NOT NULL,
    slot VARCHAR NOT NULL,
    match_rule VARCHAR NOT NULL         -- nhs | name_dob | ... | unresolved
);
CREATE TABLE IF NOT EXISTS family_network (
    network_id VARCHAR NOT NULL,
    person_id VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL
);
"""


@dataclass(frozen=True)
class FamilyResult:
    run_id: str
    n_edges: int
    n_resolved: int
    n_unresolved: int
    resolved_by_rule: dict[str, int]
    n_networks: int
    n_multi_household_networks: int
    seconds: float


_NO_CANDIDATES = "SELECT NULL AS rel_id, 0 AS rank, '' AS rule, NULL AS candidate WHERE FALSE"


def _related_columns(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("DESCRIBE related").fetchall()}


def _first_present(have: set[str], *cols: str) -> str:
    """coalesce() of those of `cols` the warehouse holds (a spec may leave keys out)."""
    got = [f"r.{c}" for c in cols if c in have]
    if not got:
        return "NULL"
    return got[0] if len(got) == 1 else f"coalesce({', '.join(got)})"


def _resolve_sql(have: set[str]) -> str:
    parts = []
    for rank, (name, cols) in enumerate(RULES):
        if not set(cols) <= have:
            continue  # a key the spec does not send
        rel = [f"r.{c}" for c in cols]
        cand = [f"i.{c}" for c in cols]
        on = " AND ".join(f"{a} = {b}" for a, b in zip(rel, cand, strict=True))
        present = " AND ".join(f"{a} IS NOT NULL" for a in rel)
        parts.append(f"""
            SELECT r.rel_id, {rank} AS rank, '{name}' AS rule, rp.person_id AS candidate
            FROM _rel r JOIN identifiers i ON {on}
            JOIN record_person rp ON rp.record_ref = i.record_ref
            WHERE {present} AND rp.person_id <> r.subject_person_id""")
    return " UNION ALL ".join(parts)


def resolve_related(con: duckdb.DuckDBPyConnection) -> None:
    """Temp tables `_rel` (every related-person row with its subject's person_id) and `_cand`
    (rel_id -> the one person the first rule that finds exactly one candidate resolves it
    to). Households use them too: a tenancy's members live at its property."""
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _rel AS
        SELECT row_number() OVER (ORDER BY r.record_ref, r.slot) AS rel_id,
               r.*, rp.person_id AS subject_person_id
        FROM related r JOIN record_person rp USING (record_ref)""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _cand AS
        WITH c AS ({_resolve_sql(_related_columns(con)) or _NO_CANDIDATES}),
        per_rule AS (
            SELECT rel_id, rank, rule, min(candidate) AS candidate,
                   count(DISTINCT candidate) AS n
            FROM c GROUP BY rel_id, rank, rule)
        SELECT rel_id, rule, candidate FROM per_rule WHERE n = 1
        QUALIFY row_number() OVER (PARTITION BY rel_id ORDER BY rank) = 1""")


def build_family_network(con: duckdb.DuckDBPyConnection, run_id: str) -> FamilyResult:
    t0 = time.perf_counter()
    con.execute(FAMILY_DDL)
    resolve_related(con)
    have = _related_columns(con)
    given = _first_present(
        have,
        "tok_given_name_canonical",
        "blk_given_canonical_postcode",
        "blk_given_canonical_phone",
    )
    family = _first_present(have, "tok_family_name", "blk_names_postcode")
    anchor = _first_present(have, "tok_dob", "tok_phone", "tok_email", "blk_names_postcode")
    # a relative with no name token or name key cannot be placed at all (the name tokens
    # need a DOB; the name + postcode keys do not)
    named = " OR ".join(
        f"r.{c} IS NOT NULL"
        for c in (
            "tok_family_name",
            "tok_given_name_canonical",
            "blk_names_postcode",
            "blk_given_canonical_postcode",
            "blk_given_canonical_phone",
        )
        if c in have
    )
    with atomic(con):
        con.execute("DELETE FROM family_edge")
        con.execute(
            f"""
            INSERT INTO family_edge
            SELECT ?, r.subject_person_id, c.candidate,
                   CASE WHEN c.candidate IS NULL THEN
                       'R' || md5(concat_ws('|', {given}, {family}, {anchor}))
                   END,
                   r.relationship, r.agency, r.record_ref, r.slot,
                   coalesce(c.rule, 'unresolved')
            FROM _rel r LEFT JOIN _cand c USING (rel_id)
            WHERE c.candidate IS NOT NULL OR {named or "FALSE"}""",
            [run_id],
        )
        _write_networks(con, run_id)
    by_rule = dict(
        con.execute("SELECT match_rule, count(*) FROM family_edge GROUP BY 1").fetchall()
    )
    n_edges = sum(by_rule.values())
    n_unres = by_rule.pop("unresolved", 0)
    n_networks, n_multi = con.execute("""
        WITH hh AS (
            SELECT n.network_id, count(DISTINCT m.household_id) AS n_hh
            FROM family_network n LEFT JOIN household_member m USING (person_id)
            GROUP BY 1)
        SELECT count(*), count(*) FILTER (WHERE n_hh > 1) FROM hh""").fetchone()
    return FamilyResult(
        run_id,
        n_edges,
        n_edges - n_unres,
        n_unres,
        by_rule,
        int(n_networks),
        int(n_multi),
        time.perf_counter() - t0,
    )


def _write_networks(con: duckdb.DuckDBPyConnection, run_id: str) -> None:
    """Connected components over persons, their households and their relatives."""
    nodes = con.execute("""
        SELECT person_id AS node FROM person WHERE status = 'active'
        UNION SELECT household_id FROM household_member
        UNION SELECT related_key FROM family_edge WHERE related_key IS NOT NULL""").df()
    edges = con.execute("""
        SELECT person_id AS node_l, household_id AS node_r FROM household_member
        UNION ALL
        SELECT subject_person_id, coalesce(related_person_id, related_key) FROM family_edge
        """).df()
    edges = edges[edges["node_r"].isin(set(nodes["node"]))]
    api = DuckDBAPI(connection=duckdb.connect())
    clusters = cluster_pairwise_predictions_at_threshold(
        nodes,
        edges,
        api,
        node_id_column_name="node",
        edge_id_column_name_left="node_l",
        edge_id_column_name_right="node_r",
    ).as_pandas_dataframe()
    con.register("_net", clusters)
    try:
        con.execute("DELETE FROM family_network")
        # Name a network after its lowest person id: deterministic, and stable while that
        # person stays in it.
        con.execute(
            """
            INSERT INTO family_network
            SELECT 'F' || substr(min(node) OVER (PARTITION BY cluster_id), 2), node, ?
            FROM _net WHERE node LIKE 'P%'""",
            [run_id],
        )
    finally:
        con.unregister("_net")
