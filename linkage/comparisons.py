"""Splink comparisons and blocking rules over pseudonymised identifiers.

Inputs are the `tok_*` / `bf_*` / `blk_*` columns of the identifiers contract
(docs/contracts.md). Bloom encodings are compared with DuckDB's native bit operations: the
linkage input (`person_linkage.prepare_input`) holds each filter once per record as 124-bit
integer words (`bf_<name>_w<i>`, HUGEINT) with its popcount, so a Dice coefficient costs one
`&` and one `bit_count` per word and no casts of the filters. (`&` over BIT values allocates a
new bit string for every pair: at 1M records the Bloom Dice levels took 18 of the 28 s of
scoring; over words, a quarter of that, benchmarks/bench_linkage.py.)
Tokens arrive in the input as 64-bit integers; only equality is ever asked of them.

Only comparisons whose columns are present are built, so an agency partnership that
never shares (say) email still gets a valid model.
"""

from __future__ import annotations

from collections.abc import Collection
from fractions import Fraction
from typing import Any

import pandas as pd
import splink.comparison_level_library as cll
import splink.comparison_library as cl
from splink.internals.comparison_creator import ComparisonCreator

# Comparison output names are chosen so Splink's `bf_<name>` Bayes-factor columns never
# collide with the `bf_*` Bloom-filter input columns.
BLOOM_COLUMNS = ("bf_given_name", "bf_family_name", "bf_address")

#: The residence level of one flat + premises + post town where a postcode is missing: one
#: property, like the "same property" level (linkage.guards reads both).
TOWN_ADDRESS_LABEL = "same address in town, no postcode"

# Dice thresholds for Bloom-encoded strings: near-identical, then similar.
DICE_HIGH = 0.85
DICE_LOW = 0.6
# Short names with one typo share few bigrams; a weak level keeps them out of 'else', so
# 'different name' stays strong evidence (it is what separates twins).
DICE_WEAK = 0.4


#: Hex digits (4 bits each) per integer word of a Bloom filter in the linkage input: 124-bit
#: words are positive HUGEINTs whose popcount fits bit_count's TINYINT (a 128-bit word with
#: every bit set would wrap to -128).
BLOOM_WORD_HEX_DIGITS = 31


