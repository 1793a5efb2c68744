"""End-to-end figures of the linkage evaluation (benchmarks/evaluate_linkage.py): every exported
record counts, quarantined ones as missed; and incremental linking timed against a full relink.
Evaluation only: works from ground truth the hub never holds."""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from linkage import evaluation as ev
from linkage.config import HubPaths
from linkage.person_linkage import LinkageSettings, link_persons, stored_model


def _scores_dict(s: ev.Scores) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in asdict(s).items()}


def end_to_end(
    run: Path,
    gt: pd.DataFrame,
    rp: pd.DataFrame,
    truth: pd.DataFrame,
    hpred: pd.DataFrame,
    blocked: pd.DataFrame,
) -> dict[str, Any]:
    """Figures over every exported record (ground truth), quarantined ones counting as
    missed: singletons for persons and households, their true pairs never blocked."""
    allrec = gt.merge(
        rp[["agency", "record_id", "unique_id"]], on=["agency", "record_id"], how="left"
    )
    lost = allrec["unique_id"].isna()
    allrec["unique_id"] = allrec["unique_id"].fillna(
        "lost:" + allrec["agency"] + ":" + allrec["record_id"]
    )
    # Every synthetic record has a linkable identifier (name + DOB at least); a row with
    # none would not count in the denominator.
    ident = [
        c
        for c in (
            "clean_given_name",
            "clean_family_name",
            "clean_date_of_birth",
            "clean_nhs_number",
            "clean_phone",
            "clean_email",
            "clean_postcode",
            "clean_address_line_1",
        )
        if c in allrec
    ]
    linkable = allrec[ident].notna().any(axis=1)
    pid = dict(zip(rp["unique_id"], rp["person_id"], strict=True))
    pred = allrec[["unique_id", "agency"]].assign(
        cluster_id=[pid.get(u, f"lost:{u}") for u in allrec["unique_id"]]
    )
    t_ids = allrec[["unique_id", "person_id"]]
    cross = ev.pairwise_metrics(pred, t_ids, key="unique_id", cross_agency_only=True)
    allp = ev.pairwise_metrics(pred, t_ids, key="unique_id")
    hh = dict(zip(hpred["unique_id"], hpred["household_id"], strict=True))
    hp = allrec[["unique_id"]].assign(
        household_id=[hh.get(u, f"lost:{u}") for u in allrec["unique_id"]]
    )
    ht = allrec[["unique_id"]].assign(true_household_id=allrec["household_id"])
    out: dict[str, Any] = {
        "n_records": len(allrec),
        "n_lost_at_bridge": int(lost.sum()),
        "records_lost_share": round(float(lost[linkable].sum()) / max(1, int(linkable.sum())), 6),
        "person_cross_agency": _scores_dict(cross),
        "person_all_pairs": _scores_dict(allp),
        "household_pairwise": _scores_dict(ev.household_pairwise_metrics(hp, ht, key="unique_id")),
        "pair_completeness": round(ev.pair_completeness(blocked, ev.true_pairs(t_ids)), 6),
    }
    addr = run / "population" / "ground_truth" / "addresses.parquet"
    kinds = pd.read_parquet(addr)
    if "address_kind" in kinds:  # messy profile: households by kind of address
        hhs = pd.read_parquet(run / "population" / "ground_truth" / "households.parquet")
        kind = hhs.merge(kinds[["address_id", "address_kind"]], on="address_id").set_index(
            "household_id"
        )["address_kind"]
        k = allrec["household_id"].map(kind)
        out["household_by_address_kind"] = {
            str(name): _scores_dict(
                ev.household_pairwise_metrics(
                    hp[(k == name).to_numpy()], ht[(k == name).to_numpy()], key="unique_id"
                )
            )
            for name in sorted(k.dropna().unique())
        }
        gq = k.isin(["care_home", "hostel", "refuge"]).to_numpy()
        # A group quarters resident in one predicted household with anyone not of their own
        # true household: the failure 'care home as one household'.
        gq_pred = hp[gq].merge(ht[gq], on="unique_id")
        out["group_quarters_pairs_wrongly_joined"] = int(
            ev.household_pairwise_metrics(
                gq_pred[["unique_id", "household_id"]],
                gq_pred[["unique_id", "true_household_id"]],
                key="unique_id",
            ).fp
        )
    return out


def measure_incremental(run: Path, run_id: str, n_new: int = 200) -> dict[str, Any]:
    """Incremental linking against a full relink, on copies of the run's warehouse.

    `n_new` records (a fixed pseudo-random choice) are taken out of `identifiers` and the rest
    linked with the run's stored model; then they come back (as if just landed) and the same
    state is linked twice: `link_incremental` and a full `link_persons` with the same model.
    Returns both timings (the ratio is what to read: same machine, same run) and the pairwise
    agreement of the two person partitions."""
    from linkage.incremental import link_incremental

    paths = HubPaths.for_run(run)
    work = paths.hub / "incremental"
    work.mkdir(parents=True, exist_ok=True)
    a, b = work / "incremental.duckdb", work / "full.duckdb"
    shutil.copy(paths.warehouse, a)
    con = duckdb.connect(str(a))
    try:
        version = con.execute(
            "SELECT model_version FROM linkage_run WHERE run_id = ?", [run_id]
        ).fetchall()[0][0]
        model = stored_model(con, version)
        con.execute(
            """CREATE TABLE _held AS SELECT * FROM identifiers
                       ORDER BY hash(record_ref) LIMIT ?""",
            [n_new],
        )
        con.execute("DELETE FROM identifiers WHERE record_ref IN (SELECT record_ref FROM _held)")
        settings = LinkageSettings(show_progress=False, model=model)
        link_persons(con, "incremental-base", settings)
        con.execute("INSERT INTO identifiers SELECT * FROM _held")
        con.execute("DROP TABLE _held")
    finally:
        con.close()
    shutil.copy(a, b)
    out: dict[str, Any] = {"n_new_records": n_new}
    parts = {}
    for name, path in (("incremental", a), ("full", b)):
        con = duckdb.connect(str(path))
        try:
            t = time.perf_counter()
            if name == "incremental":
                r = link_incremental(con, "incremental-1", settings)
            else:
                r = link_persons(con, "full-relink-1", settings)
            out[f"{name}_seconds"] = round(time.perf_counter() - t, 3)
            out[f"{name}_scored_pairs"] = r.n_scored_pairs
            out[f"{name}_stages"] = {k: round(v, 2) for k, v in r.timings.items()}
            parts[name] = con.execute(
                "SELECT agency || ':' || record_ref AS unique_id, person_id FROM record_person"
            ).df()
        finally:
            con.close()
    agree = ev.pairwise_metrics(
        parts["incremental"].rename(columns={"person_id": "cluster_id"}),
        parts["full"],
        key="unique_id",
    )
    out["speedup_full_over_incremental"] = round(
        out["full_seconds"] / out["incremental_seconds"], 2
    )
    out["agreement_f1"] = round(agree.f1, 6)
    shutil.rmtree(work)
    return out
