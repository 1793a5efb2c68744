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


def scored_pair_precision(
    scored_pairs: pd.DataFrame,
    truth: pd.DataFrame,
    threshold: float,
    *,
    key: str = "unique_id",
    true_id: str = "person_id",
) -> Scores:
    """Precision of scored pairs at or above `threshold` (pair level, before clustering);
    recall here is the share of true pairs among all scored pairs that reach it."""
    ids = dict(zip(truth[key], truth[true_id], strict=True))
    s = scored_pairs[["unique_id_l", "unique_id_r", "match_probability"]]
    true = (s["unique_id_l"].map(ids) == s["unique_id_r"].map(ids)).to_numpy()
    above = (s["match_probability"] >= threshold).to_numpy()
    return _scores(float((true & above).sum()), float(above.sum()), float(true.sum()))


def misses_by_flag(
    predicted: pd.DataFrame,
    truth: pd.DataFrame,
    flags: list[str],
    *,
    key: str = "unique_id",
    cluster: str = "cluster_id",
    true_id: str = "person_id",
) -> dict[str, int]:
    """False-negative pairs (same true person, different predicted cluster) counted by the
    ground-truth corruption flags either record carries (a pair can count under several);
    `none` counts misses with no flag. For diagnosis on small populations."""
    m = _join(predicted, truth, key)
    t = m[[key, cluster, true_id, *flags]]
    p = t.merge(t, on=true_id, suffixes=("_l", "_r"))
    p = p[(p[f"{key}_l"] < p[f"{key}_r"]) & (p[f"{cluster}_l"] != p[f"{cluster}_r"])]
    out: dict[str, int] = {}
    any_flag = pd.Series(False, index=p.index)
    for f in flags:
        hit = p[f"{f}_l"].astype(bool) | p[f"{f}_r"].astype(bool)
        any_flag |= hit
        if int(hit.sum()):
            out[f] = int(hit.sum())
    out["none"] = int((~any_flag).sum())
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def false_match_kinds(
    predicted: pd.DataFrame,
    truth: pd.DataFrame,
    persons: pd.DataFrame,
    *,
    key: str = "unique_id",
    cluster: str = "cluster_id",
    true_id: str = "person_id",
) -> dict[str, int]:
    """False-positive pairs (same predicted cluster, different true persons) by how the two
    true persons relate: twin, parent/child, same household, other. `persons` is ground
    truth persons.parquet (person_id, household_id, mother_id, father_id, twin_id)."""
    m = _join(predicted, truth, key)[[key, cluster, true_id]]
    p = m.merge(m, on=cluster, suffixes=("_l", "_r"))
    p = p[(p[f"{key}_l"] < p[f"{key}_r"]) & (p[f"{true_id}_l"] != p[f"{true_id}_r"])]
    per = persons.set_index("person_id")
    out: dict[str, int] = {}
    for a, b in zip(p[f"{true_id}_l"], p[f"{true_id}_r"], strict=True):
        pa, pb = per.loc[a], per.loc[b]
        if pa.get("twin_id") == b:
            kind = "twin"
        elif b in (pa.get("mother_id"), pa.get("father_id")) or a in (
            pb.get("mother_id"),
            pb.get("father_id"),
        ):
            kind = "parent/child"
        elif pa.get("household_id") == pb.get("household_id"):
            kind = "same household"
        else:
            kind = "other"
        out[kind] = out.get(kind, 0) + 1
    return out


# --------------------------------------------------------------------------- baseline

#: Plaintext columns the baseline understands (all optional except the first four).
PLAINTEXT_COLUMNS = (
    "unique_id",
    "given_name",
    "family_name",
    "date_of_birth",
    "given_name_canonical",
    "given_name_phonetic",
    "family_name_phonetic",
    "other_names",
    "sex",
    "address_line_1",
    "postcode",
    "postcode_sector",
    "postcode_district",
    "nhs_number",
    "upn",
    "phone",
    "email",
    "agency",
    "batch_id",
)


