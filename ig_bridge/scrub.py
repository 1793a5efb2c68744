"""Scrub free text of the identifiers the extract holds for a record and its related persons.

Each record's own values (names, DOB in many spellings, NHS number, postcode with/without a
space, phone, email, address lines, UPRN/UPN) are replaced by role placeholders such as
[SUBJECT_NAME], [PARENT1_NAME], [DOB], [PHONE]. Capitalised words that are a name of *any*
person seen so far in the extract become [NAME] (notes mention siblings and ex-partners whose
identifiers sit on other rows), as do given names of the partnership's nickname lexicon.
Then ig_bridge.recognise removes identifiers whoever they belong to (Presidio's UK recognisers
and patterns for written-out dates and numbers, obfuscated e-mails, street addresses, ...), on
text whose unicode tricks (zero-width, full-width, look-alike characters) were undone first.
Names written as one word ("AmeliaSmith") are split against the record's and known names.

Speed: nothing is compiled per row. Names are matched by one precompiled word regex and a dict
lookup; the record's digits by one precompiled digit-run regex; record-specific regexes (an
address line, a DOB spelt out, a mistyped postcode) are compiled only when a cheap substring
pre-check says the value may be in the text, and cached. Capitalised words one edit away from
one of the record's own name words (>= 4 letters) count as that name: extracts have typos.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from importlib import resources

import jellyfish
import yaml

from ig_bridge.recognise import normalise_text, redact
from ig_bridge.text_fold import fold

NAME_FIELDS = ("given_name", "middle_names", "family_name", "full_name", "other_names", "title")
ADDRESS_FIELDS = ("address_line_1", "address_line_2", "address", "town")
DIGIT_FIELDS = (("nhs_number", "NHS_NUMBER"), ("phone", "PHONE"), ("uprn", "UPRN"))

_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")
_DIGIT_RUN = re.compile(r"\+?\(?\d(?:[\s\-()]{0,3}\d)*")
_NON_DIGIT = re.compile(r"\D")
_APOS = re.compile(r"['’]")
_REPEAT = re.compile(r"(\[[A-Z0-9_]+\])(?:[\s,]+\1)+")
_SPLIT_NAME = re.compile(r"[^\w'’]+|_")
_CAMEL = re.compile(r"[A-Z][a-z]+")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


def _flex(value: str) -> str:
    """Regex for a value that tolerates any run of whitespace/punctuation between its parts."""
    parts = [re.escape(p) for p in re.split(r"[\s,.\-]+", value.strip()) if p]
    return r"[\s,.\-]*".join(parts)


def date_regex(d: date) -> str:
    """One regex for the common ways a DOB is written in notes (01/02/2010, 1st Feb 2010, ...)."""
    dd = rf"0?{d.day}(?:st|nd|rd|th)?" if d.day < 10 else rf"{d.day}(?:st|nd|rd|th)?"
    mon = (
        rf"(?:0?{d.month}|{d.strftime('%b')}\w*)"
        if d.month < 10
        else (rf"(?:{d.month}|{d.strftime('%b')}\w*)")
    )
    yy = rf"(?:{d.year}|'?{d.year % 100:02d})"
    sep = r"[\s/.\-,]*"
    forms = [
        f"{dd}(?:\\s+of)?{sep}{mon}{sep}{yy}",
        f"{mon}{sep}{dd}{sep}{yy}",
        f"{d.year}{sep}{mon}{sep}{dd}",
        f"{dd}(?:\\s+of)?\\s+{d.strftime('%b')}\\w*",
        f"{d.day:02d}{d.month:02d}{d.year}",
        f"{d.year}{d.month:02d}{d.day:02d}",
    ]
    return r"(?<!\w)(?:" + "|".join(forms) + r")(?!\w)"


@lru_cache(maxsize=65536)
def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


@lru_cache(maxsize=65536)
def _date_rx(d: date) -> re.Pattern[str]:
    return re.compile(date_regex(d), re.IGNORECASE)


def _name_keys(word: str) -> set[str]:
    low = word.lower()
    keys = {low} if low.isascii() else {low, fold(low)}
    for k in list(keys):
        if "'" in k or "’" in k:
            keys.add(_APOS.sub("", k))
            keys.update(p for p in _APOS.split(k) if len(p) >= 2)
    return keys


def name_words(value: object) -> list[str]:
    """Words of a name value (>= 2 letters), as scrub keys (lower-case, accent-folded too)."""
    if not isinstance(value, str):
        return []
    out: list[str] = []
    for w in _SPLIT_NAME.split(value):
        if len(w) >= 2 and not w.isdigit():
            out.extend(_name_keys(w))
    return out


@lru_cache(maxsize=1)
def given_name_groups() -> dict[str, frozenset[str]]:
    """name -> every spelling of it in the partnership's nickname lexicon (schemas/nicknames.yaml):
    a note may say "Oliver" where the record says "Olly"."""
    doc = yaml.safe_load(resources.files("schemas").joinpath("nicknames.yaml").read_text("utf-8"))
    groups: dict[str, frozenset[str]] = {}
    for canon, variants in (doc.get("names") or {}).items():
        group = frozenset(fold(str(n)).lower() for n in [canon, *(variants or [])])
        for n in group:
            groups[n] = groups.get(n, frozenset()) | group
    for short in doc.get("ambiguous") or {}:
        groups.setdefault(fold(str(short)).lower(), frozenset({fold(str(short)).lower()}))
    return groups


@dataclass
class RecordValues:
    """One record's identifier values (all its persons), prepared for scrubbing."""

    names: dict[str, str] = field(default_factory=dict)  # name word key -> placeholder
    fuzzy: list[tuple[str, str]] = field(default_factory=list)  # (name word >= 4, placeholder)
    phrases: list[tuple[str, list[str], str]] = field(default_factory=list)  # regex, words, ph
    dobs: list[date] = field(default_factory=list)
    digits: list[tuple[str, str]] = field(default_factory=list)  # digit string, placeholder
    postcodes: list[str] = field(default_factory=list)  # compact upper-case


