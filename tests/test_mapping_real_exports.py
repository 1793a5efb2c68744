"""Mappings that fit real exports (issue 17 item 2), through the real bridge and hub.

A housing-register-like CSV with coded sex and relationship columns, flats written five ways,
address line 2, town and placeholder names is bridged with real keys, ingested by the hub and
formed into households on the resulting tokens: flats of one building are separate households,
"14 High Street" and "14 High St" one. Agency kinds declared per agreement:
tests/test_mapping_agreement.py.
"""

from __future__ import annotations

import copy
import json
import os

import pandas as pd
import pytest
from mapping_export_helpers import _vals, households_of_one_export

from ig_bridge.address import address_key, normalise_flat
from ig_bridge.address_normalise import normalise_address_line
from ig_bridge.encoding import Encoder, EncodingSpecError, load_encoding_spec
from ig_bridge.keys import LinkKey
from ig_bridge.normalise import normalise_identifiers
from schemas.mapping import MappingError, parse_mapping

REL_CODES = {
    "01": "lead",
    "02": "partner",
    "03": "child",
    "04": "stepchild",
    "05": "grandchild",
    "06": "parent",
    "07": "sibling",
    "08": "other_relative",
    "09": "unrelated",
    "LOD": "unrelated",
}
HOUSING = {
    "mapping_version": 1,
    "agency": {"code": "HREG", "name": "Housing register", "kind": "housing"},
    "source": {"format": "csv", "date_formats": ["%d/%m/%Y"]},
    "columns": [
        {"source": "PersonRef", "field": "record_id", "class": "identifier"},
        {"source": "Forename", "field": "given_name", "class": "identifier"},
        {"source": "Surname", "field": "family_name", "class": "identifier"},
        {"source": "DOB", "field": "date_of_birth", "class": "identifier"},
        {
            "source": "SexCode",
            "field": "sex",
            "class": "identifier",
            "recode": {"1": "M", "2": "F", "9": "U", "0": None},
        },
        {"source": "FlatNo", "field": "flat", "class": "identifier"},
        {"source": "Addr1", "field": "address_line_1", "class": "identifier"},
        {"source": "Addr2", "field": "address_line_2", "class": "identifier"},
        {"source": "Town", "field": "town", "class": "identifier"},
        {"source": "Postcode", "field": "postcode", "class": "identifier"},
        {
            "source": "RelCode",
            "field": "relationship_to_lead",
            "class": "payload",
            "recode": REL_CODES,
        },
    ],
}
HEADER = "PersonRef,Forename,Surname,DOB,SexCode,FlatNo,Addr1,Addr2,Town,Postcode,RelCode\n"
# (ref, household it must land in); line = index + 2 (header is line 1)
ROWS = [
    ('R01,Ann,Khan,02/03/1985,2,,"Flat 1, 12 High Street",Headingley,Leeds,LS6 1AA,01', "k"),
    ('R02,Omar,Khan,05/06/2015,1,,"Flat 1, 12 High Street",,Leeds,LS6 1AA,03', "k"),
    ("R03,Tom,Baker,07/08/1980,1,,2/12 High St,,Leeds,LS6 1AA,01", "b"),
    ("R04,Lucy,Baker,09/10/2012,2,,Flat 2 12 High St,Headingley,LEEDS,LS61AA,03", "b"),
    ("R05,Jo,Reid,11/12/1990,2,3,12 High Street,,Leeds,LS6 1AA,01", "r"),
    ("R06,Baby,Reid,01/11/2026,9,Flat 3,12 High St,,Leeds,LS6 1AA,03", "r"),
    ("R07,Sam,Lee,13/01/1975,1,,Apartment 4B,12 High Street,Leeds,LS6 1AA,01", "l"),
    ('R08,Kim,Lee,14/02/1977,2,,"Flat 4B, Rose Court",12 High St,Leeds,LS6 1AA,02', "l"),
    ("R09,Pat,Moss,15/03/1960,1,,14 High Street,,Leeds,LS6 1AB,01", "m"),
    ("R10,Alex,Moss,16/04/1999,7,,14 High St,Headingley,Leeds,LS6 1AB,LOD", "m"),
    ("R11,,The Occupier,17/05/1970,0,,16 High Street,,Leeds,LS6 1AB,99", "o"),
]


