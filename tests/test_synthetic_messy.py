"""The messy synthetic profile: each error kind present at about its documented rate, and the
default profile exactly what it was before profiles existed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synthetic_data.generate import generate_population
from synthetic_data.messy import MESSY_RATES, PLACEHOLDER_ADULT, MessyRates

# Content digest of `generate_population(out, seed=7, people=400)`: CSV/JSON bytes, Parquet
# table contents. Last changed on purpose by issue 18 (record_type in every agency's extract,
# CSC's allocated team): payload columns only, so the linkage figures stand.
# If the default profile is changed on purpose, this is the figure to update (and the
# README's default-profile figures to re-measure).
DEFAULT_400_SEED7 = "d0abfbd8abb61f8b2bb9882a9bc63cbfe005457d1ddce039b93112d6c0356eb8"
RATES = MessyRates()


def content_digest(out: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(out.rglob("*")):
        if not p.is_file():
            continue
        h.update(str(p.relative_to(out)).encode())
        if p.suffix == ".parquet":
            f = pd.read_parquet(p)
            h.update(",".join(f.columns).encode())
            h.update(pd.util.hash_pandas_object(f, index=False).to_numpy().tobytes())
        else:
            h.update(p.read_bytes())
    return h.hexdigest()


def test_default_profile_is_unchanged(tmp_path: Path) -> None:
    generate_population(tmp_path / "a", 7, 400)
    assert content_digest(tmp_path / "a") == DEFAULT_400_SEED7
    generate_population(tmp_path / "b", 7, 400, profile="default")
    assert content_digest(tmp_path / "b") == DEFAULT_400_SEED7
    meta = json.loads((tmp_path / "a" / "population.json").read_text())
    assert "profile" not in meta


def test_unknown_profile_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown profile"):
        generate_population(tmp_path, 7, 100, profile="noisy")


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("messy") / "pop"
    generate_population(out, 3, 3000, profile="messy")
    gt = out / "ground_truth"
    return {
        "out": out,
        "records": pd.read_parquet(gt / "records.parquet"),
        "persons": pd.read_parquet(gt / "persons.parquet"),
        "households": pd.read_parquet(gt / "households.parquet"),
        "addresses": pd.read_parquet(gt / "addresses.parquet"),
        "meta": json.loads((out / "population.json").read_text()),
    }


def _near(hits: int, n: int, rate: float) -> None:
    """Realised rate within 4.5 binomial standard deviations (and a little slack) of `rate`."""
    assert n > 0
    sd = (rate * (1 - rate) / n) ** 0.5
    assert abs(hits / n - rate) <= 4.5 * sd + 0.002, (hits, n, rate)


def test_messy_is_deterministic_and_recorded(messy: dict, tmp_path: Path) -> None:
    assert messy["meta"]["profile"] == "messy"
    assert messy["meta"]["rates"]["dob_day_month_swap"] == MESSY_RATES.dob_day_month_swap
    generate_population(tmp_path / "again", 3, 3000, profile="messy")
    assert content_digest(tmp_path / "again") == content_digest(messy["out"])


def test_missing_given_names_and_placeholders(messy: dict) -> None:
    r = messy["records"]
    has_given = r["agency"].isin(["GP", "SCH", "CSC", "POL", "HSG", "EH", "HV"])
    _near(
        int(r.loc[has_given, "cor_missing_given_name"].sum()),
        int(has_given.sum()),
        RATES.missing_given_name,
    )
    p = messy["persons"].set_index("person_id")
    age = r["person_id"].map(p["age"])
    infant = has_given & (age < 0.25) & ~r["cor_missing_given_name"]
    _near(
        int((r["cor_placeholder_name"] & infant).sum()), int(infant.sum()), RATES.placeholder_infant
    )
    # the placeholder is in the extract itself
    sch = pd.read_csv(messy["out"] / "extracts" / "GP" / "gp_registrations.csv", dtype=str)
    gp = r[r["agency"] == "GP"].set_index("record_id")
    shown = sch.set_index("PatientID")["Forename"]
    ph = gp.index[gp["cor_placeholder_name"]]
    assert len(ph) > 0
    assert shown.loc[ph].str.strip().str.title().isin(["Baby", *PLACEHOLDER_ADULT]).all()


def test_copied_household_identifiers(messy: dict) -> None:
    r, p = messy["records"], messy["persons"].set_index("person_id")
    hid = p["household_id"]

    def resident_parent(pid: int) -> int:
        for col in ("mother_id", "father_id"):
            par = int(p.at[pid, col])
            if par >= 0 and hid[par] == hid[pid]:
                return par
        return -1

    gp = r[r["agency"] == "GP"].copy()
    gp["parent"] = [resident_parent(int(x)) if p.at[x, "age"] < 18 else -1 for x in gp["person_id"]]
    eligible = (gp["parent"] >= 0) & (
        gp["parent"].map(lambda x: p.at[x, "nhs_number"] if x >= 0 else -1) >= 0
    )
    _near(int(gp.loc[eligible, "cor_copied_nhs"].sum()), int(eligible.sum()), RATES.copied_nhs)
    # the child's GP record carries the parent's NHS number, same surname and address lines
    ext = pd.read_csv(
        messy["out"] / "extracts" / "GP" / "gp_registrations.csv", dtype=str
    ).set_index("PatientID")
    copied = gp[gp["cor_copied_nhs"]]
    assert len(copied) >= 3
    for _, row in copied.iterrows():
        assert ext.at[row["record_id"], "NHSNumber"] == str(p.at[row["parent"], "nhs_number"])
    assert int(gp["cor_copied_phone"].sum()) > 0


def test_day_month_swaps_postcode_typos_missing_nhs(messy: dict) -> None:
    r = messy["records"]
    sch = r[r["agency"] == "SCH"]  # quality factor 1.0: the base rate itself
    dob = pd.to_datetime(sch["clean_date_of_birth"])
    swappable = (dob.dt.day <= 12) & (dob.dt.day != dob.dt.month) & ~sch["cor_dob_default"]
    _near(
        int(sch.loc[swappable, "cor_dob_swap"].sum()),
        int(swappable.sum()),
        MESSY_RATES.dob_day_month_swap,
    )
    has_pc = sch["clean_postcode"].notna()
    _near(
        int(sch.loc[has_pc, "cor_postcode_typo"].sum()),
        int(has_pc.sum()),
        MESSY_RATES.postcode_typo,
    )
    gp = r[(r["agency"] == "GP") & r["clean_nhs_number"].notna() & ~r["cor_copied_nhs"]]
    # GP quality 0.5: base missing 0.025, then the messy profile's own 0.05 on the rest
    expected = 1 - (1 - MESSY_RATES.missing * 0.5) * (1 - RATES.missing_nhs)
    _near(int(gp["cor_missing_nhs_number"].sum()), len(gp), expected)


def test_flats_in_shared_buildings(messy: dict) -> None:
    a, hh = messy["addresses"], messy["households"]
    flats = a[a["address_kind"] == "flat"]
    street = flats["address_line_1"].str.replace(r"^Flat \d+, ", "", regex=True)
    per_building = flats.assign(street=street).groupby(["street", "postcode"]).size()
    assert (per_building >= 3).sum() >= 10
    in_flats = hh["address_id"].isin(flats["address_id"])
    _near(int(in_flats.sum()), len(hh), RATES.flat_households)
    # the flat goes in address line 1 in every style real exports use
    r = messy["records"]
    styled = r[r["cor_flat_style"] & (r["agency"] == "GP")]
    ext = pd.read_csv(
        messy["out"] / "extracts" / "GP" / "gp_registrations.csv", dtype=str
    ).set_index("PatientID")
    line1 = ext.loc[styled["record_id"], "AddressLine1"].str.strip()
    assert line1.str.match(r"^\d+/\d+ ").any()
    assert line1.str.match(r"(?i)^flat \d+ \d+ ").any()


def test_group_quarters(messy: dict) -> None:
    a, hh = messy["addresses"], messy["households"]
    kinds = hh.merge(a[["address_id", "address_kind"]], on="address_id")
    n_people = len(messy["persons"])
    for kind, rate in (
        ("care_home", RATES.care_home_persons),
        ("hostel", RATES.hostel_persons),
        ("refuge", RATES.refuge_persons),
    ):
        at = kinds[kinds["address_kind"] == kind]
        assert len(at) >= 2, kind
        per_address = at.groupby("address_id").agg(
            n_hh=("household_id", "size"), people=("size", "sum")
        )
        # many unrelated households at one address, each its own household in ground truth
        assert (per_address["people"] >= 10).all(), kind
        assert (per_address["n_hh"] >= 2).all(), kind
        assert per_address["people"].sum() <= max(40, 3 * rate * n_people), kind
    care = kinds[kinds["address_kind"] == "care_home"]
    assert (care["size"] == 1).all()
    refuge = kinds[kinds["address_kind"] == "refuge"]
    assert (refuge["household_type"] == "single_parent").all()
    assert np.isin(
        a.loc[a["address_kind"] == "care_home", "address_line_1"].str.extract(r"^(.*?),")[0],
        [
            "Rosewood Care Home",
            "Ashfield Nursing Home",
            "Meadowbank Residential Home",
            "Holly Lodge Care Home",
        ],
    ).all()