def record_values(persons: Mapping[str, Mapping[str, object]]) -> RecordValues:
    """`persons`: role (SUBJECT, PARENT1, ...) -> {canonical field: raw value}; a parsed DOB
    may be given as `date_of_birth_parsed` (a date)."""
    rv = RecordValues()
    for role, values in persons.items():
        ph = f"[{role.upper()}_NAME]"
        groups = given_name_groups()
        for f in NAME_FIELDS:
            for k in name_words(values.get(f)):
                rv.names.setdefault(k, ph)
            if f in ("given_name", "full_name", "middle_names"):
                for k in name_words(values.get(f)):
                    for variant in groups.get(k, ()):
                        rv.names.setdefault(variant, ph)
        for f in ADDRESS_FIELDS:
            v = values.get(f)
            if isinstance(v, str) and len(v.strip()) >= 3:
                words = [w.lower() for w in re.split(r"[\s,.\-]+", v.strip()) if w]
                rv.phrases.append((r"(?<!\w)" + _flex(v) + r"(?!\w)", words, "[ADDRESS]"))
        for f, tag in (("email", "EMAIL"), ("upn", "UPN")):
            v = values.get(f)
            if isinstance(v, str) and len(v.strip()) >= 3:
                rv.phrases.append((re.escape(v.strip()), [v.strip().lower()], f"[{tag}]"))
        raw_dob = values.get("date_of_birth")
        if isinstance(raw_dob, str) and raw_dob.strip():
            words = [w.lower() for w in re.split(r"[\s,.\-/]+", raw_dob.strip()) if w]
            rv.phrases.append((r"(?<!\w)" + _flex(raw_dob) + r"(?!\w)", words, "[DOB]"))
        dob = values.get("date_of_birth_parsed")
        if isinstance(dob, date):
            rv.dobs.append(dob)
        for f, tag in DIGIT_FIELDS:
            digits = _NON_DIGIT.sub("", str(values.get(f) or ""))
            if len(digits) >= 4:
                rv.digits.append((digits, f"[{tag}]"))
                if f == "phone" and digits.startswith("0"):
                    rv.digits.append(("44" + digits[1:], "[PHONE]"))
        pc = values.get("postcode")
        if isinstance(pc, str):
            compact = re.sub(r"\s", "", pc).upper()
            if len(compact) >= 4:
                rv.postcodes.append(compact)
    rv.fuzzy = [(k, ph) for k, ph in rv.names.items() if len(k) >= 4 and k.isalpha()]
    rv.phrases.sort(key=lambda p: -len(p[0]))  # longest first: a whole address before a town
    return rv


