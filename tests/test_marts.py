"""Analyst marts built by the pipeline stage from a real run: content, suppression, no leaks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from test_report_support import RUN2, Outputs, build_outputs

from linkage.disclosure import check_marts
from linkage.marts import MartsError, evaluate_flags, load_flag_rules
from linkage.pipeline import stage_marts


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory, orchestrated_run: Path) -> Outputs:
    return build_outputs(tmp_path_factory, orchestrated_run)


@pytest.fixture(scope="module")
def marts(outputs: Outputs):  # noqa: ANN201
    con = duckdb.connect(str(outputs.paths.marts / "analyst.duckdb"), read_only=True)
    yield con
    con.close()


@pytest.fixture(scope="module")
def wh(outputs: Outputs):  # noqa: ANN201
    con = duckdb.connect(str(outputs.paths.warehouse), read_only=True)
    yield con
    con.close()


def test_marts_pass_the_disclosure_check_cli(outputs: Outputs) -> None:
    path = outputs.paths.marts / "analyst.duckdb"
    assert check_marts(path) == []
    res = subprocess.run(
        [sys.executable, "-m", "linkage.disclosure", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr


def test_stage_is_idempotent(outputs: Outputs, tmp_path: Path, copy_run) -> None:  # noqa: ANN001
    # on a private copy: the shared run is only read (other workers read it meanwhile)
    from linkage.config import HubPaths

    run = copy_run(outputs.run, tmp_path / "run")
    before = (run / "hub" / "marts" / "analyst.duckdb").read_bytes()
    assert stage_marts(HubPaths.for_run(run), RUN2).get("skipped") is True
    assert (run / "hub" / "marts" / "analyst.duckdb").read_bytes() == before


def test_no_refs_tokens_or_free_text_in_any_table(marts, wh) -> None:  # noqa: ANN001
    secrets = set()
    for col in ("record_ref", "tok_family_name", "tok_dob", "blk_family_phonetic_dob"):
        secrets |= {
            r[0]
            for r in wh.execute(
                f"SELECT DISTINCT {col} FROM identifiers WHERE {col} IS NOT NULL"
            ).fetchall()
        }
    notes = {
        r[0]
        for r in wh.execute(
            "SELECT case_notes FROM payload WHERE case_notes IS NOT "
            "NULL UNION SELECT incident_notes FROM payload WHERE "
            "incident_notes IS NOT NULL"
        ).fetchall()
    }
    assert secrets and notes
    tables = [r[0] for r in marts.execute("SHOW TABLES").fetchall()]
    published: set[str] = set()
    for t in tables:
        df = marts.execute(f'SELECT * FROM "{t}"').df()
        for c in df.columns:
            if df[c].dtype == object or str(df[c].dtype).startswith("string"):
                for v in df[c].dropna():
                    published |= (
                        {str(x) for x in v}
                        if hasattr(v, "__len__") and not isinstance(v, str)
                        else {str(v)}
                    )
    assert not published & secrets
    assert not published & notes


def test_persons_households_and_involvement_match_warehouse(marts, wh) -> None:  # noqa: ANN001
    p = marts.execute("SELECT * FROM persons").df()
    active = wh.execute("SELECT person_id FROM person WHERE status = 'active'").df()
    assert sorted(p["person_id"]) == sorted(active["person_id"])
    hh = dict(wh.execute("SELECT person_id, household_id FROM household_member").fetchall())
    assert all(
        hh.get(r.person_id) == r.household_id for r in p.itertuples() if pd.notna(r.household_id)
    )
    assert set(p.columns) == {
        "person_id",
        "age_band",
        "age_band_order",
        "n_agencies",
        "household_id",
        "family_network_id",
    }
    inv = marts.execute("SELECT count(*) FROM agency_involvement").fetchone()[0]
    assert (
        inv
        == wh.execute(
            "SELECT count(*) FROM (SELECT DISTINCT person_id, agency FROM record_person)"
        ).fetchone()[0]
    )


def test_published_fact_cells_equal_true_counts(marts, wh) -> None:  # noqa: ANN001
    facts = marts.execute(
        "SELECT * FROM agg_payload_facts WHERE fact = 'gp_registration' AND NOT suppressed"
    ).df()
    true = wh.execute("""
        SELECT strftime(p.event_date, '%Y-%m') AS month, count(*) AS n FROM payload p
        JOIN record_person USING (record_ref) WHERE p.registration_status IS NOT NULL
        GROUP BY 1""").df()
    truth = dict(zip(true["month"], true["n"], strict=True))
    assert (facts["n"] > 0).sum() > 0
    for r in facts.itertuples():
        assert r.n == truth.get(r.month, 0)
    supp = marts.execute(
        "SELECT month FROM agg_payload_facts WHERE fact = 'gp_registration' AND suppressed"
    ).df()
    assert any(0 < truth.get(m, 0) < 10 for m in supp["month"])


def test_flags_follow_the_rules(marts, wh) -> None:  # noqa: ANN001
    flagged = {
        r[0]
        for r in marts.execute(
            "SELECT person_id FROM person_flags WHERE flag = 'child_protection_plan'"
        ).fetchall()
    }
    expect = {
        r[0]
        for r in wh.execute(
            "SELECT DISTINCT person_id FROM payload JOIN record_person USING (record_ref) "
            "WHERE plan_type IN ('CP', 'LAC')"
        ).fetchall()
    }
    assert flagged == expect and expect
    by_source = dict(
        marts.execute("SELECT source, count(*) FROM person_flags GROUP BY 1").fetchall()
    )
    assert by_source.get("text", 0) > 0 and by_source.get("structured", 0) > 0
    rules = marts.execute("SELECT flag, rule FROM flag_rules").df()
    assert (
        "plan_type in ['CP', 'LAC']" in rules.set_index("flag").loc["child_protection_plan", "rule"]
    )


def test_evaluate_flags_structured_and_lexicon() -> None:
    rules = load_flag_rules()
    recs = pd.DataFrame(
        {
            "person_id": ["P1", "P2", "P3", "P4"],
            "domestic_abuse": [True, None, None, None],
            "incident_type": [None, None, None, "Theft"],
            "referral_reason": [None, None, None, None],
            "case_notes": [None, "Mum reports DOMESTIC ABUSE by partner", "neglected garden", None],
            "incident_notes": [None, None, None, "nothing of note"],
            **{
                c: None
                for c in (
                    "plan_type",
                    "eviction_risk",
                    "arrears_amount",
                    "exclusions",
                    "attendance_pct",
                    "risk_level",
                )
            },
        }
    )
    got = evaluate_flags(recs, rules)
    assert set(map(tuple, got[["person_id", "flag", "source"]].to_numpy())) == {
        ("P1", "domestic_abuse", "structured"),
        ("P2", "domestic_abuse", "text"),
        ("P3", "neglect", "text"),
    }


def test_bad_flag_rules_name_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "flags.yaml"
    bad.write_text(
        "version: 1\ntext_fields: [case_notes]\nflags:\n  x:\n    when:\n"
        "      - {field: not_a_field, equals: true}\n"
    )
    with pytest.raises(MartsError, match=r"flags.yaml: flags.x.when\[0\].field"):
        load_flag_rules(bad)


# ------------------------------------------------------------------ the analyst guide's queries


GUIDE = Path(__file__).parents[1] / "docs" / "analyst_guide.md"


def _guide_queries() -> list[str]:
    import re

    qs = re.findall(r"```sql\n(.*?)```", GUIDE.read_text("utf-8"), re.S)
    assert len(qs) >= 8
    return qs


def test_age_bands_sort_in_age_order(marts) -> None:  # noqa: ANN001
    from linkage.marts import AGE_BANDS

    bands = [
        r[0]
        for r in marts.execute("SELECT age_band FROM age_bands ORDER BY age_band_order").fetchall()
    ]
    assert bands == list(AGE_BANDS)
    assert sorted(bands) != bands  # as text they would not be in age order: the column matters
    # each person's order agrees with the lookup table
    bad = marts.execute("""SELECT count(*) FROM persons p JOIN age_bands b USING (age_band)
                           WHERE p.age_band_order <> b.age_band_order""").fetchone()[0]
    assert bad == 0
    assert (
        marts.execute("SELECT count(*) FROM persons WHERE age_band_order IS NULL").fetchone()[0]
        == 0
    )


def test_parents_and_carers_in_the_family_network_are_adults(
    marts,
    wh,
    outputs: Outputs,  # noqa: ANN001
    evaluate_linkage,
) -> None:  # noqa: ANN001
    """Where no payload field gives an age, a person who is someone's parent or carer in the
    family network is banded 18+; nobody left `unknown` is anyone's parent."""
    from linkage.marts import ADULT_RELATIONSHIPS

    rels = ", ".join(f"'{r}'" for r in ADULT_RELATIONSHIPS)
    parents = {
        p
        for (p,) in wh.execute(f"""
        SELECT related_person_id FROM family_edge
        WHERE relationship IN ({rels}) AND related_person_id IS NOT NULL
        UNION SELECT subject_person_id FROM family_edge WHERE relationship = 'child'""").fetchall()
    }
    bands = dict(marts.execute("SELECT person_id, age_band FROM persons").fetchall())
    in_marts = parents & set(bands)
    assert len(in_marts) > 100
    assert all(bands[p] != "unknown" for p in in_marts)
    by_family = [p for p in in_marts if bands[p] == "18+"]
    tenants = {
        p
        for (p,) in wh.execute("""SELECT rp.person_id FROM payload p
        JOIN record_person rp USING (agency, record_ref)
        WHERE p.tenure_role IN ('lead_tenant', 'joint_tenant')""").fetchall()
    }
    assert len(set(by_family) - tenants) > 100  # the family network placed them, not tenancy
    inferred = dict(marts.execute("SELECT age_band, inferred_from FROM age_bands").fetchall())
    assert "family_edge" in inferred["18+"] and "parent" in inferred["unknown"]
    # against ground truth: those placed as adults by the family network are (nearly) all 16+
    rp = wh.execute("SELECT record_ref, agency, person_id FROM record_person").df()
    rp = evaluate_linkage.decrypt_refs(outputs.run, rp)
    gt = pd.read_parquet(outputs.run / "population" / "ground_truth" / "records.parquet")
    gt["record_id"] = gt["record_id"].astype(str)
    truth = rp.merge(
        gt[["agency", "record_id", "person_id"]].rename(columns={"person_id": "true_person"}),
        on=["agency", "record_id"],
    )
    pop = pd.read_parquet(outputs.run / "population" / "ground_truth" / "persons.parquet")
    age = dict(zip(pop["person_id"], pop["age"], strict=True))
    placed = set(by_family) - tenants
    ages = [age[t] for t in truth.loc[truth["person_id"].isin(placed), "true_person"]]
    assert ages and sum(a >= 16 for a in ages) / len(ages) > 0.99


