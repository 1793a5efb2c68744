"""Linkage quality metrics against synthetic ground truth, and a plaintext baseline.

Metric functions are pure: DataFrames of (record key, predicted cluster) and (record key,
true id) in, numbers out. Pairs are counted from group sizes, never enumerated, so they
scale to large populations. Only evaluation and tests use ground truth.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import duckdb
import pandas as pd


@dataclass(frozen=True)
class Scores:
    precision: float
    recall: float
    f1: float
    tp: float = 0.0
    fp: float = 0.0
    fn: float = 0.0


def _scores(tp: float, n_pred: float, n_true: float) -> Scores:
    precision = tp / n_pred if n_pred else 1.0
    recall = tp / n_true if n_true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Scores(precision, recall, f1, tp, n_pred - tp, n_true - tp)


def _pairs_in_groups(df: pd.DataFrame, by: list[str], agency: str | None) -> float:
    """Number of unordered record pairs within groups `by`; cross-agency pairs only if
    `agency` names the agency column."""
    n = df.groupby(by).size()
    total = float((n * (n - 1) // 2).sum())
    if agency is None:
        return total
    same = df.groupby([*by, agency]).size()
    return total - float((same * (same - 1) // 2).sum())


def _join(predicted: pd.DataFrame, truth: pd.DataFrame, key: str | list[str]) -> pd.DataFrame:
    keys = [key] if isinstance(key, str) else list(key)
    merged = predicted.merge(truth, on=keys, how="inner", suffixes=("", "_truth"))
    if len(merged) != len(truth) or len(merged) != len(predicted):
        raise ValueError(
            f"predicted ({len(predicted)} rows) and truth ({len(truth)} rows) do not cover "
            f"the same records on {keys} ({len(merged)} in common)"
        )
    return merged


def pairwise_metrics(
    predicted: pd.DataFrame,
    truth: pd.DataFrame,
    *,
    key: str | list[str] = "record_ref",
    cluster: str = "cluster_id",
    true_id: str = "person_id",
    cross_agency_only: bool = False,
    agency: str = "agency",
) -> Scores:
    """Pairwise precision/recall/F1: a pair is predicted if its records share `cluster`,
    true if they share `true_id`. With cross_agency_only, only pairs from two different
    agencies count (`agency` must be a column of `predicted`)."""
    m = _join(predicted, truth, key)
    ag = agency if cross_agency_only else None
    if cluster == true_id:
        raise ValueError("cluster and true_id columns must differ")
    return _scores(
        _pairs_in_groups(m, [cluster, true_id], ag),
        _pairs_in_groups(m, [cluster], ag),
        _pairs_in_groups(m, [true_id], ag),
    )


def household_pairwise_metrics(
    predicted: pd.DataFrame,
    truth: pd.DataFrame,
    *,
    key: str | list[str] = "record_ref",
    household: str = "household_id",
    true_household: str = "true_household_id",
) -> Scores:
    """Pairwise metrics over households: the same counting with household ids."""
    return pairwise_metrics(predicted, truth, key=key, cluster=household, true_id=true_household)


def bcubed_metrics(
    predicted: pd.DataFrame,
    truth: pd.DataFrame,
    *,
    key: str | list[str] = "record_ref",
    cluster: str = "cluster_id",
    true_id: str = "person_id",
) -> Scores:
    """B-cubed: per record, precision = |C ∩ T| / |C| and recall = |C ∩ T| / |T|, averaged."""
    m = _join(predicted, truth, key)
    both = m.groupby([cluster, true_id])[cluster].transform("size")
    c = m.groupby(cluster)[cluster].transform("size")
    t = m.groupby(true_id)[true_id].transform("size")
    p = float((both / c).mean()) if len(m) else 1.0
    r = float((both / t).mean()) if len(m) else 1.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return Scores(p, r, f1)


def true_pairs(truth: pd.DataFrame, *, key: str = "unique_id", true_id: str = "person_id"):
    """All unordered true pairs (key_l < key_r) as a DataFrame; for small evaluations."""
    t = truth[[key, true_id]]
    p = t.merge(t, on=true_id, suffixes=("_l", "_r"))
    return p.loc[p[f"{key}_l"] < p[f"{key}_r"], [f"{key}_l", f"{key}_r"]].reset_index(drop=True)


def _unordered(df: pd.DataFrame, left: str, right: str) -> pd.DataFrame:
    a, b = df[left].astype(str), df[right].astype(str)
    return pd.DataFrame({"a": a.where(a < b, b), "b": b.where(a < b, a)}).drop_duplicates()


def pair_completeness(
    candidate_pairs: pd.DataFrame,
    truth_pairs: pd.DataFrame,
    *,
    left: str = "unique_id_l",
    right: str = "unique_id_r",
) -> float:
    """Share of true pairs that the blocking rules generate (order of a pair ignored)."""
    t = _unordered(truth_pairs, left, right)
    if t.empty:
        return 1.0
    c = _unordered(candidate_pairs, left, right)
    return float(len(t.merge(c, on=["a", "b"])) / len(t))


def tune_auto_threshold(
    scored_pairs: pd.DataFrame,
    truth: pd.DataFrame,
    *,
    min_precision: float = 0.999,
    key: str = "unique_id",
    true_id: str = "person_id",
) -> float:
    """Lowest match_probability threshold at which scored pairs above it are true matches
    with precision >= min_precision (pair level, before transitive closure)."""
    ids = dict(zip(truth[key], truth[true_id], strict=True))
    s = scored_pairs[["unique_id_l", "unique_id_r", "match_probability"]].copy()
    s["true"] = s["unique_id_l"].map(ids) == s["unique_id_r"].map(ids)
    s = s.sort_values("match_probability", ascending=False).reset_index(drop=True)
    precision = s["true"].cumsum() / (s.index + 1)
    ok = precision >= min_precision
    # The longest prefix (highest scores first) whose precision meets the target.
    good = ok.to_numpy().nonzero()[0]
    cut = int(good[-1]) + 1 if len(good) else 0
    if cut == 0:
        return float(min(0.999999, s["match_probability"].max()))
    return float(s["match_probability"].iloc[cut - 1])


# --------------------------------------------------------------------------- baseline


def plaintext_baseline(
    con: duckdb.DuckDBPyConnection,
    table: str,
    *,
    threshold: float = 0.999,
    u_max_pairs: float = 2e6,
    seed: int = 42,
) -> pd.DataFrame:
    """Splink over plaintext identifiers with settings comparable to the pseudonymised model,
    for the privacy-cost figure F1(pseudonymised) - F1(plaintext). Evaluation only: never run
    on the hub. `table` has unique_id, given_name, family_name, date_of_birth (DATE),
    sex, postcode, nhs_number. Returns unique_id, cluster_id."""
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    settings = SettingsCreator(
        link_type="dedupe_only",
        comparisons=[
            cl.NameComparison("given_name").configure(term_frequency_adjustments=True),
            cl.NameComparison("family_name").configure(term_frequency_adjustments=True),
            cl.DateOfBirthComparison("date_of_birth", input_is_string=False),
            cl.PostcodeComparison("postcode"),
            cl.ExactMatch("sex"),
            cl.ExactMatch("nhs_number"),
        ],
        blocking_rules_to_generate_predictions=[
            block_on("nhs_number"),
            block_on("date_of_birth", "substr(family_name, 1, 2)"),
            block_on("date_of_birth", "substr(given_name, 1, 2)"),
            block_on("date_of_birth", "postcode"),
            block_on("given_name", "family_name", "year(date_of_birth)"),
        ],
    )
    db_api = DuckDBAPI(con)
    linker = Linker(db_api.register(table), settings, log_level=logging.WARNING)
    try:
        linker.training.estimate_probability_two_random_records_match(
            [block_on("given_name", "family_name", "date_of_birth")], recall=0.8
        )
        linker.training.estimate_u_using_random_sampling(max_pairs=u_max_pairs, seed=seed)
        linker.training.estimate_parameters_using_expectation_maximisation(
            block_on("nhs_number")
        )
        linker.training.estimate_parameters_using_expectation_maximisation(
            block_on("given_name", "family_name", "date_of_birth")
        )
        pred = linker.inference.predict(threshold_match_probability=0.5, warning_mode="never")
        clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
            pred, threshold_match_probability=threshold
        )
        out = con.execute(f"SELECT unique_id, cluster_id FROM {clusters.physical_name}").df()
    finally:
        linker.table_management.delete_tables_created_by_splink_from_db()
    return out
