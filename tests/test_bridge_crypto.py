"""Encoder: keyed tokens, blocking keys and Bloom encodings on real keys."""

import hashlib
import hmac

import numpy as np
import pandas as pd
import pytest

from ig_bridge.encoding import Encoder, EncodingSpecError, dice, load_encoding_spec
from ig_bridge.keys import LinkKey, generate_link_key
from ig_bridge.normalise import normalise_identifiers

FORMATS = ["%d/%m/%Y", "%Y-%m-%d"]
RAW = pd.DataFrame(
    {
        "given_name": ["Jonathon", "Jonathan", "Kate", "Katie", None],
        "family_name": ["Smith", "Smyth", "Patel", "Smith-Jones", "Smith"],
        "other_names": [None, None, None, None, "Jones"],
        "date_of_birth": ["03/04/2001", "2001-04-03", "04/03/2001", "12/12/2001", "2001-06-01"],
        "sex": ["M", "M", "F", "F", None],
        "postcode": ["SW1A 1AA", "sw1a1aa", "SW1A 1AB", "M1 1AE", None],
        "address_line_1": ["12 High St", "12 high street", "14 High Street", "1 Mill Road", None],
        "nhs_number": ["9434765919", None, None, None, None],
    }
)


@pytest.fixture(scope="module")
def key():
    return generate_link_key()


@pytest.fixture(scope="module")
def encoded(key):
    return Encoder(key).encode(normalise_identifiers(RAW, FORMATS).frame)


def test_columns_and_formats(encoded):
    spec = load_encoding_spec()
    assert list(encoded.columns) == [
        *spec["tokens"]["columns"],
        *spec["blocking"]["columns"],
        *spec["bloom"]["columns"],
        *spec["flags"]["columns"],
    ]
    for c in encoded.columns:
        for v in encoded[c]:
            if c.startswith("flag_"):
                assert isinstance(v, bool | np.bool_)  # never null: only a "yes" raises it
            elif c.startswith("bf_"):
                assert v is None or (isinstance(v, bytes) and len(v) == 64)
            elif isinstance(v, str):
                assert len(v) == 32 and int(v, 16) >= 0 and v == v.lower()
    assert encoded["tok_nhs_number"].isna().sum() == 4  # null when the value is missing
    assert encoded["bf_given_name"][4] is None


def test_token_is_truncated_hmac_of_hkdf_subkey(key, encoded):
    expected = hmac.new(key.subkey("nhs_number"), b"9434765919", hashlib.sha256).hexdigest()[:32]
    assert encoded["tok_nhs_number"][0] == expected


def test_determinism_and_key_dependence(key, encoded):
    frame = normalise_identifiers(RAW, FORMATS).frame
    again = Encoder(LinkKey(key.version, key.secret)).encode(frame)
    pd.testing.assert_frame_equal(encoded, again)
    other = Encoder(generate_link_key()).encode(frame)
    assert (other["tok_dob"].dropna() != encoded["tok_dob"].dropna()).all()
    rotated = Encoder(LinkKey(key.version + 1, key.secret)).encode(frame)
    assert rotated["tok_dob"][0] != encoded["tok_dob"][0]  # version is in the HKDF info


def test_matching_semantics(encoded):
    e = encoded
    assert e.tok_dob[0] == e.tok_dob[1]  # same DOB in two formats
    assert e.tok_dob_swapped[2] == e.tok_dob[0]  # day/month swapped entry is recoverable
    assert e.tok_given_name[0] != e.tok_given_name[1]
    # jonathon smith / jonathan smyth: canonical forenames agree, the surnames' phonetic
    # codes do not (NYSIIS SNAT / SNYT), and the canonical token carries that code
    assert e.tok_given_name_canonical[0] != e.tok_given_name_canonical[1]
    # kate patel / katie smith-jones: the canonical token carries the surname's sound too
    assert e.tok_given_name_canonical[2] != e.tok_given_name_canonical[3]
    assert e.tok_address[0] == e.tok_address[1]
    assert e.blk_dob_postcode_sector[0] == e.blk_dob_postcode_sector[1]
    assert pd.isna(e.blk_given_phonetic_dob[4])  # null if any part is missing
    assert e.blk_given_phonetic_dob[0] == e.blk_given_phonetic_dob[1]


