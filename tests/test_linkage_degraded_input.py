"""Linkage on what an extract actually holds: columns absent or never populated leave their
comparisons out, the model keeps the rest, and an input with nothing to compare is a clear
refusal, never Splink SQL that fails at predict (the FEBRL regression of issue 17: no
postcode, so no address columns, and a training block that left EM nothing to estimate
stripped every comparison from the model)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from test_linkage_toydata import make_toy

from linkage.evaluation import pairwise_metrics
from linkage.person_linkage import LinkageSettings, link_persons, stored_model
from linkage.person_model import load_model, make_model

QUIET = LinkageSettings(show_progress=False)

#: Names and DOB only (FEBRL: no NHS number, phone, e-mail; Australian postcodes dropped, so
#: no address token, address filter or postcode key).
NAMES_AND_DOB = [
    "tok_given_name",
    "tok_given_name_canonical",
    "tok_given_name_phonetic",
    "tok_family_name",
    "tok_other_names",
    "tok_dob",
    "tok_dob_swapped",
    "bf_given_name",
    "bf_family_name",
    "blk_dob_family",
]
KEYS = ["record_ref", "agency", "batch_id"]


def _load(con: duckdb.DuckDBPyConnection, ids: pd.DataFrame) -> None:
    con.register("_ids", ids)
    con.execute("CREATE OR REPLACE TABLE identifiers AS SELECT * FROM _ids")
    con.unregister("_ids")


def _names_and_dob_only(con: duckdb.DuckDBPyConnection, ids: pd.DataFrame, how: str) -> None:
    """Load the toy's identifiers with every other column dropped, or kept (typed, as the
    warehouse holds them) with no record populating it."""
    if how == "absent":
        _load(con, ids[KEYS + NAMES_AND_DOB])
        return
    _load(con, ids)
    others = [c for c in ids.columns if c not in KEYS + NAMES_AND_DOB]
    assert others  # the toy carries addresses, NHS numbers, phones...: all nulled here
    con.execute("UPDATE identifiers SET " + ", ".join(f'"{c}" = NULL' for c in others))


@pytest.mark.parametrize("how", ["absent", "all_null"])
def test_names_and_dob_only_link_with_the_comparisons_they_support(
    tmp_path: Path, how: str
) -> None:
    toy = make_toy(n_households=200, seed=5)
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    try:
        _names_and_dob_only(con, toy.identifiers, how)
        result = link_persons(con, "run-1", QUIET)
        model = stored_model(con, result.model_version)["splink_settings"]
        pred = con.execute(
            "SELECT record_ref, agency, person_id AS cluster_id FROM record_person"
        ).df()
    finally:
        con.close()
    assert [c["output_column_name"] for c in model["comparisons"]] == [
        "forename",
        "surname",
        "birth_date",
    ]
    # a real prior, not the block-adjusted one a failed EM block leaves behind (~1)
    assert 0 < model["probability_two_random_records_match"] < 0.01
    assert result.n_auto_pairs > 0
    s = pairwise_metrics(
        pred, toy.truth[["record_ref", "agency", "person_id"]], key=["record_ref", "agency"]
    )
    assert s.precision >= 0.95 and s.recall >= 0.5, s


def test_a_training_block_with_no_pair_leaves_every_comparison_in_the_model(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """NHS numbers held by one record each (no two agencies share one yet): EM on the NHS
    block finds no pair and fails inside Splink, which had already cut the NHS comparison
    and set a block-adjusted prior in the linker. The model still compares NHS numbers, its
    prior is the estimated one, and the names and DOB are trained on the fallback blocks."""
    toy = make_toy(n_households=200, seed=5)
    ids = toy.identifiers.copy()
    # distinct in the first 64 bits, which the linkage input keeps
    ids["tok_nhs_number"] = [f"{i + 1:016x}" + "0" * 16 for i in range(len(ids))]
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    try:
        _load(con, ids)
        with caplog.at_level("WARNING", logger="linkage.person_linkage"):
            result = link_persons(con, "run-1", QUIET)
        model = stored_model(con, result.model_version)["splink_settings"]
    finally:
        con.close()
    assert "EM skipped a training block (EMTrainingException)" in caplog.text
    names = [c["output_column_name"] for c in model["comparisons"]]
    assert {"forename", "surname", "birth_date", "residence", "nhs"} <= set(names)
    assert 0 < model["probability_two_random_records_match"] < 0.01
    untrained = " ".join(r.getMessage() for r in caplog.records if "not trained" in r.getMessage())
    for level in ("forename: Exact match", "surname: Exact match", "birth_date: Exact match"):
        assert level not in untrained


def test_nothing_to_compare_is_a_clear_refusal(tmp_path: Path) -> None:
    toy = make_toy(n_households=30, seed=5)
    ids = toy.identifiers[KEYS].assign(tok_given_name=None).astype({"tok_given_name": "object"})
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    try:
        _load(con, ids)
        with pytest.raises(ValueError, match="nothing to compare"):
            link_persons(con, "run-1", QUIET)
    finally:
        con.close()


def test_a_model_with_no_comparison_is_refused(tmp_path: Path) -> None:
    toy = make_toy(n_households=100, seed=5)
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    try:
        _load(con, toy.identifiers)
        result = link_persons(con, "run-1", QUIET)
        empty = make_model({**result.model["splink_settings"], "comparisons": []}, "empty")
        with pytest.raises(ValueError, match="has no comparisons"):
            load_model(empty)
        with pytest.raises(ValueError, match="has no comparisons"):
            link_persons(con, "run-2", replace(QUIET, model=empty))
    finally:
        con.close()


@pytest.mark.parametrize("dialect", ["duckdb", "spark"])
def test_blocks_leaving_no_comparison_are_found_in_either_dialect(dialect: str) -> None:
    """What Splink would deactivate per training block, read from the settings each backend
    scores with: on names and DOB alone the names + DOB block leaves nothing to estimate."""
    from linkage.blocking_rules import training_blocking_rules
    from linkage.em_training import comparisons_left
    from linkage.person_linkage import splink_settings_for

    full = list(make_toy(n_households=20, seed=5).identifiers.columns)
    names = [c for c in NAMES_AND_DOB if c.startswith("tok_")]
    for cols, expected in (
        (
            full,
            [
                ["forename", "surname", "birth_date", "residence", "upn", "phone", "email"],
                ["residence", "nhs", "upn", "phone", "email"],
            ],
        ),
        (names, [["forename", "surname"], ["birth_date"], []]),
    ):
        settings = splink_settings_for(cols).get_settings(dialect).as_dict()
        assert [comparisons_left(r, settings) for r in training_blocking_rules(cols)] == expected
