"""Hub person linkage on Splink's Spark backend, for a region that outgrows one machine.

The full run (`link_persons_spark`) does what `linkage.person_linkage.link_persons` does on
DuckDB, with the heavy parts on Spark:

- the linkage input is built in the warehouse (`prepare_input`) and exported to Parquet on
  hub storage (tokens, blocking keys, Bloom filters, refs only);
- training (`train_model_spark`): the same recipe as `person_linkage.train_model` (prior from
  deterministic rules, u by seeded random sampling, EM over the training blocks, m floor) on
  Spark; the learned prior, m and u are copied back into the DuckDB-dialect settings, so the
  stored model is the one format both backends load and its settings_hash verifies;
- scoring: the model's SQL is transpiled from DuckDB to Spark SQL (sqlglot, which Splink
  already uses); Bloom-filter Dice, which DuckDB computes with `bit_count` over 124-bit
  HUGEINT words (or, in older models, BIT columns), becomes `bit_count` over the filter's
  32-bit words (Spark has no 128-bit integers), split out once when the input is loaded.
  Of the scored pairs, only ids, scores and gamma_/mw_ evidence above the clerical
  threshold come back from Spark, never token values
  (the chaining guard reads each record's NHS-number and DOB tokens, as on DuckDB);
- clustering: the hub's own rules on the auto-match edges (twin rule, connected components,
  chaining guard), so with one model both backends give the same partition;
- persisting: `person_linkage.persist_linkage`, the DuckDB run's own writer (stable person
  ids, record_person, clerical queue, linkage_run with mode 'spark', linkage_model), in one
  transaction.

    with configured_session(SparkConfig.from_env(paths.hub), run_id) as spark:
        result = link_persons_spark(con, run_id, spark, work_dir=paths.hub / "spark")

The hub pipeline's link stage does this when JOINEDUP_LINKAGE_BACKEND=spark
(`linkage.pipeline.stage_link_persons`).
"""

from __future__ import annotations

import copy
import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import sqlglot

from linkage.comparisons import (
    BLOOM_COLUMNS,
    bit_dice_sql,
    bloom_word_column,
    bloom_word_count,
    bloom_word_count_for,
    dice_intersection_sql,
    dice_sql,
    legacy_dice_sql,
)
from linkage.person_linkage import (
    GUARD_TOKENS,
    ID_COLUMN,
    INPUT_TABLE,
    ORDER_COLUMN,
    LinkageSettings,
    build_record_order,
    cluster_records,
    drop_record_order,
    estimate_parameters,
    fill_unobserved_u,
    floor_m_probabilities,
    guard_token_sql,
    load_model,
    make_model,
    prepare_input,
    round_parameters,
    scoring_settings,
    splink_settings_for,
    token_as_text,
    with_gammas,
)
from linkage.person_run import (
    LinkageResult,
    _next_model_version,
    check_thresholds,
    persist_linkage,
    start_run,
)
from linkage.spark_session import SparkConfig, _run_folder, configured_session

log = logging.getLogger(__name__)

WORD_BITS = 32  # Spark's bit_count is over integers; 32-bit words stay positive in BIGINT
_PLACEHOLDER = "joinedup_dice"
_INTER_PLACEHOLDER = "joinedup_intersection"
_DERIVED = re.compile(r"__(w\d+|pop)$")  # columns load_input adds to the exported ones


# --------------------------------------------------------------------------- input


def export_identifiers(con: duckdb.DuckDBPyConnection, out_dir: str | Path) -> Path:
    """Write the linkage input (latest batch per record, as `prepare_input` builds it) from
    the warehouse to Parquet for Spark; Bloom filters go back to raw bytes and 128-bit
    integer tokens to hex text (Spark has no unsigned integers).
    Returns the path. Only pseudonymised columns: tokens, blocking keys, Bloom filters, refs."""
    columns = _without_bloom_words(prepare_input(con))
    types = dict(
        con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {INPUT_TABLE})").fetchall()
    )

    def out(c: str) -> str:
        if c.startswith("bf_"):
            return f'CAST("{c}" AS BLOB) AS "{c}"'
        if types[c] in ("UHUGEINT", "UBIGINT"):
            return f'{token_as_text(c, columns)} AS "{c}"'
        return f'"{c}"'

    select = ", ".join(out(c) for c in columns)
    path_dir = Path(out_dir)
    path_dir.mkdir(parents=True, exist_ok=True)
    path = path_dir / "identifiers.parquet"
    # Each record's rank (`ORDER_COLUMN`), the id clustering and persisting work on; the
    # ranks stay in ORDER_TABLE on `con` for the run's writer.
    order = build_record_order(con)
    con.execute(
        f"COPY (SELECT {select}, {ORDER_COLUMN} FROM {INPUT_TABLE} "
        f"JOIN (SELECT {ID_COLUMN}, {ORDER_COLUMN} FROM {order}) USING ({ID_COLUMN}) "
        f"ORDER BY {ORDER_COLUMN}) TO '{path}' (FORMAT parquet)"
    )
    return path