class Scrubber:
    """Scrubs texts record by record; remembers the name words of every person seen so far."""

    def __init__(self) -> None:
        # Capitalised words that are a given name in the lexicon or any name seen so far.
        self.known_names: set[str] = {n for n in given_name_groups() if len(n) >= 3}

    def learn_names(self, values: Iterable[object]) -> None:
        for v in values:
            self.known_names.update(k for k in name_words(v) if len(k) >= 3)

    def scrub(self, text: str, rv: RecordValues) -> str:
        text = normalise_text(text)  # zero-width, full-width, look-alike tricks undone first
        low = text.lower()
        for pattern, words, ph in rv.phrases:
            if all(w in low for w in words):
                text = _rx(pattern).sub(ph, text)
        if rv.dobs:
            for d in rv.dobs:
                if (
                    _MONTHS[d.month - 1] in low
                    or str(d.year) in low
                    or f"{d.year % 100:02d}" in low
                ):
                    text = _date_rx(d).sub("[DOB]", text)
        if rv.postcodes:
            squashed = re.sub(r"\s", "", text).upper()
            for pc in rv.postcodes:
                if pc in squashed:
                    text = _rx(re.escape(pc[:-3]) + r"\s*" + re.escape(pc[-3:])).sub(
                        "[POSTCODE]", text
                    )
        if rv.digits:
            text = _DIGIT_RUN.sub(lambda m: self._digits(m, rv), text)
        text = redact(text, normalised=True)  # everyone's identifiers (ig_bridge.recognise)
        text = _WORD.sub(lambda m: self._word(m.group(), rv), text)
        return _REPEAT.sub(r"\1", text)

    @staticmethod
    def _digits(m: re.Match[str], rv: RecordValues) -> str:
        run = _NON_DIGIT.sub("", m.group())
        for digits, ph in rv.digits:
            if digits in run:
                return ph
        return m.group()

    def _word(self, word: str, rv: RecordValues) -> str:
        low = word.lower()
        keys = (
            (low,)
            if low.isascii() and "'" not in low and "’" not in low
            else tuple(_name_keys(word))
        )
        for k in keys:
            if k in rv.names:
                return rv.names[k]
        if word[0].isupper():
            if any(k in self.known_names for k in keys):
                return "[NAME]"
            if len(low) >= 4:  # the extract has a typo ("Bhloe") the note does not ("Chloe")
                for k, ph in rv.fuzzy:
                    if (
                        abs(len(k) - len(low)) <= 1
                        and jellyfish.damerau_levenshtein_distance(k, low) <= 1
                    ):
                        return ph
        parts = re.split(r"(['’])", word)  # Karen's, O'Neill's: scrub the name part
        if len(parts) > 1:
            return "".join(
                p if p in "'’" else self._word(p, rv) if len(p) >= 2 else p for p in parts
            )
        return self._run_together(word, low, rv)

    def _run_together(self, word: str, low: str, rv: RecordValues) -> str:
        """Names written as one word: "AmeliaSmith", "ameliasmith", "ZebedeeQuantock"."""
        if len(low) < 5:
            return word
        humps = _CAMEL.findall(word)
        if len(humps) >= 2 and "".join(humps) == word:
            for h in humps:
                k = h.lower()
                if k in rv.names:
                    return rv.names[k]
                if k in self.known_names:
                    return "[NAME]"
        for i in range(2, len(low) - 1):  # any split into two of the record's own name words
            head, tail = low[:i], low[i:]
            if head in rv.names and tail in rv.names:
                return rv.names[head]
        return word


def scrub_text(
    text: str, persons: Mapping[str, Mapping[str, object]], scrubber: Scrubber | None = None
) -> str:
    """Scrub one text of one record's persons' identifiers, then every generic pattern."""
    return (scrubber or Scrubber()).scrub(text, record_values(persons))
