"""Hub person linkage: Splink 5 (Fellegi-Sunter, EM) on DuckDB over pseudonymised identifiers.

Reads table `identifiers` (the contract's identifiers.parquet rows, all batches ingested so
far) and writes `record_person`, `person`, `person_lineage`, `clerical_review`,
`linkage_model` and `linkage_run`. See docs/linkage.md for the tables and the method.
The run's settings, result and table writers are in linkage.person_run.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from splink import DuckDBAPI, Linker, SettingsCreator
from splink.clustering import cluster_pairwise_predictions_at_threshold

from linkage.blocking_rules import (
    deterministic_rules,
    fallback_training_rules,
    prediction_blocking_rules,
    training_blocking_rules,
)
from linkage.clusters import guard_chains
from linkage.comparisons import ESTIMATED_DOB_FLAG, build_comparisons
from linkage.em_training import estimate_m_on_blocks
from linkage.guards import dob_conflict_trusted, held_back
from linkage.linkage_input import (
    ID_COLUMN,
    INPUT_TABLE,
    ORDER_COLUMN,
    ORDER_TABLE,
    build_record_order,
    drop_record_order,
    prepare_input,
)
from linkage.person_model import (
    fill_unobserved_u,
    floor_m_probabilities,
    load_model,
    make_model,
    round_parameters,
)
from linkage.person_run import (  # LinkageSettings: re-exported, ~15 importers
    LinkageResult,
    LinkageSettings,
    _next_model_version,
    check_thresholds,
    persist_linkage,
    start_run,
)
from linkage.spec_migration import require_one_spec
from linkage.splink_logging import summarise_untrained_m
from linkage.warehouse import (
    optimizers_disabled,
    scratch_database,
)

log = logging.getLogger(__name__)


def ranked_pairs_sql(pred_table: str, settings: dict[str, Any], columns: str) -> str:
    """`scored_pairs_sql` with ORDER_TABLE ranks for ids (`unique_id_l < unique_id_r`, the
    same orientation as the unique_ids' own)."""
    id_col = settings.get("unique_id_column_name", "unique_id")
    ends = ("l", "r")
    if id_col == ID_COLUMN:
        joins = " ".join(
            f"JOIN {ORDER_TABLE} {e} ON {e}.{ID_COLUMN} = p.{id_col}_{e}" for e in ends
        )
    else:  # models from before integer ids join on unique_id
        joins = " ".join(
            f"JOIN {INPUT_TABLE} i{e} ON i{e}.unique_id = p.unique_id_{e} "
            f"JOIN {ORDER_TABLE} {e} ON {e}.{ID_COLUMN} = i{e}.{ID_COLUMN}"
            for e in ends
        )
    return f"""
        SELECT least(l.{ORDER_COLUMN}, r.{ORDER_COLUMN}) AS unique_id_l,
               greatest(l.{ORDER_COLUMN}, r.{ORDER_COLUMN}) AS unique_id_r, {columns}
        FROM {pred_table} p {joins}"""


def scored_pairs_sql(pred_table: str, settings: dict[str, Any], columns: str) -> str:
    """SELECT over a Splink predictions table giving `unique_id_l < unique_id_r` (agency:
    record_ref) whatever id Splink joined on, plus `columns` (scores, gamma_/mw_ evidence,
    which are symmetric in l and r)."""
    id_col = settings.get("unique_id_column_name", "unique_id")
    if id_col == "unique_id":
        return f"SELECT unique_id_l, unique_id_r, {columns} FROM {pred_table}"
    return f"""
        SELECT least(l.unique_id, r.unique_id) AS unique_id_l,
               greatest(l.unique_id, r.unique_id) AS unique_id_r, {columns}
        FROM {pred_table} p
        JOIN {INPUT_TABLE} l ON l.{id_col} = p.{id_col}_l
        JOIN {INPUT_TABLE} r ON r.{id_col} = p.{id_col}_r"""


def token_as_text(col: str, columns: list[str]) -> str:
    """SQL selecting input token `col` as hex text (NULL when absent), the 16 hex digits the
    input keeps (wider text tokens hex-encoded whole). Via hex(): DuckDB's decimal cast of
    a 128-bit integer was ~50x slower (17 s for 100k records). Equal tokens, equal text."""
    if col not in columns:
        return "CAST(NULL AS VARCHAR)"
    text = f'lower(hex("{col}"))'
    return f"lpad({text}, CAST(greatest(16, length({text})) AS INTEGER), '0')"


def splink_settings_for(columns: list[str]) -> SettingsCreator:
    return SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name=ID_COLUMN if ID_COLUMN in columns else "unique_id",
        comparisons=build_comparisons(columns),
        blocking_rules_to_generate_predictions=prediction_blocking_rules(columns),
        retain_matching_columns=True,  # gamma columns need it
        retain_intermediate_calculation_columns=True,
        additional_columns_to_retain=[],
    )


