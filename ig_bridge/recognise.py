"""Recognise identifiers in free text, whoever they belong to: one recogniser for the bridge's
scrubber (ig_bridge.scrub) and the hub's justification screen (governance.decisions).

1. Unicode is normalised first (NFKC folds full-width and compatibility forms; zero-width and
   other format characters are removed; dashes, Cyrillic/Greek look-alike letters and digits of
   other scripts become ASCII; O/l/I between digits become 0/1), so a trick in the spelling
   cannot hide a value from the patterns below.
2. Presidio's pattern recognisers, held in a RecognizerRegistry without an NLP engine (no spaCy
   model is loaded): UK NHS number (mod-11 check digit, separators incl. dots and slashes), UK
   postcode, UK NI number, phone numbers (Google's libphonenumber, GB), e-mail. Presidio's
   DateRecognizer is not used: the date patterns below cover its numeric forms and the written
   ones it lacks, and it cost ~0.3 ms per note.
3. What Presidio has no recogniser for: dates written in words or without a year, numbers
   spelt out digit by digit, e-mails written with "at"/"dot", street addresses without a town
   (flat numbers too), partial postcodes (outward code), UPNs, names after a title, and any
   run of 7+ digits whatever separates them (an NHS number split in odd groups).

Presidio is imported on first use (it imports spaCy, ~3 s): the hub's API imports this module
without paying for it until a justification is screened.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = ["Span", "find_identifiers", "has_identifier", "normalise_text", "redact"]


@dataclass(frozen=True, slots=True)
class Span:
    start: int
    end: int
    tag: str  # placeholder tag, e.g. NHS_NUMBER


# --- 1. unicode normalisation -------------------------------------------------------------
_FORMAT_CHARS = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f"
    "\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f"
    "\ufeff\uffa0\ufff0-\ufffb]"
)
_LOOKALIKE = str.maketrans(
    {
        # dashes and minus signs -> '-'
        **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d", "-"),
        # Cyrillic and Greek letters that look Latin
        "а": "a",
        "е": "e",
        "о": "o",
        "р": "p",
        "с": "c",
        "у": "y",
        "х": "x",
        "і": "i",
        "ј": "j",
        "ѕ": "s",
        "ԁ": "d",
        "ɡ": "g",
        "һ": "h",
        "А": "A",
        "В": "B",
        "Е": "E",
        "К": "K",
        "М": "M",
        "Н": "H",
        "О": "O",
        "Р": "P",
        "С": "C",
        "Т": "T",
        "Х": "X",
        "І": "I",
        "Ј": "J",
        "Ѕ": "S",
        "ο": "o",
        "α": "a",
        "ν": "v",
        "ι": "i",
        "Α": "A",
        "Β": "B",
        "Ε": "E",
        "Ζ": "Z",
        "Η": "H",
        "Ι": "I",
        "Κ": "K",
        "Μ": "M",
        "Ν": "N",
        "Ο": "O",
        "Ρ": "P",
        "Τ": "T",
        "Υ": "Y",
        "Χ": "X",
    }
)
_ANY_DIGIT = re.compile(r"\d")  # str patterns: \d is every Unicode decimal digit
_NOT_DIGIT = re.compile(r"\D")
# Letters standing in for digits inside a number ("943 476 59l9", "O77OO 9OO123"): a token of
# digits and O/o/I/l/| with at least two real digits is a number.
_DIGIT_LOOKALIKE = re.compile(r"(?<![A-Za-z])[0-9OoIl|]{3,}(?![A-Za-z])")
_DIGIT_FOR = str.maketrans({"O": "0", "o": "0", "I": "1", "l": "1", "|": "1"})


def _digits_for_letters(m: re.Match[str]) -> str:
    t = m.group()
    return t.translate(_DIGIT_FOR) if sum(c.isdigit() for c in t) >= 2 else t


def normalise_text(text: str) -> str:
    """The text as the recognisers see it (and as the scrubbed text is written)."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
        text = _FORMAT_CHARS.sub("", text).translate(_LOOKALIKE)
        text = _ANY_DIGIT.sub(lambda m: str(unicodedata.digit(m.group())), text)
    if _ANY_DIGIT.search(text):
        text = _DIGIT_LOOKALIKE.sub(_digits_for_letters, text)
    return text


# --- 2. Presidio --------------------------------------------------------------------------
_PRESIDIO_TAGS = {
    "UK_NHS": "NHS_NUMBER",
    "UK_POSTCODE": "POSTCODE",
    "UK_NINO": "NI_NUMBER",
    "PHONE_NUMBER": "PHONE",
    "DATE_TIME": "DATE",
    "EMAIL_ADDRESS": "EMAIL",
}