def _without_bloom_words(columns: list[str]) -> list[str]:
    # DuckDB's 128-bit Bloom words stay in the warehouse: Spark makes its own from the bytes.
    words = {
        bloom_word_column(b, i)
        for b in columns
        if b.startswith("bf_")
        for i in range(bloom_word_count(columns, b))
    }
    return [c for c in columns if c not in words]


def duckdb_input_columns(columns: list[str], words: dict[str, int]) -> list[str]:
    """`columns` plus the 128-bit Bloom word columns `prepare_input` gives DuckDB, so a model
    built from them (Spark-trained or not) holds the same SQL as a DuckDB-trained one."""
    extra = [
        bloom_word_column(b, i)
        for b, n in words.items()
        if b in BLOOM_COLUMNS
        for i in range(bloom_word_count_for(n * WORD_BITS // 8))
    ]
    return [*columns, *extra]


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
        counts = (
            df.where(F.col(col).isNotNull())
            .groupBy(F.length(col).alias("n"))
            .count()
            .orderBy(F.desc("count"))
            .collect()
        )
        if not counts:
            continue
        nbytes = counts[0]["n"]
        if len(counts) > 1:
            bad = df.where(F.length(col) != nbytes).select("agency", "record_ref", col).first()
            raise ValueError(
                f"{parquet}: row agency={bad[0]} record_ref={bad[1]} field {col}: Bloom filter "
                f"of {len(bad[2])} bytes differs from the column's fixed length {nbytes}"
            )
        if nbytes % (WORD_BITS // 8):
            raise ValueError(f"{parquet}: field {col}: {nbytes} bytes is not whole words")
        n = nbytes // (WORD_BITS // 8)
        hexed = F.hex(F.col(col))
        exprs = [
            F.conv(F.substring(hexed, i * 8 + 1, 8), 16, 10).cast("bigint").alias(_word_col(col, i))
            for i in range(n)
        ]
        df = df.select("*", *exprs)
        pop = sum((F.bit_count(F.col(_word_col(col, i))) for i in range(n)), F.lit(0))
        df = df.withColumn(_pop_col(col), F.when(F.col(col).isNotNull(), pop))
        words[col] = n
    return df, words


# --------------------------------------------------------------------------- model SQL


def spark_intersection_sql(col: str, n_words: int) -> str:
    """Bits two Bloom filters share, in Spark SQL, from their 32-bit words."""
    return " + ".join(
        f"bit_count(`{_word_col(col, i)}_l` & `{_word_col(col, i)}_r`)" for i in range(n_words)
    )


def spark_dice_sql(col: str, n_words: int) -> str:
    """Dice coefficient of two Bloom filters in Spark SQL, from their words and popcounts;
    the same arithmetic as `comparisons.dice_sql` (double division, NULL when both empty)."""
    return (
        f"(2.0D * ({spark_intersection_sql(col, n_words)}) / "
        f"nullif(`{_pop_col(col)}_l` + `{_pop_col(col)}_r`, 0))"
    )


def to_spark_sql(condition: str, words: dict[str, int]) -> str:
    """One DuckDB SQL condition of the model as Spark SQL."""
    for col in BLOOM_COLUMNS:
        n_words = len(set(re.findall(rf'"{col}_w(\d+)_l"', condition)))
        forms = [bit_dice_sql(col), legacy_dice_sql(col)]
        if n_words:
            forms.insert(0, dice_sql(col, n_words))
        for form in forms:
            condition = condition.replace(form, f'{_PLACEHOLDER}("{col}_l", "{col}_r")')
        if n_words:  # what is left of the word form: dice_at_least_sql's intersection
            condition = condition.replace(
                dice_intersection_sql(col, n_words), f'{_INTER_PLACEHOLDER}("{col}_l", "{col}_r")'
            )
        for side in "lr":  # and its popcounts, named as Spark's input names them
            condition = condition.replace(f'"pop_{col}_{side}"', f'"{_pop_col(col)}_{side}"')
    out = sqlglot.transpile(condition, read="duckdb", write="spark")[0]

    def known(col: str) -> int:
        if col not in words:
            raise ValueError(f"model compares Bloom field {col!r} the input lacks")
        return words[col]

    def dice(m: re.Match[str]) -> str:
        return spark_dice_sql(m.group(1), known(m.group(1)))

    def inter(m: re.Match[str]) -> str:
        return spark_intersection_sql(m.group(1), known(m.group(1)))

    out = re.sub(rf"{_PLACEHOLDER}\(`?(\w+)_l`?, `?\w+_r`?\)", dice, out, flags=re.IGNORECASE)
    out = re.sub(
        rf"{_INTER_PLACEHOLDER}\(`?(\w+)_l`?, `?\w+_r`?\)", inter, out, flags=re.IGNORECASE
    )
    if (
        _PLACEHOLDER in out.lower()
        or _INTER_PLACEHOLDER in out.lower()
        or re.search(r"\bbf_[a-z_]*[a-z](_w\d+)?_l`? &", out)
    ):
        raise ValueError(f"unrecognised Bloom comparison in model SQL: {condition!r}")
    return out


def spark_settings(model: dict[str, Any], words: dict[str, int]) -> dict[str, Any]:
    """A stored model's Splink settings with every SQL condition in Spark SQL; m, u, prior
    and term-frequency settings untouched."""
    return transpile_settings(load_model(model)["splink_settings"], words)


def transpile_settings(splink_settings: dict[str, Any], words: dict[str, int]) -> dict[str, Any]:
    """Splink settings (DuckDB dialect, trained or not) with every SQL condition in Spark SQL."""
    s = copy.deepcopy(splink_settings)
    s["sql_dialect"] = "spark"
    for comp in s["comparisons"]:
        for level in comp["comparison_levels"]:
            level["sql_condition"] = (
                level["sql_condition"]
                if level["sql_condition"] == "ELSE"
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


# --------------------------------------------------------------------------- training


def input_columns(df: Any) -> list[str]:
    """The exported linkage-input columns of a DataFrame from `load_input`."""
    return [c for c in df.columns if not _DERIVED.search(c)]


def _with_parameters(untrained: dict[str, Any], learned: dict[str, Any]) -> dict[str, Any]:
    """The DuckDB-dialect settings with the prior, m and u learned on Spark."""
    out = copy.deepcopy(untrained)
    out["probability_two_random_records_match"] = learned["probability_two_random_records_match"]
    for mine, theirs in zip(out["comparisons"], learned["comparisons"], strict=True):
        labels = [lv.get("label_for_charts") for lv in mine["comparison_levels"]]
        if mine["output_column_name"] != theirs["output_column_name"] or labels != [
            lv.get("label_for_charts") for lv in theirs["comparison_levels"]
        ]:
            raise ValueError(
                f"Spark-trained comparison {theirs['output_column_name']!r} does "
                "not line up with the DuckDB settings it was transpiled from"
            )
        for lv, tl in zip(mine["comparison_levels"], theirs["comparison_levels"], strict=True):
            for key in ("m_probability", "u_probability"):
                if key in tl:
                    lv[key] = tl[key]
    return out


def train_model_spark(
    spark: Any,
    df: Any,
    words: dict[str, int],
    settings: LinkageSettings | None = None,
    model_version: str = "pending",
    *,
    break_lineage_method: str | None = None,
) -> dict[str, Any]:
    """Train the hub's model on Spark over the input `load_input` returns (df, words).

    Same recipe and knobs as `person_linkage.train_model`. The result is a DuckDB-dialect
    model (`load_model` verifies it; `LinkageSettings(model=...)` links with it on either
    backend). Spark samples and sums in its own order, so m and u differ slightly from a
    DuckDB-trained model's (tests/test_spark_linkage.py bounds the effect on the partition)."""
    from splink import Linker, SparkAPI

    s = settings or LinkageSettings()
    columns = duckdb_input_columns(input_columns(df), words)
    creator = splink_settings_for(columns)
    creator.max_iterations = s.max_em_iterations
    untrained = creator.get_settings("duckdb").as_dict()
    db_api = SparkAPI(
        spark_session=spark,
        register_udfs_automatically=False,
        break_lineage_method=break_lineage_method,
    )
    linker = Linker(
        db_api.register(df), transpile_settings(untrained, words), log_level=logging.WARNING
    )
    # The recipe of person_linkage.train_model (one u chunk there says why); the blocking
    # rules are Splink creators, which write their own Spark SQL.
    learned = estimate_parameters(linker, columns, s)
    n = df.count()
    learned = fill_unobserved_u(
        _with_parameters(untrained, learned), min(s.u_max_pairs, n * (n - 1) / 2)
    )
    trained = round_parameters(floor_m_probabilities(learned, s.m_floor))
    return make_model(trained, model_version)


# --------------------------------------------------------------------------- linkage


def _score(
    spark: Any,
    df: Any,
    words: dict[str, int],
    model: dict[str, Any],
    threshold: float,
    break_lineage_method: str | None,
) -> pd.DataFrame:
    """Pairs at or above `threshold`: ids (ranks, l < r), scores and the
    gamma_/mw_ evidence columns (what the clerical queue keeps); no token values leave
    Spark. Scored as the DuckDB path scores (`person_linkage.scoring_settings`)."""
    from pyspark.sql import functions as F
    from splink import Linker, SparkAPI

    model_settings = load_model(model)["splink_settings"]
    id_col = model_settings.get("unique_id_column_name", "unique_id")
    db_api = SparkAPI(
        spark_session=spark,
        register_udfs_automatically=False,
        break_lineage_method=break_lineage_method,
    )
    linker = Linker(
        db_api.register(df),
        transpile_settings(scoring_settings(model_settings), words),
        log_level=logging.WARNING,
    )
    try:
        pred = linker.inference.predict(
            threshold_match_probability=threshold, warning_mode="never"
        ).as_spark_dataframe()
        evidence = [c for c in pred.columns if c.startswith(("gamma_", "mw_"))]
        # Pairs carry the records' ranks (ORDER_COLUMN), as the DuckDB run's do.
        ids = df.select(F.col(id_col).alias("_id"), F.col(ORDER_COLUMN).alias("_uid"))
        l_ids = ids.withColumnRenamed("_id", f"{id_col}_l").withColumnRenamed("_uid", "_a")
        r_ids = ids.withColumnRenamed("_id", f"{id_col}_r").withColumnRenamed("_uid", "_b")
        pairs = (
            pred.join(l_ids, f"{id_col}_l")
            .join(r_ids, f"{id_col}_r")
            .select(
                F.least("_a", "_b").alias("unique_id_l"),
                F.greatest("_a", "_b").alias("unique_id_r"),
                "match_weight",
                "match_probability",
                *evidence,
            )
            .toPandas()
        )
    finally:
        linker.table_management.delete_tables_created_by_splink_from_db()
    return with_gammas(pairs, model_settings)


def _cluster(
    df: Any,
    pairs: pd.DataFrame,
    model: dict[str, Any],
    s: LinkageSettings,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(records with cluster_id, auto-match edges, flagged clusters), by the hub's own
    clustering (`person_linkage.cluster_records`), so both backends cluster identically."""
    known = guard_token_sql(set(df.columns))
    records = df.selectExpr(
        f"{ORDER_COLUMN} AS unique_id",
        "agency",
        "batch_id",
        *[f"{known.get(c, 'CAST(NULL AS STRING)')} AS {c}" for c in GUARD_TOKENS],
    ).toPandas()
    return cluster_records(records, pairs, model["splink_settings"], s)


def link_persons_spark(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    spark: Any,
    settings: LinkageSettings | None = None,
    *,
    work_dir: str | Path,
    break_lineage_method: str | None = None,
) -> LinkageResult:
    """A full linkage run of the warehouse's `identifiers` on Spark: `link_persons`' outputs
    (record_person, person ids, clerical queue, linkage_run with mode 'spark', linkage_model
    when trained here), written by the same `persist_linkage` in one transaction.

    `work_dir` is hub storage Spark can read (shared storage on a cluster); the exported
    input is written to a folder of its own there and removed when the run ends."""
    s = settings or LinkageSettings()
    check_thresholds(s)
    started = start_run(con, run_id)
    timings: dict[str, float] = {}
    export = Path(work_dir) / "input" / _run_folder(run_id)
    try:
        t = time.perf_counter()
        df, words = load_input(spark, export_identifiers(con, export))
        timings["prepare"] = time.perf_counter() - t
        t = time.perf_counter()
        if s.model is not None:
            model = load_model(s.model)
        else:
            model = train_model_spark(
                spark, df, words, s, break_lineage_method=break_lineage_method
            )
            model["model_version"] = _next_model_version(con, model["settings_hash"][:8])
        timings["train"] = time.perf_counter() - t
        log.info("spark linkage %s: model %s", run_id, model["model_version"])
        t = time.perf_counter()
        pairs = _score(spark, df, words, model, s.clerical_probability, break_lineage_method)
        timings["predict"] = time.perf_counter() - t
        t = time.perf_counter()
        records, auto, flagged = _cluster(df, pairs, model, s)
        timings["cluster"] = time.perf_counter() - t
        return persist_linkage(
            con,
            run_id,
            records,
            pairs,
            model,
            s,
            n_records=len(records),
            n_auto_pairs=len(auto),
            flagged=flagged,
            timings=timings,
            started=started,
            new_model=s.model is None,
            mode="spark",
        )
    finally:
        shutil.rmtree(export, ignore_errors=True)
        drop_record_order(con)


def run_configured(
    con: duckdb.DuckDBPyConnection, run_id: str, settings: LinkageSettings, config: SparkConfig
) -> LinkageResult:
    """`link_persons_spark` in the session `config` describes: the hub pipeline's entry."""
    with configured_session(config, run_id) as spark:
        return link_persons_spark(
            con,
            run_id,
            spark,
            settings,
            work_dir=config.work_dir,
            break_lineage_method=config.break_lineage_method,
        )
