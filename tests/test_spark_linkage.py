"""Spark backend (linkage.spark_linkage) against the DuckDB hub linkage with one stored model.

Runs on the shared 1,500-person `orchestrated_run`: the hub ingests and links on DuckDB
(training the model), then the same model scores the exported identifiers on Splink's
Spark backend in local mode; both must give the identical partition of records.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
from pathlib import Path

import duckdb
import pytest

from linkage.comparisons import dice_sql
from linkage.spark_linkage import to_spark_sql

SPARK_SKIP = (
    "Java is not installed (Spark needs a JVM)" if shutil.which("java") is None
    else "pyspark is not installed (pip install -e '.[spark]')"
    if importlib.util.find_spec("pyspark") is None else None
)
needs_spark = pytest.mark.skipif(SPARK_SKIP is not None, reason=SPARK_SKIP or "")


def _partition(ids: list[str], groups: list[str]) -> set[frozenset[str]]:
    out: dict[str, set[str]] = {}
    for i, g in zip(ids, groups, strict=True):
        out.setdefault(g, set()).add(i)
    return {frozenset(s) for s in out.values()}


def test_model_sql_translates_dice_and_quoting() -> None:
    cond = f"{dice_sql('bf_family_name')} >= 0.6"
    out = to_spark_sql(cond, {"bf_family_name": 16})
    assert "bit_count(`bf_family_name__w15_l` & `bf_family_name__w15_r`)" in out
    assert "`bf_family_name__pop_l`" in out and out.endswith(">= 0.6")
    # DuckDB's double-quoted identifiers must not become Spark string literals.
    assert to_spark_sql('"tok_dob_l" = "tok_dob_r"', {}) == "`tok_dob_l` = `tok_dob_r`"
    with pytest.raises(ValueError, match="bf_address"):
        to_spark_sql(f"{dice_sql('bf_address')} >= 0.85", {})
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
    from linkage.spark_linkage import export_identifiers, spark_session

    run = copy_run(orchestrated_run, tmp_path_factory.mktemp("spark") / "run")
    paths = HubPaths.for_run(run)
    report = ingest_landing(paths)
    assert not report.refused
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
    yield {"run": run, "model": model, "hub": hub, "parquet": parquet, "spark": spark,
           "warehouse": paths.warehouse}
    spark.stop()
    # py4j's connections log "closing" from __del__ at interpreter exit, after pytest has closed
    # the streams; keep that chatter (a logging traceback) out of the run's closing lines.
    logging.getLogger("py4j").setLevel(logging.WARNING)


@needs_spark
def test_spark_dice_equals_duckdb_dice_on_real_blooms(linked) -> None:
    """Dice over 32-bit words in Spark == DuckDB's bit_count over BIT, on real encodings."""
    from linkage.spark_linkage import load_input, spark_dice_sql

    spark = linked["spark"]
    df, words = load_input(spark, linked["parquet"])
    assert words == {c: 16 for c in words} and "bf_given_name" in words
    col = "bf_given_name"
    sample = df.where(f"{col} IS NOT NULL").orderBy("unique_id").limit(60)
    pairs = sample.alias("l").crossJoin(sample.alias("r")).selectExpr(
        "l.unique_id AS unique_id_l", "r.unique_id AS unique_id_r",
        *[f"l.`{c}` AS `{c}_l`" for c in sample.columns if c.startswith(col)],
        *[f"r.`{c}` AS `{c}_r`" for c in sample.columns if c.startswith(col)],
    )
    got = pairs.selectExpr("unique_id_l", "unique_id_r",
                           f"{spark_dice_sql(col, words[col])} AS dice").toPandas()
    con = duckdb.connect()
    con.execute("CREATE TABLE s AS SELECT unique_id, CAST(bf_given_name AS BIT) AS b "
                "FROM read_parquet(?) WHERE bf_given_name IS NOT NULL "
                "ORDER BY unique_id LIMIT 60", [str(linked["parquet"])])
    want = con.execute(
        "SELECT l.unique_id AS unique_id_l, r.unique_id AS unique_id_r, "
        + dice_sql("b").replace('"b_l"', "l.b").replace('"b_r"', "r.b")
        + " AS dice FROM s l, s r").df()
    m = got.merge(want, on=["unique_id_l", "unique_id_r"], suffixes=("_spark", "_duck"))
    assert len(m) == 3600
    assert (m["dice_spark"] == m["dice_duck"]).all()
    # The sample spans the whole range: identical filters and unrelated names.
    assert m["dice_duck"].max() == 1.0 and m["dice_duck"].min() < 0.3


@needs_spark
def test_spark_backend_gives_the_duckdb_partition(linked) -> None:
    from linkage.spark_linkage import link_clusters_spark

    clusters = link_clusters_spark(linked["spark"], linked["parquet"], linked["model"],
                                   break_lineage_method="persist")
    hub = linked["hub"]
    assert sorted(clusters["unique_id"]) == sorted(hub["unique_id"])
    spark_part = _partition(list(clusters["unique_id"]), list(clusters["cluster_id"]))
    duck_part = _partition(list(hub["unique_id"]), list(hub["person_id"]))
    # Not a trivial partition: many records were linked across agencies.
    assert len(duck_part) < 0.8 * len(hub)
    assert sum(len(p) > 1 for p in duck_part) > 0.3 * len(duck_part)
    assert spark_part == duck_part


@needs_spark
def test_bloom_of_wrong_length_names_file_row_and_field(linked, tmp_path: Path) -> None:
    import pandas as pd

    from linkage.spark_linkage import load_input

    bad = tmp_path / "identifiers.parquet"
    pd.DataFrame({
        "unique_id": ["GP:a", "GP:b", "GP:c"], "agency": ["GP"] * 3,
        "record_ref": ["a", "b", "c"], "bf_family_name": [b"\x01" * 64, b"\x02" * 64, b"\x03" * 60],
    }).to_parquet(bad, index=False)
    with pytest.raises(ValueError, match=r"identifiers\.parquet: row agency=GP record_ref=c "
                                         r"field bf_family_name: Bloom filter of 60 bytes"):
        load_input(linked["spark"], bad)