def _plaintext_comparisons(cols: set[str]) -> list:
    """Splink comparisons over plaintext that mirror linkage.comparisons level by level, with
    plaintext string similarity (Jaro-Winkler) where the hub has Bloom-filter Dice."""
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    def jw(col: str, t: float):
        return cll.JaroWinklerLevel(col, t)

    def eq(col: str) -> str:
        return f'"{col}_l" = "{col}_r"'

    fore = [cll.NullLevel("given_name"), cll.ExactMatchLevel("given_name", True)]
    if "given_name_canonical" in cols:
        fore.append(cll.CustomLevel(eq("given_name_canonical"), "canonical (nickname) match"))
    fore.append(jw("given_name", 0.92))
    if "given_name_phonetic" in cols:
        fore.append(cll.CustomLevel(eq("given_name_phonetic"), "phonetic match"))
    fore += [jw("given_name", 0.88), jw("given_name", 0.7), cll.ElseLevel()]
    sur = [
        cll.NullLevel("family_name"),
        cll.ExactMatchLevel("family_name", True),
        jw("family_name", 0.92),
    ]
    if "family_name_phonetic" in cols:
        sur.append(cll.CustomLevel(eq("family_name_phonetic"), "phonetic match"))
    if "other_names" in cols:
        sur.append(
            cll.CustomLevel(
                '(list_contains(string_split("other_names_l", \' \'), "family_name_r") OR '
                'list_contains(string_split("other_names_r", \' \'), "family_name_l"))',
                "surname matches previous name",
            )
        )
    sur += [jw("family_name", 0.88), jw("family_name", 0.7), cll.ElseLevel()]
    comparisons = [
        cl.CustomComparison(fore, output_column_name="forename"),
        cl.CustomComparison(sur, output_column_name="surname"),
        cl.DateOfBirthComparison("date_of_birth", input_is_string=False),
    ]
    res = [c for c in ("address_line_1", "postcode") if c in cols]
    if res:
        null = " AND ".join(f'("{c}_l" IS NULL OR "{c}_r" IS NULL)' for c in res)
        levels = [cll.CustomLevel(null, "null").configure(is_null_level=True)]
        if len(res) == 2:
            levels.append(
                cll.CustomLevel(f"{eq('address_line_1')} AND {eq('postcode')}", "same address")
            )
            levels.append(
                cll.CustomLevel(
                    'jaro_winkler_similarity("address_line_1_l", "address_line_1_r") >= 0.9',
                    "similar address line",
                )
            )
        elif res == ["address_line_1"]:  # no postcode (e.g. FEBRL's are not UK postcodes)
            levels.append(cll.CustomLevel(eq("address_line_1"), "same address line"))
            levels.append(
                cll.CustomLevel(
                    'jaro_winkler_similarity("address_line_1_l", "address_line_1_r") >= 0.9',
                    "similar address line",
                )
            )
        if "postcode" in cols:
            levels.append(cll.CustomLevel(eq("postcode"), "same postcode"))
        for c, label in (
            ("postcode_sector", "same sector"),
            ("postcode_district", "same district"),
        ):
            if c in cols:
                levels.append(cll.CustomLevel(eq(c), label))
        levels.append(cll.ElseLevel())
        comparisons.append(cl.CustomComparison(levels, output_column_name="residence"))
    for c in ("sex", "nhs_number", "upn", "phone", "email"):
        if c in cols:
            comparisons.append(cl.ExactMatch(c))
    return comparisons


