"""Flats, premises and the address key, from normalised address lines (ig_bridge.address_normalise).

Real exports put a flat in many places: its own column ("3", "Flat 3", "Apt 4B"), the start of
line 1 ("Flat 3, 12 High Street", "3/12 High St", "Apartment 4B Rose Court"), its end
("12 High Street Flat 3"), or line 1 alone with the street in line 2 ("Flat 3" / "12 High
Street"). The encoding spec's address token is flat + premises + area, so two flats of one
building never share a token (nor a household), while "12 High Street" and "12 High St"
(normalised alike) still do. Formats parsed are listed in docs/contracts.md ("Addresses").
"""

from __future__ import annotations

import re

# Words that introduce a unit inside a building (after normalise_address_line, which has
# already turned apartment / apt / appt into "flat").
_UNIT_WORDS = r"(?:flat|unit|room|rm|suite|maisonette|studio|bedsit|no)"
_ID = r"(?:[a-z]?\d+[a-z]?(?:/\d+[a-z]?)?|[a-z])"
# "flat 3", "flat no 3", "room 12b", "flat 3/2" anywhere in the line, as whole words.
_UNIT = re.compile(rf"(?:^|\s){_UNIT_WORDS}(?:\s+(?:no|number))?\s+({_ID})(?=\s|$)")
# "3/12 high street": flat 3 at number 12 (the flat first, as most English registers write it).
_SLASH = re.compile(r"^(\d+[a-z]?)/(\d+[a-z]?)(?=\s|$)")
# Floor flats: "ground floor flat", "first floor flat 12 ...", "gff", "basement flat".
_FLOORS = {
    "basement": "basement",
    "lower ground": "lower ground",
    "ground": "ground",
    "first": "first",
    "1st": "first",
    "second": "second",
    "2nd": "second",
    "third": "third",
    "3rd": "third",
    "top": "top",
    "upper": "upper",
}
_FLOOR = re.compile(
    r"(?:^|\s)(basement|lower ground|ground|first|1st|second|2nd|third|3rd|"
    r"top|upper)(?: floor)? (?:flat|maisonette)(?=\s|$)"
)
_FLOOR_ABBR = {"gff": "ground", "ff": "first", "sff": "second", "tff": "top", "bf": "basement"}
# A house number (or a range: "12-14" is "12 14" once normalised) followed by the street.
_NUMBERED = re.compile(r"(?:^|\s)(\d+[a-z]?(?:\s+\d+[a-z]?)*)\s+([a-z][a-z ]*\S)$")
_LEADING_ZEROS = re.compile(r"(?<![0-9])0+(?=\d)")


def flat_id(text: str) -> str:
    """'03' -> '3', '3A' -> '3a': one spelling per unit."""
    return _LEADING_ZEROS.sub("", text.strip().lower())


def normalise_flat(value: str | None) -> str | None:
    """A flat column, already normalised as an address line: 'flat 3' / 'apt 3' / '3' -> '3'."""
    if not value:
        return None
    flat, rest = split_flat(value)
    if flat:
        return flat
    words = value.split()
    if len(words) == 1 and re.fullmatch(_ID, words[0]):
        return flat_id(words[0])
    return " ".join(words) or None  # 'penthouse': kept as written, still tells flats apart


def split_flat(line: str | None) -> tuple[str | None, str | None]:
    """Normalised line -> (flat, the line without it)."""
    if not line:
        return None, None
    m = _SLASH.match(line)
    if m:
        return flat_id(m.group(1)), (m.group(2) + line[m.end() :]).strip() or None
    m = _FLOOR.search(line)  # before _UNIT: "ground floor flat 12 high street"
    if m:
        rest = (line[: m.start()] + " " + line[m.end() :]).strip()
        return _FLOORS[m.group(1)], " ".join(rest.split()) or None
    m = _UNIT.search(line)
    if m:
        rest = (line[: m.start()] + " " + line[m.end() :]).strip()
        return flat_id(m.group(1)), " ".join(rest.split()) or None
    first, _, tail = line.partition(" ")
    if first in _FLOOR_ABBR:
        return _FLOOR_ABBR[first], tail.strip() or None
    return None, line


def _numbered(text: str | None) -> tuple[str, str] | None:
    """'rose court 12 high street' -> ('12', 'high street'): the house number and street."""
    if not text:
        return None
    m = _NUMBERED.search(text)
    if not m:
        return None
    return "-".join(m.group(1).split()), m.group(2)


def address_key(
    line1: str | None, line2: str | None, flat_col: str | None
) -> tuple[str | None, str | None, str | None, str | None]:
    """Normalised line 1, line 2 and flat column -> (flat, house number, street, premises).

    The flat comes from its own column, else line 1, else line 2. The premises is the numbered
    street ('12 high street') found in line 1, else in line 2 (line 1 then held only a flat or
    a building name), else line 1 without its flat (a named house: 'rose cottage'), else line 2
    when line 1 held only a flat. Line 2 without a house number is otherwise a locality and
    stays out (one agency records it, another does not; with line 1 missing it would give
    every such record of a postcode one address)."""
    f1, rest1 = split_flat(line1)
    f2, rest2 = split_flat(line2)
    flat = flat_col or f1 or f2
    for text in (rest1, rest2):
        got = _numbered(text)
        if got:
            number, street = got
            return flat, number, street, f"{number} {street}"
    # Line 2 without a number stands in only for a line 1 that held just a flat ("Flat 3" /
    # "Rose Court"); with line 1 missing it is a locality, shared by a whole postcode.
    premises = rest1 or (rest2 if line1 else None)
    return flat, None, premises, premises
