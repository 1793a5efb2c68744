"""Blocking rules over pseudonymised identifiers: the candidate pairs the hub scores
(`prediction_blocking_rules`), the blocks EM trains on, and the deterministic rules for the
prior. Rules are Splink creators over the `tok_*` / `blk_*` columns of the identifiers
contract; only rules whose columns are present are built.
"""

from __future__ import annotations

from collections.abc import Collection

from splink import block_on
from splink.blocking_rule_library import CustomRule
from splink.internals.blocking_rule_creator import BlockingRuleCreator

from linkage.comparisons import ESTIMATED_DOB_FLAG, estimated_year_sides

# Bridge blocking keys agreeing on names alone (or surname + birth year): blocks grow with the
# square of a common name's frequency (8.5M of 9M candidate pairs at 100k records, measured
# by benchmarks/bench_linkage.py). The true pairs only they found disagree on DOB with no
# shared address or NHS number; those that still scored above the clerical threshold shared
# a phone number, which now blocks on its own (7.7k pairs at 100k records). Net at 100k:
# no pair above the auto-match threshold lost, 5 clerical-band pairs lost (2 true), 42
# pairs above the clerical threshold gained.
# blk_canonical_given_dob_ym alone (a canonical forename in a birth month) was 25.3M of the
# 56.8M candidate pairs at 1M records; the true pairs only it found share the full DOB too (a
# nickname whose sound differs, no postcode: messy profile), so it blocks with tok_dob.
BROAD_BLOCKING_KEYS = frozenset(
    {"blk_given_family_phonetic", "blk_family_phonetic_dob_year", "blk_canonical_given_dob_ym"}
)

#: Bridge keys that are not blocking rules: another rule already yields every pair they would
#: (blk_given_canonical_phone is for resolving relatives, linkage.family; `tok_phone` blocks
#: on the phone alone).
NOT_BLOCKING_KEYS = frozenset({"blk_given_canonical_phone", "blk_family_phonetic_dob_swapped"})


#: Token combinations that a bridge blocking key of the same fields already joins on
#: (schemas/encoding_spec.yaml): one of them is enough.
SAME_AS_BRIDGE_KEY = {
    ("tok_dob", "tok_given_name_phonetic"): "blk_given_phonetic_dob",
    # The surname-sound token is salted by birth year + sex, the key by neither: agreeing on
    # the DOB and the token implies agreeing on the key, so the token rule adds no pair.
    ("tok_dob", "tok_family_name_phonetic"): "blk_family_phonetic_dob",
}


def prediction_blocking_rules(columns: Collection[str]) -> list[BlockingRuleCreator]:
    """Blocking rules generating candidate pairs: every `blk_*` key plus token combinations.

    Rules are cheap equi-joins; Splink de-duplicates pairs produced by several rules (in the
    order `person_linkage.broadest_rules_first` gives them at scoring).
    """
    cols = set(columns)
    keys: list[tuple[str, ...]] = [
        (c,)
        for c in sorted(cols)
        if c.startswith("blk_") and c not in BROAD_BLOCKING_KEYS | NOT_BLOCKING_KEYS
    ]
    combos = [
        ("tok_nhs_number",),
        ("tok_upn",),
        ("tok_phone",),
        ("tok_dob", "tok_family_name_phonetic"),
        ("tok_dob", "tok_given_name_phonetic"),
        ("tok_dob", "tok_postcode_district"),
        ("tok_given_name_phonetic", "tok_family_name_phonetic", "tok_dob_year"),
        # Spec v3 salts name tokens with the birth year (no tok_dob_year): the same rule.
        *(
            [("tok_given_name_phonetic", "tok_family_name_phonetic")]
            if "tok_dob_year" not in cols and "tok_dob" in cols
            else []
        ),
        # A nickname (Fred/Frederick) with a mis-keyed DOB in the same year (a default
        # 1 January, a day typo) and no full postcode on one side: name tokens carry the
        # birth year, so this is nickname + surname + birth year.
        ("tok_given_name_canonical", "tok_family_name_phonetic"),
        # Spec v3's eighth amendment sends no surname-sound token of its own: the forename
        # tokens carry the surname's sound and the birth year, so alone they are the rules.
        *(
            [("tok_given_name_phonetic",), ("tok_given_name_canonical",)]
            if "tok_family_name_phonetic" not in cols
            else []
        ),
        ("tok_given_name_canonical", "tok_postcode"),
        ("tok_family_name", "tok_postcode"),
        ("blk_canonical_given_dob_ym", "tok_dob"),  # the broad key narrowed (above)
        # One address, whatever the names and DOB say: a swapped or mis-keyed name with a
        # defaulted DOB (messy profile) shares nothing else. Blocks are household-sized, so
        # they grow with the records, not their square (~2% more pairs at 1M records).
        ("tok_address",),
        ("tok_address_town",),
    ]
    keys += [c for c in combos if set(c) <= cols and SAME_AS_BRIDGE_KEY.get(c) not in cols]
    rules: list[BlockingRuleCreator] = [block_on(*k) for k in keys]
    rules += swapped_dob_rules(cols)
    rules += same_dob_no_forename_rules(cols)
    rules += estimated_dob_rules(cols)
    if not rules:
        fallback = [c for c in ("tok_dob", "tok_family_name", "tok_given_name") if c in cols]
        if not fallback:
            raise ValueError(
                "no blocking rule applies: the linkage input has none of the columns the "
                "hub blocks on (blocking keys, NHS number, UPN, phone, names, DOB)"
            )
        rules.append(block_on(fallback[0]))
    return rules


