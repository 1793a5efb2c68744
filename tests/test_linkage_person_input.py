"""Person linkage input: bad tokens and Bloom filters refused by row and field (never by value),
token conversion, the record-by-record refresh of the converted input, and Bloom Dice."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest
from linkage_person_helpers import QUIET, _load
from test_linkage_toydata import make_toy

from linkage.person_linkage import link_persons


def test_bad_bloom_length_names_row_and_field() -> None:
    toy = make_toy(n_households=5, seed=3)
    ids = toy.identifiers.copy()
    ids.loc[2, "bf_family_name"] = b"\x00\x01"
    con = duckdb.connect()
    _load(con, ids)
    with pytest.raises(ValueError) as err:
        link_persons(con, "bad", QUIET)
    msg = str(err.value)
    assert "bf_family_name" in msg and ids.loc[2, "record_ref"] in msg


def test_bad_token_names_row_and_field_not_value() -> None:
    toy = make_toy(n_households=5, seed=3)
    ids = toy.identifiers.copy()
    bad = "zz" + ids.loc[4, "tok_dob"][2:]  # right length, not hex
    ids.loc[4, "tok_dob"] = bad
    con = duckdb.connect()
    _load(con, ids)
    with pytest.raises(ValueError) as err:
        link_persons(con, "bad", QUIET)
    msg = str(err.value)
    assert "tok_dob" in msg and ids.loc[4, "record_ref"] in msg and bad not in msg


def test_input_tokens_are_64_bit_integer_prefixes_that_round_trip() -> None:
    from linkage.person_linkage import INPUT_TABLE, prepare_input, token_as_text

    toy = make_toy(n_households=20, seed=5)
    con = duckdb.connect()
    _load(con, toy.identifiers)
    cols = prepare_input(con)
    types = dict(
        con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {INPUT_TABLE})").fetchall()
    )
    assert types["tok_dob"] == "UBIGINT" and types["pop_bf_family_name"] == "BIGINT"
    back = con.execute(f"""SELECT unique_id, {token_as_text("tok_dob", cols)} AS t
                           FROM {INPUT_TABLE}""").df()
    orig = toy.identifiers.assign(
        unique_id=toy.identifiers["agency"] + ":" + toy.identifiers["record_ref"]
    )
    merged = back.merge(orig[["unique_id", "tok_dob"]], on="unique_id")
    assert len(merged) == len(back) and (merged["t"] == merged["tok_dob"].str[:16]).all()
    # A partnership whose spec truncates tokens to 256 bits keeps them as text.
    wide = toy.identifiers.assign(tok_dob=toy.identifiers["tok_dob"] * 2)
    _load(con, wide)
    prepare_input(con)
    types = dict(
        con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {INPUT_TABLE})").fetchall()
    )
    assert types["tok_dob"] == "VARCHAR" and types["tok_family_name"] == "UBIGINT"


def _input_rows(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    from linkage.person_linkage import INPUT_TABLE

    rows = con.execute(f"SELECT * EXCLUDE (uid) FROM {INPUT_TABLE}").df()
    return rows.sort_values("unique_id").reset_index(drop=True)


def test_input_refreshed_record_by_record_equals_a_fresh_build() -> None:
    """The warehouse keeps the converted input between runs; after records change, are
    re-keyed or go, the refreshed input must equal one converted from scratch, and a bad
    token in a changed record is refused with the last good input left in place."""
    from linkage.linkage_input import FEATURES_TABLE, prepare_input

    toy = make_toy(n_households=20, seed=5)
    ids = toy.identifiers.copy()
    con = duckdb.connect()
    _load(con, ids)
    prepare_input(con)
    hashes = con.execute(f"SELECT uid, src_hash FROM {FEATURES_TABLE}").df()
    ids.loc[3, ["tok_dob", "batch_id"]] = [ids.loc[7, "tok_dob"], "B-new"]  # re-sent
    ids.loc[5, "record_ref"] = "rekeyed-ref-0005"  # re-keyed by its agency
    ids = ids.drop(index=[9, 11]).reset_index(drop=True)  # retired
    _load(con, ids)
    cols = prepare_input(con)
    after = con.execute(f"SELECT uid, src_hash FROM {FEATURES_TABLE}").df()
    kept = hashes.merge(after, on=["uid", "src_hash"])
    assert len(kept) == len(ids) - 2  # everything else left as converted before
    fresh = duckdb.connect()
    _load(fresh, ids)
    assert prepare_input(fresh) == cols
    pd.testing.assert_frame_equal(_input_rows(con), _input_rows(fresh))
    # Nothing changed: nothing converted (the stored rows are the very same).
    prepare_input(con)
    pd.testing.assert_frame_equal(
        con.execute(f"SELECT uid, src_hash FROM {FEATURES_TABLE}")
        .df()
        .sort_values("uid")
        .reset_index(drop=True),
        after.sort_values("uid").reset_index(drop=True),
    )
    bad = "zz" + ids.loc[4, "tok_dob"][2:]
    _load(con, ids.assign(tok_dob=ids["tok_dob"].where(ids.index != 4, bad)))
    with pytest.raises(ValueError) as err:
        prepare_input(con)
    assert "tok_dob" in str(err.value) and ids.loc[4, "record_ref"] in str(err.value)
    assert bad not in str(err.value)
    pd.testing.assert_frame_equal(
        con.execute(f"SELECT uid, src_hash FROM {FEATURES_TABLE}")
        .df()
        .sort_values("uid")
        .reset_index(drop=True),
        after.sort_values("uid").reset_index(drop=True),
    )
    _load(con, ids)
    prepare_input(con)
    pd.testing.assert_frame_equal(_input_rows(con), _input_rows(fresh))


def test_bloom_word_dice_equals_bit_dice_including_full_and_odd_filters() -> None:
    """The model's Dice over 124-bit words (what it scores with) equals Dice over the BIT
    filters, on real encodings and on filters with every bit set (a 128-bit word would wrap)
    and on a length that is not whole words."""
    from linkage.comparisons import (
        DICE_HIGH,
        DICE_LOW,
        DICE_WEAK,
        bit_dice_sql,
        bloom_word_count,
        dice_at_least_sql,
        dice_sql,
    )

    THRESHOLDS = (DICE_WEAK, DICE_LOW, DICE_HIGH, 0.7, 0.75)  # noqa: N806
    from linkage.person_linkage import INPUT_TABLE, prepare_input

    toy = make_toy(n_households=20, seed=5)
    ids = toy.identifiers.copy()
    n_bytes = len(ids["bf_given_name"].dropna().iloc[0])
    ids.loc[0, "bf_given_name"] = b"\xff" * n_bytes
    ids.loc[1, "bf_given_name"] = b"\xff" * n_bytes
    ids.loc[2, "bf_given_name"] = b"\xff" * (n_bytes - 1) + b"\x00"
    con = duckdb.connect()
    _load(con, ids)
    cols = prepare_input(con)
    for col, length in (("bf_given_name", n_bytes), ("bf_address", 9)):
        if col == "bf_address":  # a partnership with 9-byte filters: last word 2 hex digits
            short = ids.assign(
                bf_address=ids["bf_address"].map(
                    lambda b: None if b is None or pd.isna(b) else b[:9]
                )
            )
            _load(con, short)
            cols = prepare_input(con)
        n = bloom_word_count(cols, col)
        assert n == -(-2 * length // 31)
        sel = ", ".join(
            f'{side}."{c}" AS "{c}_{side}"'
            for side in "lr"
            for c in cols
            if c.startswith((col, f"pop_{col}"))
        )
        levels = ", ".join(
            f"{dice_at_least_sql(col, n, t)} AS at_{i}" for i, t in enumerate(THRESHOLDS)
        )
        got = con.execute(f"""
            SELECT {dice_sql(col, n)} AS words, {bit_dice_sql(col)} AS bits, {levels} FROM (
                SELECT {sel} FROM {INPUT_TABLE} l, {INPUT_TABLE} r
                WHERE l."{col}" IS NOT NULL AND r."{col}" IS NOT NULL)""").df()
        assert len(got) > 100 and (got["words"] == got["bits"]).all()
        # The integer threshold form the model's levels use selects the very same pairs.
        for i, t in enumerate(THRESHOLDS):
            assert (got[f"at_{i}"] == (got["bits"] >= t)).all()
            assert got[f"at_{i}"].any() and not got[f"at_{i}"].all()
        assert (got["words"] == 1.0).sum() >= len(got) ** 0.5  # each filter with itself