def test_previous_surnames_and_name_parts_meet_the_family_name_of_the_same_dob(key):
    """Salted with the full DOB (spec v3): a previous surname or a part of a double-barrelled
    name compares with the family name of a record with the same DOB, and with no other."""
    frame = normalise_identifiers(
        pd.DataFrame(
            {
                "given_name": ["Amy"] * 4,
                "family_name": ["Smith-Jones", "Smith", "Brown", "Jones"],
                "other_names": [None, None, "Jones", None],
                "date_of_birth": ["2012-12-12", "2012-12-12", "2012-12-12", "2012-12-13"],
            }
        ),
        FORMATS,
    ).frame
    e = Encoder(key).encode(frame)
    assert e.tok_family_name_first[0] == e.tok_family_name[1]  # smith-jones part = smith
    assert e.tok_other_name_first[2] == e.tok_family_name_last[0]  # same key domain: jones
    assert e.tok_other_name_first[2] != e.tok_family_name[3]  # jones, another DOB
    assert e.blk_family_phonetic_dob[0] != e.blk_family_phonetic_dob[3]  # another DOB


def test_bloom_dice_tracks_similarity(key):
    frame = normalise_identifiers(
        pd.DataFrame(
            {
                "given_name": [
                    "jonathon",
                    "jonathan",
                    "smith",
                    "patel",
                    "christopher",
                    "kristopher",
                ],
                "family_name": ["smith", "patel", "smith", "patel", "smith", "smith"],
                "date_of_birth": ["2001-01-01"] * 6,
            }
        ),
        FORMATS,
    ).frame
    bf = Encoder(key).encode(frame)["bf_given_name"]
    assert dice(bf[0], bf[1]) > 0.7
    assert dice(bf[2], bf[3]) < 0.3
    assert dice(bf[4], bf[5]) > dice(bf[0], bf[2])
    assert dice(bf[0], bf[0]) == 1.0 and dice(bf[0], None) is None
    # A different key gives unrelated patterns for the same name.
    other = Encoder(generate_link_key()).encode(frame)["bf_given_name"]
    assert dice(bf[0], other[0]) < 0.5


def test_spec_v3_holds_no_low_entropy_standalone_token():
    """Frequency alignment decodes any token of a value with few possible values (issue 16:
    tok_sex 100%, tok_given_name 48.6%, tok_postcode_district 59.6% under spec v2)."""
    spec = load_encoding_spec()
    assert spec["encoding_spec_version"] >= 3
    tokens = spec["tokens"]["columns"]
    for gone in (
        "tok_sex",
        "tok_dob_year",
        "tok_dob_month",
        "tok_dob_day",
        "tok_postcode",
        "tok_postcode_sector",
        "tok_postcode_district",
    ):
        assert gone not in tokens
    for name, col in tokens.items():
        sources = col.get("sources") or [col["source"]]
        if col["domain"] in (
            "given_name",
            "family_name",
            "given_name_phonetic",
            "family_name_phonetic",
        ):
            # names only ever salted with the birth year (an estimate's years around it) or a
            # finer part of the DOB
            assert {"dob_year", "dob_iso"} & set(sources) or any(
                s.startswith("dob_year_estimated_") for s in sources
            ), name
    for name, col in spec["bloom"]["columns"].items():
        salt = col.get("salt")
        assert col.get("salt_required"), name
        assert salt in ("dob_year", "dob_ym") or salt == ["postcode", "dob_year"], name


def test_names_are_salted_with_the_birth_year(key):
    frame = normalise_identifiers(
        pd.DataFrame(
            {
                "given_name": ["olivia", "olivia", "olivia", "olivia"],
                "family_name": ["smith", "smith", "smith", "smith"],
                "date_of_birth": ["2015-01-01", "2015-11-30", "2016-01-01", None],
                "sex": ["F"] * 4,
            }
        ),
        FORMATS,
    ).frame
    e = Encoder(key).encode(frame)
    # Same name and birth year: the name still compares exactly (canonical, phonetic, family)
    # (and by Bloom similarity within the birth month: bf_given_name, bf_family_name).
    assert e.tok_given_name_canonical[0] == e.tok_given_name_canonical[1]
    assert e.tok_given_name_phonetic[0] == e.tok_given_name_phonetic[1]
    # Another birth year: unrelated token and unrelated filter, so the hub cannot count names.
    assert e.tok_given_name_canonical[0] != e.tok_given_name_canonical[2]
    assert dice(e.bf_family_name[0], e.bf_family_name[2]) < 0.5
    # The exact-name tokens are salted with the full DOB, bf_given_name (given names repeat
    # most) and bf_family_name (common surnames repeated per birth year) with birth year and month.
    assert e.tok_given_name[0] != e.tok_given_name[1]
    assert e.tok_family_name[0] != e.tok_family_name[1]
    assert dice(e.bf_given_name[0], e.bf_given_name[1]) < 0.5
    assert dice(e.bf_family_name[0], e.bf_family_name[1]) < 0.5
    again = Encoder(key).encode(
        frame.assign(date_of_birth=frame["date_of_birth"].iloc[[0] * 4].to_numpy())
    )
    assert again.bf_given_name[0] == again.bf_given_name[1]
    assert again.bf_family_name[0] == again.bf_family_name[1]
    assert again.tok_given_name[0] == again.tok_given_name[1]
    assert again.tok_family_name[0] == again.tok_family_name[1]
    # No birth year, no name encoding (an unsalted one would repeat across people).
    assert (
        pd.isna(e.tok_given_name[3]) and e.bf_given_name[3] is None and e.bf_family_name[3] is None
    )


