"""Normalise identifier fields at the agency, before anything is encoded.

Every field normaliser is a pure `str -> (value..., reason)` function applied once per *distinct*
value (`pd.factorize`) and broadcast back: identifier columns repeat a lot (names, postcodes,
dates), so a 1M-row extract costs one Python call per distinct value, not per row.

Problems are reported as `(row_index, field, reason)`; a reason never contains the value.

Why not `recordlinkage.preprocessing.clean`: under pandas >= 2 it passes regexes to
`Series.str.replace` without `regex=True`, so they are treated as literals and nothing is
cleaned. Phonetic codes use jellyfish's NYSIIS directly (what recordlinkage wraps).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from importlib import resources

import jellyfish
import numpy as np
import pandas as pd
import yaml

from ig_bridge.address import address_key, normalise_flat

# Dates live in ig_bridge.dates (re-exported: the mapping's formats, partial and swapped dates).
from ig_bridge.dates import (  # noqa: F401
    DEFAULT_DATE_FORMATS,
    EARLIEST_DOB,
    PARTIAL_YEAR,
    PARTIAL_YM,
    SWAPPED,
    ParsedDates,
    _as_text,
    _obj_array,
    parse_dates,
    parse_dates_partial,
)
from ig_bridge.placeholders import is_placeholder

# ---------------------------------------------------------------------------------------------
# Text folding

# Letters NFKD does not decompose into base + combining mark.
_FOLD_MAP = str.maketrans(
    {
        "Ł": "L",
        "ł": "l",
        "Ø": "O",
        "ø": "o",
        "ß": "ss",
        "ẞ": "SS",
        "Æ": "AE",
        "æ": "ae",
        "Œ": "OE",
        "œ": "oe",
        "Đ": "D",
        "đ": "d",
        "Ð": "D",
        "ð": "d",
        "Þ": "TH",
        "þ": "th",
        "ı": "i",
        "Ħ": "H",
        "ħ": "h",
        "Ŀ": "L",
        "ŀ": "l",
        "Ŧ": "T",
        "ŧ": "t",
        "ĸ": "k",
        "’": "'",
        "‘": "'",
        "ʼ": "'",
        "`": "'",
        "´": "'",
        "′": "'",
    }
)


def _fold_once(text: str) -> str:
    text = unicodedata.normalize("NFKD", text.translate(_FOLD_MAP))
    return "".join(ch for ch in text if not unicodedata.combining(ch)).lower()


def fold(text: str) -> str:
    """Unicode-fold to lower-case without accents (Zoë -> zoe, Łukasz -> lukasz).

    Iterated to a fixed point because lower-casing can create new decomposable characters.
    """
    if text.isascii():  # fast path: NFKD and lower() of ASCII stay ASCII, nothing combines
        return text.translate(_FOLD_MAP).lower()
    for _ in range(4):
        folded = _fold_once(text)
        if folded == text:
            break
        text = folded
    return text


_APOSTROPHE = re.compile(r"'")
# Per-value patterns compiled once (re's own cache lookup showed in the 1M-row profile).
_NOT_ALNUM_UPPER = re.compile(r"[^A-Z0-9]")
_AREA = re.compile(r"[A-Z]+")
_NHS_SEP = re.compile(r"[\s\-.]")
_TEN_DIGITS = re.compile(r"\d{10}")
_SPACE = re.compile(r"\s")
_FLOAT_TAIL = re.compile(r"\.0+$")
_UPRN_DIGITS = re.compile(r"\d{1,12}")
_UPN_SEP = re.compile(r"[\s\-]")
_PHONE_ZERO = re.compile(r"\(0\)")
_PHONE_EXT = re.compile(r"(?:ext|extn|x)\.?\s*\d+$")
_NON_DIGIT = re.compile(r"\D")
_UK_PHONE = re.compile(r"0[1-9]\d{8,9}")
_SLASH_FLAT = re.compile(r"(\d)\s*/\s*(\d)")
_ADDR_NON_WORD = re.compile(r"[^\w/]+|_")
_NUM_LETTER = re.compile(r"\b(\d+) ([a-z])\b(?= [a-z]{2,})")
_NON_LETTER = re.compile(r"[\W\d_]+")
_NON_WORD = re.compile(r"[\W_]+")

TITLES = frozenset(
    {
        "mr",
        "mrs",
        "ms",
        "miss",
        "mx",
        "master",
        "dr",
        "doctor",
        "prof",
        "professor",
        "rev",
        "revd",
        "reverend",
        "fr",
        "father",
        "sr",
        "sister",
        "sir",
        "dame",
        "lady",
        "lord",
        "hon",
        "capt",
        "captain",
        "sgt",
        "cllr",
        "mstr",
    }
)
SUFFIXES = frozenset({"jr", "jnr", "junior", "snr", "senior", "ii", "iii", "iv", "obe", "mbe"})
# Surname particles stay attached to the following token: "van der berg" is one part.
PARTICLES = frozenset(
    {
        "van",
        "von",
        "der",
        "den",
        "de",
        "del",
        "della",
        "la",
        "le",
        "da",
        "di",
        "du",
        "dos",
        "das",
        "ter",
        "ten",
        "bin",
        "bint",
        "ibn",
        "al",
        "el",
        "ap",
        "st",
        "mac",
        "abu",
    }
)
PLACEHOLDERS = frozenset(
    {
        "",
        "null",
        "none",
        "nil",
        "n a",
        "unknown",
        "not known",
        "notknown",
        "unk",
        "tba",
        "tbc",
        "x",
        "xx",
        "xxx",
        "zz",
        "zzz",
        "nk",
        "not stated",
        "not given",
        "refused",
        "baby",
        "infant",
        "unborn",
    }
)


def _name_text(value: str) -> str:
    text = _NON_LETTER.sub(" ", _APOSTROPHE.sub("", fold(value))).strip()
    return " ".join(text.split())


def normalise_name_value(value: str) -> str | None:
    """Fold, drop apostrophes (O'Brien -> obrien), other non-letters to single spaces; None
    for a placeholder (schemas/placeholder_names.yaml: "baby", "the occupier", "xxx")."""
    text = _name_text(value)
    return None if text in PLACEHOLDERS or is_placeholder(text) else text


def is_placeholder_name(value: str) -> bool:
    """A raw name value that is a placeholder in the partnership's list (reported, not just
    missing)."""
    return is_placeholder(_name_text(value))


def _ph(text: str | None) -> str | None:
    """None for empty or placeholder output (keeps every name output idempotent)."""
    return None if not text or text in PLACEHOLDERS or is_placeholder(text) else text


def _strip_affixes(tokens: list[str], titles: bool = True, suffixes: bool = True) -> list[str]:
    # Keep at least one token: a name that is only "Miss" stays "miss" (idempotent, no guess).
    while titles and len(tokens) > 1 and tokens[0] in TITLES:
        tokens = tokens[1:]
    while suffixes and len(tokens) > 1 and tokens[-1] in SUFFIXES:
        tokens = tokens[:-1]
    return tokens


def family_name_parts(tokens: Sequence[str]) -> list[str]:
    """Parts of a (hyphenated / double-barrelled) surname, particles joined to the next token."""
    parts: list[str] = []
    pending: list[str] = []
    for tok in tokens:
        pending.append(tok)
        if tok not in PARTICLES:
            parts.append(" ".join(pending))
            pending = []
    if pending:
        if parts:
            parts[-1] = parts[-1] + " " + " ".join(pending)
        else:
            parts.append(" ".join(pending))
    return parts


def _norm_given(value: str) -> tuple[str | None, str | None]:
    """Given-name column -> (first given name, further given names)."""
    text = normalise_name_value(value)
    if not text:
        return None, None
    tokens = _strip_affixes(text.split(), suffixes=False)
    return _ph(tokens[0]), _ph(" ".join(tokens[1:]))


def _norm_family(value: str) -> tuple[str | None, tuple[str, ...] | None]:
    text = normalise_name_value(value)
    if not text:
        return None, None
    tokens = _strip_affixes(text.split(), titles=False)
    return " ".join(tokens), tuple(family_name_parts(tokens))


def split_full_name(value: str) -> tuple[str | None, str | None, str | None]:
    """'Mr John Paul SMITH-Jones', 'Smith, John Paul', 'SMITH John' -> (given, middle, family).

    Whitespace separates name words; a hyphenated word stays one surname ('smith jones').
    """
    raw = value.strip()
    if is_placeholder_name(raw):  # "The Occupier", "Baby of Jane Smith": nobody's name
        return None, None, None
    if "," in raw:
        fam_raw, _, rest = raw.partition(",")
        family, given_all = normalise_name_value(fam_raw), normalise_name_value(rest)
        fam_tokens = _strip_affixes(family.split(), titles=False) if family else []
        giv_tokens = _strip_affixes(given_all.split(), suffixes=False) if given_all else []
        return (
            _ph(giv_tokens[0] if giv_tokens else None),
            _ph(" ".join(giv_tokens[1:])),
            _ph(" ".join(fam_tokens)),
        )
    raw_words = [w for w in raw.split() if any(c.isalpha() for c in w)]
    groups = [g for g in (normalise_name_value(w) for w in raw_words) if g]
    words = [
        w for w, g in zip(raw_words, (normalise_name_value(w) for w in raw_words), strict=True) if g
    ]
    while len(groups) > 1 and groups[0] in TITLES:
        groups, words = groups[1:], words[1:]
    while len(groups) > 1 and groups[-1] in SUFFIXES:
        groups, words = groups[:-1], words[:-1]
    if not groups:
        return None, None, None
    if len(groups) == 1:
        return None, None, _ph(groups[0])
    # NHS / police convention: surname first in capitals ("SMITH John").
    if words[0].isupper() and len(words[0]) > 1 and not all(w.isupper() for w in words[1:]):
        fam_groups, giv_groups = groups[:1], groups[1:]
    else:
        # Surname = last word plus any particles immediately before it (van der Berg).
        cut = len(groups) - 1
        while cut > 1 and groups[cut - 1] in PARTICLES:
            cut -= 1
        fam_groups, giv_groups = groups[cut:], groups[:cut]
    giv_tokens = " ".join(giv_groups).split()
    return (
        _ph(giv_tokens[0] if giv_tokens else None),
        _ph(" ".join(giv_tokens[1:])),
        _ph(" ".join(fam_groups)),
    )


def phonetic(value: str | None) -> str | None:
    """NYSIIS code of a normalised name (spaces removed); None for non-Latin or empty."""
    if not value:
        return None
    compact = value.replace(" ", "")
    if not compact.isascii() or not compact.isalpha():
        return None
    return jellyfish.nysiis(compact) or None


# ---------------------------------------------------------------------------------------------
PLACEHOLDER_NAME = "placeholder name (schemas/placeholder_names.yaml): nulled, row kept"


# Postcodes, numbers, contact details

_POSTCODE = re.compile(r"^([A-Z]{1,2}[0-9][A-Z0-9]?)([0-9][ABD-HJLNP-UW-Z]{2})$")


def normalise_postcode(
    value: str,
) -> tuple[str | None, str | None, str | None, str | None, str | None, bool, str | None]:
    """-> (postcode 'SW1A 1AA', outward 'SW1A', district 'SW1', sector 'SW1A 1', area 'SW',
    valid, reason). District drops a London sub-district letter (SW1A -> SW1)."""
    compact = _NOT_ALNUM_UPPER.sub("", fold(value).upper())
    if not compact:
        return None, None, None, None, None, False, None
    if compact == "GIR0AA":
        return "GIR 0AA", "GIR", "GIR", "GIR 0", "GIR", True, None
    m = _POSTCODE.match(compact)
    if not m:
        # Common keying slip: letter O for zero as the inward digit.
        if len(compact) >= 5 and compact[-3] == "O":
            m = _POSTCODE.match(compact[:-3] + "0" + compact[-2:])
        if not m:
            return compact, None, None, None, None, False, "invalid UK postcode format"
    outward, inward = m.group(1), m.group(2)
    if outward == "ZZ99":  # NHS pseudo-postcode (no fixed abode, abroad): not a place
        return None, None, None, None, None, False, "pseudo-postcode ZZ99 (no fixed abode)"
    district = outward[:-1] if len(outward) >= 3 and outward[-1].isalpha() else outward
    area = _AREA.match(outward).group(0)  # type: ignore[union-attr]
    return f"{outward} {inward}", outward, district, f"{outward} {inward[0]}", area, True, None


def nhs_check_digit(body9: str) -> int | None:
    """Mod-11 check digit of the first nine digits; None when the body cannot be valid."""
    total = sum(int(d) * w for d, w in zip(body9, range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 11:
        return 0
    return None if check == 10 else check


def normalise_nhs_number(value: str) -> tuple[str | None, str | None]:
    digits = _NHS_SEP.sub("", value)
    if not digits:
        return None, None
    if not _TEN_DIGITS.fullmatch(digits):
        return None, "nhs_number is not 10 digits"
    if len(set(digits)) == 1:
        return None, "nhs_number is a placeholder"
    if nhs_check_digit(digits[:9]) != int(digits[9]):
        return None, "nhs_number fails the mod-11 check digit"
    return digits, None


def normalise_uprn(value: str) -> tuple[str | None, str | None]:
    text = _SPACE.sub("", value)
    text = _FLOAT_TAIL.sub("", text)  # spreadsheet float artefact: 1000123.0
    if not text:
        return None, None
    if not _UPRN_DIGITS.fullmatch(text) or int(text) == 0:
        return None, "uprn is not 1-12 digits"
    return str(int(text)), None


UPN_CHECK_LETTERS = "ABCDEFGHJKLMNPQRTUVWXYZ"


def upn_check_letter(body12: str) -> str:
    """DfE UPN check letter: weights 2..13 over characters 2-13, mod 23. A temporary UPN's
    final letter counts as its position in the check-letter alphabet."""
    values = [int(c) if c.isdigit() else UPN_CHECK_LETTERS.index(c) for c in body12]
    return UPN_CHECK_LETTERS[sum(v * w for v, w in zip(values, range(2, 14), strict=True)) % 23]


def normalise_upn(value: str) -> tuple[str | None, str | None]:
    text = _UPN_SEP.sub("", fold(value).upper())
    if not text:
        return None, None
    if not re.fullmatch(rf"[{UPN_CHECK_LETTERS}]\d{{11}}[0-9{UPN_CHECK_LETTERS}]", text):
        return None, "upn is not a check letter + 11 digits + digit/letter (13 chars)"
    if upn_check_letter(text[1:]) != text[0]:
        return None, "upn check letter mismatch"
    return text, None


def normalise_phone(value: str) -> tuple[str | None, str | None]:
    """UK numbers -> '0' + 10 digits; other countries -> '+' + digits (E.164 without spaces)."""
    text = _PHONE_ZERO.sub("", fold(value))
    text = _PHONE_EXT.sub("", text).strip()
    plus = text.startswith("+") or text.startswith("00")
    digits = _NON_DIGIT.sub("", text)
    if not digits:
        return None, None
    if plus:
        digits = digits[2:] if text.startswith("00") else digits
        if digits.startswith("44"):
            digits = "0" + digits[2:]
        elif 7 <= len(digits) <= 15:
            return "+" + digits, None
        else:
            return None, "phone is not a valid international number"
    elif len(digits) == 10 and digits[0] in "123578":
        digits = "0" + digits  # leading zero lost in a spreadsheet
    if _UK_PHONE.fullmatch(digits):
        if len(set(digits[1:])) == 1 or digits[1:] in ("1234567890", "123456789"):
            return None, "phone is a placeholder"
        return digits, None
    return None, "phone is not a valid UK number"


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")
_EMAIL_PLACEHOLDERS = frozenset(
    {
        "none",
        "noemail",
        "no.email",
        "no-email",
        "no_email",
        "unknown",
        "na",
        "n.a",
        "nil",
        "null",
        "test",
        "x",
        "xx",
        "xxx",
        "notknown",
        "not.known",
        "donotuse",
        "noreply",
    }
)


def normalise_email(value: str) -> tuple[str | None, str | None]:
    text = value.strip().strip("<>").strip().lower()
    if text.startswith("mailto:"):
        text = text[7:]
    if not text:
        return None, None
    if not _EMAIL.match(text):
        return None, "email is not a valid address"
    if text.split("@")[0] in _EMAIL_PLACEHOLDERS:
        return None, "email is a placeholder"
    return text, None


_SEX = {
    "m": "M",
    "male": "M",
    "man": "M",
    "boy": "M",
    "1": "M",
    "f": "F",
    "female": "F",
    "woman": "F",
    "girl": "F",
    "2": "F",
    "u": "U",
    "unknown": "U",
    "not known": "U",
    "not specified": "U",
    "0": "U",
    "9": "U",
    "x": "U",
    "other": "U",
    "i": "U",
    "indeterminate": "U",
    "n": "U",
    "not stated": "U",
}


def normalise_sex(value: str) -> tuple[str | None, str | None]:
    text = " ".join(_NON_WORD.sub(" ", fold(value)).split())
    if not text:
        return None, None
    sex = _SEX.get(text)
    return (sex, None) if sex else (None, "unrecognised sex value")


_BOOL = {
    "y": True,
    "yes": True,
    "true": True,
    "t": True,
    "1": True,
    "n": False,
    "no": False,
    "false": False,
    "f": False,
    "0": False,
}


def normalise_bool(value: str) -> tuple[bool | None, str | None]:
    text = fold(value).strip()
    if not text:
        return None, None
    got = _BOOL.get(text)
    return (got, None) if got is not None else (None, "not a yes/no value")


_RELATIONSHIP = {
    "mother": "mother",
    "mum": "mother",
    "mom": "mother",
    "birth mother": "mother",
    "father": "father",
    "dad": "father",
    "birth father": "father",
    "parent": "parent",
    "step parent": "step_parent",
    "stepparent": "step_parent",
    "step mother": "step_parent",
    "stepmother": "step_parent",
    "step father": "step_parent",
    "stepfather": "step_parent",
    "carer": "carer",
    "foster carer": "carer",
    "kinship carer": "carer",
    "guardian": "guardian",
    "special guardian": "guardian",
    "legal guardian": "guardian",
    "grandparent": "grandparent",
    "grandmother": "grandparent",
    "grandfather": "grandparent",
    "gran": "grandparent",
    "grandma": "grandparent",
    "grandad": "grandparent",
    "sibling": "sibling",
    "brother": "sibling",
    "sister": "sibling",
    "half brother": "sibling",
    "half sister": "sibling",
    "partner": "partner",
    "husband": "partner",
    "wife": "partner",
    "spouse": "partner",
    "boyfriend": "partner",
    "girlfriend": "partner",
    "household member": "household_member",
    "lodger": "household_member",
    "child": "child",
    "son": "child",
    "daughter": "child",
}


def normalise_relationship(value: str) -> tuple[str | None, str | None]:
    text = " ".join(_NON_WORD.sub(" ", fold(value)).split())
    if not text:
        return None, None
    rel = _RELATIONSHIP.get(text)
    return (rel, None) if rel else (None, "unrecognised relationship")


# ---------------------------------------------------------------------------------------------
# Addresses

ADDRESS_ABBREVIATIONS = {
    "rd": "road",
    "ave": "avenue",
    "av": "avenue",
    "ln": "lane",
    "cres": "crescent",
    "cresc": "crescent",
    "cl": "close",
    "ct": "court",
    "crt": "court",
    "dr": "drive",
    "drv": "drive",
    "gdns": "gardens",
    "gdn": "garden",
    "gr": "grove",
    "gro": "grove",
    "grv": "grove",
    "pl": "place",
    "sq": "square",
    "terr": "terrace",
    "ter": "terrace",
    "tce": "terrace",
    "pk": "park",
    "hse": "house",
    "ho": "house",
    "apt": "flat",
    "apartment": "flat",
    "appt": "flat",
    "hts": "heights",
    "mt": "mount",
    "pde": "parade",
    "wy": "way",
    "wk": "walk",
    "bldgs": "buildings",
    "cott": "cottage",
    "cotts": "cottages",
    "est": "estate",
    "ind": "industrial",
    "nth": "north",
    "sth": "south",
    "upr": "upper",
    "lwr": "lower",
    "gt": "great",
    "mkt": "market",
    "hwy": "highway",
    "bvd": "boulevard",
    "blvd": "boulevard",
    "clo": "close",
    "mews": "mews",
    "rdg": "ridge",
    "vw": "view",
}
_POSTCODE_TAIL = re.compile(r"\s*\b([a-z]{1,2}\d[a-z\d]?)\s*(\d[a-z]{2})\s*$")


def normalise_address_line(value: str) -> str | None:
    text = _APOSTROPHE.sub("", fold(value))
    text = text.replace("&", " and ")
    text = _SLASH_FLAT.sub(r"\1/\2", text)  # '3 / 2' tenement flats keep the slash
    text = _ADDR_NON_WORD.sub(" ", text)
    tokens = text.split()
    out: list[str] = []
    for i, tok in enumerate(tokens):
        if tok == "st":
            nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
            # "St Mary's Road" -> saint; "High St" -> street.
            starts_name = not out or out[-1][0].isdigit()
            tok = "saint" if nxt.isalpha() and starts_name else "street"
        else:
            tok = ADDRESS_ABBREVIATIONS.get(tok, tok)
        out.append(tok)
    # "12 a" -> "12a"
    joined = _NUM_LETTER.sub(r"\1\2", " ".join(out))
    return None if joined in PLACEHOLDERS else (joined or None)


def _norm_whole_address(value: str) -> tuple[str | None, str | None, str | None, str | None]:
    """Whole-address column -> (normalised address without postcode, line 1, postcode text,
    line 2: the segment after line 1)."""
    segments = [s for s in (seg.strip() for seg in re.split(r"[,\n;]", value)) if s]
    norm = [n for n in (normalise_address_line(s) for s in segments) if n]
    postcode = None
    if norm:
        m = _POSTCODE_TAIL.search(norm[-1])
        if m:
            postcode = m.group(1) + m.group(2)
            norm[-1] = norm[-1][: m.start()].strip()
            norm = [n for n in norm if n]
    if not norm:
        return None, None, postcode, None
    line1, used = norm[0], 1
    # "12, High Street" / "Flat 3, 12 High Street": the first segment alone is not a street.
    if len(norm) > 1 and re.fullmatch(r"(?:flat \w+|\d+[a-z]?|\d+/\d+)", line1):
        line1, used = f"{line1} {norm[1]}", 2
    line2 = norm[used] if len(norm) > used else None
    return " ".join(norm), line1, postcode, line2


# ---------------------------------------------------------------------------------------------
# Frame-level entry point


@lru_cache(maxsize=1)
def identifier_fields() -> tuple[str, ...]:
    """Canonical identifier field names, from schemas/canonical_fields.yaml."""
    text = resources.files("schemas").joinpath("canonical_fields.yaml").read_text("utf-8")
    return tuple(yaml.safe_load(text)["identifier_fields"])


@lru_cache(maxsize=1)
def canonical_version() -> int:
    text = resources.files("schemas").joinpath("canonical_fields.yaml").read_text("utf-8")
    return int(yaml.safe_load(text)["version"])


NORMALISED_COLUMNS: tuple[str, ...] = (
    "record_id",
    "title",
    "given_name",
    "given_name_canonical",
    "given_name_phonetic",
    "middle_names",
    "family_name",
    "family_name_parts",
    "family_name_phonetic",
    "other_names",
    "other_names_parts",
    "date_of_birth",
    "dob_year",
    "dob_month",
    "dob_day",
    "dob_is_estimated",
    "sex",
    "address_line_1",
    "address_line_2",
    "town",
    "address",
    "address_flat",
    "address_house_number",
    "address_street",
    "address_premises",
    "postcode",
    "postcode_outward",
    "postcode_district",
    "postcode_sector",
    "postcode_area",
    "postcode_valid",
    "uprn",
    "nhs_number",
    "upn",
    "phone",
    "email",
    "relationship",
)


@dataclass
class NormalisedFrame:
    """Normalised identifiers (columns NORMALISED_COLUMNS, index of the raw frame) and
    field-level problems `(row_index, field, reason)`; reasons never contain values.
    `nulled`: values set aside on purpose and reported, never a reason to refuse the row
    (placeholder names), same shape."""

    frame: pd.DataFrame
    problems: list[tuple[Hashable, str, str]]
    nulled: list[tuple[Hashable, str, str]] = field(default_factory=list)

    def problems_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.problems, columns=["row_index", "field", "reason"])

    def rows_with_problems(self, fields: Sequence[str] | None = None) -> pd.Index:
        rows = {r for r, f, _ in self.problems if fields is None or f in fields}
        return pd.Index([i for i in self.frame.index if i in rows])


# Results of the pure per-value normalisers, kept across chunks of one extract (names, towns,
# postcodes repeat from chunk to chunk). Bounded: cleared when it grows past _MEMO_MAX entries,
# so memory does not grow with the extract.
_MEMO: dict[str, dict[str, tuple]] = {}
_MEMO_MAX = 20_000


def _per_unique(
    series: pd.Series | None,
    index: pd.Index,
    fn: Callable[[str], tuple],
    width: int,
    memo: str | None = None,
) -> list[np.ndarray]:
    """Apply fn once per distinct non-null value; returns `width` object arrays aligned to index.

    `memo` names a cache for fn's results across calls; only for pure fns of the value alone.
    """
    if series is None:
        return [np.full(len(index), None, dtype=object) for _ in range(width)]
    text = _as_text(series)
    codes, uniques = pd.factorize(text, use_na_sentinel=True)
    if memo is None:
        results = [fn(u) for u in uniques]
    else:
        cache = _MEMO.setdefault(memo, {})
        if len(cache) > _MEMO_MAX:
            cache.clear()
        results = []
        for u in uniques:
            r = cache.get(u)
            if r is None:
                r = cache[u] = fn(u)
            results.append(r)
    out = []
    for j in range(width):
        col = np.empty(len(uniques) + 1, dtype=object)
        for i, r in enumerate(results):
            col[i] = r[j]
        col[len(uniques)] = None  # the NA sentinel (-1) lands here
        out.append(col[codes])
    return out


def _collect(problems: list, index: pd.Index, field: str, reasons: np.ndarray) -> None:
    for pos in np.flatnonzero(pd.notna(reasons)):
        problems.append((index[pos], field, str(reasons[pos])))


def _fill(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(pd.isna(a), b, a)


def normalise_identifiers(
    raw: pd.DataFrame, date_formats: Sequence[str] | None = None, *, today: date | None = None
) -> NormalisedFrame:
    """Normalise the identifier columns of one person slot (columns = canonical field names)."""
    unknown = [c for c in raw.columns if c not in identifier_fields()]
    if unknown:
        raise ValueError(f"not canonical identifier fields: {sorted(map(str, unknown))}")
    formats = list(date_formats or DEFAULT_DATE_FORMATS)
    idx = raw.index
    col = raw.get
    problems: list[tuple[Hashable, str, str]] = []
    out: dict[str, object] = {}

    # record_id: stripped only (it becomes record_ref; its exact bytes matter).
    (rid,) = _per_unique(col("record_id"), idx, lambda v: (v,), 1)
    out["record_id"] = rid
    (out["title"],) = _per_unique(
        col("title"), idx, lambda v: (normalise_name_value(v),), 1, "name_value"
    )

    sex, reason = _per_unique(col("sex"), idx, normalise_sex, 2, "sex")
    _collect(problems, idx, "sex", reason)
    out["sex"] = sex

    given, extra_given = _per_unique(col("given_name"), idx, _norm_given, 2, "given")
    (middle,) = _per_unique(
        col("middle_names"), idx, lambda v: (normalise_name_value(v),), 1, "name_value"
    )
    if col("given_name") is not None:
        # Either part alone is already a normalised, non-placeholder name; only rows with both
        # need joining (and the join can itself be a placeholder: "n" + "a").
        e_na, m_na = pd.isna(extra_given), pd.isna(middle)
        merged = np.where(e_na, middle, extra_given)
        both = np.flatnonzero(~e_na & ~m_na)
        if len(both):
            merged[both] = _obj_array(
                [_ph(f"{e} {m}") for e, m in zip(extra_given[both], middle[both], strict=True)]
            )
        middle = merged
    family, fam_parts = _per_unique(col("family_name"), idx, _norm_family, 2, "family")
    fg, fm, ff = _per_unique(col("full_name"), idx, split_full_name, 3, "full")
    out["full_name"] = None
    given = _fill(given, fg)
    middle = _fill(middle, fm)
    fam_from_full = pd.isna(family) & pd.notna(ff)
    if fam_from_full.any():
        family = _fill(family, ff)
        fam_parts = _obj_array(
            [
                tuple(family_name_parts(f.split())) if use else p
                for f, p, use in zip(family, fam_parts, fam_from_full, strict=True)
            ]
        )
    nulled: list[tuple[Hashable, str, str]] = []
    placeholder = np.zeros(len(idx), dtype=bool)
    for name in ("given_name", "middle_names", "family_name", "full_name", "other_names"):
        (hit,) = _per_unique(
            col(name), idx, lambda v: (is_placeholder_name(v) or None,), 1, "placeholder"
        )
        for pos in np.flatnonzero(pd.notna(hit)):
            nulled.append((idx[pos], name, PLACEHOLDER_NAME))
            if name in ("given_name", "full_name"):
                placeholder[pos] = True
    if col("given_name") is not None or col("full_name") is not None:
        # A placeholder given name is reported as such (nulled), not as a missing one.
        for pos in np.flatnonzero(pd.isna(given) & pd.notna(family) & ~placeholder):
            problems.append((idx[pos], "given_name", "missing given name"))
    out["given_name"], out["middle_names"], out["family_name"] = given, middle, family
    out["family_name_parts"] = _obj_array(
        [list(p) if isinstance(p, tuple) else None for p in fam_parts]
    )

    from ig_bridge.nicknames import default_lexicon  # lexicon normalises with this module

    lex = default_lexicon()
    pairs = pd.Series(list(zip(given, sex, strict=True)), index=idx, dtype=object)
    codes, uniques = pd.factorize(pairs)
    canon = _obj_array([lex.canonical(g, s) for g, s in uniques] + [None])
    out["given_name_canonical"] = canon[codes]
    out["given_name_phonetic"] = _map_unique(given, phonetic)
    out["family_name_phonetic"] = _map_unique(family, phonetic)

    other, other_parts = _per_unique(col("other_names"), idx, lambda v: _other_names(v), 2)
    out["other_names"] = other
    out["other_names_parts"] = _obj_array(
        [list(p) if isinstance(p, tuple) else None for p in other_parts]
    )

    # Dates
    # A partial date (year, year-month) leaves date_of_birth empty (so no full-date token or
    # key is made from a guess) but keeps dob_year / dob_month for what the source knows.
    if col("date_of_birth") is not None:
        got = parse_dates_partial(col("date_of_birth"), formats, today=today)
        _collect(problems, idx, "date_of_birth", got.reasons.to_numpy())
        dob = got.parsed
        out["dob_year"] = pd.array(got.year, dtype="Int64")
        out["dob_month"] = pd.array(got.month, dtype="Int64")
    else:
        dob = pd.Series(pd.NaT, index=idx, dtype="datetime64[us]")
        out["dob_year"] = pd.array(dob.dt.year, dtype="Int64")
        out["dob_month"] = pd.array(dob.dt.month, dtype="Int64")
    out["date_of_birth"] = dob.to_numpy()
    out["dob_day"] = pd.array(dob.dt.day, dtype="Int64")
    est, reason = _per_unique(col("dob_is_estimated"), idx, normalise_bool, 2)
    _collect(problems, idx, "dob_is_estimated", reason)
    out["dob_is_estimated"] = pd.array(est, dtype="boolean")

    # Addresses
    whole, line1_from_whole, pc_from_whole, line2_from_whole = _per_unique(
        col("address"), idx, _norm_whole_address, 4
    )
    for name in ("address_line_1", "address_line_2", "town"):
        (out[name],) = _per_unique(
            col(name), idx, lambda v: (normalise_address_line(v),), 1, "address_line"
        )
    out["address_line_1"] = _fill(out["address_line_1"], line1_from_whole)
    out["address_line_2"] = _fill(out["address_line_2"], line2_from_whole)
    out["address"] = whole
    (flat_col,) = _per_unique(
        col("flat"), idx, lambda v: (normalise_flat(normalise_address_line(v)),), 1, "flat"
    )
    # Flat from its own column or parsed out of line 1/2; premises = house number + street
    # (ig_bridge.address): flats of one building differ, "12 High St" = "12 High Street".
    triples = pd.Series(
        list(zip(out["address_line_1"], out["address_line_2"], flat_col, strict=True)),
        index=idx,
        dtype=object,
    )
    t_codes, t_uniq = pd.factorize(triples)
    keyed = [address_key(*t) for t in t_uniq] + [(None, None, None, None)]
    for j, name in enumerate(
        ("address_flat", "address_house_number", "address_street", "address_premises")
    ):
        out[name] = _obj_array([k[j] for k in keyed])[t_codes]

    pc_src = col("postcode")
    if pc_src is None and col("address") is not None:
        pc_src = pd.Series(pc_from_whole, index=idx, dtype=object)
    elif pc_src is not None and col("address") is not None:
        pc_src = pd.Series(_fill(_as_text(pc_src).to_numpy(), pc_from_whole), index=idx)
    pcs = _per_unique(pc_src, idx, normalise_postcode, 7, "postcode")
    for name, arr in zip(
        ("postcode", "postcode_outward", "postcode_district", "postcode_sector", "postcode_area"),
        pcs[:5],
        strict=True,
    ):
        out[name] = arr
    out["postcode_valid"] = pd.array(np.where(pd.isna(pcs[0]), None, pcs[5]), dtype="boolean")
    _collect(problems, idx, "postcode", pcs[6])
    # An unusable postcode must not become a token (it would match only the same typo).
    out["postcode"] = np.where(pcs[5] == True, pcs[0], None)  # noqa: E712 - object array

    for name, fn in (
        ("uprn", normalise_uprn),
        ("nhs_number", normalise_nhs_number),
        ("upn", normalise_upn),
        ("phone", normalise_phone),
        ("email", normalise_email),
        ("relationship", normalise_relationship),
    ):
        value, reason = _per_unique(col(name), idx, fn, 2)
        _collect(problems, idx, name, reason)
        out[name] = value

    if col("record_id") is not None:
        for pos in np.flatnonzero(pd.isna(rid)):
            problems.append((idx[pos], "record_id", "missing record_id"))

    frame = pd.DataFrame({c: out.get(c) for c in NORMALISED_COLUMNS}, index=idx)
    for c in NORMALISED_COLUMNS:
        if frame[c].dtype == object:
            frame[c] = frame[c].where(frame[c].notna(), None)
    problems.sort(key=lambda p: (idx.get_loc(p[0]) if idx.is_unique else 0, p[1]))
    nulled.sort(key=lambda p: (idx.get_loc(p[0]) if idx.is_unique else 0, p[1]))
    return NormalisedFrame(frame=frame, problems=problems, nulled=nulled)


def _other_names(value: str) -> tuple[str | None, tuple[str, ...] | None]:
    """Alias / previous surnames: several may be listed, separated by , ; / or 'nee'."""
    pieces = [normalise_name_value(p) for p in re.split(r"[,;/]|\bnee\b|\bnée\b", value)]
    pieces = [p for p in pieces if p]
    if not pieces:
        return None, None
    parts: list[str] = []
    for p in pieces:
        parts.extend(q for q in family_name_parts(p.split()) if q not in parts)
    return " ".join(pieces), tuple(parts)


def _map_unique(values: np.ndarray, fn: Callable[[str], str | None]) -> np.ndarray:
    codes, uniques = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=True)
    return _obj_array([fn(u) for u in uniques] + [None])[codes]
