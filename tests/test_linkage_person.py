"""Person linkage end to end on a real DuckDB warehouse with the toy pseudonymised data."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from linkage_person_helpers import QUIET, _load, _partition
from test_linkage_toydata import ToyData, make_toy

from linkage.evaluation import (
    bcubed_metrics,
    pair_completeness,
    pairwise_metrics,
    plaintext_baseline,
    true_pairs,
)
from linkage.person_linkage import blocked_pairs, link_persons, load_model, stored_model
from linkage.person_model import model_to_json


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    toy = make_toy(n_households=300, seed=7)
    path = tmp_path_factory.mktemp("wh") / "warehouse.duckdb"
    con = duckdb.connect(str(path))
    _load(con, toy.identifiers)
    result = link_persons(con, "run-1", QUIET)
    yield toy, con, result
    con.close()


@pytest.fixture(scope="module")
def holdout() -> ToyData:
    return make_toy(n_households=300, seed=11)


def test_tables_written(trained) -> None:
    toy, con, r = trained
    assert r.n_records == len(toy.identifiers)
    rp = con.execute("SELECT * FROM record_person").df()
    assert len(rp) == r.n_records
    assert set(rp["band"]) <= {"auto_match", "clerical", "non_match"}
    assert rp["person_id"].nunique() == r.n_persons
    assert rp.loc[rp["band"] == "auto_match", "score"].min() >= r.auto_match_probability
    run = con.execute("SELECT * FROM linkage_run WHERE run_id = 'run-1'").df().iloc[0]
    assert run["model_version"] == r.model_version
    assert set(json.loads(run["timings_json"])) >= {"train", "predict", "cluster"}
    n_person = con.execute("SELECT count(*) FROM person WHERE status='active'").fetchall()
    assert n_person[0][0] == r.n_persons
    # The run's per-record rank table is dropped with the run.
    assert not con.execute(
        "SELECT 1 FROM duckdb_tables() WHERE table_name = 'linkage_record_order'"
    ).fetchall()


def test_clerical_queue_holds_evidence_not_tokens(trained) -> None:
    _, con, r = trained
    q = con.execute("SELECT * FROM clerical_review").df()
    assert len(q) == r.n_clerical_pairs > 0
    assert not [c for c in q.columns if c.startswith(("tok_", "bf_", "blk_"))]
    assert {"gamma_forename", "mw_forename", "gamma_birth_date", "mw_nhs"} <= set(q.columns)
    hex32 = re.compile(r"^[0-9a-f]{32}$")
    for col in q.select_dtypes(include=["object", "str"]).columns:
        assert not q[col].astype(str).str.match(hex32).any(), col
    # Below the auto threshold, or above it but held back (twin rule / chaining guard):
    # either way the two records ended up in different persons.
    assert q["match_probability"].between(QUIET.clerical_probability, 1.0).all()
    assert (q["person_id_l"] != q["person_id_r"]).all()


def test_heldout_precision_and_recall(trained, holdout: ToyData) -> None:
    _, _, r = trained
    con = duckdb.connect()
    _load(con, holdout.identifiers)
    # The toy encoding is not the bridge's, and its twins carry no NHS numbers more often
    # than the synthetic population's: at the default threshold (0.95, tuned on the real
    # chain, see tests/test_quality_floors.py) its precision is 0.998, so pin 0.999 here.
    link_persons(con, "h-1", replace(QUIET, model=r.model, auto_match_probability=0.999))
    pred = _partition(con)
    truth = holdout.truth[["record_ref", "agency", "person_id"]]
    s = pairwise_metrics(pred, truth, key=["record_ref", "agency"])
    cross = pairwise_metrics(pred, truth, key=["record_ref", "agency"], cross_agency_only=True)
    b3 = bcubed_metrics(pred, truth, key=["record_ref", "agency"])
    print(f"pairwise {s}\ncross-agency {cross}\nB-cubed {b3}")
    assert s.precision >= 0.999
    assert s.recall >= 0.8
    assert b3.f1 >= 0.95


def test_blocking_pair_completeness(trained) -> None:
    toy, con, r = trained
    truth = toy.truth.assign(unique_id=toy.truth["agency"] + ":" + toy.truth["record_ref"])
    pc = pair_completeness(blocked_pairs(con, r.model), true_pairs(truth))
    print(f"blocking pair completeness {pc:.4f}")
    assert pc >= 0.95


def test_model_json_round_trip(trained, tmp_path: Path) -> None:
    toy, con, r = trained
    text = model_to_json(r.model)
    loaded = load_model(text)
    assert loaded == json.loads(text)
    assert stored_model(con, r.model_version)["settings_hash"] == r.settings_hash
    path = tmp_path / "model.json"
    path.write_text(text, encoding="utf-8")
    assert load_model(path)["model_version"] == r.model_version
    # Same model, same data, fresh warehouse -> same partition of records.
    con2 = duckdb.connect()
    _load(con2, toy.identifiers)
    r2 = link_persons(con2, "replay", replace(QUIET, model=load_model(path)))
    assert r2.model_version == r.model_version
    a = _partition(con).merge(_partition(con2), on=["record_ref", "agency"])
    assert (
        pairwise_metrics(
            a[["record_ref", "agency", "cluster_id_x"]].rename(columns={"cluster_id_x": "c"}),
            a[["record_ref", "agency", "cluster_id_y"]],
            key=["record_ref", "agency"],
            cluster="c",
            true_id="cluster_id_y",
        ).f1
        == 1.0
    )
    tampered = json.loads(text)
    tampered["splink_settings"]["probability_two_random_records_match"] = 0.5
    with pytest.raises(ValueError, match="settings_hash mismatch"):
        load_model(tampered)


def test_person_ids_stable_across_runs(trained) -> None:
    toy, con, r = trained
    before = _partition(con)
    # A second batch: the same people seen again under new record refs, plus everything old.
    more = make_toy(people=toy.people[:200], seed=99, batch="b2", ref_prefix="n")
    _load(con, pd.concat([toy.identifiers, more.identifiers], ignore_index=True))
    r2 = link_persons(con, "run-2", replace(QUIET, model=r.model))
    after = _partition(con)
    kept = before.merge(after, on=["record_ref", "agency"], suffixes=("_1", "_2"))
    assert len(kept) == len(before)
    share = (kept["cluster_id_1"] == kept["cluster_id_2"]).mean()
    assert share >= 0.98
    retired = {
        p for (p,) in con.execute("SELECT person_id FROM person WHERE status='retired'").fetchall()
    }
    assert not retired & set(after["cluster_id"])
    assert r2.n_records == len(toy.identifiers) + len(more.identifiers)
    # One row per record and per person, by construction (neither table has a key).
    assert len(after) == r2.n_records == len(after.drop_duplicates(["agency", "record_ref"]))
    persons = con.execute("SELECT person_id, status, n_records FROM person").df()
    assert persons["person_id"].is_unique
    active = persons[persons["status"] == "active"].set_index("person_id")["n_records"]
    assert (
        active.sort_index().to_dict() == after.groupby("cluster_id").size().sort_index().to_dict()
    )
    with pytest.raises(ValueError, match="already has run_id"):
        link_persons(con, "run-2", replace(QUIET, model=r.model))


def test_gammas_read_back_from_weights_equal_splinks(trained) -> None:
    """Scoring without the matching columns must give the very gamma levels Splink writes
    when it carries them: the clerical queue and the twin rule read them."""
    from linkage.person_linkage import (
        INPUT_TABLE,
        _linker,
        scored_pairs_sql,
        scoring_settings,
        with_gammas,
    )

    _, con, r = trained
    model = r.model["splink_settings"]
    assert scoring_settings(model)["retain_matching_columns"] is False
    out = []
    for settings in (model, scoring_settings(model)):
        linker = _linker(con, settings)
        try:
            pred = linker.inference.predict(threshold_match_probability=0.01, warning_mode="never")
            cols = "match_probability, COLUMNS('^(gamma|mw)_.*')"
            pairs = with_gammas(
                con.execute(scored_pairs_sql(pred.physical_name, model, cols)).df(), model
            )
        finally:
            linker.table_management.delete_tables_created_by_splink_from_db()
        out.append(pairs.sort_values(["unique_id_l", "unique_id_r"]).reset_index(drop=True))
    full, fast = out
    gammas = [c for c in full if c.startswith("gamma_")]
    assert len(gammas) >= 5 and len(full) > 100
    pd.testing.assert_frame_equal(
        full[["unique_id_l", "unique_id_r", *gammas]], fast[["unique_id_l", "unique_id_r", *gammas]]
    )
    assert con.execute(f"SELECT count(*) FROM {INPUT_TABLE}").fetchall()[0][0] > 0
    # A weight no level has is refused, not rounded to the nearest level.
    bad = fast.drop(columns=gammas).assign(mw_forename=123.456)
    with pytest.raises(ValueError, match="forename"):
        with_gammas(bad, model)


def test_training_on_every_core_reproduces_the_model(trained) -> None:
    """A re-run of a killed hub run must give the same model (and settings hash), though EM
    now runs multi-threaded: parameters are rounded far above the summation-order noise."""
    from linkage.person_linkage import LinkageSettings as S
    from linkage.person_linkage import prepare_input, train_model

    toy, _, _ = trained
    con = duckdb.connect()
    con.execute("SET threads = 2")
    _load(con, toy.identifiers)
    cols = prepare_input(con)
    models = [train_model(con, cols, S(show_progress=False), "v") for _ in range(3)]
    assert len({m["settings_hash"] for m in models}) == 1
    m = models[0]["splink_settings"]["comparisons"][0]["comparison_levels"][1]["m_probability"]
    assert m == float(f"{m:.6g}")


def test_training_runs_without_cte_inlining_and_learns_the_same_model(trained, monkeypatch) -> None:
    """train_model switches DuckDB's CTE inlining off for Splink's queries only (a setting
    already there is kept and put back), and the model is the one learned with it on."""
    import contextlib

    from linkage import person_linkage as pl

    toy, _, _ = trained
    con = duckdb.connect()
    _load(con, toy.identifiers)
    cols = pl.prepare_input(con)
    con.execute("SET disabled_optimizers = 'top_n'")
    seen: list[str] = []
    estimate = pl.estimate_parameters

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.append(con.execute("SELECT current_setting('disabled_optimizers')").fetchall()[0][0])
        return estimate(*args, **kwargs)

    monkeypatch.setattr(pl, "estimate_parameters", spy)
    model = pl.train_model(con, cols, QUIET, "v")
    assert seen == ["top_n,cte_inlining"]
    assert con.execute("SELECT current_setting('disabled_optimizers')").fetchall()[0][0] == "top_n"

    monkeypatch.setattr(pl, "optimizers_disabled", lambda *_: contextlib.nullcontext())
    inlined = pl.train_model(con, cols, QUIET, "v")
    assert seen[-1] == "top_n"
    assert inlined["settings_hash"] == model["settings_hash"]


def test_privacy_cost_against_plaintext_baseline(trained, holdout: ToyData) -> None:
    _, _, r = trained
    con = duckdb.connect()
    _load(con, holdout.identifiers)
    link_persons(con, "h-2", replace(QUIET, model=r.model))
    truth = holdout.truth[["record_ref", "agency", "person_id"]]
    f1_pseudo = pairwise_metrics(_partition(con), truth, key=["record_ref", "agency"]).f1
    plain = holdout.plaintext.assign(
        unique_id=holdout.plaintext["agency"] + ":" + holdout.plaintext["record_ref"],
        date_of_birth=pd.to_datetime(holdout.plaintext["date_of_birth"]),
    )[["unique_id", "given_name", "family_name", "date_of_birth", "sex", "postcode", "nhs_number"]]
    con.register("_plain", plain)
    con.execute("CREATE TABLE plain AS SELECT * FROM _plain")
    base = plaintext_baseline(con, "plain")
    t = truth.assign(unique_id=truth["agency"] + ":" + truth["record_ref"])[
        ["unique_id", "person_id"]
    ]
    f1_plain = pairwise_metrics(base, t, key="unique_id").f1
    cost = f1_pseudo - f1_plain
    print(f"F1 pseudonymised {f1_pseudo:.4f} plaintext {f1_plain:.4f} privacy cost {cost:+.4f}")
    assert f1_plain > 0.8
    assert cost > -0.1


def test_splink_working_tables_stay_out_of_the_warehouse_file(
    trained, tmp_path: Path, monkeypatch
) -> None:
    """Training and scoring create Splink's tables (candidate pairs, predictions) in an
    in-memory database: none is written to the warehouse file, and the connection is back
    on the warehouse afterwards."""
    from splink.internals.duckdb.database_api import DuckDBAPI

    from linkage.warehouse import SCRATCH_DATABASE

    toy, _, _ = trained
    path = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(path))
    _load(con, toy.identifiers)
    created: dict[str, str] = {}
    run_sql = DuckDBAPI._execute_sql_against_backend

    def spy(self, sql: str):  # noqa: ANN001, ANN202
        out = run_sql(self, sql)
        m = re.match(r"\s*CREATE TABLE (\w+)", sql)
        if m:  # a cursor: Splink's connection may hold an unfinished result
            created[m.group(1)] = (
                self._con.cursor()
                .execute(
                    "SELECT database_name FROM duckdb_tables() WHERE table_name = ?", [m.group(1)]
                )
                .fetchone()[0]
            )
        return out

    monkeypatch.setattr(DuckDBAPI, "_execute_sql_against_backend", spy)
    link_persons(con, "scratch-1", QUIET)
    # (Clustering runs on a connection of its own: its tables are in that one's 'memory'.)
    assert "warehouse" not in set(created.values())
    for kind in ("__splink__blocked_id_pairs", "__splink__df_predict", "__splink__df_tf_"):
        dbs = {db for t, db in created.items() if t.startswith(kind)}
        assert dbs == {SCRATCH_DATABASE}, kind
    assert con.execute("SELECT current_database()").fetchone()[0] == "warehouse"
    assert SCRATCH_DATABASE not in {
        r[0] for r in con.execute("SELECT database_name FROM duckdb_databases()").fetchall()
    }
    assert con.execute("SELECT count(*) FROM record_person").fetchone()[0] == len(toy.identifiers)


def test_dob_levels_are_trained_without_nhs_numbers(tmp_path: Path, caplog, monkeypatch) -> None:
    """A partnership with no NHS numbers: every name token of spec v3 carries the DOB or birth
    year, so every other training block fixed the DOB and its levels kept their starting m;
    the address block (one property, the DOB free) trains them. Control: with the old blocks
    the same data leaves them untrained. (FEBRL has no UK postcode, so no address token: its
    DOB 'else' level stays untrained; training on the canonical forename instead lowered its
    F1, febrl2 0.8185 -> 0.7943, febrl3 0.8105 -> 0.7850.)"""
    import linkage.person_linkage as pl
    from linkage.blocking_rules import block_on, training_blocking_rules

    toy = make_toy(n_households=300, seed=7)
    ids = toy.identifiers.drop(columns=["tok_nhs_number"])

    def untrained(run: str) -> str:
        con = duckdb.connect(str(tmp_path / f"{run}.duckdb"))
        try:
            _load(con, ids)
            caplog.clear()
            with caplog.at_level("WARNING", logger="linkage.person_linkage"):
                link_persons(con, run, QUIET)
        finally:
            con.close()
        return " ".join(r.getMessage() for r in caplog.records if "not trained" in r.getMessage())

    assert "birth_date: All other comparisons" not in untrained("now")
    assert any(
        r.get_blocking_rule("duckdb").blocking_rule_sql.count("tok_dob") == 0
        for r in training_blocking_rules(ids.columns)
    )
    monkeypatch.setattr(
        pl,
        "training_blocking_rules",
        lambda cols: [
            block_on("tok_dob"),
            block_on("tok_given_name", "tok_family_name", "tok_dob"),
        ],
    )
    assert "birth_date: All other comparisons" in untrained("before")