def test_forename_variants_carry_the_surname_sound_and_surnames_a_forename_letter(key):
    """Issue 16: the canonical / phonetic forename tokens carry the phonetic surname and the
    birth year (third amendment), so they agree across a DOB error in the same year and are
    the hub's surname-sound level too; the exact surname tokens and the surname-sound + DOB
    key carry the canonical forename's initial (eighth amendment: same-DOB people of one
    surname rarely share a value, so records' links cannot chain families together)."""
    frame = normalise_identifiers(
        pd.DataFrame(
            {
                "given_name": ["Kate", "Katie", "Katie", "Amy", "Kate", "Iatie"],
                "family_name": ["Smith", "Smithe", "Jones", "Smith", "Smith", "Smith"],
                "date_of_birth": [
                    "2012-03-04",
                    "2012-11-30",
                    "2012-03-04",
                    "2012-03-04",
                    None,
                    "2012-03-04",
                ],
                "sex": ["F", "F", "F", "F", "F", "F"],
            }
        ),
        FORMATS,
    ).frame
    e = Encoder(key).encode(frame)
    assert "tok_family_name_phonetic" not in e  # shared by unrelated people: chained
    # kate/katie, smith/smithe (same sound), another month: the forename levels still agree
    assert e.tok_given_name_canonical[0] == e.tok_given_name_canonical[1]
    # the same forename with another surname sound: another token
    assert e.tok_given_name_canonical[1] != e.tok_given_name_canonical[2]
    assert e.tok_given_name_phonetic[1] != e.tok_given_name_phonetic[2]
    # one surname and DOB: kate and amy do not share the surname token or key
    assert e.tok_family_name[0] != e.tok_family_name[3]
    assert e.blk_family_phonetic_dob[0] != e.blk_family_phonetic_dob[3]
    # a typo in the forename's first letter (kate / iatie) still meets on its last letter
    assert e.blk_family_phonetic_dob[0] != e.blk_family_phonetic_dob[5]
    assert e.blk_family_phonetic_dob_final[0] == e.blk_family_phonetic_dob_final[5]
    # no birth year: no forename token (it would repeat across people)
    assert pd.isna(e.tok_given_name_canonical[4]) and pd.isna(e.tok_family_name[4])


def test_address_bloom_is_salted_by_postcode_and_birth_year(key):
    frame = normalise_identifiers(
        pd.DataFrame(
            {
                "address_line_1": ["12 High Street"] * 3 + ["12 high street"] * 3,
                "postcode": ["SW1A 1AA", "SW1A 2BB", "M1 1AE", "sw1a1aa", "SW1A 1AA", "SW1A 1AA"],
                "date_of_birth": ["2010-01-01"] * 4 + ["2011-01-01", None],
            }
        ),
        FORMATS,
    ).frame
    bf = Encoder(key).encode(frame)["bf_address"]
    assert bf[0] == bf[3]  # same postcode (however written): identical after normalisation
    assert dice(bf[0], bf[1]) < 0.5  # same street text in another postcode: unrelated pattern
    assert dice(bf[0], bf[2]) < 0.5
    assert dice(bf[0], bf[4]) < 0.5  # same address, another birth year: unrelated pattern
    assert bf[5] is None  # no birth year, no filter (an unsalted one repeats per household)


def test_spec_validation():
    spec = load_encoding_spec()
    bad = {
        **spec,
        "bloom": {"columns": {"bf_x": {"sources": ["given_name"], "q": 2, "bits": 1000, "k": 8}}},
    }
    with pytest.raises(EncodingSpecError, match="power of two"):
        Encoder(generate_link_key(), bad)
    bad = {**spec, "tokens": {"columns": {"tok_x": {"source": "case_notes"}}}}
    with pytest.raises(EncodingSpecError, match="unknown source"):
        Encoder(generate_link_key(), bad)


def test_all_null_columns_keep_their_type(key):
    import pyarrow as pa

    enc = Encoder(key)
    out = enc.encode(normalise_identifiers(pd.DataFrame({"given_name": ["amy"]}), FORMATS).frame)
    table = pa.Table.from_pandas(out, schema=pa.schema(enc.arrow_fields()), preserve_index=False)
    assert table.schema.field("tok_upn").type == pa.string()
    assert table.schema.field("bf_address").type == pa.binary()
