"""Pairs held back from auto-matching however high they score (queued for clerical review).

Fellegi-Sunter adds evidence up as if independent; some pairs that score above the
auto-match threshold are known to be two people:
- twins (`linkage.comparisons.twin_like`): same date of birth, different forenames;
- one birth date with weakly similar forenames and nothing else in common
  (`same_dob_weak_forename`);
- household members sharing one identifier (`household_shared_identifier`): real exports
  copy a parent's NHS number or phone onto a child's record (issue 17: nearly all false
  auto-matches on unfamiliar data were two members of one household). A shared NHS number,
  phone or e-mail with the same surname and address outweighs a different given name and
  date of birth, but one person does not usually have both wrong at once.

The rules read only the pairs' gamma levels (by comparison output name and level label),
never token columns, so they hold whatever the encoding spec tokenises.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import pandas as pd

from linkage.comparisons import DICE_WEAK, TOWN_ADDRESS_LABEL, twin_like

#: Comparisons whose agreement is a shared identifier (Splink output column names).
SHARED_IDENTIFIERS = ("nhs", "phone", "email")
#: Level labels of the residence comparison meaning one property (token or UPRN equality,
#: or one flat + premises + post town where a postcode is missing).
SAME_PROPERTY_LABELS = frozenset({"same property", TOWN_ADDRESS_LABEL})


def level_gammas(model_settings: dict[str, Any], name: str, labels: Collection[str]) -> set[int]:
    """Gamma values of comparison `name`'s levels whose chart label is in `labels`; 'top' is
    the first non-null level, 'else' the ElseLevel. Empty if the model has no `name`."""
    for comp in model_settings["comparisons"]:
        if comp["output_column_name"] != name:
            continue
        levels = [lv for lv in comp["comparison_levels"] if not lv.get("is_null_level")]
        out = set()
        for i, lv in enumerate(levels):
            label = str(lv.get("label_for_charts", ""))
            if (
                label in labels
                or (i == 0 and "top" in labels)
                or (lv.get("sql_condition") == "ELSE" and "else" in labels)
            ):
                out.add(len(levels) - 1 - i)
        return out
    return set()


def _at(pairs: pd.DataFrame, name: str, gammas: set[int]) -> pd.Series:
    col = f"gamma_{name}"
    if not gammas or col not in pairs:
        return pd.Series(False, index=pairs.index)
    return pairs[col].isin(gammas)


def household_shared_identifier(pairs: pd.DataFrame, model_settings: dict[str, Any]) -> pd.Series:
    """Pairs sharing an NHS number, phone or e-mail at one property whose forenames differ
    (below every similarity level) and whose dates of birth differ (no partial agreement
    either): two members of one household, one carrying the other's identifier."""
    shared = pd.Series(False, index=pairs.index)
    for name in SHARED_IDENTIFIERS:
        shared |= _at(pairs, name, level_gammas(model_settings, name, {"top"}))
    # the residence comparison's top level is one property whatever it is labelled
    home = level_gammas(model_settings, "residence", SAME_PROPERTY_LABELS) or level_gammas(
        model_settings, "residence", {"top"}
    )
    same_home = _at(pairs, "residence", home)
    other_name = _at(pairs, "forename", level_gammas(model_settings, "forename", {"else"}))
    other_dob = _at(pairs, "birth_date", level_gammas(model_settings, "birth_date", {"else"}))
    return shared & same_home & other_name & other_dob


#: The forename comparison's weakest similarity level (linkage.comparisons.DICE_WEAK).
WEAK_FORENAME_LABELS = frozenset({f"dice(bf_given_name) >= {DICE_WEAK}"})


def same_dob_weak_forename(pairs: pd.DataFrame, model_settings: dict[str, Any]) -> pd.Series:
    """Pairs with one date of birth whose forenames are only weakly similar (Sarah / Susan)
    and nothing else to say they are one person: not one property, no NHS number, UPN,
    phone or e-mail in common. Name Bloom filters are salted by the birth year (spec v3), so
    the random pairs Splink estimates u on almost never reach a similarity level, and the
    weak level weighs as if it were rare among non-matches; among people of one birth date
    (twins' alike names, namesakes' babies) it is not. On the messy profile (seed 11) such
    pairs were every false auto-match (two babies of one surname and birth date)."""
    weak = _at(pairs, "forename", level_gammas(model_settings, "forename", WEAK_FORENAME_LABELS))
    dob = _at(pairs, "birth_date", level_gammas(model_settings, "birth_date", {"top"}))
    home = level_gammas(model_settings, "residence", SAME_PROPERTY_LABELS) or level_gammas(
        model_settings, "residence", {"top"}
    )
    support = _at(pairs, "residence", home)
    for name in (*SHARED_IDENTIFIERS, "upn"):
        support |= _at(pairs, name, level_gammas(model_settings, name, {"top"}))
    return weak & dob & ~support


def held_back(pairs: pd.DataFrame, model_settings: dict[str, Any]) -> pd.Series:
    """Pairs never auto-matched, only queued for clerical review: twin-like, one birth date
    with weakly similar forenames and no other support, or household members sharing an
    identifier."""
    if pairs.empty:
        return pd.Series(False, index=pairs.index)
    return (
        twin_like(pairs, model_settings)
        | same_dob_weak_forename(pairs, model_settings)
        | household_shared_identifier(pairs, model_settings)
    )


def dob_conflict_trusted(pairs: pd.DataFrame, model_settings: dict[str, Any]) -> pd.Series:
    """Auto-match pairs whose different DOBs are no reason for the chaining guard to cut
    them (`linkage.clusters.conflict_pairs`): both names agree exactly. Name tokens are
    salted by the birth year (encoding spec v3), so exact names also say the year agrees:
    one person with a mis-keyed day or month (a default 1 January, a day typo) duplicated
    in one agency's extract, provided no NHS number, UPN, phone or e-mail of the two
    disagrees. A parent and a child of one name ("Junior") differ in birth year and never
    get here. On the messy profile, cutting such pairs lost ~0.7% of true cross-agency
    pairs."""
    if pairs.empty:
        return pd.Series(False, index=pairs.index)
    names = _at(pairs, "forename", level_gammas(model_settings, "forename", {"top"})) & _at(
        pairs, "surname", level_gammas(model_settings, "surname", {"top"})
    )
    # ...and no identifier of theirs disagrees: two people of one name and birth year in one
    # extract (a shared family e-mail outweighing different phones) stay cut apart.
    for name in (*SHARED_IDENTIFIERS, "upn"):
        names &= ~_at(pairs, name, level_gammas(model_settings, name, {"else"}))
    return names