@pytest.fixture(scope="module")
def housing(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return households_of_one_export(
        tmp_path_factory.mktemp("hreg"),
        HOUSING,
        "HREG",
        HEADER + "\n".join(r for r, _ in ROWS) + "\n",
        "SELECT person_id, household_id, relationship_to_lead FROM household_member",
    )


def test_every_row_lands_and_codes_are_recoded(housing: dict) -> None:
    res, ids, pay = housing["res"], housing["ids"], housing["pay"]
    assert (res.rows_read, res.rows_accepted, res.rows_quarantined) == (11, 11, 0)
    assert len(ids) == len(pay) == 11
    rel = _vals(pay["relationship_to_lead"])
    assert rel == [
        "lead",
        "child",
        "lead",
        "child",
        "lead",
        "child",
        "lead",
        "partner",
        "lead",
        "unrelated",
        None,
    ]
    # Unknown codes are nulled and reported by line and field: sex "7", relationship "99".
    assert sorted(res.field_problems) == [(11, "sex"), (12, "relationship_to_lead")]
    # (Sex codes are recoded to M/F/U at the bridge; spec v3 sends no sex token to the hub.)


def test_flats_are_separate_addresses_and_spellings_agree(housing: dict) -> None:
    tok = _vals(housing["ids"]["tok_address"])
    assert all(t is not None for t in tok)
    assert tok[0] == tok[1]  # Flat 1, 12 High Street (x2)
    assert tok[2] == tok[3]  # 2/12 High St = Flat 2 12 High St, LS61AA
    assert tok[4] == tok[5]  # flat column "3" = "Flat 3", St = Street
    assert tok[6] == tok[7]  # Apartment 4B + line 2 = Flat 4B, Rose Court
    assert tok[8] == tok[9]  # 14 High Street = 14 High St (+ locality)
    assert len({tok[0], tok[2], tok[4], tok[6]}) == 4  # four flats of one building


def test_hub_households_separate_the_flats(housing: dict) -> None:
    ids, members = housing["ids"], housing["members"]
    ref_to_row = {r: i for i, r in enumerate(ids["record_ref"])}
    members = members.assign(row=members["person_id"].map(ref_to_row))
    got = members.groupby("household_id")["row"].apply(lambda s: tuple(sorted(s))).tolist()
    want = {}
    for i, (_, hh) in enumerate(ROWS):
        want.setdefault(hh, []).append(i)
    assert sorted(got) == sorted(tuple(v) for v in want.values())
    assert housing["hh"].n_households == 6
    rel = dict(zip(members["row"], members["relationship_to_lead"], strict=True))
    assert (rel[0], rel[1], rel[7], rel[9]) == ("lead", "child", "partner", "unrelated")
    assert pd.isna(rel[10])


def test_placeholder_names_are_nulled_reported_and_never_tokenised(housing: dict) -> None:
    res, ids = housing["res"], housing["ids"]
    assert res.placeholder_names == {"given_name": 1, "family_name": 1}
    given, family, dob = (_vals(ids[c]) for c in ("tok_given_name", "tok_family_name", "tok_dob"))
    assert given[5] is None and family[5] is not None
    # "Reid" stays (spec v3 salts it with the birth year, so it is compared, not counted)
    assert family[10] is None and dob[10] is not None
    report = json.loads(res.report_path.read_text("utf-8"))
    assert report["placeholder_names"]["by_field"] == {"given_name": 1, "family_name": 1}
    text = res.report_path.read_text("utf-8")
    assert "Occupier" not in text and "Baby" not in text and "Reid" not in text


@pytest.mark.parametrize(
    ("value", "nulled"),
    [
        ("Baby", True),
        ("BABY BOY", True),
        ("Baby of Jane Smith", True),
        ("Twin 1", True),
        ("the occupier", True),
        ("Occupant", True),
        ("Resident of the home", True),
        ("of the home", True),
        ("Mum", True),
        ("XXX", True),
        ("Not Known", True),
        ("Newborn", True),
        ("Test", True),
        ("Amelia", False),
        ("Na", False),
        ("Babbage", False),
        ("Testa", False),
        ("Mumford", False),
    ],
)
def test_placeholder_list(value: str, nulled: bool) -> None:
    raw = pd.DataFrame({"given_name": [value], "family_name": ["Smith"]})
    nf = normalise_identifiers(raw)
    assert (nf.frame.given_name[0] is None) == nulled
    assert ([f for _, f, _ in nf.nulled] == ["given_name"]) == nulled
    assert not nf.problems  # a placeholder is not a "missing given name"


def test_placeholder_in_a_full_name_keeps_the_surname() -> None:
    raw = pd.DataFrame(
        {"full_name": ["Baby Smith", "Twin 2 Jones", "The Occupier", "Baby of Ann Lee"]}
    )
    f = normalise_identifiers(raw).frame
    assert _vals(f.given_name) == [None] * 4
    assert _vals(f.family_name) == ["smith", "jones", None, None]


# Flat formats the bridge parses (docs/contracts.md, "Addresses"): (line 1, line 2, flat
# column) -> (flat, premises).
FLAT_FORMATS = [
    ("Flat 3, 12 High Street", None, None, "3", "12 high street"),
    ("3/12 High St", None, None, "3", "12 high street"),
    ("Apartment 4B Rose Court, 12 High St", "Northfield", None, "4b", "12 high street"),
    ("Apt. 4b, 12 High St", None, None, "4b", "12 high street"),
    ("Room 2, 5 Station Rd", None, None, "2", "5 station road"),
    ("Unit 7, 3 Mill Lane", None, None, "7", "3 mill lane"),
    ("Flat No. 03, 12 High St", None, None, "3", "12 high street"),
    ("Flat A 7 Park Rd", None, None, "a", "7 park road"),
    ("Flat 3/2, 12 High St", None, None, "3/2", "12 high street"),
    ("12 High Street Flat 3", None, None, "3", "12 high street"),
    ("Flat 3", "12 High Street", None, "3", "12 high street"),
    ("Rose Court", "12 High St", None, None, "12 high street"),
    ("12 High Street", None, "Flat 3", "3", "12 high street"),
    ("12 High Street", None, "3", "3", "12 high street"),
    ("Ground Floor Flat, 12 High St", None, None, "ground", "12 high street"),
    ("GFF 12 High St", None, None, "ground", "12 high street"),
    ("First floor flat 3 Park Rd", None, None, "first", "3 park road"),
    ("12 High Street", "Northfield", None, None, "12 high street"),
    ("12-14 High St", None, None, None, "12-14 high street"),
    ("12a High St", None, None, None, "12a high street"),
    ("12 Flat Lane", None, None, None, "12 flat lane"),
    ("Rose Cottage", "Mill Lane", None, None, "rose cottage"),
    (None, "Northfield", None, None, None),  # line 1 missing: a locality is no address
    (None, "12 High St", None, None, "12 high street"),
]


@pytest.mark.parametrize(("line1", "line2", "flat", "want_flat", "want_premises"), FLAT_FORMATS)
def test_flat_formats(
    line1: str | None,
    line2: str | None,
    flat: str | None,
    want_flat: str | None,
    want_premises: str | None,
) -> None:
    n = normalise_address_line
    got = address_key(
        n(line1) if line1 else None,
        n(line2) if line2 else None,
        normalise_flat(n(flat)) if flat else None,
    )
    assert (got[0], got[3]) == (want_flat, want_premises)


def test_whole_address_column_finds_the_street_after_a_building_name() -> None:
    raw = pd.DataFrame(
        {
            "address": [
                "Flat 2, Rose Court, 10 Downing St, London, SW1A 2AA",
                "Flat 2, 10 Downing Street, SW1A 2AA",
            ]
        }
    )
    f = normalise_identifiers(raw).frame
    assert f.address_flat.tolist() == ["2", "2"]
    assert f.address_premises.tolist() == ["10 downing street"] * 2


def test_address_token_optional_flat() -> None:
    raw = pd.DataFrame(
        {
            "address_line_1": ["12 High St", "Flat 1, 12 High St", "12 High Street", None],
            "postcode": ["LS6 1AA", "LS6 1AA", None, "LS6 1AA"],
            "town": [None, None, "Leeds", "Leeds"],
        }
    )
    enc = Encoder(LinkKey(1, os.urandom(32))).encode(normalise_identifiers(raw).frame)
    tok = _vals(enc["tok_address"])
    assert tok[0] is not None and tok[1] is not None and tok[0] != tok[1]  # no flat != flat 1
    assert tok[2] is None and tok[3] is None  # no postcode / no premises: no token


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"optional": ["address_flat", "address_premises", "postcode"]}, "never all"),
        ({"optional": ["given_name"]}, "never all"),
        ({"optional": "address_flat"}, "never all"),
    ],
)
def test_optional_sources_are_checked(change: dict, says: str) -> None:
    spec = copy.deepcopy(load_encoding_spec())
    spec["tokens"]["columns"]["tok_address"].update(change)
    with pytest.raises(EncodingSpecError, match=says):
        Encoder(LinkKey(1, os.urandom(32)), spec)
    spec = copy.deepcopy(load_encoding_spec())
    spec["bloom"]["columns"]["bf_address"]["optional"] = ["address_flat"]
    with pytest.raises(EncodingSpecError, match="bloom.columns.bf_address"):
        Encoder(LinkKey(1, os.urandom(32)), spec)