def test_every_guide_query_runs_sorted_and_without_null_list_elements(marts) -> None:  # noqa: ANN001
    from linkage.marts import AGE_BANDS

    empty_lists = 0
    cur = marts.cursor()  # its own connection state: earlier tests leave results open
    for q in _guide_queries():
        rel = cur.sql(q)
        df = rel.df()
        assert len(df) > 0, q  # every example returns something on a real run
        for col, typ in zip(rel.columns, rel.types, strict=True):
            if str(typ).endswith("[]"):
                for v in df[col]:
                    assert v is not None, (q, col)
                    assert all(x is not None for x in v), (q, col, v)
                    empty_lists += len(v) == 0
        if "age_band" in df.columns and "flag" not in df.columns:
            order = [AGE_BANDS.index(b) for b in df["age_band"]]
            assert order == sorted(order), q
    assert empty_lists > 0  # persons/households with no flag appear, as [] not [NULL]


def test_the_guides_query_helper_works_without_a_duckdb_cli(outputs: Outputs) -> None:
    path = outputs.paths.marts / "analyst.duckdb"
    text = GUIDE.read_text("utf-8")
    assert "python -m linkage.marts_query" in text and "duckdb -readonly" not in text
    q = "SELECT age_band, count(*) AS n FROM persons GROUP BY ALL ORDER BY min(age_band_order)"
    res = subprocess.run(
        [sys.executable, "-m", "linkage.marts_query", str(path), "--csv", q],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "age_band,n" and lines[1].startswith("0-4,")
    # read-only: an attempt to change the published marts is refused and changes nothing
    before = path.read_bytes()
    res = subprocess.run(
        [sys.executable, "-m", "linkage.marts_query", str(path), "DELETE FROM persons"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1 and "read-only" in res.stderr
    assert path.read_bytes() == before