@lru_cache(maxsize=1)
def _registry() -> list[tuple[Any, int]]:
    """Presidio recognisers (pattern-based, no NLP engine), built once per process."""
    from presidio_analyzer import Pattern, PatternRecognizer, RecognizerRegistry
    from presidio_analyzer.predefined_recognizers import (
        NhsRecognizer,
        PhoneRecognizer,
        UkNinoRecognizer,
        UkPostcodeRecognizer,
    )

    class _Email(PatternRecognizer):
        """Presidio's EmailRecognizer checks the domain with tldextract, which fetches the
        public-suffix list over the network on first use: the pattern alone here."""

        def __init__(self) -> None:
            super().__init__(
                supported_entity="EMAIL_ADDRESS",
                name="email",
                patterns=[Pattern("email", r"\b[\w.+'-]+@[\w-]+(?:\.[\w-]+)+\b", 0.5)],
            )

    sep = r"[\s./\-]?"
    # (recogniser, digits a text needs before it can hold that entity): skipping texts that
    # cannot match keeps the bridge's cost per note down (docs/contracts.md, figures).
    out: list[tuple[Any, int]] = [
        # Dots and slashes between the groups too; the check digit decides.
        (
            NhsRecognizer(
                patterns=[Pattern("nhs", rf"\b(\d{{3}}){sep}(\d{{3}}){sep}(\d{{4}})\b", 0.5)],
                replacement_pairs=[("-", ""), (" ", ""), (".", ""), ("/", "")],
            ),
            10,
        ),
        (UkPostcodeRecognizer(), 2),
        (UkNinoRecognizer(), 6),
        (PhoneRecognizer(supported_regions=("GB",)), 9),
        (_Email(), 0),
    ]
    registry = RecognizerRegistry(supported_languages=["en"])
    for r, _ in out:
        registry.add_recognizer(r)
    held = {id(r) for r in registry.get_recognizers(language="en", all_fields=True)}
    return [(r, n) for r, n in out if id(r) in held]


def _presidio_spans(text: str) -> list[Span]:
    out: list[Span] = []
    digits = len(_NOT_DIGIT.sub("", text))
    for rec, need in _registry():
        if digits < need or (need == 0 and "@" not in text):
            continue
        for r in rec.analyze(text, rec.supported_entities, None):
            if r.score > 0:  # a failed check digit scores 0
                out.append(Span(r.start, r.end, _PRESIDIO_TAGS.get(r.entity_type, "ID")))
    return out


# --- 3. forms Presidio has no recogniser for -------------------------------------------------
_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sept?(?:ember)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
# Where a word could be the verb ("we may first"), the month must be capitalised.
_MONTH_CS = (
    r"(?:(?i:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|june?|july?|aug(?:ust)?"
    r"|sept?(?:ember)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)|(?-i:May))\.?"
)
_ORD_WORDS = (
    r"(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh"
    r"|twelfth|thirteenth|fourteenth|fifteenth|sixteenth|seventeenth|eighteenth"
    r"|nineteenth|twentieth|thirtieth|(?:twenty|thirty)[\s-]?(?:first|second|third"
    r"|fourth|fifth|sixth|seventh|eighth|ninth))"
)
_DAYNUM = r"(?:0?[1-9]|[12]\d|3[01])(?:st|nd|rd|th)?"
_NUM_WORD = (
    r"(?:zero|oh|nought|one|two|three|four|five|six|seven|eight|nine|ten|eleven"
    r"|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|twenty"
    r"|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred|thousand|double|treble"
    r"|triple)"
)
_YEAR_WORDS = (
    rf"(?:two\s+thousand(?:\s+and)?(?:[\s-]+{_NUM_WORD})*"
    rf"|(?:nineteen|twenty)(?:[\s-]+{_NUM_WORD})+)"
)
_YEAR = rf"(?:(?:19|20)\d\d|'?\d\d|{_YEAR_WORDS})"
_DS = r"(?:\s+of|\s*,)?\s*"
_STREET = (
    r"(?:street|st|road|rd|avenue|ave|lane|ln|close|cl|drive|dr|way|crescent|cres"
    r"|court|ct|place|pl|gardens|gdns|terrace|terr|grove|gr|square|sq|hill|walk|mews"
    r"|row|rise|view|parade|fold|croft|mount|bank|gate|vale|wynd|green|park|boulevard"
    r"|approach|chase|dale|fields?|heights|meadows?|villas|yard|wharf|quay|circus"
    r"|esplanade|embankment|cottages?|lodge|buildings|estate|walk|rd|hts)\b\.?"
)
_STRONG_STREET = (
    r"(?:street|road|avenue|lane|close|drive|crescent|gardens|terrace|grove"
    r"|mews|parade)\b"
)
# Words that never name a street ("walked 3 miles down the road" is no address).
_NOT_STREET_WORD = (
    r"(?!(?:the|a|an|to|at|in|on|of|and|or|down|up|along|across|for|with|from"
    r"|by|near|miles?|times?|minutes?|hours?|days?|weeks?|months?|years?"
    r"|metres?|yards?|people|children|sessions?)\b)"
)
_POSTCODE_AREAS = (
    "AB AL B BA BB BD BH BL BN BR BS BT CA CB CF CH CM CO CR CT CV CW DA DD DE DG DH DL DN DT "
    "DY E EC EH EN EX FK FY G GL GU HA HD HG HP HR HS HU HX IG IP IV KA KT KW KY L LA LD LE LL "
    "LN LS LU M ME MK ML N NE NG NN NP NR NW OL OX PA PE PH PL PO PR RG RH RM S SA SE SG SK SL "
    "SM SN SO SP SR SS ST SW SY TA TD TF TN TQ TR TS TW UB W WA WC WD WF WN WR WS WV YO ZE"
)
_AREAS = sorted(_POSTCODE_AREAS.split(), key=len, reverse=True)
_AREA = "(?:" + "|".join(_AREAS) + ")"
_AREA2 = "(?:" + "|".join(a for a in _AREAS if len(a) == 2) + ")"
_TITLES = r"(?:Mr|Mrs|Ms|Miss|Mx|Dr|Master|Mstr|Sir|Dame|Lady|Lord|Prof|Rev|Auntie|Uncle)"
_NAME_WORD = r"[A-Z][a-z]+(?:['’-][A-Za-z][a-z]+)*"
_DOT = r"(?:\.|\s+dot\s+|\s*[\[(]dot[\])]\s*)"
_AT = r"(?:\s*@\s*|\s+at\s+|\s*[\[(]at[\])]\s*)"
_TLD = r"(?:com|org|net|uk|gov|nhs|edu|ac|co|info|biz|me|io|scot|wales|ie)"

