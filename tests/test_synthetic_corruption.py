"""Corruption: realised rates, measured by comparing extracts with ground-truth clean values."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synthetic_data.agency_specs import SPECS
from synthetic_data.corruption import CorruptionRates
from synthetic_data.generate import generate_population
from synthetic_data.names import NICKNAMES

# High rates so a small population gives enough events to measure.
RATES = CorruptionRates(
    typo=0.1,
    transposition=0.05,
    nickname=0.2,
    name_swap=0.04,
    stale_surname=0.5,
    case_noise=0.1,
    whitespace_noise=0.1,
    dob_day_month_swap=0.2,
    dob_default=0.05,
    missing=0.1,
    stale_address=0.4,
    postcode_typo=0.06,
)


@pytest.fixture(scope="module")
def noisy(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("noisy") / "p"
    generate_population(out, seed=11, people=3000, rates=RATES)
    return out


def _norm(s: pd.Series) -> pd.Series:
    return s.astype(object).map(
        lambda x: " ".join(x.split()).casefold() if isinstance(x, str) else None
    )


def _close(measured: float, expected: float, n: int) -> bool:
    sd = math.sqrt(max(expected * (1 - expected), 1e-4) / max(n, 1))
    return abs(measured - expected) <= 4 * sd + 0.01


def _joined(root: Path, code: str, sep: str, id_col: str) -> pd.DataFrame:
    path = next((root / "extracts" / code).iterdir())
    ext = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""])
    truth = pd.read_parquet(root / "ground_truth" / "records.parquet")
    truth = truth[truth["agency"] == code].set_index("record_id")
    return ext.join(truth, on=id_col)


def test_gp_rates_match_configuration(noisy):
    r = RATES.scaled(SPECS["GP"].quality)
    d = _joined(noisy, "GP", ",", "PatientID")
    n = len(d)
    assert n > 2000

    # missing NHS numbers among people who have one
    has = d["clean_nhs_number"].notna()
    miss = d.loc[has, "NHSNumber"].isna().mean()
    assert _close(miss, r.missing, int(has.sum())), (miss, r.missing)

    # DOB: day/month swaps among swappable dates, 01/01 defaults, otherwise exact
    clean = pd.to_datetime(d["clean_date_of_birth"])
    got = pd.to_datetime(d["DOB"], format="%Y-%m-%d")
    default = (
        (got.dt.month == 1)
        & (got.dt.day == 1)
        & (got.dt.year == clean.dt.year)
        & ~((clean.dt.month == 1) & (clean.dt.day == 1))
    )
    assert _close(default.mean(), r.dob_default, n), (default.mean(), r.dob_default)
    swappable = (clean.dt.day <= 12) & (clean.dt.day != clean.dt.month) & ~default
    swapped = (got.dt.day == clean.dt.month) & (got.dt.month == clean.dt.day)
    rate = (swapped & swappable).sum() / swappable.sum()
    assert _close(rate, r.dob_day_month_swap, int(swappable.sum())), (rate, r)
    assert (got[~default & ~swapped] == clean[~default & ~swapped]).all()
    assert (d["cor_dob_swap"] == (swapped & swappable)).all()

    # stale addresses among households that moved; postcode typos against the shown address
    addrs = pd.read_parquet(noisy / "ground_truth" / "addresses.parquet").set_index("address_id")
    moved = (d["prev_address_id"] >= 0) & d["AddressLine1"].notna()
    prev_line = _norm(
        pd.Series(
            addrs.loc[d.loc[moved, "prev_address_id"], "address_line_1"].to_numpy(),
            index=d.index[moved],
        )
    )
    stale = (_norm(d.loc[moved, "AddressLine1"]) == prev_line).mean()
    assert _close(stale, r.stale_address, int(moved.sum())), (stale, r.stale_address)
    pc_ok = d["Postcode"].notna()
    shown_pc = addrs.loc[d.loc[pc_ok, "shown_address_id"], "postcode"].to_numpy()
    typo = (d.loc[pc_ok, "Postcode"].to_numpy() != shown_pc).mean()
    assert _close(typo, r.postcode_typo, int(pc_ok.sum())), (typo, r.postcode_typo)

    # surnames: old (maiden) surname among those who have one
    maiden = d["clean_other_names"].notna() & ~d["cor_name_swap"]
    used_old = _norm(d.loc[maiden, "Surname"]) == _norm(d.loc[maiden, "clean_other_names"])
    assert _close(used_old.mean(), r.stale_surname, int(maiden.sum())), (used_old.mean(), r)

    # typos/transpositions change the family name (case and spacing aside)
    plain = ~d["cor_stale_surname"] & ~d["cor_name_swap"]
    changed = (_norm(d.loc[plain, "Surname"]) != _norm(d.loc[plain, "clean_family_name"])).mean()
    expected = 1 - (1 - r.typo) * (1 - r.transposition)
    assert _close(changed, expected, int(plain.sum())), (changed, expected)

    # nicknames and variants instead of the formal given name
    formal = d["clean_given_name"].isin(list(NICKNAMES)) & ~d["cor_name_swap"]
    nick = [
        isinstance(g, str)
        and " ".join(g.split()).casefold() in {v.casefold() for v in NICKNAMES[c]}
        for g, c in zip(d.loc[formal, "Forename"], d.loc[formal, "clean_given_name"], strict=True)
    ]
    # a later typo can hide a nickname, hence the (1 - typo) factor
    nick_rate = float(np.mean(nick))
    assert _close(nick_rate, r.nickname * (1 - expected), int(formal.sum())), (nick_rate, r)

    # capitals: agencies sometimes type a surname in upper case
    upper = (
        d.loc[plain, "Surname"].str.strip().str.isupper()
        & ~d.loc[plain, "clean_family_name"].str.isupper()
    )
    assert _close(upper.mean(), r.case_noise * 0.75, int(plain.sum()))


def test_agency_quality_factor_scales_corruption(noisy):
    gp = _joined(noisy, "GP", ",", "PatientID")
    pol = _joined(noisy, "POL", "\t", "NominalRef")
    pol = pol[pol["DOBEstimated"] == "N"]

    def swap_rate(d: pd.DataFrame, fmt: str) -> float:
        clean = pd.to_datetime(d["clean_date_of_birth"])
        got = pd.to_datetime(d["DOB"], format=fmt)
        ok = (clean.dt.day <= 12) & (clean.dt.day != clean.dt.month)
        return float(((got.dt.day == clean.dt.month) & (got.dt.month == clean.dt.day))[ok].mean())

    g, p = swap_rate(gp, "%Y-%m-%d"), swap_rate(pol, "%d.%m.%Y")
    assert SPECS["POL"].quality > SPECS["GP"].quality
    assert p > 2 * g
    assert _close(p, RATES.scaled(SPECS["POL"].quality).dob_day_month_swap, len(pol) // 2)


def test_zero_rates_give_clean_extracts(tmp_path):
    zero = CorruptionRates(**{k: 0.0 for k in CorruptionRates.__dataclass_fields__})
    generate_population(tmp_path / "z", seed=5, people=600, rates=zero)
    d = _joined(tmp_path / "z", "GP", ",", "PatientID")
    assert (d["Surname"] == d["clean_family_name"]).all()
    assert (d["Forename"] == d["clean_given_name"]).all()
    assert (pd.to_datetime(d["DOB"]) == pd.to_datetime(d["clean_date_of_birth"])).all()
    assert d.filter(like="cor_").drop(columns=[]).to_numpy().sum() == 0


def test_rates_validation():
    with pytest.raises(ValueError, match="unknown corruption rates"):
        CorruptionRates.from_dict({"typos": 0.1})
    with pytest.raises(ValueError, match=r"within \[0, 1\]"):
        CorruptionRates.from_dict({"typo": -0.1})
    assert CorruptionRates.from_dict({"typo": 0.3}).typo == 0.3