def _level_weights(model_settings: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """Per comparison, the match weight Splink writes to `mw_<name>` for each level, indexed
    by gamma + 1 (gamma -1 is the null level); None when two levels of one comparison share
    a weight, so a weight would not say which level a pair fell in."""
    settings = SettingsCreator.from_path_or_dict(model_settings).get_settings("duckdb")
    out: dict[str, np.ndarray] = {}
    for comparison in settings.comparisons:
        weights = {}
        for level in comparison.comparison_levels:
            w = level._match_weight  # noqa: SLF001 - the value Splink's SQL embeds
            if w is None:
                return None
            weights[level.comparison_vector_value] = float(w)
        ordered = np.array([weights[g] for g in sorted(weights)])
        if len(np.unique(np.round(ordered, 9))) < len(ordered):
            return None
        out[comparison.output_column_name] = ordered
    return out


def scoring_settings(model_settings: dict[str, Any]) -> dict[str, Any]:
    """The model's settings for scoring. Splink writes gamma columns only alongside every
    compared token (retain_matching_columns), which it then carries through tens of
    millions of candidate pairs; when each level's match weight is distinct, gamma is read
    back from the weight instead (`with_gammas`), and the tokens stay in the input table."""
    if _level_weights(model_settings) is None:
        return model_settings
    return {**model_settings, "retain_matching_columns": False}


_EQUI_TERM = re.compile(r'\(?\s*l\."(\w+)"\s*=\s*r\."\1"\s*\)?')


def _equi_join_columns(rule_sql: str) -> list[str] | None:
    """The columns of a rule that only asks `l."x" = r."x"` of each (block_on's form);
    None for any other rule."""
    cols = _EQUI_TERM.findall(rule_sql)
    rest = _EQUI_TERM.sub("", rule_sql)
    return cols if cols and not re.sub(r"(?i)\bAND\b|[()\s]", "", rest) else None


def rule_candidate_counts(con: duckdb.DuckDBPyConnection, rules: list[str]) -> list[int | None]:
    """Candidate pairs each blocking rule (DuckDB SQL over l/r) generates on its own over the
    linkage input, by counting records per key (no pair is built); None for a rule that is
    not a plain equi-join over input columns (Splink's own check then names what is wrong)."""
    have = {r[0] for r in con.execute(f"DESCRIBE {INPUT_TABLE}").fetchall()}
    keys = [_equi_join_columns(r) for r in rules]
    parts = []
    for i, cols in enumerate(keys):
        if cols is None or not set(cols) <= have:
            continue
        group = ", ".join(f'"{c}"' for c in cols)
        present = " AND ".join(f'"{c}" IS NOT NULL' for c in cols)
        parts.append(f"""SELECT {i} AS rule, coalesce(sum(n * (n - 1) // 2), 0) AS pairs
            FROM (SELECT count(*) AS n FROM {INPUT_TABLE} WHERE {present} GROUP BY {group})""")
    counts: dict[int, int] = (
        dict(con.execute(" UNION ALL ".join(parts)).fetchall()) if parts else {}
    )
    return [int(counts[i]) if i in counts else None for i in range(len(rules))]


def broadest_rules_first(
    con: duckdb.DuckDBPyConnection, model_settings: dict[str, Any]
) -> dict[str, Any]:
    """The model's settings with its prediction blocking rules ordered by the candidate pairs
    each generates on the current input, most first (rules of unknown size last, in order).

    Splink keeps a pair from the first rule that finds it, so it tests every rule's
    candidates against each earlier rule's condition: the same pairs in any order, but at
    1M records the names + birth-year rule (9.5M candidates) placed tenth took 12.9 of the
    13.4 s of blocking, and the whole blocking took 8.0 s with the broadest rules first.
    Which rules are broadest depends on scale (at 1,500 people, surname + postcode is), so it
    is measured each run: ~0.9 s at 1M records (benchmarks/bench_linkage.py)."""
    rules = [
        r if isinstance(r, str) else r["blocking_rule"]
        for r in model_settings.get("blocking_rules_to_generate_predictions", [])
    ]
    if len(rules) < 2:
        return model_settings
    counts = rule_candidate_counts(con, rules)
    order = sorted(range(len(rules)), key=lambda i: (counts[i] is None, -(counts[i] or 0), i))
    given = model_settings["blocking_rules_to_generate_predictions"]
    return {**model_settings, "blocking_rules_to_generate_predictions": [given[i] for i in order]}


def with_gammas(pairs: pd.DataFrame, model_settings: dict[str, Any]) -> pd.DataFrame:
    """Add `gamma_<name>` from `mw_<name>` for pairs scored with `scoring_settings` (no-op
    when Splink already wrote them). A weight matching no level is an error, never a guess."""
    weights = _level_weights(model_settings)
    if weights is None:
        return pairs
    out = pairs.copy()
    for name, w in weights.items():
        if f"gamma_{name}" in out:
            continue
        mw = out[f"mw_{name}"].to_numpy(dtype="float64")
        nearest = np.abs(mw[:, None] - w[None, :]).argmin(axis=1)
        if not np.allclose(w[nearest], mw, rtol=1e-9, atol=1e-9):
            raise ValueError(
                f"comparison {name!r}: a match weight matches no level of the "
                "model (model and scored pairs disagree)"
            )
        out[f"gamma_{name}"] = (nearest - 1).astype("int32")  # as DuckDB gives Splink's
    return out


def _linker(
    con: duckdb.DuckDBPyConnection, settings: SettingsCreator | dict, *, validate: bool = True
) -> Linker:
    """A Splink linker over the linkage input. `validate=False` skips Splink's check that the
    settings' SQL names input columns (sqlglot over every level: 0.12 s per linker), for
    settings this run just built from the input's own columns."""
    db_api = DuckDBAPI(con)
    sdf = db_api.register(INPUT_TABLE)
    return Linker(sdf, settings, log_level=logging.WARNING, validate_settings=validate)


@contextmanager
def _scratch_linker(
    con: duckdb.DuckDBPyConnection, settings: SettingsCreator | dict, *, validate: bool = True
) -> Iterator[Linker]:
    """`_linker` for a block whose Splink tables live in `scratch_database` and are dropped
    after it, whatever happens."""
    with scratch_database(con):
        linker = _linker(con, settings, validate=validate)
        try:
            yield linker
        finally:
            linker.table_management.delete_tables_created_by_splink_from_db()


def estimate_parameters(
    linker: Linker, columns: list[str], settings: LinkageSettings
) -> dict[str, Any]:
    """The hub's training recipe on any Splink backend: prior from deterministic rules, u by
    seeded random sampling, m by EM over the training blocks. Returns Splink's learned
    settings; Splink's tables are dropped.

    u in one chunk: Splink's chunks stop sampling once every level has 100 non-matching pairs,
    but the hub's exact-token and Dice >= 0.85 levels see 1-27 in the whole 2M-pair sample, so
    every chunk ran anyway (11 queries per comparison, 2.4 s against 1.7 s at 100k records;
    on Spark each chunk is a scheduled job: 80 s against 46 s for 2,174 records)."""
    try:
        linker.training.estimate_probability_two_random_records_match(
            deterministic_rules(columns), recall=settings.prior_recall
        )
        linker.training.estimate_u_using_random_sampling(
            max_pairs=settings.u_max_pairs, seed=settings.seed, num_chunks=1
        )
        # Splink warns once per level EM could not train (39 lines in the demo); one summary
        # of the levels left at their starting values replaces them (linkage.splink_logging).
        # A small partnership may have no pair at all in one training block (e.g. no two
        # agencies holding NHS numbers yet); EM on the other blocks still estimates m.
        with summarise_untrained_m(linker, log):
            trained_on = estimate_m_on_blocks(
                linker,
                training_blocking_rules(columns),
                log,
                fallback=fallback_training_rules(columns),
            )
        if trained_on == 0:
            raise ValueError(
                "no training block produced any record pair: too few records "
                "shared between agencies to estimate the model"
            )
        return linker.misc.save_model_to_json()
    finally:
        linker.table_management.delete_tables_created_by_splink_from_db()


def train_model(
    con: duckdb.DuckDBPyConnection,
    columns: list[str],
    settings: LinkageSettings,
    model_version: str,
) -> dict[str, Any]:
    """Estimate the model with Splink on DuckDB (`estimate_parameters`), m floored and
    parameters rounded. Input table must be prepared."""
    creator = splink_settings_for(columns)
    creator.max_iterations = settings.max_em_iterations
    # Splink's u query reads its comparison vectors twice (counts per level, and the total).
    # DuckDB's CTE inlining then materialises the sampled pairs themselves, Bloom words and
    # all (~2M wide rows per comparison); without it, only the narrow vectors are kept:
    # training 9.5 -> 7.5 s at 100k records, same model. (Plaintext Splink's u query has
    # the same shape but narrow string rows: no change there, benchmarks/bench_linkage.py.)
    with scratch_database(con), optimizers_disabled(con, "cte_inlining"):
        learned = estimate_parameters(_linker(con, creator, validate=False), columns, settings)
    n = con.execute(f"SELECT count(*) FROM {INPUT_TABLE}").fetchone()[0]
    learned = fill_unobserved_u(learned, min(settings.u_max_pairs, n * (n - 1) / 2))
    trained = round_parameters(floor_m_probabilities(learned, settings.m_floor))
    return make_model(trained, model_version)


#: The tokens the chaining guard compares (`clusters.conflict_pairs`).
GUARD_TOKENS = ("tok_nhs_number", "tok_dob")


def guard_token_sql(columns: Collection[str]) -> dict[str, str]:
    """SQL (valid in DuckDB and Spark) for each chaining-guard token the input holds. An
    agency's estimated DOB cannot say two of its records are different people, so it counts
    as missing there."""
    out = {c: c for c in GUARD_TOKENS if c in columns}
    if ESTIMATED_DOB_FLAG in columns and "tok_dob" in out:
        out["tok_dob"] = f"CASE WHEN {ESTIMATED_DOB_FLAG} THEN NULL ELSE tok_dob END"
    return out


def cluster_records(
    records: pd.DataFrame, pairs: pd.DataFrame, model_settings: dict[str, Any], s: LinkageSettings
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The hub's clustering, whichever backend scored `pairs`: auto-match edges (threshold,
    minus pairs held back: twin-like, household members sharing an identifier,
    `linkage.guards`), Splink's connected components, then the chaining guard.
    records: unique_id, agency, batch_id, tok_nhs_number, tok_dob; ids in `pairs` are the
    records' unique_ids (full runs pass ORDER_TABLE ranks), tokens anything comparable.
    Returns (records with cluster_id, auto-match edges, flagged clusters)."""
    held = held_back(pairs, model_settings)
    auto = pairs[(pairs["match_probability"] >= s.auto_match_probability) & ~held]
    auto = auto.reset_index(drop=True)
    # Auto-match edges number about one per record: an in-process DuckDB is enough.
    clusters = cluster_pairwise_predictions_at_threshold(
        records[["unique_id"]],
        auto[["unique_id_l", "unique_id_r"]],
        DuckDBAPI(connection=duckdb.connect()),
        node_id_column_name="unique_id",
        edge_id_column_name_left="unique_id_l",
        edge_id_column_name_right="unique_id_r",
    ).as_pandas_dataframe()[["unique_id", "cluster_id"]]
    records = records.merge(clusters, on="unique_id", how="left")
    records["cluster_id"] = records["cluster_id"].fillna(records["unique_id"])
    trusted = auto[dob_conflict_trusted(auto, model_settings)]
    records, flagged = guard_chains(records, auto, split=s.split_chains, trusted=trusted)
    return records, auto, flagged


def link_persons(
    con: duckdb.DuckDBPyConnection, run_id: str, settings: LinkageSettings | None = None
) -> LinkageResult:
    """Link the records in `identifiers` into persons and persist the result."""
    s = settings or LinkageSettings()
    check_thresholds(s)
    require_one_spec(con)  # mid-way through an encoding spec change: old rows never link
    started = start_run(con, run_id)
    try:
        return _link_persons(con, run_id, s, started)
    finally:
        drop_record_order(con)


def _link_persons(
    con: duckdb.DuckDBPyConnection, run_id: str, s: LinkageSettings, started: datetime
) -> LinkageResult:
    timings: dict[str, float] = {}
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        disable=not s.show_progress,
        transient=True,
    ) as progress:
        task = progress.add_task("person linkage", total=6)

        def stage(name: str) -> float:
            progress.update(task, description=f"person linkage: {name}")
            return time.perf_counter()

        t = stage("preparing input")
        columns = prepare_input(con)
        n_records = con.execute(f"SELECT count(*) FROM {INPUT_TABLE}").fetchall()[0][0]
        timings["prepare"] = time.perf_counter() - t
        progress.advance(task)

        t = stage("training model")
        if s.model is not None:
            model = load_model(s.model)
        else:
            provisional = make_model({}, "pending")
            model = train_model(con, columns, s, provisional["model_version"])
            model["model_version"] = _next_model_version(con, model["settings_hash"][:8])
        timings["train"] = time.perf_counter() - t
        progress.advance(task)

        t = stage("scoring pairs")
        # A stored model is checked against the input; one trained above was built from it.
        with _scratch_linker(
            con,
            broadest_rules_first(con, scoring_settings(model["splink_settings"])),
            validate=s.model is not None,
        ) as linker:
            pred = linker.inference.predict(
                threshold_match_probability=s.clerical_probability, warning_mode="never"
            )
            build_record_order(con)
            # Only ids (ranks), scores and evidence leave Splink's table: no token values.
            pairs = with_gammas(
                con.execute(
                    ranked_pairs_sql(
                        pred.physical_name,
                        model["splink_settings"],
                        "match_weight, match_probability, COLUMNS('^(gamma|mw)_.*')",
                    )
                ).df(),
                model["splink_settings"],
            )
            timings["predict"] = time.perf_counter() - t
            progress.advance(task)

            t = stage("clustering")
        # The chaining guard asks only whether two tokens are equal: the input's integers
        # (pandas UInt64, exact) serve as they are; hex text for 1M records cost ~1 s.
        known = guard_token_sql(columns)
        tokens = ", ".join(f"{known.get(c, 'NULL::UBIGINT')} AS {c}" for c in GUARD_TOKENS)
        records = con.execute(
            f"""SELECT o.{ORDER_COLUMN} AS unique_id, i.agency, i.batch_id, {tokens}
                FROM {INPUT_TABLE} i JOIN {ORDER_TABLE} o USING ({ID_COLUMN})"""
        ).df()
        records, auto, flagged = cluster_records(records, pairs, model["splink_settings"], s)
        timings["cluster"] = time.perf_counter() - t
        progress.advance(task)

        stage("assigning person ids")
        result = persist_linkage(
            con,
            run_id,
            records,
            pairs,
            model,
            s,
            n_records=int(n_records),
            n_auto_pairs=len(auto),
            flagged=flagged,
            timings=timings,
            started=started,
            new_model=s.model is None,
        )
        progress.advance(task)
    return result


def stored_model(con: duckdb.DuckDBPyConnection, model_version: str) -> dict[str, Any]:
    """A model persisted by an earlier run, verified."""
    row = con.execute(
        "SELECT model_json FROM linkage_model WHERE model_version = ?", [model_version]
    ).fetchall()
    if not row:
        raise KeyError(f"no linkage model {model_version!r}")
    return load_model(row[0][0])


def blocked_pairs(con: duckdb.DuckDBPyConnection, model: dict[str, Any]) -> pd.DataFrame:
    """Candidate pairs (unique_id_l, unique_id_r) the model's blocking rules generate over
    the prepared input table; with `evaluation.pair_completeness` gives blocking recall."""
    with _scratch_linker(con, model["splink_settings"]) as linker:
        pairs = linker.inference.compute_blocked_pairs_for_predict()
        id_col = model["splink_settings"].get("unique_id_column_name", "unique_id")
        return con.execute(
            f"""SELECT DISTINCT least(l.unique_id, r.unique_id) AS unique_id_l,
                       greatest(l.unique_id, r.unique_id) AS unique_id_r
                FROM {pairs.physical_name} p
                JOIN {INPUT_TABLE} l ON l.{id_col} = p.join_key_l
                JOIN {INPUT_TABLE} r ON r.{id_col} = p.join_key_r"""
        ).df()


def score_pairs(
    con: duckdb.DuckDBPyConnection, model: dict[str, Any], threshold: float = 0.01
) -> pd.DataFrame:
    """Scored candidate pairs (unique_id_l, unique_id_r, match_probability, match_weight)
    over the prepared input table: for threshold tuning and evaluation."""
    with _scratch_linker(con, broadest_rules_first(con, model["splink_settings"])) as linker:
        pred = linker.inference.predict(threshold_match_probability=threshold, warning_mode="never")
        return con.execute(
            scored_pairs_sql(
                pred.physical_name, model["splink_settings"], "match_probability, match_weight"
            )
        ).df()