def plaintext_baseline(
    con: duckdb.DuckDBPyConnection,
    table: str,
    *,
    threshold: float = 0.999,
    u_max_pairs: float = 2e6,
    seed: int = 42,
    m_floor: float | None = None,
    guard: bool = True,
) -> pd.DataFrame:
    """Splink over plaintext identifiers with settings comparable to the pseudonymised model,
    for the privacy-cost figure F1(pseudonymised) - F1(plaintext). Evaluation only: never run
    on the hub.

    `table` has unique_id, given_name, family_name, date_of_birth (DATE/TIMESTAMP) and any of
    PLAINTEXT_COLUMNS. Comparisons mirror the hub's level by level (Jaro-Winkler instead of
    Bloom Dice), blocking uses the same ideas (NHS number, UPN, DOB with phonetic names or
    postcode district, names with birth year or postcode), training is the same (prior from
    deterministic rules, u by random sampling, EM blocked on NHS number and on names+DOB),
    and with `guard` the same chaining guard splits clusters an agency's NHS numbers
    contradict. Returns unique_id, cluster_id.
    """
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on
    from splink.clustering import cluster_pairwise_predictions_at_threshold

    from linkage.clusters import guard_chains
    from linkage.person_linkage import floor_m_probabilities
    from linkage.person_run import DEFAULT_M_FLOOR
    from linkage.splink_logging import summarise_untrained_m

    cols = {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}
    missing = {"unique_id", "given_name", "family_name", "date_of_birth"} - cols
    if missing:
        raise ValueError(f"table {table}: missing plaintext columns {sorted(missing)}")
    combos = [
        # The broadest first, as the hub orders them at this scale (measured at every run by
        # linkage.person_linkage.broadest_rules_first; here written down).
        ("given_name_canonical", "year(date_of_birth)", "month(date_of_birth)"),
        ("given_name_phonetic", "family_name_phonetic", "year(date_of_birth)"),
        ("nhs_number",),
        ("upn",),
        ("date_of_birth", "family_name_phonetic"),
        ("date_of_birth", "given_name_phonetic"),
        ("date_of_birth", "postcode_district"),
        ("given_name_canonical", "postcode"),
        ("family_name", "postcode"),
    ]
    rules = [block_on(*c) for c in combos if all(x.split("(")[-1].rstrip(")") in cols for x in c)]
    if {"given_name_phonetic", "family_name_phonetic"} <= cols:
        # As the bridge key blk_names_unordered_dob: names in the wrong fields.
        rules.append(
            block_on(
                "least(given_name_phonetic, family_name_phonetic)",
                "greatest(given_name_phonetic, family_name_phonetic)",
                "date_of_birth",
            )
        )
    if not any(
        "phonetic" in " ".join(c)
        for c in combos
        if all(x.split("(")[-1].rstrip(")") in cols for x in c)
    ):
        rules += [
            block_on("date_of_birth", "substr(family_name, 1, 2)"),
            block_on("date_of_birth", "substr(given_name, 1, 2)"),
            block_on("given_name", "family_name", "year(date_of_birth)"),
        ]
    settings = SettingsCreator(
        link_type="dedupe_only",
        comparisons=_plaintext_comparisons(cols),
        blocking_rules_to_generate_predictions=rules,
    )
    db_api = DuckDBAPI(con)
    linker = Linker(db_api.register(table), settings, log_level=logging.WARNING)
    det = [block_on("given_name", "family_name", "date_of_birth")]
    if "nhs_number" in cols:
        det.append(block_on("nhs_number", "date_of_birth"))
    try:
        linker.training.estimate_probability_two_random_records_match(det, recall=0.8)
        linker.training.estimate_u_using_random_sampling(max_pairs=u_max_pairs, seed=seed)
        # the same one-line summary as the hub's training, not one warning per level
        with summarise_untrained_m(linker, logging.getLogger("linkage.plaintext_baseline")):
            linker.training.estimate_parameters_using_expectation_maximisation(
                block_on("nhs_number") if "nhs_number" in cols else block_on("date_of_birth")
            )
            linker.training.estimate_parameters_using_expectation_maximisation(
                block_on("given_name", "family_name", "date_of_birth")
            )
        trained = floor_m_probabilities(
            linker.misc.save_model_to_json(), DEFAULT_M_FLOOR if m_floor is None else m_floor
        )
    finally:
        linker.table_management.delete_tables_created_by_splink_from_db()
    # A fresh API: the first one caches term-frequency tables that were just dropped.
    linker = Linker(DuckDBAPI(con).register(table), trained, log_level=logging.WARNING)
    try:
        pred = linker.inference.predict(
            threshold_match_probability=min(0.5, threshold), warning_mode="never"
        )
        pairs = con.execute(
            f"""SELECT unique_id_l, unique_id_r, match_weight, match_probability,
                       gamma_forename, gamma_date_of_birth FROM {pred.physical_name}"""
        ).df()
        out = con.execute(f"SELECT unique_id FROM {table}").df()
    finally:
        linker.table_management.delete_tables_created_by_splink_from_db()
    # Same twin rule as the hub (linkage.comparisons.twin_like): identical DOB with forenames
    # in the lowest level (Jaro-Winkler < 0.7) is never auto-matched.
    top_dob = pairs["gamma_date_of_birth"].max()
    twins = (pairs["gamma_forename"] == 0) & (pairs["gamma_date_of_birth"] == top_dob)
    edges = pairs[(pairs["match_probability"] >= threshold) & ~twins]
    clusters = cluster_pairwise_predictions_at_threshold(
        out,
        edges[["unique_id_l", "unique_id_r"]].reset_index(drop=True),
        DuckDBAPI(connection=duckdb.connect()),
        node_id_column_name="unique_id",
        edge_id_column_name_left="unique_id_l",
        edge_id_column_name_right="unique_id_r",
    ).as_pandas_dataframe()[["unique_id", "cluster_id"]]
    out = out.merge(clusters, on="unique_id", how="left")
    out["cluster_id"] = out["cluster_id"].fillna(out["unique_id"])
    if guard and {"agency", "batch_id", "nhs_number"} <= cols:
        extra = con.execute(
            f"SELECT unique_id, agency, batch_id, nhs_number AS tok_nhs_number, "
            f"CAST(date_of_birth AS VARCHAR) AS tok_dob FROM {table}"
        ).df()
        records, _ = guard_chains(out.merge(extra, on="unique_id"), edges)
        out = records[["unique_id", "cluster_id"]]
    return out.reset_index(drop=True)
