"""Chaining guard and person_id stability on a real DuckDB warehouse file."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from linkage.clusters import assign_person_ids, conflict_pairs, guard_chains


def _records(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(
        rows,
        columns=["unique_id", "cluster_id", "agency", "batch_id", "tok_nhs_number", "tok_dob"],
    )


def test_chain_through_other_agency_is_flagged_and_split_at_weakest_edge() -> None:
    # GP says a and c are different people (different NHS numbers); b from police chains them.
    rec = _records(
        [
            ("GP:a", "GP:a", "GP", "g1", "n1", "d1"),
            ("POL:b", "GP:a", "POL", "p1", None, "d1"),
            ("GP:c", "GP:a", "GP", "g1", "n2", "d1"),
            ("SC:d", "GP:a", "SC", "s1", "n2", "d1"),
        ]
    )
    edges = pd.DataFrame(
        {
            "unique_id_l": ["GP:a", "POL:b", "GP:c"],
            "unique_id_r": ["POL:b", "GP:c", "SC:d"],
            "match_weight": [14.0, 9.5, 20.0],
        }
    )
    out, flagged = guard_chains(rec, edges, split=True)
    assert flagged.to_dict("records") == [
        {"cluster_id": "GP:a", "n_conflicts": 1, "n_records": 4, "split_into": 2}
    ]
    cid = dict(zip(out["unique_id"], out["cluster_id"], strict=True))
    assert cid["GP:a"] == cid["POL:b"] != cid["GP:c"] == cid["SC:d"]

    kept, flagged_only = guard_chains(rec, edges, split=False)
    assert flagged_only["split_into"].tolist() == [1]
    assert kept["cluster_id"].nunique() == 1


def test_same_snapshot_different_dob_conflicts_but_other_batches_do_not() -> None:
    rec = _records(
        [
            ("SCH:a", "k", "SCH", "b1", None, "d1"),
            ("SCH:b", "k", "SCH", "b1", None, "d2"),
            ("SCH:c", "k", "SCH", "b2", None, "d3"),
            ("GP:e", "k", "GP", "g1", None, "d9"),
        ]
    )
    pairs = conflict_pairs(rec)
    assert list(zip(pairs["unique_id_l"], pairs["unique_id_r"], strict=True)) == [
        ("SCH:a", "SCH:b")
    ]


def test_no_conflict_leaves_clusters_alone() -> None:
    rec = _records([("GP:a", "x", "GP", "g", "n1", "d"), ("SC:b", "x", "SC", "s", "n1", "d")])
    edges = pd.DataFrame({"unique_id_l": ["GP:a"], "unique_id_r": ["SC:b"], "match_weight": [30]})
    out, flagged = guard_chains(rec, edges)
    assert flagged.empty
    assert out["cluster_id"].tolist() == ["x", "x"]


def _clusters(groups: dict[str, list[str]]) -> pd.DataFrame:
    rows = [
        {"unique_id": f"A:{r}", "record_ref": r, "agency": "A", "cluster_id": cid}
        for cid, refs in groups.items()
        for r in refs
    ]
    return pd.DataFrame(rows)


def _save(con: duckdb.DuckDBPyConnection, assigned: pd.DataFrame, run_id: str) -> None:
    # Stand-in for person_linkage's writer: record_person holds the latest mapping.
    con.execute(
        "CREATE TABLE IF NOT EXISTS record_person (record_ref VARCHAR, agency VARCHAR, "
        "person_id VARCHAR, band VARCHAR, score DOUBLE, run_id VARCHAR)"
    )
    con.execute("DELETE FROM record_person")
    con.register("_a", assigned)
    con.execute(
        "INSERT INTO record_person SELECT record_ref, agency, person_id, 'auto_match', 1.0, ? "
        "FROM _a",
        [run_id],
    )
    con.unregister("_a")


def _ids(assigned: pd.DataFrame) -> dict[str, str]:
    return dict(zip(assigned["record_ref"], assigned["person_id"], strict=True))


def test_person_ids_stable_split_merge_and_never_reused(tmp_path: Path) -> None:
    db = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(db))
    run1 = _clusters({"c1": ["a", "b"], "c2": ["c", "d", "e"], "c3": ["f"], "c4": ["g"]})
    a1, n1 = assign_person_ids(con, run1, "r1")
    _save(con, a1, "r1")
    ids1 = _ids(a1)
    assert n1 == {"n_persons": 4, "n_new_persons": 4, "n_retired_persons": 0}
    assert len(set(ids1.values())) == 4
    con.close()

    # Reopen the file: the sequence and person table persist.
    con = duckdb.connect(str(db))
    run2 = _clusters(
        {
            "x1": ["a", "b", "h"],  # unchanged cluster gains a new record
            "x2": ["c", "d"],  # split: larger part keeps the id
            "x3": ["e"],  # split: smaller part gets a new id
            "x4": ["f", "g"],  # merge of two singletons: lowest id wins, other retired
        }
    )
    a2, n2 = assign_person_ids(con, run2, "r2")
    _save(con, a2, "r2")
    ids2 = _ids(a2)
    assert ids2["a"] == ids2["b"] == ids2["h"] == ids1["a"]
    assert ids2["c"] == ids2["d"] == ids1["c"]
    assert ids2["e"] not in ids1.values()
    survivor, retired = sorted([ids1["f"], ids1["g"]])
    assert ids2["f"] == ids2["g"] == survivor
    assert n2 == {"n_persons": 4, "n_new_persons": 1, "n_retired_persons": 1}
    status = dict(con.execute("SELECT person_id, status FROM person").fetchall())
    assert status[retired] == "retired"
    lineage = con.execute(
        "SELECT previous_person_id FROM person_lineage WHERE run_id='r2' AND person_id=?",
        [survivor],
    ).fetchall()
    assert sorted(r[0] for r in lineage) == sorted([ids1["f"], ids1["g"]])

    # Run 3: g splits off again. The retired id is not revived; a fresh one is minted.
    run3 = _clusters(
        {"y1": ["a", "b", "h"], "y2": ["c", "d"], "y3": ["e"], "y4": ["f"], "y5": ["g"]}
    )
    a3, _ = assign_person_ids(con, run3, "r3")
    ids3 = _ids(a3)
    assert ids3["g"] != retired
    assert ids3["g"] not in set(ids1.values()) | set(ids2.values())
    assert ids3["f"] == survivor
    con.close()


def test_ties_are_broken_deterministically(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    a1, _ = assign_person_ids(con, _clusters({"c1": ["a", "b"]}), "r1")
    _save(con, a1, "r1")
    # an even split: both halves overlap 1; the lower cluster_id keeps the id
    a2, _ = assign_person_ids(con, _clusters({"k2": ["b"], "k1": ["a"]}), "r2")
    ids = _ids(a2)
    assert ids["a"] == _ids(a1)["a"]
    assert ids["b"] != ids["a"]
    con.close()


def _ranked(con: duckdb.DuckDBPyConnection, clusters: pd.DataFrame) -> pd.DataFrame:
    """`clusters` on ranks, as full runs hand them over: a TEMP table (ord, agency,
    record_ref) ranking the unique_ids, and unique_id/cluster_id replaced by ranks."""
    ranked = clusters.sort_values("unique_id").reset_index(drop=True)
    ranked["ord"] = range(1, len(ranked) + 1)
    con.register("_r", ranked)
    con.execute("CREATE OR REPLACE TEMP TABLE rec_order AS SELECT ord, agency, record_ref FROM _r")
    con.unregister("_r")
    rank = dict(zip(ranked["unique_id"], ranked["ord"], strict=True))
    return pd.DataFrame(
        {
            "unique_id": clusters["unique_id"].map(rank),
            "cluster_id": clusters["cluster_id"].map(rank),
        }
    )


def test_person_ids_on_ranks_equal_person_ids_on_unique_ids(tmp_path: Path) -> None:
    """Full runs assign person ids on each record's rank in unique_id order: the same ids,
    retirements and lineage as on the unique_ids, through splits, merges, even-split ties
    and records that left the input."""
    runs = [
        {"a": ["a", "b", "c"], "d": ["d", "e"], "f": ["f"], "g": ["g"], "h": ["h", "i"]},
        # c and e gone; ties (h | i halves), a merge (f+g), a new record j
        {"a": ["a", "b"], "d": ["d", "j"], "f": ["f", "g"], "h": ["h"], "i": ["i"]},
        {"a": ["a"], "b": ["b", "d"], "f": ["f", "g", "h", "i", "j"]},
    ]
    out = {}
    for mode in ("unique_id", "rank"):
        con = duckdb.connect(str(tmp_path / f"{mode}.duckdb"))
        seen = []
        for n, groups in enumerate(runs):
            clusters = _clusters({f"A:{c}": refs for c, refs in groups.items()})
            if mode == "rank":
                assigned, counts = assign_person_ids(
                    con, _ranked(con, clusters), f"r{n}", record_order="rec_order"
                )
                assigned = assigned.assign(record_ref=clusters["record_ref"].to_numpy(), agency="A")
            else:
                assigned, counts = assign_person_ids(con, clusters, f"r{n}")
            _save(con, assigned[["record_ref", "agency", "person_id"]], f"r{n}")
            seen.append((_ids(assigned), counts))
        seen.append(con.execute("SELECT * FROM person ORDER BY person_id").fetchall())
        seen.append(con.execute("SELECT * FROM person_lineage ORDER BY ALL").fetchall())
        out[mode] = seen
        con.close()
    assert out["rank"] == out["unique_id"]
    # The runs did exercise retirement and minting.
    assert out["rank"][1][1]["n_retired_persons"] >= 1
    assert out["rank"][1][1]["n_new_persons"] >= 1


def test_chaining_guard_on_ranks_equals_guard_on_unique_ids() -> None:
    """Equal-weight edges are taken in id order: ranks must cut the same edges."""
    rec = _records(
        [
            ("GP:z", "GP:a", "GP", "g1", "n1", "d1"),
            ("POL:b", "GP:a", "POL", "p1", None, "d1"),
            ("POL:c", "GP:a", "POL", "p1", None, "d1"),
            ("GP:a", "GP:a", "GP", "g1", "n2", "d1"),
            ("SC:m", "GP:a", "SC", "s1", None, "d1"),
        ]
    )
    edges = pd.DataFrame(
        {
            "unique_id_l": ["GP:z", "GP:a", "GP:z", "GP:a", "POL:b"],
            "unique_id_r": ["POL:b", "POL:b", "POL:c", "POL:c", "SC:m"],
            "match_weight": [20.0, 20.0, 20.0, 20.0, 20.0],
        }
    )
    by_id, flagged_id = guard_chains(rec, edges)
    rank = {u: i for i, u in enumerate(sorted(rec["unique_id"]), start=1)}
    ranked_rec = rec.assign(
        unique_id=rec["unique_id"].map(rank), cluster_id=rec["cluster_id"].map(rank)
    )
    ranked_edges = edges.assign(
        unique_id_l=edges["unique_id_l"].map(rank), unique_id_r=edges["unique_id_r"].map(rank)
    )
    by_rank, flagged_rank = guard_chains(ranked_rec, ranked_edges)
    assert by_rank["cluster_id"].tolist() == by_id["cluster_id"].map(rank).tolist()
    assert flagged_rank["split_into"].tolist() == flagged_id["split_into"].tolist() == [2]


def test_a_trusted_direct_match_is_no_dob_conflict_but_a_chain_still_is() -> None:
    # One school snapshot holds a child twice, one record with a mis-keyed DOB (d1 vs d2),
    # matched directly with both names exact (trusted); and a third record (d3) reached
    # only through the police record: that one is still a conflict and is cut.
    rec = _records(
        [
            ("SCH:a", "k", "SCH", "b1", None, "d1"),
            ("SCH:b", "k", "SCH", "b1", None, "d2"),
            ("POL:p", "k", "POL", "p1", None, "d1"),
            ("SCH:c", "k", "SCH", "b1", None, "d3"),
        ]
    )
    edges = pd.DataFrame(
        {
            "unique_id_l": ["SCH:a", "POL:p", "POL:p"],
            "unique_id_r": ["SCH:b", "SCH:b", "SCH:c"],
            "match_weight": [15.0, 12.0, 8.0],
        }
    )
    # A trusted edge given in either orientation.
    trusted = pd.DataFrame({"unique_id_l": ["SCH:b"], "unique_id_r": ["SCH:a"]})
    pairs = conflict_pairs(rec, trusted)
    assert sorted(zip(pairs["unique_id_l"], pairs["unique_id_r"], strict=True)) == [
        ("SCH:a", "SCH:c"),
        ("SCH:b", "SCH:c"),
    ]
    out, _ = guard_chains(rec, edges, split=True, trusted=trusted)
    cid = dict(zip(out["unique_id"], out["cluster_id"], strict=True))
    assert cid["SCH:a"] == cid["SCH:b"] == cid["POL:p"] != cid["SCH:c"]
    # Without the trusted edge the duplicate is cut from its own twin record, as before.
    before, _ = guard_chains(rec, edges, split=True)
    cid = dict(zip(before["unique_id"], before["cluster_id"], strict=True))
    assert cid["SCH:a"] != cid["SCH:b"]