def swapped_dob_rules(cols: Collection[str]) -> list[BlockingRuleCreator]:
    """One record's day/month-swapped DOB equal to the other's DOB, with one phonetic name
    equal: every DOB key above needs the DOB itself to agree, so a swapped DOB with a typo in
    the other name was found by no rule (the blocking misses of the messy profile). Name
    tokens are salted by birth year, which a swap keeps. Swapped is asymmetric: both
    orientations, each an equi-join on the swapped token."""
    if not {"tok_dob", "tok_dob_swapped"} <= set(cols):
        return []
    rules = []
    for name in ("tok_given_name_phonetic", "tok_family_name_phonetic"):
        if name not in cols:
            continue
        for a, b in (("l", "r"), ("r", "l")):
            rules.append(
                CustomRule(f'{a}."tok_dob_swapped" = {b}."tok_dob" AND l."{name}" = r."{name}"')
            )
    # Spec v3's eighth amendment has no surname-sound token: its swapped surname-sound + DOB
    # key is the other record's key under the swapped date (one key domain).
    if {SWAPPED_FAMILY_KEY, "blk_family_phonetic_dob"} <= set(cols):
        for a, b in (("l", "r"), ("r", "l")):
            rules.append(CustomRule(f'{a}."{SWAPPED_FAMILY_KEY}" = {b}."blk_family_phonetic_dob"'))
    return rules


#: The surname-sound + DOB key under the day/month-swapped date (schemas/encoding_spec.yaml).
SWAPPED_FAMILY_KEY = "blk_family_phonetic_dob_swapped"


def same_dob_no_forename_rules(cols: Collection[str]) -> list[BlockingRuleCreator]:
    """One DOB where a record has no forename (missing, or a placeholder the bridge drops):
    it meets others only through its exact surname sound, so a surname typo left it with no
    rule (messy profile: 3-4 of the 40-43 missed true pairs). Each rule fixes the side
    without a forename, a filter DuckDB applies below the join, so only those records'
    same-DOB pairs are built (59 pairs at 1M records).

    Tried and not kept (issue 16): one DOB with a similar name, a name filter at Dice >=
    0.6, found the typo-in-both-names pairs, but its join is the DOB alone (27.7M pairs at
    1M records) and any filter on its pairs costs ~6 s there: hub / plaintext 0.85 ->
    1.07-1.13, 1.04-1.08 limited to pairs where a side has no NHS number, 1.04-1.06 with an
    8-byte min-hash signature of each filter instead of its words; min-hash slots as join
    keys cost more. The bridge's DOB + first-letters key (`blk_initials_dob`, spec v3,
    seventh amendment) finds the same pairs as a plain equi-join."""
    if not {"tok_dob", "tok_given_name"} <= set(cols):
        return []
    return [
        CustomRule('l."tok_given_name" IS NULL AND l."tok_dob" = r."tok_dob"'),
        CustomRule(
            'r."tok_given_name" IS NULL AND l."tok_given_name" IS NOT NULL '
            'AND l."tok_dob" = r."tok_dob"'
        ),
    ]