_I = re.IGNORECASE
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # e-mail, also with "at"/"dot" for the symbols ("karen dot smith at gmail dot com");
    # a separator is never a word character, so the parse is unique (no runaway backtracking)
    (
        re.compile(
            rf"(?<![\w+'-])[\w+'-]+(?:{_DOT}[\w+'-]+)*{_AT}[\w-]+(?:{_DOT}[\w-]+)*"
            rf"{_DOT}{_TLD}\b",
            _I,
        ),
        "EMAIL",
    ),
    # dates: day month [year], month day [year], month year, ordinal words
    (re.compile(rf"\b{_DAYNUM}{_DS}{_MONTH}(?:{_DS}{_YEAR})?(?!\w)", _I), "DATE"),
    (re.compile(rf"\b(?:the\s+)?{_ORD_WORDS}\s+of\s+{_MONTH}(?:{_DS}{_YEAR})?(?!\w)", _I), "DATE"),
    (re.compile(rf"\b{_ORD_WORDS}\s+{_MONTH_CS}(?:{_DS}{_YEAR})?(?!\w)", _I), "DATE"),
    (
        re.compile(
            rf"\b{_MONTH_CS}\s+(?:the\s+)?(?:{_DAYNUM}|{_ORD_WORDS})(?:{_DS}{_YEAR})?"
            r"(?!\w)",
            _I,
        ),
        "DATE",
    ),
    (re.compile(rf"\b{_MONTH}{_DS}(?:(?:19|20)\d\d|{_YEAR_WORDS})\b", _I), "DATE"),
    (
        re.compile(
            r"\b(?:0?[1-9]|[12]\d|3[01])\s*[/.\-]\s*(?:0?[1-9]|1[0-2])\s*[/.\-]\s*"
            r"(?:\d{4}|\d{2})\b"
        ),
        "DATE",
    ),
    # without a year: d/m with a slash, or zero-padded dd.mm / dd-mm ("3-5 days" is no date)
    (
        re.compile(
            r"\b(?:0?[1-9]|[12]\d|3[01])\s*/\s*(?:0?[1-9]|1[0-2])\b"
            r"|\b(?:0[1-9]|[12]\d|3[01])[.\-](?:0[1-9]|1[0-2])\b"
        ),
        "DATE",
    ),
    (
        re.compile(
            r"\b(?:19|20)\d\d\s*[/.\-]\s*(?:0?[1-9]|1[0-2])\s*[/.\-]\s*"
            r"(?:0?[1-9]|[12]\d|3[01])\b"
        ),
        "DATE",
    ),
    (
        re.compile(
            r"\b(?:born(?:\s+in)?|d\.?o\.?b\.?|date\s+of\s+birth)[\s:,-]*"
            rf"(?:{_YEAR_WORDS}|(?:19|20)\d\d\b)",
            _I,
        ),
        "DATE",
    ),
    (re.compile(rf"\b{_YEAR_WORDS}\b", _I), "DATE"),
    # numbers spelt out digit by digit (4+ number words)
    (re.compile(rf"\b{_NUM_WORD}(?:[\s,-]+(?:and\s+)?{_NUM_WORD}){{3,}}\b", _I), "NUMBER"),
    # street addresses: [flat n,] number street-name suffix; a named street without a number
    (
        re.compile(
            r"\b(?:(?:flat|apartment|apt|unit|room)\s*\d+[a-z]?\b[\s,]*)?\d+[a-z]?"
            r"(?:\s*[-/]\s*\d+[a-z]?)?,?\s+"
            rf"(?:(?:{_NOT_STREET_WORD}[a-z'’]+\s+){{0,3}}{_STRONG_STREET}"
            rf"|(?-i:(?:[A-Z][\w'’-]*\s+){{1,3}})(?:{_STREET}))",
            _I,
        ),
        "ADDRESS",
    ),
    (re.compile(r"\b(?:flat|apartment|apt|unit)\s*\d+[a-z]?\b", _I), "ADDRESS"),
    (re.compile(rf"\b(?:[A-Z][a-z'’]+\s+){{1,2}}(?i:{_STRONG_STREET})"), "ADDRESS"),
    # postcodes: full with any separator (Presidio takes the standard forms); an outward code
    # alone for two-letter areas ("lives in BD7"), any area after the word postcode
    (re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]?\s*[-.]?\s*\d[A-Z]{2}\b", _I), "POSTCODE"),
    (re.compile(rf"\b{_AREA2}\d{{1,2}}[A-Z]?\b"), "POSTCODE"),
    (
        re.compile(
            rf"\b(?:postcode|post\s+code|area)\s*:?\s*(?P<v>(?-i:{_AREA})\d{{1,2}}[A-Z]?"
            r"(?:\s*[-.]?\s*\d[A-Z]{2})?)\b",
            _I,
        ),
        "POSTCODE",
    ),
    # Unique Pupil Number: a letter, 11 digits, a letter or digit
    (re.compile(r"\b[A-Z]\s*\d{11}[A-Z\d]\b", _I), "UPN"),
    # a name after a title ("Mrs Quantock", "Dr. Zebedee Quantock")
    (re.compile(rf"\b{_TITLES}\.?\s+{_NAME_WORD}(?:\s+{_NAME_WORD})?"), "NAME"),
    # any 7+ digits however they are grouped (NHS/phone/UPRN numbers, split or mistyped)
    (re.compile(r"\+?\(?\d(?:[\s.\-/()]{0,3}\d){6,}"), "NUMBER"),
    (re.compile(r"\b\d{5,6}\b"), "NUMBER"),
]


