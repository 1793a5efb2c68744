"""Spark backend (linkage.spark_linkage) against the DuckDB hub linkage.

Runs on the shared 1,500-person `orchestrated_run`, with one local-mode Spark session for the
module (each start-up costs ~20 s):
- `linked`: the hub ingests and links on DuckDB, training the model (the reference);
- `spark_run`: the pipeline's link stage on a copy of the ingested hub, switched to Spark by
  JOINEDUP_LINKAGE_BACKEND, trains the model on Spark and writes the warehouse; then the same
  warehouse is relinked on DuckDB with that Spark-trained model.
With one model both backends must write the same partition, person ids, bands and clerical
queue; the Spark-trained model must agree with the DuckDB-trained one (pairwise F1 >= 0.99).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from linkage.comparisons import (
    bit_dice_sql,
    bloom_word_column,
    bloom_word_count_for,
    dice_at_least_sql,
    dice_sql,
    legacy_dice_sql,
)
from linkage.linkage_input import _bloom_word_sql
from linkage.spark_linkage import to_spark_sql

SPARK_SKIP = (
    "Java is not installed (Spark needs a JVM)"
    if shutil.which("java") is None
    else "pyspark is not installed (pip install -e '.[spark]')"
    if importlib.util.find_spec("pyspark") is None
    else None
)
needs_spark = pytest.mark.skipif(SPARK_SKIP is not None, reason=SPARK_SKIP or "")


def _partition(ids: list[str], groups: list[str]) -> set[frozenset[str]]:
    out: dict[str, set[str]] = {}
    for i, g in zip(ids, groups, strict=True):
        out.setdefault(g, set()).add(i)
    return {frozenset(s) for s in out.values()}


def test_model_sql_translates_dice_and_quoting() -> None:
    cond = f"{dice_sql('bf_family_name', 5)} >= 0.6"
    out = to_spark_sql(cond, {"bf_family_name": 16})
    assert "bit_count(`bf_family_name__w15_l` & `bf_family_name__w15_r`)" in out
    assert "`bf_family_name__pop_l`" in out and out.endswith(">= 0.6")
    # DuckDB's double-quoted identifiers must not become Spark string literals.
    assert to_spark_sql('"tok_dob_l" = "tok_dob_r"', {}) == "`tok_dob_l` = `tok_dob_r`"
    with pytest.raises(ValueError, match="bf_address"):
        to_spark_sql(f"{dice_sql('bf_address', 5)} >= 0.85", {})
    # Models trained before Bloom words, or before popcounts were stored, keep translating.
    for older in (bit_dice_sql, legacy_dice_sql):
        assert to_spark_sql(f"{older('bf_family_name')} >= 0.6", {"bf_family_name": 16}) == out
    # The integer threshold form new models use: the same intersection over Spark's words.
    at_least = to_spark_sql(dice_at_least_sql("bf_family_name", 5, 0.6), {"bf_family_name": 16})
    assert "bit_count(`bf_family_name__w15_l` & `bf_family_name__w15_r`)" in at_least
    assert "bf_family_name_w4" not in at_least and "`bf_family_name__pop_l`" in at_least
    # A Bloom comparison written some other way is refused rather than silently mis-scored.
    with pytest.raises(ValueError, match="unrecognised Bloom comparison"):
        to_spark_sql('bit_count("bf_address_l" & "bf_address_r") > 3', {"bf_address": 16})


@pytest.fixture(scope="module")
def linked(orchestrated_run: Path, copy_run, tmp_path_factory: pytest.TempPathFactory):
    if SPARK_SKIP:
        pytest.skip(SPARK_SKIP)
    from linkage.config import HubPaths
    from linkage.ingest import ingest_landing
    from linkage.person_linkage import LinkageSettings, link_persons, stored_model
    from linkage.spark_linkage import export_identifiers
    from linkage.spark_session import spark_session

    run = copy_run(orchestrated_run, tmp_path_factory.mktemp("spark") / "run")
    paths = HubPaths.for_run(run)
    report = ingest_landing(paths)
    assert not report.refused
    # The ingested, not yet linked hub: the pipeline test links a copy of it on Spark.
    ingested = copy_run(run, tmp_path_factory.mktemp("spark_pipeline") / "run")
    con = duckdb.connect(str(paths.warehouse))
    try:
        res = link_persons(con, "duck-1", LinkageSettings(show_progress=False))
        model = stored_model(con, res.model_version)
        hub = con.execute(
            "SELECT agency || ':' || record_ref AS unique_id, person_id FROM record_person"
        ).df()
        parquet = export_identifiers(con, run / "hub" / "spark_input")
    finally:
        con.close()
    spark = spark_session(shuffle_partitions=1, checkpoint_dir=run / "hub" / "spark_tmp")
    # A few thousand rows: compiling each query's whole-stage code and re-planning it
    # adaptively cost more than running it (the Spark link stage 83 s -> 57 s here).
    spark.conf.set("spark.sql.codegen.wholeStage", "false")
    spark.conf.set("spark.sql.adaptive.enabled", "false")
    yield {
        "run": run,
        "model": model,
        "hub": hub,
        "parquet": parquet,
        "spark": spark,
        "warehouse": paths.warehouse,
        "ingested": ingested,
    }
    spark.stop()
    # py4j's connections log "closing" from __del__ at interpreter exit, after pytest has closed
    # the streams; keep that chatter (a logging traceback) out of the run's closing lines.
    logging.getLogger("py4j").setLevel(logging.WARNING)


@needs_spark
def test_spark_dice_equals_duckdb_dice_on_real_blooms(linked) -> None:
    """Dice over 32-bit words in Spark == DuckDB's over 124-bit words, on real encodings."""
    from linkage.spark_linkage import load_input, spark_dice_sql

    spark = linked["spark"]
    df, words = load_input(spark, linked["parquet"])
    assert words == {c: 16 for c in words} and "bf_given_name" in words
    col = "bf_given_name"
    sample = df.where(f"{col} IS NOT NULL").orderBy("unique_id").limit(60)
    pairs = (
        sample.alias("l")
        .crossJoin(sample.alias("r"))
        .selectExpr(
            "l.unique_id AS unique_id_l",
            "r.unique_id AS unique_id_r",
            *[f"l.`{c}` AS `{c}_l`" for c in sample.columns if c.startswith(col)],
            *[f"r.`{c}` AS `{c}_r`" for c in sample.columns if c.startswith(col)],
        )
    )
    levels = (0.4, 0.6, 0.85)
    got = pairs.selectExpr(
        "unique_id_l",
        "unique_id_r",
        f"{spark_dice_sql(col, words[col])} AS dice",
        *[
            f"{to_spark_sql(dice_at_least_sql(col, 5, t), words)} AS at_{i}"
            for i, t in enumerate(levels)
        ],
    ).toPandas()
    con = duckdb.connect()
    n = bloom_word_count_for(64)
    cols = [*(bloom_word_column(col, i) for i in range(n)), f"pop_{col}"]
    con.execute(
        "CREATE TABLE s AS SELECT unique_id, "
        + ", ".join(f'{_bloom_word_sql(col, i)} AS "{bloom_word_column(col, i)}"' for i in range(n))
        + f', bit_count(CAST({col} AS BIT)) AS "pop_{col}" '
        f"FROM read_parquet(?) s WHERE {col} IS NOT NULL ORDER BY unique_id LIMIT 60",
        [str(linked["parquet"])],
    )
    sides = ", ".join(f'{side}."{c}" AS "{c}_{side}"' for side in "lr" for c in cols)
    want = con.execute(
        f"SELECT unique_id_l, unique_id_r, {dice_sql(col, n)} AS dice, "
        + ", ".join(f"{dice_at_least_sql(col, n, t)} AS at_{i}" for i, t in enumerate(levels))
        + " FROM ("
        f"SELECT l.unique_id AS unique_id_l, r.unique_id AS unique_id_r, {sides} "
        "FROM s l, s r)"
    ).df()
    m = got.merge(want, on=["unique_id_l", "unique_id_r"], suffixes=("_spark", "_duck"))
    assert len(m) == 3600
    assert (m["dice_spark"] == m["dice_duck"]).all()
    for i, t in enumerate(levels):  # the integer form: the very pairs Dice >= t selects
        assert (m[f"at_{i}_spark"] == (m["dice_duck"] >= t)).all()
        assert (m[f"at_{i}_duck"] == (m["dice_duck"] >= t)).all()
    # The sample spans the whole range: identical filters and unrelated names.
    assert m["dice_duck"].max() == 1.0 and m["dice_duck"].min() < 0.3