def estimated_dob_rules(cols: Collection[str]) -> list[BlockingRuleCreator]:
    """The same names within two birth years of a DOB the agency marks as estimated: every
    other name key is salted by the birth year or the DOB, so such a record met its other
    records only through an address or an identifier (messy profile: the largest cause of
    missed pairs). Equi-joins of the estimated record's other-year tokens, which only
    estimated records carry, with every record's own: both orientations."""
    return [
        CustomRule(f'{a}."{c}" = {b}."tok_given_name_canonical"')
        for a, c, b in estimated_year_sides(cols)
    ]


def training_blocking_rules(columns: Collection[str]) -> list[BlockingRuleCreator]:
    """Blocking rules for EM; together they leave every comparison estimated at least once.

    Pairs sharing an NHS number are almost all true matches, so EM within that block gives
    clean m values for names and DOB. Blocking on DOB instead lets same-DOB siblings (twins)
    pose as matches and inflates m for "different forename" (seen on synthetic data).
    """
    cols = set(columns)
    keys: list[tuple[str, ...]] = [("tok_nhs_number",)] if "tok_nhs_number" in cols else []
    keys += [] if keys else list(_BLOCKS_WITHOUT_NHS)
    # Trains what the names and DOB do not read (address, phone...). A block whose rule reads
    # a column of every comparison is skipped at training (`linkage.em_training`).
    keys.append(("tok_given_name", "tok_family_name", "tok_dob"))
    if ESTIMATED_DOB_FLAG in cols and keys[0] == ("tok_nhs_number",):
        # Estimated DOBs are police records, which carry no NHS number: the NHS block never
        # holds one, so the estimated-DOB and names-near-year levels train at one property.
        keys.append(("tok_address",))
    return [block_on(*k) for k in keys if set(k) <= cols]


def fallback_training_rules(columns: Collection[str]) -> list[BlockingRuleCreator]:
    """Blocks EM runs when the NHS-number block has no pair (a small partnership whose
    agencies share no NHS number yet): the blocks of a partnership without NHS numbers."""
    cols = set(columns)
    if "tok_nhs_number" not in cols:
        return []
    return [block_on(*k) for k in _BLOCKS_WITHOUT_NHS if set(k) <= cols]


# Without NHS numbers every other block fixes the DOB, so its levels (swapped, else) kept
# their starting m values: under spec v3 every name token carries the birth year or DOB, so
# the names block is one name in one year or on one DOB. One property leaves the DOB free
# (a duplicate at its address with a mis-keyed DOB trains 'else'); FEBRL, with no UK
# postcode and so no address token, still leaves it untrained (F1 unchanged: 0.833 / 0.819
# / 0.816 / 0.863 against 0.828 / 0.821 / 0.817 / 0.863 without this block).
_BLOCKS_WITHOUT_NHS = (("tok_dob",), ("tok_given_name", "tok_family_name"), ("tok_address",))


def deterministic_rules(columns: Collection[str]) -> list[BlockingRuleCreator]:
    """High-precision rules used to estimate the prior probability of a match."""
    cols = set(columns)
    keys = [
        k
        for k in (("tok_given_name", "tok_family_name", "tok_dob"), ("tok_nhs_number", "tok_dob"))
        if set(k) <= cols
    ]
    if not keys:
        # No names with a DOB: the strictest agreement the input can still show.
        strict = tuple(
            c
            for c in ("tok_nhs_number", "tok_given_name", "tok_family_name", "tok_dob")
            if c in cols
        )
        if len(strict) < 2 and strict != ("tok_nhs_number",):
            raise ValueError(
                "cannot estimate the prior: the linkage input needs both names with a date "
                "of birth, or NHS numbers"
            )
        keys = [strict]
    return [block_on(*k) for k in keys]