def find_identifiers(text: str) -> list[Span]:
    """Non-overlapping spans of identifier-like values in an already normalised text."""
    # Presidio's first: on a tie its tag (checked NHS number, phone) is the one kept.
    spans = _presidio_spans(text) if _ANY_DIGIT.search(text) or "@" in text else []
    for rx, tag in _PATTERNS:
        # a pattern with a group "v" names only that part (the label word stays)
        g = "v" if "v" in rx.groupindex else 0
        spans.extend(Span(m.start(g), m.end(g), tag) for m in rx.finditer(text))
    if not spans:
        return []
    # Longest first, then earliest: a whole address wins over the number inside it.
    spans.sort(key=lambda s: (-(s.end - s.start), s.start))
    covered = bytearray(len(text))  # 1 where a longer span already took the character
    taken: list[Span] = []
    for s in spans:
        if covered.find(1, s.start, s.end) < 0:
            covered[s.start : s.end] = b"\x01" * (s.end - s.start)
            taken.append(s)
    return sorted(taken, key=lambda s: s.start)


def redact(text: str, *, normalised: bool = False) -> str:
    """The normalised text with every recognised value replaced by [TAG]."""
    if not normalised:
        text = normalise_text(text)
    out, pos = [], 0
    for s in find_identifiers(text):
        out.append(text[pos : s.start])
        out.append(f"[{s.tag}]")
        pos = s.end
    out.append(text[pos:])
    return "".join(out)


def has_identifier(text: str) -> bool:
    """True if anything in the text looks like an identifier (after normalisation)."""
    return bool(find_identifiers(normalise_text(text)))
