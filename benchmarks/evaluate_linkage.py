"""Linkage quality on a synthetic population, playing every party of the partnership.

    python benchmarks/evaluate_linkage.py --people 5000 --seed 7 [--out var/eval] [--no-baseline]

1. generate the population (synthetic_data), provision the partnership's keys
   (synthetic_data.parties), run every agency's bridge (ig_bridge.split.run_bridge);
2. hub: ingest, link persons, households and family networks (linkage.*), with no plaintext;
3. evaluation only: decrypt each record_ref with its own agency's ref key (the agency's
   KeyStore) to join ground truth; link the same accepted records with Splink on plaintext
   (linkage.evaluation.plaintext_baseline) for the privacy-cost figure.

Prints a table and writes the figures (numbers only, no identifiers or refs) to
`<run>/hub/reports/linkage_quality.json`, which the IG-lead report picks up.
The functions here are also what tests/test_quality_floors.py runs on a small population.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.evaluation_end_to_end import end_to_end, measure_incremental  # noqa: E402
from benchmarks.evaluation_tables import render  # noqa: E402
from ig_bridge.keys import KeyStore, decrypt_record_ref  # noqa: E402
from ig_bridge.normalise import normalise_identifiers  # noqa: E402
from ig_bridge.reader import iter_chunks  # noqa: E402
from ig_bridge.split import run_bridge  # noqa: E402
from linkage import evaluation as ev  # noqa: E402
from linkage.config import HubPaths  # noqa: E402
from linkage.family import build_family_network  # noqa: E402
from linkage.households import build_households  # noqa: E402
from linkage.ingest import ingest_landing  # noqa: E402
from linkage.person_linkage import (  # noqa: E402
    LinkageSettings,
    blocked_pairs,
    link_persons,
    prepare_input,
    score_pairs,
    stored_model,
)
from schemas.mapping import SUBJECT, load_all_mappings  # noqa: E402
from synthetic_data.generate import generate_population  # noqa: E402
from synthetic_data.messy import PROFILES  # noqa: E402
from synthetic_data.parties import provision_partnership  # noqa: E402

REPORT_NAME = "linkage_quality.json"
MAPPINGS = ROOT / "schemas" / "agencies"


# --------------------------------------------------------------------------- parties


def play_partnership(
    run: Path,
    *,
    people: int,
    seed: int,
    progress: bool = False,
    population: Path | None = None,
    profile: str = "default",
) -> dict[str, Any]:
    """Generate (or copy) a population, provision keys, run every agency's bridge.
    Returns {agency: {read, accepted, quarantined}}."""
    run = Path(run)
    pop = run / "population"
    if population is not None:
        shutil.copytree(population, pop, dirs_exist_ok=True)
    elif not (pop / "population.json").exists():
        generate_population(pop, seed, people, progress=progress, profile=profile)
    mappings = load_all_mappings(MAPPINGS)
    codes = sorted(p.name for p in (pop / "extracts").iterdir() if p.name in mappings)
    provision_partnership(run, codes)
    out: dict[str, Any] = {}
    for code in codes:
        extract = next(p for p in sorted((pop / "extracts" / code).iterdir()) if p.is_file())
        res = run_bridge(
            extract, mappings[code].path, run / "agency" / code, run / "landing", progress=progress
        )
        out[code] = {
            "read": res.rows_read,
            "accepted": res.rows_accepted,
            "quarantined": res.rows_quarantined,
        }
    return out


def run_hub(run: Path, run_id: str, settings: LinkageSettings | None = None) -> dict[str, Any]:
    """The hub's stages on one run folder: ingest, person linkage, households, family."""
    paths = HubPaths.for_run(run).ensure()
    t0 = time.perf_counter()
    report = ingest_landing(paths)
    refused = [(o.agency, o.reason_code) for o in report.refused]
    if refused:
        raise RuntimeError(f"hub refused batches: {refused}")
    timings = {"ingest": time.perf_counter() - t0}
    con = duckdb.connect(str(paths.warehouse))
    try:
        t = time.perf_counter()
        result = link_persons(con, run_id, settings or LinkageSettings(show_progress=False))
        timings["link_persons"] = time.perf_counter() - t
        t = time.perf_counter()
        hh = build_households(con, run_id)
        fam = build_family_network(con, run_id)
        timings["households_family"] = time.perf_counter() - t
    finally:
        con.close()
    return {"linkage": result, "households": hh, "family": fam, "timings": timings}