# -- identifier recode tables ------------------------------------------------------------------


def _housing_with(col: int, **changes: object) -> dict:
    doc = copy.deepcopy(HOUSING)
    doc["columns"][col].update(changes)
    return doc


@pytest.mark.parametrize(
    ("doc", "where", "says"),
    [
        (_housing_with(4, recode={"1": "Male"}), "columns[4].recode", "allowed: M, F, U"),
        (_housing_with(4, recode={"1": "M", " 1 ": "F"}), "columns[4].recode", "listed twice"),
        (_housing_with(4, recode=["1", "M"]), "columns[4].recode", "source code -> canonical"),
        (_housing_with(1, recode={"x": "y"}), "columns[1].recode", "not a coded field"),
        (
            _housing_with(4, recode={"1": "M"}, values=["M"]),
            "columns[4].values",
            "only payload columns",
        ),
        (_housing_with(10, recode={"01": "head"}), "columns[10].recode", "outside the vocabulary"),
    ],
)
def test_bad_recode_tables_are_refused(doc: dict, where: str, says: str) -> None:
    with pytest.raises(MappingError) as exc:
        parse_mapping(doc, "hreg.yaml")
    assert exc.value.key_path == where and says in exc.value.problem, str(exc.value)


def test_subject_relationship_is_refused_with_a_hint() -> None:
    doc = _housing_with(10, field="relationship", **{"class": "identifier"})
    doc["columns"][10].pop("recode")
    with pytest.raises(MappingError, match="relationship_to_lead"):
        parse_mapping(doc, "hreg.yaml")


