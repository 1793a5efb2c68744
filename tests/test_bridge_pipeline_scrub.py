"""Free-text scrubbing: a record's own identifiers get role placeholders, whatever the spelling."""

from __future__ import annotations

from datetime import date

import pytest

from ig_bridge.scrub import Scrubber, record_values, scrub_text

PERSONS = {
    "SUBJECT": {
        "given_name": "Olly",
        "family_name": "O'Brien",
        "date_of_birth": "04/03/2012",
        "date_of_birth_parsed": date(2012, 3, 4),
        "postcode": "LS1 4AB",
        "nhs_number": "943 476 5919",
        "address_line_1": "12 High Street",
    },
    "PARENT1": {"full_name": "BHLOE Walker", "phone": "07700 900123", "email": "b.w@example.org"},
}


@pytest.mark.parametrize(
    ("text", "gone", "placeholder"),
    [
        ("Oliver seen at school", "Oliver", "[SUBJECT_NAME]"),  # nickname lexicon
        ("O'Brien's mum called", "Brien", "[SUBJECT_NAME]"),  # possessive, apostrophe
        ("Chloe Walker attended", "Chloe", "[PARENT1_NAME]"),  # typo in the extract
        ("born 4th March 2012", "March", "[DOB]"),
        ("DOB 2012-03-04", "2012", "[DOB]"),
        ("call +44 (0)7700 900 123 now", "900", "[PHONE]"),
        ("NHS 9434765919", "9434765919", "[NHS_NUMBER]"),
        ("lives at 12 high street, LS14AB", "high street", "[ADDRESS]"),
        ("mail B.W@EXAMPLE.ORG", "EXAMPLE", "[EMAIL]"),
    ],
)
def test_own_identifiers_replaced(text: str, gone: str, placeholder: str) -> None:
    out = scrub_text(text, PERSONS)
    assert gone.lower() not in out.lower()
    assert placeholder in out


def test_other_people_named_in_notes_and_ordinary_words_kept() -> None:
    s = Scrubber()
    s.learn_names(["Zebedee Quantock"])  # someone on another row of the extract
    out = s.scrub("Zebedee visited; review in 4 weeks. Young person quiet.", record_values(PERSONS))
    assert "Zebedee" not in out and "[NAME]" in out
    assert "review in 4 weeks" in out and "Young person quiet" in out