# --------------------------------------------------------------------------- evaluation only


def decrypt_refs(run: Path, refs: pd.DataFrame) -> pd.DataFrame:
    """refs (agency, record_ref) -> + record_id, each decrypted with its own agency's key.
    Evaluation only: the hub never holds these keys."""
    out = []
    for agency, grp in refs.groupby("agency", sort=True):
        keys = KeyStore(Path(run) / "agency" / agency / "keys", agency).ref_keys()
        ids = [decrypt_record_ref(r, keys) for r in grp["record_ref"]]
        out.append(grp.assign(record_id=ids))
    return pd.concat(out, ignore_index=True)


def plaintext_records(
    run: Path, accepted: pd.DataFrame, *, every_row: bool = False
) -> pd.DataFrame:
    """Normalised plaintext identifiers of the accepted records (agency, record_id), read
    from each agency's own extract with the bridge's reader and normaliser; with
    `every_row`, of every row of the agencies' extracts (a plaintext pipeline quarantines
    nothing: the end-to-end baseline). Evaluation only: this is what the agencies hold,
    never the hub."""
    mappings = load_all_mappings(MAPPINGS)
    frames = []
    for agency, grp in accepted.groupby("agency", sort=True):
        m = mappings[agency]
        extract = next(
            p
            for p in sorted((Path(run) / "population" / "extracts" / agency).iterdir())
            if p.is_file()
        )
        raw = pd.concat([c.frame for c in iter_chunks(extract, m.source)], ignore_index=True)
        cols = m.identifier_columns(SUBJECT)
        nf = normalise_identifiers(
            pd.DataFrame({f: raw[src] for f, src in cols.items()}), m.source.date_formats
        ).frame
        if not every_row:
            nf = nf[nf["record_id"].isin(set(grp["record_id"]))]
        nf = nf.drop_duplicates("record_id")
        keep = [c for c in ev.PLAINTEXT_COLUMNS if c in nf.columns]
        f = nf[keep].copy()
        f.insert(0, "unique_id", agency + ":" + nf["record_id"].astype(str))
        f["agency"], f["batch_id"] = agency, agency
        f["date_of_birth"] = pd.to_datetime(f["date_of_birth"], errors="coerce").dt.date
        frames.append(f)
    out = pd.concat(frames, ignore_index=True)
    for c in out.columns:  # all-null object columns would reach DuckDB as type NULL
        if c != "date_of_birth" and out[c].dtype == object:
            out[c] = out[c].astype("string")
    return out