def test_recode_related_person_and_yes_no_codes() -> None:
    from ig_bridge.recode import recode_identifiers

    doc = copy.deepcopy(HOUSING)
    doc["columns"] += [
        {
            "source": "DobEst",
            "field": "dob_is_estimated",
            "class": "identifier",
            "recode": {"E": True, "A": False},
        },  # YAML yes/no arrive as booleans
        {"source": "C1Name", "field": "full_name", "class": "identifier", "person": "contact1"},
        {
            "source": "C1Rel",
            "field": "relationship",
            "class": "identifier",
            "person": "contact1",
            "recode": {"M": "mother", "F": "father", "GP": "grandparent"},
        },
    ]
    doc["related_persons"] = {"contact1": {"relationship": "parent"}}
    m = parse_mapping(doc, "hreg.yaml")
    raw = pd.DataFrame(
        {
            "SexCode": ["1", " 2 ", "m", "7", None],
            "DobEst": ["E", "a", "?", None, "E"],
            "C1Rel": ["M", "gp", "mother", "Aunt", None],
        }
    )
    out, unknown = recode_identifiers(raw, m)
    assert _vals(out["SexCode"]) == ["M", "F", "M", None, None]
    assert _vals(out["DobEst"]) == ["yes", "no", None, None, "yes"]
    assert _vals(out["C1Rel"]) == ["mother", "grandparent", "mother", None, None]
    assert {k: v.tolist() for k, v in unknown.items()} == {
        "sex": [False, False, False, True, False],
        "dob_is_estimated": [False, False, True, False, False],
        "contact1.relationship": [False, False, False, True, False],
    }
    assert raw["SexCode"].tolist()[3] == "7"  # the raw frame (quarantine) is untouched
