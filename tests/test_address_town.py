"""The post town as a second address key (encoding spec v3, fourth amendment; issue 17).

Every record with flat + premises + town carries `tok_address_town` beside `tok_address`
(flat + premises + postcode); a record without a postcode carries only the town key. A real
bridge run of an export with and without postcodes, ingested by the hub and formed into
households: one address recorded with and without its postcode is one household; the same
premises in two towns, or a town key two postcode-keyed properties share, are not joined.
The Splink residence comparison has a level for the town key where a postcode is missing.
"""

from __future__ import annotations

import os

import pandas as pd
import pytest
from mapping_export_helpers import _vals, households_of_one_export
from splink import DuckDBAPI, Linker, SettingsCreator, block_on

from ig_bridge.encoding import Encoder
from ig_bridge.keys import LinkKey
from ig_bridge.normalise import normalise_identifiers
from linkage.comparisons import TOWN_ADDRESS_LABEL, build_comparisons
from linkage.guards import SAME_PROPERTY_LABELS, level_gammas

MAPPING = {
    "mapping_version": 1,
    "agency": {"code": "TWN", "name": "Town register", "kind": "housing"},
    "source": {"format": "csv", "date_formats": ["%d/%m/%Y"]},
    "columns": [
        {"source": "Ref", "field": "record_id", "class": "identifier"},
        {"source": "Forename", "field": "given_name", "class": "identifier"},
        {"source": "Surname", "field": "family_name", "class": "identifier"},
        {"source": "DOB", "field": "date_of_birth", "class": "identifier"},
        {"source": "Addr1", "field": "address_line_1", "class": "identifier"},
        {"source": "Town", "field": "town", "class": "identifier"},
        {"source": "Postcode", "field": "postcode", "class": "identifier"},
    ],
}
HEADER = "Ref,Forename,Surname,DOB,Addr1,Town,Postcode\n"
# (row, the household it must land in; None: a household of its own)
ROWS = [
    # one address, with and without its postcode, spelt two ways: one household
    ("T01,Ann,Khan,02/03/1985,12 High Street,Leeds,LS6 1AA", "khan"),
    ("T02,Omar,Khan,05/06/2015,12 High St,LEEDS,", "khan"),
    ("T03,Sara,Khan,07/08/2017,12 High St,Leeds,", "khan"),
    # a flat of that building without a postcode: another address
    ('T04,Tom,Baker,07/08/1980,"Flat 1, 12 High Street",Leeds,', "baker"),
    # the same premises in two towns, no postcodes: two households
    ("T05,Jo,Reid,11/12/1990,7 Mill Lane,York,", "reid"),
    ("T06,Kim,Reid,14/02/2012,7 Mill Lane,York,", "reid"),
    ("T07,Sam,Lee,13/01/1975,7 Mill Lane,Hull,", "lee"),
    # one street name in two parts of a town: the town key is ambiguous, so the record
    # without a postcode joins neither postcode-keyed household
    ("T08,Pat,Moss,15/03/1960,3 Park Road,Leeds,LS1 1AA", "moss"),
    ("T09,Alex,Ward,16/04/1970,3 Park Road,Leeds,LS2 2BB", "ward"),
    ("T10,Lou,Gray,17/05/1980,3 Park Road,Leeds,", None),
    # neither postcode nor town: no address key at all
    ("T11,Ray,Fox,18/06/1981,9 Elm Road,,", "unplaced"),
]


@pytest.fixture(scope="module")
def town_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return households_of_one_export(
        tmp_path_factory.mktemp("town"),
        MAPPING,
        "TWN",
        HEADER + "\n".join(r for r, _ in ROWS) + "\n",
        """SELECT m.person_id, m.household_id, h.property_key
           FROM household_member m JOIN household h USING (household_id)""",
    )


def test_records_without_a_postcode_carry_only_the_town_key(town_run: dict) -> None:
    ids = town_run["ids"]
    assert town_run["res"].rows_accepted == len(ROWS) == len(ids)
    postcode, town = _vals(ids["tok_address"]), _vals(ids["tok_address_town"])
    assert postcode[0] is not None and town[0] is not None  # postcode: both keys
    assert postcode[1] is None and town[1] == town[2] == town[0]  # St = Street, LEEDS = Leeds
    assert town[3] != town[0]  # a flat of the building is another address
    assert town[4] == town[5] != town[6]  # 7 Mill Lane in York and in Hull
    assert town[7] == town[8] == town[9] and postcode[7] != postcode[8]
    assert postcode[10] is None and town[10] is None
    # the two keys are different key domains: never equal, whatever the values
    assert not set(filter(None, postcode)) & set(filter(None, town))