def evaluate_run(
    run: Path, run_id: str, *, baseline: bool = True, threshold: float | None = None
) -> dict[str, Any]:
    """Quality figures for the hub's result of `run_id` against ground truth; with `baseline`
    also the plaintext Splink baseline on the same accepted records."""
    run = Path(run)
    paths = HubPaths.for_run(run)
    con = duckdb.connect(str(paths.warehouse))
    try:
        rp = con.execute("SELECT record_ref, agency, person_id FROM record_person").df()
        hh = con.execute("""SELECT m.person_id, m.household_id, h.property_key
                            FROM household_member m JOIN household h USING (household_id)
                            """).df()
        version, thr = con.execute(
            "SELECT model_version, auto_match_probability FROM linkage_run WHERE run_id = ?",
            [run_id],
        ).fetchone()
        model = stored_model(con, version)
        thr = threshold or thr
        prepare_input(con)
        scored = score_pairs(con, model, threshold=0.01)
        blocked = blocked_pairs(con, model)
    finally:
        con.close()

    rp = decrypt_refs(run, rp)
    rp["unique_id"] = rp["agency"] + ":" + rp["record_ref"]
    gt = pd.read_parquet(run / "population" / "ground_truth" / "records.parquet")
    gt["record_id"] = gt["record_id"].astype(str)
    truth = gt.merge(rp[["agency", "record_id", "unique_id"]], on=["agency", "record_id"])
    flags = [c for c in gt.columns if c.startswith("cor_")]
    truth = truth[["unique_id", "agency", "person_id", "household_id", *flags]]
    pred = rp[["unique_id", "agency"]].assign(cluster_id=rp["person_id"])
    t_ids = truth[["unique_id", "person_id"]]

    cross = ev.pairwise_metrics(pred, t_ids, key="unique_id", cross_agency_only=True)
    allp = ev.pairwise_metrics(pred, t_ids, key="unique_id")
    b3 = ev.bcubed_metrics(pred, t_ids, key="unique_id")
    pre_guard = ev.scored_pair_precision(scored, t_ids, thr)
    completeness = ev.pair_completeness(blocked, ev.true_pairs(t_ids))
    # Household of a record = household of its person; persons the hub could not place
    # (no address evidence) are singletons.
    ph = dict(zip(hh["person_id"], hh["household_id"], strict=True))
    hpred = pd.DataFrame(
        {
            "unique_id": rp["unique_id"],
            "household_id": [ph.get(p, f"none:{p}") for p in rp["person_id"]],
        }
    )
    htruth = truth[["unique_id"]].assign(true_household_id=truth["household_id"])
    house = ev.household_pairwise_metrics(hpred, htruth, key="unique_id")
    persons = pd.read_parquet(run / "population" / "ground_truth" / "persons.parquet")

    def sc(s: ev.Scores) -> dict[str, float]:
        return {k: round(float(v), 6) for k, v in asdict(s).items()}

    report: dict[str, Any] = {
        "run_id": run_id,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model_version": version,
        "auto_match_probability": thr,
        "n_records": len(rp),
        "n_true_persons": int(truth["person_id"].nunique()),
        "n_linked_persons": int(rp["person_id"].nunique()),
        "person_cross_agency": sc(cross),
        "person_all_pairs": sc(allp),
        "person_bcubed": sc(b3),
        "household_pairwise": sc(house),
        "pair_completeness": round(completeness, 6),
        "n_candidate_pairs": len(blocked),
        # Pairs the run joined automatically: every pair inside one person (after the
        # chaining guard), i.e. all-pairs precision; and the raw scored pairs at the threshold.
        "auto_match_precision": round(allp.precision, 6),
        "scored_pair_precision_at_threshold": round(pre_guard.precision, 6),
        "false_negatives_by_corruption": ev.misses_by_flag(
            pred, truth[["unique_id", "person_id", *flags]], flags, key="unique_id"
        ),
        "false_positives_by_kind": ev.false_match_kinds(pred, t_ids, persons, key="unique_id"),
    }
    report["end_to_end"] = end_to_end(run, gt, rp, truth, hpred, blocked)
    plain = plaintext_records(run, rp[["agency", "record_id"]])
    report["breakdown"] = breakdown(run, rp, truth, hh, scored, blocked, plain, thr)
    if baseline:
        bcon = duckdb.connect()
        try:
            bcon.register("_plain", plain)
            bcon.execute("CREATE TABLE plaintext_records AS SELECT * FROM _plain")
            t = time.perf_counter()
            base = ev.plaintext_baseline(bcon, "plaintext_records", threshold=thr)
            report["plaintext_seconds"] = round(time.perf_counter() - t, 2)
        finally:
            bcon.close()
        base["agency"] = base["unique_id"].str.split(":", n=1).str[0]
        bt = plain[["unique_id"]].merge(
            gt.assign(unique_id=gt["agency"] + ":" + gt["record_id"])[["unique_id", "person_id"]],
            on="unique_id",
        )
        pc = ev.pairwise_metrics(base, bt, key="unique_id", cross_agency_only=True)
        pa = ev.pairwise_metrics(base, bt, key="unique_id")
        report["plaintext_cross_agency"] = sc(pc)
        report["plaintext_all_pairs"] = sc(pa)
        report["privacy_cost_f1"] = round(allp.f1 - pa.f1, 6)
        report["privacy_cost_f1_cross_agency"] = round(cross.f1 - pc.f1, 6)
        # End to end: plaintext Splink on every exported row (nothing quarantined).
        every = plaintext_records(run, gt[["agency", "record_id"]], every_row=True)
        if set(every["unique_id"]) == set(plain["unique_id"]):
            base_all = base[["unique_id", "cluster_id"]]  # nothing quarantined: same run
        else:
            bcon = duckdb.connect()
            try:
                bcon.register("_plain", every)
                bcon.execute("CREATE TABLE plaintext_records AS SELECT * FROM _plain")
                base_all = ev.plaintext_baseline(bcon, "plaintext_records", threshold=thr)
            finally:
                bcon.close()
        e2e_ids = gt.assign(unique_id=gt["agency"] + ":" + gt["record_id"])
        pred_all = e2e_ids[["unique_id", "agency"]].merge(base_all, on="unique_id", how="left")
        pred_all["cluster_id"] = pred_all["cluster_id"].fillna(pred_all["unique_id"])
        pe = ev.pairwise_metrics(
            pred_all, e2e_ids[["unique_id", "person_id"]], key="unique_id", cross_agency_only=True
        )
        report["end_to_end"]["plaintext_cross_agency"] = sc(pe)
    paths.reports.mkdir(parents=True, exist_ok=True)
    (paths.reports / REPORT_NAME).write_text(json.dumps(report, indent=1), "utf-8")
    return report


