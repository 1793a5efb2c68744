"""Estimated DOBs at the bridge (encoding spec v3, eighth amendment): the agency's flag goes to
the hub as a boolean, and a record whose DOB is an estimate carries its canonical-name token
under the four other birth years it may stand for, equal to the token another record of
those names born in that year carries. Real keys, the bridge's own normaliser and encoder."""

from __future__ import annotations

import copy

import pandas as pd
import pyarrow as pa
import pytest

from ig_bridge.encoding import Encoder, EncodingSpecError, load_encoding_spec
from ig_bridge.keys import generate_link_key
from ig_bridge.normalise import ESTIMATED_YEAR_OFFSETS, normalise_identifiers
from linkage.comparisons import ESTIMATED_YEAR_TOKENS
from linkage.person_model import fill_unobserved_u


def _frame(rows: list[dict]) -> pd.DataFrame:
    return normalise_identifiers(pd.DataFrame(rows).astype(object), ["%Y-%m-%d"]).frame


ROWS = [
    # police: an estimated age, 1 January two years before the real birth year
    {"given_name": "Callum", "family_name": "Williams", "date_of_birth": "2011-01-01",
     "dob_is_estimated": "Y"},
    # the same boy at school, real DOB
    {"given_name": "Callum", "family_name": "Williams", "date_of_birth": "2013-04-02",
     "dob_is_estimated": "N"},
    # another boy of the same names three years off: outside the estimate's reach
    {"given_name": "Callum", "family_name": "Williams", "date_of_birth": "2014-06-30",
     "dob_is_estimated": None},
]  # fmt: skip


def test_normaliser_gives_the_years_an_estimate_stands_for_and_nothing_for_real_dobs() -> None:
    f = _frame(ROWS)
    est = f["dob_is_estimated"]
    assert bool(est.iloc[0]) and not bool(est.iloc[1]) and pd.isna(est.iloc[2])
    for name, offset in ESTIMATED_YEAR_OFFSETS.items():
        assert f[name].iloc[0] == 2011 + offset
        assert f[name].iloc[1:].isna().all()


def test_estimated_record_meets_the_real_dob_two_years_off_and_not_three() -> None:
    enc = Encoder(generate_link_key())
    out = enc.encode(_frame(ROWS))
    est = out.loc[0, list(ESTIMATED_YEAR_TOKENS)].tolist()
    assert out.loc[1, "tok_given_name_canonical"] in est  # 2013 = 2011 + 2
    assert out.loc[2, "tok_given_name_canonical"] not in est  # 2014: three years off
    assert out.loc[0, "tok_given_name_canonical"] not in (
        out.loc[1, "tok_given_name_canonical"],
        out.loc[2, "tok_given_name_canonical"],
    )
    assert out.loc[1:, list(ESTIMATED_YEAR_TOKENS)].isna().all().all()
    assert out["flag_dob_estimated"].tolist() == [True, False, False]  # unknown is no
    fields = {f.name: f.type for f in enc.arrow_fields()}
    assert fields["flag_dob_estimated"] == pa.bool_()


def test_a_flag_is_one_known_boolean_source() -> None:
    spec = load_encoding_spec()
    bad = copy.deepcopy(spec)
    bad["flags"]["columns"]["flag_name"] = {"source": "given_name"}
    with pytest.raises(EncodingSpecError, match="flags.columns.flag_name"):
        Encoder(generate_link_key(), bad)
    bad = copy.deepcopy(spec)
    bad["flags"]["columns"]["dob_estimated"] = {"source": "dob_is_estimated"}
    with pytest.raises(EncodingSpecError, match="start with flag_"):
        Encoder(generate_link_key(), bad)


def test_levels_the_u_sample_never_saw_get_the_rule_of_three_bound() -> None:
    settings = {
        "comparisons": [
            {
                "output_column_name": "forename",
                "comparison_levels": [
                    {"is_null_level": True, "sql_condition": "x IS NULL"},
                    {"sql_condition": "a", "m_probability": 0.9, "u_probability": 0.001},
                    {"sql_condition": "b", "m_probability": 0.002},  # never in the sample
                    {"sql_condition": "ELSE", "m_probability": 0.098, "u_probability": 0.999},
                ],
            }
        ]
    }
    out = fill_unobserved_u(settings, 2e6)
    levels = out["comparisons"][0]["comparison_levels"]
    assert levels[2]["u_probability"] == pytest.approx(1.5e-6)
    assert [lv.get("u_probability") for lv in levels[1::2]] == [0.001, 0.999]
    assert "u_probability" not in levels[0]
    assert "u_probability" not in settings["comparisons"][0]["comparison_levels"][2]
