"""Synthetic population: determinism, realism of the population, agency coverage, ground truth."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from synthetic_data.cli import main
from synthetic_data.generate import generate_population
from synthetic_data.identifiers import nhs_is_valid, upn_is_valid

ROOT = Path(__file__).resolve().parents[1]
MAPPINGS = ROOT / "schemas" / "agencies"
CANONICAL = yaml.safe_load((ROOT / "schemas" / "canonical_fields.yaml").read_text("utf-8"))
POSTCODE = re.compile(r"^BD\d{1,2} \d[ABD-HJLNP-UW-Z]{2}$")


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def pop(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pop") / "a"
    generate_population(out, seed=7, people=4000)
    return out


def mapping(code: str) -> dict:
    return yaml.safe_load((MAPPINGS / f"{code.lower()}.yaml").read_text("utf-8"))


def read_extract(root: Path, code: str) -> pd.DataFrame:
    """Read an extract the way its mapping says (all values as strings for CSV)."""
    m = mapping(code)
    files = list((root / "extracts" / code).iterdir())
    assert len(files) == 1, files
    if m["source"]["format"] == "parquet":
        return pd.read_parquet(files[0])
    return pd.read_csv(
        files[0],
        sep=m["source"]["delimiter"],
        encoding=m["source"]["encoding"],
        dtype=str,
        keep_default_na=False,
        na_values=[""],
    )


def source_of(code: str, field: str, person: str = "subject") -> str:
    for c in mapping(code)["columns"]:
        if c.get("field") == field and c.get("person", "subject") == person:
            return c["source"]
    raise KeyError(field)


def test_same_seed_identical_files_and_different_seed_differs(pop, tmp_path):
    again = tmp_path / "again"
    generate_population(again, seed=7, people=4000)
    assert _hashes(again) == _hashes(pop)
    other = tmp_path / "other"
    generate_population(other, seed=8, people=4000)
    h_pop, h_other = _hashes(pop), _hashes(other)
    assert set(h_pop) == set(h_other)
    extracts = [k for k in h_pop if k.startswith("extracts/")]
    assert all(h_pop[k] != h_other[k] for k in extracts)


def test_household_sizes_and_shapes(pop):
    hh = pd.read_parquet(pop / "ground_truth" / "households.parquet")
    persons = pd.read_parquet(pop / "ground_truth" / "persons.parquet")
    assert len(persons) == 4000 and hh["size"].sum() == 4000
    assert 2.2 <= hh["size"].mean() <= 2.6
    share = hh["size"].value_counts(normalize=True)
    assert 0.2 <= share[1] <= 0.38
    assert 0.25 <= share[2] <= 0.42
    assert share[share.index >= 5].sum() < 0.2
    assert set(hh["household_type"]) == {
        "single",
        "couple",
        "couple_children",
        "single_parent",
        "blended",
        "multigen",
        "house_share",
    }
    # a share of households have an address history (they moved)
    hist = pd.read_parquet(pop / "ground_truth" / "address_history.parquet")
    moves = hist.groupby("household_id").size()
    assert 0.2 < (moves > 1).mean() < 0.5
    assert (hist["date_to"].dropna() <= pd.Timestamp("2025-03-31")).all()


def test_twins_non_resident_parents_and_names(pop):
    p = pd.read_parquet(pop / "ground_truth" / "persons.parquet").set_index("person_id")
    twins = p[p["twin_id"] >= 0]
    assert len(twins) >= 4
    sib = p.loc[twins["twin_id"]]
    assert (sib["date_of_birth"].to_numpy() == twins["date_of_birth"].to_numpy()).all()
    assert (sib["household_id"].to_numpy() == twins["household_id"].to_numpy()).all()
    assert (sib["given_name"].to_numpy() != twins["given_name"].to_numpy()).all()
    kids = p[p["father_id"] >= 0]
    dad_home = p.loc[kids["father_id"], "household_id"].to_numpy()
    apart = kids[dad_home != kids["household_id"].to_numpy()]
    assert len(apart) >= 20
    hh = pd.read_parquet(pop / "ground_truth" / "households.parquet").set_index("household_id")
    dads = p.loc[apart["father_id"]]
    assert (
        hh.loc[dads["household_id"], "address_id"].to_numpy()
        != hh.loc[apart["household_id"], "address_id"].to_numpy()
    ).all()
    # heavy-tailed names, maiden names kept, compound and non-ASCII surnames/given names
    top = p["family_name"].value_counts(normalize=True)
    assert top.iloc[0] > 0.03 and top.iloc[0] > 5 * top.median()
    assert p["other_names"].notna().mean() > 0.05
    assert p["family_name"].str.contains(r"[- ]").any()
    assert p["given_name"].map(lambda s: not s.isascii()).sum() > 10


def test_identifiers_are_valid(pop):
    p = pd.read_parquet(pop / "ground_truth" / "persons.parquet")
    nhs = p.loc[p["nhs_number"] >= 0, "nhs_number"]
    assert nhs.is_unique and all(nhs_is_valid(int(x)) for x in nhs)
    assert not nhs_is_valid(int(nhs.iloc[0]) + 1 if nhs.iloc[0] % 10 != 9 else nhs.iloc[0] - 1)
    sch = read_extract(pop, "SCH")
    upn = sch[source_of("SCH", "upn")]
    assert upn.is_unique and all(upn_is_valid(u) for u in upn)
    a = pd.read_parquet(pop / "ground_truth" / "addresses.parquet")
    assert a["postcode"].str.match(POSTCODE).all() and a["uprn"].is_unique
    gp = read_extract(pop, "GP")
    assert gp["Email"].dropna().str.endswith(("example.com", "example.org", "example.net")).all()
    assert gp["MobilePhone"].dropna().str.match(r"^0\d{4} \d{6}$").all()


def test_every_record_has_ground_truth(pop):
    truth = pd.read_parquet(pop / "ground_truth" / "records.parquet")
    assert not truth.duplicated(["agency", "record_id"]).any()
    for code in ("GP", "HV", "SCH", "CSC", "POL", "HSG", "EH"):
        ext = read_extract(pop, code)
        ids = ext[source_of(code, "record_id")]
        assert ids.is_unique
        assert set(ids) == set(truth.loc[truth["agency"] == code, "record_id"]), code
    related = pd.read_parquet(pop / "ground_truth" / "related.parquet")
    assert set(related["relationship"]) <= set(CANONICAL["relationships"])
    assert set(related["agency"]) == {"HV", "SCH", "CSC", "POL", "HSG", "EH"}


def test_agency_coverage(pop):
    p = pd.read_parquet(pop / "ground_truth" / "persons.parquet")
    truth = pd.read_parquet(pop / "ground_truth" / "records.parquet")
    seen = {a: set(g["person_id"]) for a, g in truth.groupby("agency")}
    school_age = p[(p["age"] >= 5) & (p["age"] < 15)]["person_id"]
    assert 0.93 <= school_age.isin(seen["SCH"]).mean() <= 1.0
    assert 0.89 <= p["person_id"].isin(seen["GP"]).mean() <= 0.97
    under5 = p[p["age"] < 5]["person_id"]
    assert 0.9 <= under5.isin(seen["HV"]).mean() <= 1.0
    assert (p.set_index("person_id").loc[list(seen["HV"]), "age"] < 5).all()
    # families known to social care are much more often known to police and housing
    hh_of = {a: set(g["household_id"]) for a, g in truth.groupby("agency")}
    all_hh = pd.Series(sorted(set(p["household_id"])))
    in_csc = all_hh.isin(hh_of["CSC"])
    for other in ("POL", "HSG"):
        rate_in = all_hh[in_csc].isin(hh_of[other]).mean()
        rate_out = all_hh[~in_csc].isin(hh_of[other]).mean()
        assert rate_in > 3 * rate_out, other


def test_mapping_files_match_extracts(pop):
    codes = sorted(p.stem.upper() for p in MAPPINGS.glob("*.yaml"))
    assert codes == sorted(["GP", "HV", "SCH", "CSC", "POL", "HSG", "EH"])
    ident, payload = CANONICAL["identifier_fields"], CANONICAL["payload_fields"]
    formats = {}
    for code in codes:
        m = mapping(code)
        assert m["mapping_version"] == 1 and m["agency"]["code"] == code
        listed = [c["source"] for c in m["columns"]]
        f = next((pop / "extracts" / code).iterdir())
        formats[code] = m["source"]["format"]
        if formats[code] == "parquet":
            import pyarrow.parquet as pq

            header = pq.read_schema(f).names
        else:
            with f.open(encoding=m["source"]["encoding"], newline="") as fh:
                header = next(csv.reader(fh, delimiter=m["source"]["delimiter"]))
        assert header == listed, code
        subject_ids = [
            c
            for c in m["columns"]
            if c.get("field") == "record_id" and c.get("person", "subject") == "subject"
        ]
        assert len(subject_ids) == 1
        for c in m["columns"]:
            if c["class"] == "identifier":
                assert c["field"] in ident, (code, c)
            elif c["class"] == "payload":
                assert c["field"] in payload, (code, c)
            else:
                assert c["class"] == "drop" and "field" not in c
            if "person" in c:
                assert c["person"] in m["related_persons"]
        for slot in m.get("related_persons", {}).values():
            assert slot["relationship"] in CANONICAL["relationships"]
    assert list(formats.values()).count("parquet") >= 2


def test_cp1252_extract(pop):
    m = mapping("SCH")
    assert m["source"]["encoding"] == "cp1252"
    raw = next((pop / "extracts" / "SCH").iterdir()).read_bytes()
    text = raw.decode("cp1252")
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    assert re.search(r"[À-ÿ]", text), "expected accented names representable in cp1252"
    # characters cp1252 lacks were transliterated, never dropped or replaced by '?'
    assert "Ł" not in text and "ł" not in text and "?" not in text


def test_free_text_mentions_family_identifiers(pop):
    truth = pd.read_parquet(pop / "ground_truth" / "records.parquet")
    csc = read_extract(pop, "CSC").set_index("ReferralID")
    t = truth[truth["agency"] == "CSC"].set_index("record_id")
    with_notes = csc["CaseNotes"].dropna()
    assert len(with_notes) > 0.8 * len(csc)
    checked = 0
    for rid, note in with_notes.items():
        said = json.loads(t.loc[rid, "text_identifiers"])
        assert said and all(s in note for s in said)
        checked += bool(re.search(r"\d{2}/\d{2}/\d{4}", note))
    assert checked > 0.3 * len(with_notes)  # DOBs appear in many notes


def test_consent_rows_include_withdrawals(pop):
    eh = read_extract(pop, "EH")
    truth = pd.read_parquet(pop / "ground_truth" / "records.parquet").set_index("record_id")
    eh["person_id"] = truth.loc[eh["EHRowID"], "person_id"].to_numpy()
    assert set(eh["ConsentStatus"]) == {"given", "refused", "withdrawn"}
    wd = eh[eh["ConsentStatus"] == "withdrawn"]
    for _, row in wd.iterrows():
        prior = eh[
            (eh["person_id"] == row["person_id"])
            & (eh["ConsentPurpose"] == row["ConsentPurpose"])
            & (eh["ConsentStatus"] == "given")
        ]
        assert len(prior) == 1
        assert pd.to_datetime(prior["ConsentDate"], format="%d/%m/%Y").iloc[0] < pd.to_datetime(
            row["ConsentDate"], format="%d/%m/%Y"
        )


def test_police_estimated_dobs(pop):
    pol = read_extract(pop, "POL")
    est = pol[pol["DOBEstimated"] == "Y"]
    assert 0.03 < len(est) / len(pol) < 0.15
    assert est["DOB"].str.startswith("01.01.").all()


def test_cli_generate_and_bad_rates(tmp_path, capsys):
    assert main(["generate", "--seed", "3", "--people", "300", "--out", str(tmp_path / "p")]) == 0
    meta = json.loads((tmp_path / "p" / "population.json").read_text("utf-8"))
    assert meta["seed"] == 3 and meta["counts"]["persons"] == 300
    bad = tmp_path / "rates.json"
    bad.write_text(json.dumps({"typo": 2.0}), "utf-8")
    with pytest.raises(SystemExit, match=re.escape(str(bad))):
        main(["generate", "--people", "300", "--out", str(tmp_path / "q"), "--rates", str(bad)])
    with pytest.raises(ValueError, match="people"):
        generate_population(tmp_path / "r", seed=1, people=5)


def test_records_truth_columns_are_consistent(pop):
    truth = pd.read_parquet(pop / "ground_truth" / "records.parquet")
    persons = pd.read_parquet(pop / "ground_truth" / "persons.parquet").set_index("person_id")
    assert (
        persons.loc[truth["person_id"], "household_id"].to_numpy()
        == truth["household_id"].to_numpy()
    ).all()
    assert (
        persons.loc[truth["person_id"], "given_name"].to_numpy()
        == truth["clean_given_name"].to_numpy()
    ).all()
    assert np.issubdtype(truth["cor_typo_family_name"].dtype, np.bool_)
    _ = io