def test_one_address_with_and_without_postcode_is_one_household(town_run: dict) -> None:
    ids, members = town_run["ids"], town_run["members"]
    row = {r: i for i, r in enumerate(ids["record_ref"])}
    members = members.assign(row=members["person_id"].map(row))
    got = sorted(members.groupby("household_id")["row"].apply(lambda s: tuple(sorted(s))))
    want: dict[str, list[int]] = {}
    for i, (_, hh) in enumerate(ROWS):
        if hh != "unplaced":
            want.setdefault(hh or f"own-{i}", []).append(i)
    assert got == sorted(tuple(v) for v in want.values())
    # the records without a postcode joined the postcode-keyed property itself
    prop = dict(zip(members["row"], members["property_key"], strict=True))
    assert prop[0] == prop[1] == prop[2] and prop[0].startswith("A")
    # ...and the town-only households are keyed by their town key
    assert prop[4].startswith("T") and prop[6].startswith("T") and prop[9].startswith("T")
    assert 10 not in prop  # no address key, no household
    assert town_run["hh"].n_persons_without_address == 1


def test_town_comes_from_a_whole_address_column() -> None:
    raw = pd.DataFrame(
        {
            "address": [
                "Flat 3, 12 Oak Road, Heaton, Bradford",
                "12 OAK RD, HEATON, BRADFORD, BD9 4AA",
                "12 Oak Road, Bradford",  # one segment after line 1: a locality or a town
                "Flat 2, Rose Court, 10 Downing St, London, SW1A 2AA",
            ]
        }
    )
    f = normalise_identifiers(raw).frame
    assert _vals(f.town) == ["bradford", "bradford", None, "london"]
    assert _vals(f.address_line_2) == ["heaton", "heaton", "bradford", "10 downing street"]
    enc = Encoder(LinkKey(1, os.urandom(32))).encode(f)
    town = _vals(enc["tok_address_town"])
    assert town[0] is not None and town[1] is not None and town[0] != town[1]  # flat 3
    assert town[2] is None


def _residence_level(left: dict, right: dict) -> str:
    """The residence level Splink puts a pair of records on, by its label."""
    cols = ["tok_dob", "tok_uprn", "tok_address", "tok_address_town"]
    df = pd.DataFrame(
        [{"unique_id": 1, **left}, {"unique_id": 2, **right}], columns=["unique_id", *cols]
    )
    settings = SettingsCreator(
        link_type="dedupe_only",
        comparisons=build_comparisons(cols),
        blocking_rules_to_generate_predictions=[block_on("tok_dob")],
    )
    linker = Linker(DuckDBAPI().register(df), settings)
    (gamma,) = linker.inference.predict().as_pandas_dataframe()["gamma_residence"].tolist()
    model = linker.misc.save_model_to_json()
    (comp,) = [c for c in model["comparisons"] if c["output_column_name"] == "residence"]
    levels = [lv for lv in comp["comparison_levels"] if not lv.get("is_null_level")]
    if gamma == -1:
        return "null"
    return str(levels[len(levels) - 1 - gamma].get("label_for_charts"))


def test_splink_residence_compares_the_town_key_where_a_postcode_is_missing() -> None:
    home = {"tok_dob": "d1", "tok_address": "a1", "tok_address_town": "t1"}
    no_pc = {"tok_dob": "d1", "tok_address": None, "tok_address_town": "t1"}
    elsewhere = {"tok_dob": "d1", "tok_address": None, "tok_address_town": "t2"}
    assert _residence_level(home, no_pc) == TOWN_ADDRESS_LABEL
    assert _residence_level(no_pc, dict(no_pc)) == TOWN_ADDRESS_LABEL  # neither has one
    assert _residence_level(home, dict(home)) == "same property"
    # both postcodes known and different: the postcode key decides, not the town key
    moved = {"tok_dob": "d1", "tok_address": "a2", "tok_address_town": "t1"}
    assert _residence_level(home, moved) == "All other comparisons"
    # a different town key without a postcode stays neutral, as before the town key
    assert _residence_level(home, elsewhere) == "null"
    # two different UPRNs are two properties, whatever the town key says
    u1, u2 = {**no_pc, "tok_uprn": "u1"}, {**home, "tok_uprn": "u2"}
    assert _residence_level(u1, u2) == "All other comparisons"
    # the household guards read the town level as one property
    assert TOWN_ADDRESS_LABEL in SAME_PROPERTY_LABELS


def test_guards_find_the_town_level_in_a_model() -> None:
    cols = ["tok_dob", "tok_address", "tok_address_town"]
    settings = SettingsCreator(link_type="dedupe_only", comparisons=build_comparisons(cols))
    df = pd.DataFrame({"unique_id": [1], **{c: ["x"] for c in cols}})
    model = Linker(DuckDBAPI().register(df), settings).misc.save_model_to_json()
    # same property (top), then the town level, then else
    assert level_gammas(model, "residence", SAME_PROPERTY_LABELS) == {1, 2}
