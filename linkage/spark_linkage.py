"""Hub person linkage on Splink's Spark backend, for a region that outgrows one machine.

The same model (comparisons, blocking rules, m/u values, prior) that `linkage.person_linkage`
trains on DuckDB scores pairs on Spark: the stored model's SQL is transpiled from DuckDB to
Spark SQL (sqlglot, which Splink already uses), and Bloom-filter Dice, which DuckDB computes
with `bit_count` over BIT columns, becomes `bit_count` over the filter's 32-bit words (Spark's
`bit_count` takes integers only), split out once when the input is loaded. Auto-match edges
then go through the hub's own rules: twin rule (`comparisons.twin_like`), Splink connected
components, chaining guard (`clusters.guard_chains`), so with one model both backends give
the same clusters (tests/test_spark_linkage.py). Persisting person ids and the clerical
queue stays with `person_linkage` in this version: the returned clusters are what
`clusters.assign_person_ids` takes.

    spark = spark_session()
    parquet = export_identifiers(con, "var/run/hub/spark_input")   # from the warehouse
    clusters = link_clusters_spark(spark, parquet, stored_model(con, version))
"""

from __future__ import annotations

import copy
import logging
import re
import tempfile
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import sqlglot

from linkage.clusters import guard_chains
from linkage.comparisons import BLOOM_COLUMNS, dice_sql, twin_like
from linkage.person_linkage import INPUT_TABLE, LinkageSettings, load_model, prepare_input

log = logging.getLogger(__name__)

WORD_BITS = 32  # Spark's bit_count is over integers; 32-bit words stay positive in BIGINT
_PLACEHOLDER = "joinedup_dice"


# --------------------------------------------------------------------------- session


def spark_session(
    *,
    cores: int = 2,
    shuffle_partitions: int = 4,
    driver_memory: str = "4g",
    checkpoint_dir: str | Path | None = None,
    app_name: str = "joinedup-linkage",
    master: str | None = None,
) -> Any:
    """A SparkSession: local mode on `cores` by default, or the cluster at `master`
    (e.g. "spark://host:7077"). Splink writes intermediate tables to the checkpoint dir,
    which must be hub storage (shared storage on a cluster)."""
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master(master or f"local[{cores}]")
        .appName(app_name)
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.default.parallelism", str(shuffle_partitions))
        .config("spark.driver.memory", driver_memory)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    ckpt = Path(checkpoint_dir or tempfile.mkdtemp(prefix="joinedup-spark-"))
    spark.sparkContext.setCheckpointDir(str(ckpt))
    return spark


# --------------------------------------------------------------------------- input