def _table(con: duckdb.DuckDBPyConnection, sql: str, *args: object) -> pd.DataFrame:
    return con.execute(sql, list(args)).df()


def _clerical(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """A run's clerical queue keyed by record pair (either order), person ids dropped."""
    q = _table(con, "SELECT * FROM clerical_review WHERE run_id = ?", run_id)
    left = q["agency_l"] + ":" + q["record_ref_l"]
    right = q["agency_r"] + ":" + q["record_ref_r"]
    q["pair"] = [tuple(sorted(p)) for p in zip(left, right, strict=True)]
    return (
        q.drop(
            columns=[
                "run_id",
                "record_ref_l",
                "agency_l",
                "record_ref_r",
                "agency_r",
                "person_id_l",
                "person_id_r",
            ]
        )
        .set_index("pair")
        .sort_index()
    )


SPARK_RUN = "scheduled__2025-01-02T00:00:00+00:00"  # an Airflow run id: ':' and '+' in paths
RECORD_PERSON = (
    "SELECT agency || ':' || record_ref AS unique_id, person_id, band, score, "
    "run_id FROM record_person ORDER BY unique_id"
)


@pytest.fixture(scope="module")
def spark_run(linked):
    """The pipeline's link stage on Spark (training there), then a DuckDB relink of the same
    warehouse with the Spark-trained model."""
    from linkage.config import HubPaths
    from linkage.person_linkage import LinkageSettings, link_persons, stored_model
    from linkage.pipeline import stage_link_persons

    paths = HubPaths.for_run(linked["ingested"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JOINEDUP_LINKAGE_BACKEND", "spark")
        for name in ("JOINEDUP_SPARK_DIR", "JOINEDUP_SPARK_BREAK_LINEAGE"):
            mp.delenv(name, raising=False)
        t = time.perf_counter()
        summary = stage_link_persons(paths, SPARK_RUN)
        seconds = time.perf_counter() - t
        again = stage_link_persons(paths, SPARK_RUN)
    con = duckdb.connect(str(paths.warehouse))
    try:
        out = {
            "summary": summary,
            "again": again,
            "seconds": seconds,
            "paths": paths,
            "run": _table(con, "SELECT * FROM linkage_run WHERE run_id = ?", SPARK_RUN),
            "models": _table(con, "SELECT * FROM linkage_model"),
            "record_person": _table(con, RECORD_PERSON),
            "persons": _table(con, "SELECT * FROM person WHERE status = 'active'"),
            "clerical": _clerical(con, SPARK_RUN),
        }
        out["model"] = stored_model(con, out["run"].iloc[0]["model_version"])
        out["duck"] = link_persons(
            con, "duck-spark-model", LinkageSettings(model=out["model"], show_progress=False)
        )
        out["duck_record_person"] = _table(con, RECORD_PERSON)
        out["duck_clerical"] = _clerical(con, "duck-spark-model")
    finally:
        con.close()
    return out


@needs_spark
def test_pipeline_link_stage_runs_on_spark_when_configured(spark_run) -> None:
    summary, run = spark_run["summary"], spark_run["run"]
    assert len(run) == 1 and run.iloc[0]["mode"] == "spark"
    assert (
        summary["run_id"] == SPARK_RUN and summary["model_version"] == run.iloc[0]["model_version"]
    )
    # Trained on Spark in this run, stored like a DuckDB-trained model.
    models = spark_run["models"]
    mine = models[models["model_version"] == summary["model_version"]]
    assert list(mine["created_run_id"]) == [SPARK_RUN]
    assert set(json.loads(run.iloc[0]["timings_json"])) == {
        "prepare",
        "train",
        "predict",
        "cluster",
        "persist",
    }
    # Every record placed; persons, bands and the clerical queue written.
    rp = spark_run["record_person"]
    assert len(rp) == summary["n_records"] > 2000 and (rp["run_id"] == SPARK_RUN).all()
    assert set(rp["band"]) == {"auto_match", "clerical", "non_match"}
    assert rp["person_id"].nunique() == summary["n_persons"] == len(spark_run["persons"])
    assert len(spark_run["clerical"]) == summary["n_clerical_pairs"] > 0
    # Idempotent like every stage: a second call reports the recorded run.
    assert spark_run["again"].get("skipped") is True
    # The exported input and the checkpoints do not outlive the run.
    work = spark_run["paths"].hub / "spark"
    assert not [p for p in work.rglob("*") if p.is_file()]
    print(
        f"spark link stage (training on Spark): {spark_run['seconds']:.1f} s, "
        f"timings {run.iloc[0]['timings_json']}"
    )


@needs_spark
def test_spark_run_writes_what_duckdb_writes_with_the_same_model(spark_run) -> None:
    """One model, two backends: the DuckDB relink keeps every person id the Spark run gave
    (same partition), with the same bands, scores and clerical queue."""
    spark_rp, duck_rp = spark_run["record_person"], spark_run["duck_record_person"]
    duck = spark_run["duck"]
    spark_part = _partition(list(spark_rp["unique_id"]), list(spark_rp["person_id"]))
    # Not a trivial partition: many records were linked across agencies.
    assert len(spark_part) < 0.8 * len(spark_rp)
    assert sum(len(p) > 1 for p in spark_part) > 0.3 * len(spark_part)
    assert list(duck_rp["unique_id"]) == list(spark_rp["unique_id"])
    assert list(duck_rp["person_id"]) == list(spark_rp["person_id"])
    assert duck.n_new_persons == 0 and duck.n_retired_persons == 0
    assert list(duck_rp["band"]) == list(spark_rp["band"])
    assert duck_rp["score"].fillna(-1).to_numpy() == pytest.approx(
        spark_rp["score"].fillna(-1).to_numpy(), abs=1e-9
    )
    assert duck.n_scored_pairs == spark_run["summary"]["n_scored_pairs"]
    assert duck.n_auto_pairs == spark_run["summary"]["n_auto_pairs"]
    # Clerical queue: the same pairs with the same evidence (gamma levels, weights).
    spark_q, duck_q = spark_run["clerical"], spark_run["duck_clerical"]
    assert list(spark_q.index) == list(duck_q.index)
    assert list(spark_q.columns) == list(duck_q.columns)
    for col in spark_q.columns:
        if col.startswith("gamma_") or col == "status":
            assert (spark_q[col] == duck_q[col]).all(), col
        else:
            assert spark_q[col].to_numpy() == pytest.approx(duck_q[col].to_numpy(), abs=1e-9)


@needs_spark
def test_spark_trained_model_is_a_duckdb_model_that_agrees(spark_run, linked) -> None:
    from linkage.evaluation import pairwise_metrics
    from linkage.person_linkage import load_model
    from linkage.person_model import model_to_json

    spark_model, duck_model = spark_run["model"], linked["model"]
    assert load_model(model_to_json(spark_model))["settings_hash"] == spark_model["settings_hash"]

    # DuckDB SQL and the same comparisons and rules: only the prior and m/u values differ.
    def shape(model: dict) -> dict:
        s = json.loads(json.dumps(model["splink_settings"]))
        for key in ("probability_two_random_records_match", "linker_uid"):
            s.pop(key, None)
        for comp in s["comparisons"]:
            for level in comp["comparison_levels"]:
                level.pop("m_probability", None)
                level.pop("u_probability", None)
        return s

    assert shape(spark_model) == shape(duck_model)
    assert spark_model["settings_hash"] != duck_model["settings_hash"]  # trained, not copied
    assert spark_model["splink_settings"]["sql_dialect"] == "duckdb"
    # Spark-trained vs DuckDB-trained model: the two partitions agree pairwise.
    agree = pairwise_metrics(
        spark_run["record_person"].rename(columns={"person_id": "cluster_id"}),
        linked["hub"],
        key="unique_id",
    )
    assert agree.tp > 500
    assert agree.f1 >= 0.99, agree
    print(
        f"Spark-trained vs DuckDB-trained partition: pairwise P {agree.precision:.4f} "
        f"R {agree.recall:.4f} F1 {agree.f1:.4f} over {agree.tp:.0f} shared pairs"
    )


def test_link_backend_switch_reads_the_environment(monkeypatch, tmp_path: Path) -> None:
    from linkage.pipeline import linkage_backend
    from linkage.spark_session import SparkConfig

    monkeypatch.delenv("JOINEDUP_LINKAGE_BACKEND", raising=False)
    assert linkage_backend() == "duckdb"
    monkeypatch.setenv("JOINEDUP_LINKAGE_BACKEND", " Spark ")
    assert linkage_backend() == "spark"
    monkeypatch.setenv("JOINEDUP_LINKAGE_BACKEND", "dask")
    with pytest.raises(ValueError, match="JOINEDUP_LINKAGE_BACKEND: 'dask'"):
        linkage_backend()

    for name in ("JOINEDUP_SPARK_MASTER", "JOINEDUP_SPARK_DIR", "JOINEDUP_SPARK_PARTITIONS"):
        monkeypatch.delenv(name, raising=False)
    default = SparkConfig.from_env(tmp_path / "hub")
    assert default.master is None and default.work_dir == tmp_path / "hub" / "spark"
    monkeypatch.setenv("JOINEDUP_SPARK_MASTER", "spark://hub-spark:7077")
    monkeypatch.setenv("JOINEDUP_SPARK_DIR", str(tmp_path / "shared"))
    monkeypatch.setenv("JOINEDUP_SPARK_PARTITIONS", "64")
    cluster = SparkConfig.from_env(tmp_path / "hub")
    assert (cluster.master, cluster.work_dir, cluster.shuffle_partitions) == (
        "spark://hub-spark:7077",
        tmp_path / "shared",
        64,
    )
    monkeypatch.setenv("JOINEDUP_SPARK_PARTITIONS", "many")
    with pytest.raises(ValueError, match="JOINEDUP_SPARK_PARTITIONS: 'many'"):
        SparkConfig.from_env(tmp_path / "hub")


@needs_spark
def test_bloom_of_wrong_length_names_file_row_and_field(linked, tmp_path: Path) -> None:
    import pandas as pd

    from linkage.spark_linkage import load_input

    bad = tmp_path / "identifiers.parquet"
    pd.DataFrame(
        {
            "unique_id": ["GP:a", "GP:b", "GP:c"],
            "agency": ["GP"] * 3,
            "record_ref": ["a", "b", "c"],
            "bf_family_name": [b"\x01" * 64, b"\x02" * 64, b"\x03" * 60],
        }
    ).to_parquet(bad, index=False)
    with pytest.raises(
        ValueError,
        match=r"identifiers\.parquet: row agency=GP record_ref=c "
        r"field bf_family_name: Bloom filter of 60 bytes",
    ):
        load_input(linked["spark"], bad)