def bloom_word_count_for(n_bytes: int) -> int:
    """Words a Bloom filter of `n_bytes` bytes takes in the linkage input."""
    return -(-2 * n_bytes // BLOOM_WORD_HEX_DIGITS)


def bloom_word_column(bloom: str, i: int) -> str:
    """Name of the linkage-input column holding word `i` of Bloom filter `bloom`."""
    return f"{bloom}_w{i}"


def bloom_word_count(columns: Collection[str], bloom: str) -> int:
    """How many words of `bloom` the linkage input `columns` hold (0: BIT column only)."""
    n = 0
    while bloom_word_column(bloom, n) in columns:
        n += 1
    return n


def dice_intersection_sql(col: str, n_words: int) -> str:
    """Bits two Bloom filters share, in DuckDB SQL (l/r sides of a Splink pair), from their
    integer words built once per record by `prepare_input`. Each word's count is a TINYINT,
    widened before the sum."""
    return " + ".join(
        f'bit_count("{w}_l" & "{w}_r")::INTEGER'
        for w in (bloom_word_column(col, i) for i in range(n_words))
    )


def dice_at_least_sql(col: str, n_words: int, threshold: float) -> str:
    """Dice(l, r) >= threshold in integer arithmetic: 2|l&r| / (|l|+|r|) >= p/q exactly when
    2q|l&r| >= p(|l|+|r|) (popcounts stored as `pop_<col>`). Same pairs as
    `dice_sql(...) >= threshold` (two filters both empty have no Dice: false), without a
    decimal product and a division per pair (a few percent less per Dice level at 1M
    records: the word intersection is most of the cost)."""
    frac = Fraction(str(threshold))
    pops = f'"pop_{col}_l" + "pop_{col}_r"'
    return (
        f"({pops} > 0 AND ({dice_intersection_sql(col, n_words)}) * {2 * frac.denominator}"
        f" >= {frac.numerator} * ({pops}))"
    )


def dice_sql(col: str, n_words: int) -> str:
    """Dice coefficient of two Bloom filters in DuckDB SQL, from their words and stored
    popcounts: the form models trained before `dice_at_least_sql` compare with a threshold."""
    pop_l, pop_r = f'"pop_{col}_l"', f'"pop_{col}_r"'
    return f"(2.0 * ({dice_intersection_sql(col, n_words)}) / nullif({pop_l} + {pop_r}, 0))"


def bit_dice_sql(col: str) -> str:
    """The Dice SQL of models trained before Bloom words: `&` over the BIT columns and the
    stored popcounts. The input keeps both, so such models keep scoring (more slowly)."""
    left, right = f'"{col}_l"', f'"{col}_r"'
    pop_l, pop_r = f'"pop_{col}_l"', f'"pop_{col}_r"'
    return f"(2.0 * bit_count({left} & {right}) / nullif({pop_l} + {pop_r}, 0))"


def legacy_dice_sql(col: str) -> str:
    """The Dice SQL of models trained before popcounts were stored: still valid on today's
    input (the BIT columns are unchanged), so such models keep scoring."""
    left, right = f'"{col}_l"', f'"{col}_r"'
    return (
        f"(2.0 * bit_count({left} & {right}) / nullif(bit_count({left}) + bit_count({right}), 0))"
    )


def _null(*cols: str) -> cll.CustomLevel:
    cond = " OR ".join(f'"{c}_l" IS NULL OR "{c}_r" IS NULL' for c in cols)
    return cll.CustomLevel(f"({cond})", label_for_charts="null").configure(is_null_level=True)


def _eq(col: str) -> str:
    return f'"{col}_l" = "{col}_r"'


def _dice(col: str, threshold: float, cols: Collection[str]) -> cll.CustomLevel:
    n = bloom_word_count(cols, col)
    sql = dice_at_least_sql(col, n, threshold) if n else f"{bit_dice_sql(col)} >= {threshold}"
    return cll.CustomLevel(sql, label_for_charts=f"dice({col}) >= {threshold}")


#: Bridge blocking key of both phonetic names, sorted, with the DOB (schemas/encoding_spec.yaml):
#: equal on a pair whose given and family names were entered in each other's fields.
UNORDERED_NAMES_KEY = "blk_names_unordered_dob"
NAMES_EITHER_ORDER = "names in either order, same DOB"


def _names_either_order(cols: Collection[str]) -> list[cll.CustomLevel]:
    """A level for names entered in each other's fields (given <-> family: 1% of records on
    the messy profile). Name tokens of the two fields are keyed apart, so only the bridge's
    unordered-names key can see it; placed after every same-field level, so a pair reaching
    it disagrees on the fields but agrees on the names as a set, and on the DOB. Without
    it such a pair falls to 'else' on both names, and with its same DOB it looks like twins
    (`twin_like`) and is never auto-matched."""
    if UNORDERED_NAMES_KEY not in cols:
        return []
    return [cll.CustomLevel(_eq(UNORDERED_NAMES_KEY), NAMES_EITHER_ORDER)]


#: The bridge's flag of a DOB the agency marks as an estimate (spec `flags`).
ESTIMATED_DOB_FLAG = "flag_dob_estimated"
ESTIMATED_DOB = "estimated DOB (either record)"
#: tok_given_name_canonical of a record with an estimated DOB under each birth year it may
#: really be (schemas/encoding_spec.yaml, eighth amendment): null for real DOBs, and equal to
#: another record's tok_given_name_canonical for the same names in that year.
ESTIMATED_YEAR_TOKENS = (
    "tok_given_name_canonical_est_m2",
    "tok_given_name_canonical_est_m1",
    "tok_given_name_canonical_est_p1",
    "tok_given_name_canonical_est_p2",
)
NAMES_NEAR_ESTIMATE = "same names, birth year within 2 of an estimate"


def estimated_year_sides(cols: Collection[str]) -> list[tuple[str, str, str]]:
    """(estimated record's side, its other-year token, the other side): the equalities, both
    orientations, of an estimated record's other-year name tokens with the other record's
    own tok_given_name_canonical."""
    if "tok_given_name_canonical" not in cols:
        return []
    return [
        (a, c, b) for c in ESTIMATED_YEAR_TOKENS if c in cols for a, b in (("l", "r"), ("r", "l"))
    ]


def _names_near_estimate(cols: Collection[str]) -> list[cll.CustomLevel]:
    """Both names agreeing with an estimated DOB's year off by up to two: every other name
    level is salted by the birth year or DOB, so identical names next to an estimated age
    (1 January, year +-2) fell to 'else', as if they differed. After the year-salted
    levels: a pair reaching it has the same forename variant and surname sound, and an
    estimate in another year."""
    conds = [
        f'"{c}_{a}" = "tok_given_name_canonical_{b}"' for a, c, b in estimated_year_sides(cols)
    ]
    if not conds:
        return []
    return [cll.CustomLevel("(" + " OR ".join(conds) + ")", NAMES_NEAR_ESTIMATE)]


def _given_name(cols: Collection[str]) -> ComparisonCreator:
    levels: list = [_null("tok_given_name"), cll.ExactMatchLevel("tok_given_name", True)]
    if "tok_given_name_canonical" in cols:
        levels.append(
            cll.CustomLevel(_eq("tok_given_name_canonical"), "canonical (nickname) match")
        )
    if "bf_given_name" in cols:
        levels.append(_dice("bf_given_name", DICE_HIGH, cols))
    if "tok_given_name_phonetic" in cols:
        levels.append(cll.CustomLevel(_eq("tok_given_name_phonetic"), "phonetic match"))
    levels += _names_near_estimate(cols)
    if "bf_given_name" in cols:
        levels += [_dice("bf_given_name", DICE_LOW, cols), _dice("bf_given_name", DICE_WEAK, cols)]
    levels += _names_either_order(cols)
    levels.append(cll.ElseLevel())
    return cl.CustomComparison(levels, output_column_name="forename")


#: Forename tokens salted with the surname's sound and the birth year (encoding spec).
FORENAME_WITH_SURNAME_SOUND = ("tok_given_name_canonical", "tok_given_name_phonetic")


def _family_name(cols: Collection[str]) -> ComparisonCreator:
    levels: list = [_null("tok_family_name"), cll.ExactMatchLevel("tok_family_name", True)]
    if "bf_family_name" in cols:
        levels.append(_dice("bf_family_name", DICE_HIGH, cols))
    if "tok_family_name_phonetic" in cols:
        levels.append(cll.CustomLevel(_eq("tok_family_name_phonetic"), "phonetic match"))
    elif forename_sounds := [c for c in FORENAME_WITH_SURNAME_SOUND if c in cols]:
        # No surname-sound token (spec v3, eighth amendment: shared by unrelated people of
        # one birth year, it let the hub chain households' tokens together): the forename
        # tokens carry the surname's sound and birth year, so agreeing on one says so too.
        levels.append(
            cll.CustomLevel(" OR ".join(_eq(c) for c in forename_sounds), "phonetic match")
        )
    levels += _names_near_estimate(cols)
    # Previous/alias surnames and the parts of double-barrelled names are tokenised in the
    # family-name domain (schemas/encoding_spec.yaml), so they compare across columns.
    parts = [
        c
        for c in (
            "tok_other_names",
            "tok_other_name_first",
            "tok_other_name_last",
            "tok_family_name_first",
            "tok_family_name_last",
        )
        if c in cols
    ]
    if parts:
        conds = []
        for c in parts:
            conds += [f'"{c}_l" = "tok_family_name_r"', f'"tok_family_name_l" = "{c}_r"']
        for a in ("tok_family_name_first", "tok_family_name_last"):
            for b in ("tok_family_name_first", "tok_family_name_last"):
                if a in cols and b in cols:
                    conds.append(f'"{a}_l" = "{b}_r"')
        levels.append(
            cll.CustomLevel(
                "(" + " OR ".join(conds) + ")", "surname matches previous name or name part"
            )
        )
    if "bf_family_name" in cols:
        levels.append(_dice("bf_family_name", DICE_LOW, cols))
    levels += _names_either_order(cols)
    levels.append(cll.ElseLevel())
    return cl.CustomComparison(levels, output_column_name="surname")


def _dob(cols: Collection[str]) -> ComparisonCreator:
    levels: list = [_null("tok_dob"), cll.ExactMatchLevel("tok_dob")]
    if "tok_dob_swapped" in cols:
        # tok_dob_swapped is the DOB token with day and month exchanged (same subkey).
        levels.append(
            cll.CustomLevel(
                '("tok_dob_swapped_l" = "tok_dob_r" OR "tok_dob_l" = "tok_dob_swapped_r")',
                "day/month swapped",
            )
        )
    if ESTIMATED_DOB_FLAG in cols:
        # An agency's estimate (an age guessed into 1 January of a year) that differs from
        # the other DOB says little: a level of its own, so it does not weigh as 'else'.
        levels.append(
            cll.CustomLevel(
                f'("{ESTIMATED_DOB_FLAG}_l" OR "{ESTIMATED_DOB_FLAG}_r")', ESTIMATED_DOB
            )
        )
    if "tok_dob_ym" in cols:
        levels.append(cll.CustomLevel(_eq("tok_dob_ym"), "year+month"))
    elif {"tok_dob_year", "tok_dob_month"} <= set(cols):
        levels.append(
            cll.CustomLevel(f"{_eq('tok_dob_year')} AND {_eq('tok_dob_month')}", "year+month")
        )
    if "tok_dob_md" in cols:
        levels.append(cll.CustomLevel(_eq("tok_dob_md"), "month+day"))
    elif {"tok_dob_month", "tok_dob_day"} <= set(cols):
        levels.append(
            cll.CustomLevel(f"{_eq('tok_dob_month')} AND {_eq('tok_dob_day')}", "month+day")
        )
    if "tok_dob_year" in cols:
        levels.append(cll.CustomLevel(_eq("tok_dob_year"), "year only"))
    levels.append(cll.ElseLevel())
    return cl.CustomComparison(levels, output_column_name="birth_date")


def _residence(cols: Collection[str]) -> ComparisonCreator | None:
    have = [c for c in ("tok_uprn", "tok_address", "tok_postcode", "bf_address") if c in cols]
    if not have:
        return None
    # A Bloom filter's popcount is NULL exactly when the filter is: testing it keeps the
    # 64-byte BIT values out of the candidate pairs.
    null_cols = [f"pop_{c}" if c.startswith("bf_") and f"pop_{c}" in cols else c for c in have]
    null_cond = " AND ".join(f'("{c}_l" IS NULL OR "{c}_r" IS NULL)' for c in null_cols)
    # Same flat + premises + post town where one or both records have no postcode (so no
    # postcode-keyed token or filter to compare): agreement is evidence; disagreement stays
    # neutral, as before, since towns are written inconsistently (a locality for the town).
    # A UPRN on both sides that differs says two properties, whatever the town key says.
    town = None
    if "tok_address_town" in cols:
        town = " AND ".join(
            [_eq("tok_address_town")]
            + (
                ['("tok_address_l" IS NULL OR "tok_address_r" IS NULL)']
                if "tok_address" in cols
                else []
            )
            + (['NOT coalesce("tok_uprn_l" <> "tok_uprn_r", FALSE)'] if "tok_uprn" in cols else [])
        )
        null_cond = f"({null_cond}) AND NOT coalesce({town}, FALSE)"
    levels: list = [
        cll.CustomLevel(null_cond, label_for_charts="null").configure(is_null_level=True)
    ]
    exact = [_eq(c) for c in ("tok_uprn", "tok_address") if c in cols]
    if exact:
        levels.append(cll.CustomLevel(" OR ".join(exact), "same property"))
    if "bf_address" in cols:
        levels.append(_dice("bf_address", DICE_HIGH, cols))
    if town is not None:
        levels.append(cll.CustomLevel(town, TOWN_ADDRESS_LABEL))
    for col, label in (
        ("tok_postcode", "same postcode"),
        ("tok_postcode_sector", "same sector"),
        ("tok_postcode_district", "same district"),
    ):
        if col in cols:
            levels.append(cll.CustomLevel(_eq(col), label))
    levels.append(cll.ElseLevel())
    return cl.CustomComparison(levels, output_column_name="residence")


def _exact(col: str, name: str) -> ComparisonCreator:
    return cl.CustomComparison(
        [_null(col), cll.ExactMatchLevel(col), cll.ElseLevel()], output_column_name=name
    )


def build_comparisons(columns: Collection[str]) -> list[ComparisonCreator]:
    """Splink comparisons for the identifier columns present in `columns`."""
    cols = set(columns)
    # Each comparison stands on its token: a column no record populates is not in the
    # input (`linkage_input._input_layout`), and its comparison is left out rather than
    # built over a missing column. The model keeps whatever the data supports.
    comparisons: list[ComparisonCreator] = [
        build(cols)
        for col, build in (
            ("tok_given_name", _given_name),
            ("tok_family_name", _family_name),
            ("tok_dob", _dob),
        )
        if col in cols
    ]
    residence = _residence(cols)
    if residence is not None:
        comparisons.append(residence)
    # NHS number agreement is near-conclusive and disagreement strongly negative; EM learns
    # both from the data rather than us fixing weights.
    for col, name in (
        ("tok_sex", "sex"),
        ("tok_nhs_number", "nhs"),
        ("tok_upn", "upn"),
        ("tok_phone", "phone"),
        ("tok_email", "email"),
    ):
        if col in cols:
            comparisons.append(_exact(col, name))
    # Sex alone says nothing about whether two records are one person.
    if len(comparisons) == ("tok_sex" in cols):
        raise ValueError(
            "nothing to compare: the linkage input has no populated name, date of birth, "
            "address, NHS number, UPN, phone or e-mail column (columns no record populates "
            "are left out)"
        )
    return comparisons


def _gammas(model_settings: dict[str, Any], name: str, labels: Collection[str]) -> set[int]:
    """Gamma values of the levels of comparison `name` whose chart label is in `labels`
    ('else' for the ElseLevel, 'top' for the first non-null level)."""
    for comp in model_settings["comparisons"]:
        if comp["output_column_name"] != name:
            continue
        levels = [lv for lv in comp["comparison_levels"] if not lv.get("is_null_level")]
        out = set()
        for i, lv in enumerate(levels):
            gamma = len(levels) - 1 - i
            label = str(lv.get("label_for_charts", ""))
            if (
                label in labels
                or (i == 0 and "top" in labels)
                or (lv.get("sql_condition") == "ELSE" and "else" in labels)
            ):
                out.add(gamma)
        return out
    return set()


def twin_like(pairs: pd.DataFrame, model_settings: dict[str, Any]) -> pd.Series:
    """Pairs that look like twins rather than one person: the same date of birth with
    forenames that are different (below every similarity level). Fellegi-Sunter adds up DOB,
    surname and address agreement as if independent, but twins share all three, so such a
    pair can score high; it is never auto-matched, only queued for clerical review."""
    weak = _gammas(model_settings, "forename", {"else"})
    dob = _gammas(model_settings, "birth_date", {"top"})
    if not weak or not dob or "gamma_forename" not in pairs or "gamma_birth_date" not in pairs:
        return pd.Series(False, index=pairs.index)
    return pairs["gamma_forename"].isin(weak) & pairs["gamma_birth_date"].isin(dob)