def export_identifiers(con: duckdb.DuckDBPyConnection, out_dir: str | Path) -> Path:
    """Write the linkage input (latest batch per record, as `prepare_input` builds it) from
    the warehouse to Parquet for Spark; Bloom filters go back to raw bytes. Returns the path.
    Only pseudonymised columns: tokens, blocking keys, Bloom filters, refs."""
    prepare_input(con)
    cols = [r[0] for r in con.execute(f"DESCRIBE {INPUT_TABLE}").fetchall()]
    select = ", ".join(
        f'CAST("{c}" AS BLOB) AS "{c}"' if c.startswith("bf_") else f'"{c}"' for c in cols
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "identifiers.parquet"
    con.execute(f"COPY (SELECT {select} FROM {INPUT_TABLE} ORDER BY unique_id) "
                f"TO '{path}' (FORMAT parquet)")
    return path


def _word_col(col: str, i: int) -> str:
    return f"{col}__w{i}"


def _pop_col(col: str) -> str:
    return f"{col}__pop"


def load_input(spark: Any, parquet: str | Path) -> tuple[Any, dict[str, int]]:
    """Read exported identifiers; split each Bloom filter into 32-bit words plus its
    popcount, once per record. Returns (Spark DataFrame, {bloom column: n words})."""
    from pyspark.sql import functions as F

    df = spark.read.parquet(str(parquet))
    words: dict[str, int] = {}
    for col in [c for c in df.columns if c.startswith("bf_")]:
        counts = (df.where(F.col(col).isNotNull()).groupBy(F.length(col).alias("n"))
                  .count().orderBy(F.desc("count")).collect())
        if not counts:
            continue
        nbytes = counts[0]["n"]
        if len(counts) > 1:
            bad = df.where(F.length(col) != nbytes).select("agency", "record_ref", col).first()
            raise ValueError(
                f"{parquet}: row agency={bad[0]} record_ref={bad[1]} field {col}: Bloom filter "
                f"of {len(bad[2])} bytes differs from the column's fixed length {nbytes}")
        if nbytes % (WORD_BITS // 8):
            raise ValueError(f"{parquet}: field {col}: {nbytes} bytes is not whole words")
        n = nbytes // (WORD_BITS // 8)
        hexed = F.hex(F.col(col))
        exprs = [
            F.conv(F.substring(hexed, i * 8 + 1, 8), 16, 10).cast("bigint").alias(
                _word_col(col, i))
            for i in range(n)
        ]
        df = df.select("*", *exprs)
        pop = sum((F.bit_count(F.col(_word_col(col, i))) for i in range(n)), F.lit(0))
        df = df.withColumn(_pop_col(col), F.when(F.col(col).isNotNull(), pop))
        words[col] = n
    return df, words


# --------------------------------------------------------------------------- model SQL


def spark_dice_sql(col: str, n_words: int) -> str:
    """Dice coefficient of two Bloom filters in Spark SQL, from their words and popcounts;
    the same arithmetic as `comparisons.dice_sql` (double division, NULL when both empty)."""
    inter = " + ".join(
        f"bit_count(`{_word_col(col, i)}_l` & `{_word_col(col, i)}_r`)" for i in range(n_words)
    )
    return (f"(2.0D * ({inter}) / "
            f"nullif(`{_pop_col(col)}_l` + `{_pop_col(col)}_r`, 0))")


def to_spark_sql(condition: str, words: dict[str, int]) -> str:
    """One DuckDB SQL condition of the model as Spark SQL."""
    for col in BLOOM_COLUMNS:
        condition = condition.replace(dice_sql(col), f'{_PLACEHOLDER}("{col}_l", "{col}_r")')
    out = sqlglot.transpile(condition, read="duckdb", write="spark")[0]

    def dice(m: re.Match[str]) -> str:
        col = m.group(1)
        if col not in words:
            raise ValueError(f"model compares Bloom field {col!r} the input lacks")
        return spark_dice_sql(col, words[col])

    out = re.sub(rf"{_PLACEHOLDER}\(`?(\w+)_l`?, `?\w+_r`?\)", dice, out, flags=re.IGNORECASE)
    if _PLACEHOLDER in out.lower() or re.search(r"\bbf_[a-z_]*[a-z]_l`? &", out):
        raise ValueError(f"unrecognised Bloom comparison in model SQL: {condition!r}")
    return out


def spark_settings(model: dict[str, Any], words: dict[str, int]) -> dict[str, Any]:
    """The model's Splink settings with every SQL condition in Spark SQL; m, u, prior and
    term-frequency settings untouched."""
    s = copy.deepcopy(load_model(model)["splink_settings"])
    s["sql_dialect"] = "spark"
    for comp in s["comparisons"]:
        for level in comp["comparison_levels"]:
            level["sql_condition"] = (
                level["sql_condition"] if level["sql_condition"] == "ELSE"
                else to_spark_sql(level["sql_condition"], words)
            )
    rules = []
    for br in s["blocking_rules_to_generate_predictions"]:
        br = {"blocking_rule": br} if isinstance(br, str) else dict(br)
        br["blocking_rule"] = to_spark_sql(br["blocking_rule"], words)
        br["sql_dialect"] = "spark"
        rules.append(br)
    s["blocking_rules_to_generate_predictions"] = rules
    return s


# --------------------------------------------------------------------------- linkage


def link_clusters_spark(
    spark: Any,
    parquet: str | Path,
    model: dict[str, Any],
    settings: LinkageSettings | None = None,
    *,
    break_lineage_method: str | None = None,
) -> pd.DataFrame:
    """Score and cluster the exported identifiers on Spark with a stored model.

    `break_lineage_method` is Splink's (default: parquet under the checkpoint dir, right
    for large inputs; "persist" keeps small ones in memory). Returns one row per record:
    unique_id, record_ref, agency, batch_id, cluster_id (after the twin rule and the
    chaining guard, as `link_persons` clusters)."""
    from splink import DuckDBAPI, Linker, SparkAPI
    from splink.clustering import cluster_pairwise_predictions_at_threshold

    s = settings or LinkageSettings()
    model = load_model(model)
    df, words = load_input(spark, parquet)
    db_api = SparkAPI(spark_session=spark, register_udfs_automatically=False,
                      break_lineage_method=break_lineage_method)
    linker = Linker(db_api.register(df), spark_settings(model, words),
                    log_level=logging.WARNING)
    try:
        pred = linker.inference.predict(
            threshold_match_probability=s.auto_match_probability, warning_mode="never"
        )
        gammas = [c for c in ("gamma_forename", "gamma_birth_date")
                  if c in pred.as_spark_dataframe().columns]
        # Ids, scores and the evidence the twin rule needs: no token values leave Spark.
        auto = (pred.as_spark_dataframe()
                .select("unique_id_l", "unique_id_r", "match_weight", "match_probability",
                        *gammas)
                .toPandas())
    finally:
        linker.table_management.delete_tables_created_by_splink_from_db()
    auto = auto[~twin_like(auto, model["splink_settings"])].reset_index(drop=True)
    have = set(df.columns)
    records = df.selectExpr(
        "unique_id", "record_ref", "agency", "batch_id",
        *[(c if c in have else f"CAST(NULL AS STRING) AS {c}")
          for c in ("tok_nhs_number", "tok_dob")],
    )
    records = records.toPandas()
    # Auto-match edges number about one per record: connected components run where the
    # hub's do (Splink on an in-process DuckDB), so both backends cluster identically.
    clusters = cluster_pairwise_predictions_at_threshold(
        records[["unique_id"]], auto[["unique_id_l", "unique_id_r"]],
        DuckDBAPI(connection=duckdb.connect()), node_id_column_name="unique_id",
        edge_id_column_name_left="unique_id_l", edge_id_column_name_right="unique_id_r",
    ).as_pandas_dataframe()[["unique_id", "cluster_id"]]
    records = records.merge(clusters, on="unique_id", how="left")
    records["cluster_id"] = records["cluster_id"].fillna(records["unique_id"])
    records, _ = guard_chains(records, auto, split=s.split_chains)
    return records[["unique_id", "record_ref", "agency", "batch_id", "cluster_id"]]