def breakdown(
    run: Path,
    rp: pd.DataFrame,
    truth: pd.DataFrame,
    hh: pd.DataFrame,
    scored: pd.DataFrame,
    blocked: pd.DataFrame,
    plain: pd.DataFrame,
    threshold: float,
) -> dict[str, Any]:
    """Losses by kind (benchmarks.linkage_breakdown): counts only, no identifiers."""
    from benchmarks import linkage_breakdown as lb

    t = truth[["unique_id", "agency", "person_id", "household_id"]].merge(
        rp[["unique_id", "person_id", "record_id"]].rename(columns={"person_id": "cluster_id"}),
        on="unique_id",
    )
    t["plain_id"] = t["agency"] + ":" + t["record_id"].astype(str)
    homes = t.merge(
        hh.rename(columns={"person_id": "cluster_id", "household_id": "hub_hh"}),
        on="cluster_id",
        how="left",
    )
    homes = homes.rename(columns={"household_id": "true_household_id", "hub_hh": "household_id"})
    return {
        "lost_at_bridge_by_reason": lb.lost_by_reason(run),
        "missed_person_pairs": lb.missed_pairs(
            t, blocked, scored, plain.rename(columns={"unique_id": "plain_id"}), threshold
        ),
        "household_errors": lb.household_errors(homes),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--people", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--out", type=Path, default=None, help="run folder (default var/eval-<people>-<seed>)"
    )
    ap.add_argument(
        "--profile",
        choices=PROFILES,
        default="default",
        help="synthetic profile: messy = real exports' errors (synthetic_data.messy)",
    )
    ap.add_argument("--threshold", type=float, default=None, help="auto-match probability")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--keep", action="store_true", help="reuse an existing run folder")
    ap.add_argument(
        "--incremental",
        type=int,
        default=0,
        metavar="N",
        help="also time incremental linking of N late records against a full "
        "relink (same model, same run)",
    )
    args = ap.parse_args(argv)
    console = Console()
    suffix = "" if args.profile == "default" else f"-{args.profile}"
    run = args.out or ROOT / "var" / f"eval-{args.people}-{args.seed}{suffix}"
    if run.exists() and not args.keep:
        shutil.rmtree(run)
    settings = LinkageSettings(show_progress=True)
    if args.threshold is not None:
        settings = replace(settings, auto_match_probability=args.threshold)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("parties: generate, keys, bridges", total=3)
        t = time.perf_counter()
        if not (run / "hub" / "warehouse.duckdb").exists():
            play_partnership(run, people=args.people, seed=args.seed, profile=args.profile)
        t_bridge = time.perf_counter() - t
        bar.update(task, advance=1, description="hub: ingest, link, households")
        t = time.perf_counter()
        run_id = f"eval-{datetime.now(UTC):%Y%m%dT%H%M%S}"
        hub = run_hub(run, run_id, replace(settings, show_progress=False))
        t_hub = time.perf_counter() - t
        bar.update(task, advance=1, description="evaluation: ground truth, plaintext baseline")
        report = evaluate_run(run, run_id, baseline=not args.no_baseline)
        bar.advance(task)
    render(report, console)
    if args.incremental:
        inc = measure_incremental(run, run_id, args.incremental)
        report["incremental"] = inc
        (HubPaths.for_run(run).reports / REPORT_NAME).write_text(
            json.dumps(report, indent=1), "utf-8"
        )
        console.print(
            f"incremental linking of {inc['n_new_records']} late records: "
            f"{inc['incremental_seconds']}s ({inc['incremental_scored_pairs']} pairs) vs full "
            f"relink {inc['full_seconds']}s ({inc['full_scored_pairs']} pairs): full/incremental "
            f"= {inc['speedup_full_over_incremental']}x; partitions agree F1 "
            f"{inc['agreement_f1']:.4f}"
        )
    console.print(
        f"bridges {t_bridge:.1f}s, hub {t_hub:.1f}s "
        f"({', '.join(f'{k} {v:.1f}s' for k, v in hub['timings'].items())}); "
        f"report {HubPaths.for_run(run).reports / REPORT_NAME}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
