"""Scrub free text of the identifiers the extract holds for a record and its related persons.

Each record's own values (names, DOB in many spellings, NHS number, postcode with/without a
space, phone, email, address lines, UPRN/UPN) are replaced by role placeholders such as
[SUBJECT_NAME], [PARENT1_NAME], [DOB], [PHONE]. Generic patterns (emails, UK postcodes,
10-digit numbers, phone-like digit runs, dates) are then removed whoever they belong to.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date

NAME_FIELDS = ("given_name", "middle_names", "family_name", "full_name", "other_names")
ADDRESS_FIELDS = ("address_line_1", "address_line_2", "address", "town")

_GENERIC = [
    (re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+", re.I), "[EMAIL]"),
    (re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}\b", re.I), "[POSTCODE]"),
    (re.compile(r"\b\d{1,2}[/.\- ]\d{1,2}[/.\- ](?:\d{4}|\d{2})\b"), "[DATE]"),
    (re.compile(r"\b\d{4}[/.\-]\d{1,2}[/.\-]\d{1,2}\b"), "[DATE]"),
    (re.compile(r"(?:\+44\s?|\b0)(?:\d[\s-]?){9,10}\b"), "[PHONE]"),
    (re.compile(r"\b\d{3}[\s-]?\d{3}[\s-]?\d{4}\b"), "[NHS_NUMBER]"),
    (re.compile(r"\b\d{5,12}\b"), "[NUMBER]"),
]


def _flex(value: str) -> str:
    """Regex for a value that tolerates any run of whitespace/punctuation between its parts."""
    parts = [re.escape(p) for p in re.split(r"[\s,.\-]+", value.strip()) if p]
    return r"[\s,.\-]*".join(parts)


def _digits_flex(digits: str) -> str:
    return r"[\s\-]?".join(re.escape(d) for d in digits)


def date_regex(d: date) -> str:
    """One regex for the common ways a DOB is written in notes (01/02/2010, 1st Feb 2010, ...)."""
    dd = rf"0?{d.day}(?:st|nd|rd|th)?" if d.day < 10 else rf"{d.day}(?:st|nd|rd|th)?"
    mon = rf"(?:0?{d.month}|{d.strftime('%b')}\w*)" if d.month < 10 else (
        rf"(?:{d.month}|{d.strftime('%b')}\w*)"
    )
    yy = rf"(?:{d.year}|{d.year % 100:02d})"
    sep = r"[\s/.\-,]*"
    forms = [
        f"{dd}{sep}{mon}{sep}{yy}",
        f"{mon}{sep}{dd}{sep}{yy}",
        f"{d.year}{sep}{mon}{sep}{dd}",
        f"{dd}(?:\\s+of)?\\s+{d.strftime('%b')}\\w*",
        f"{d.day:02d}{d.month:02d}{d.year}",
        f"{d.year}{d.month:02d}{d.day:02d}",
    ]
    return r"(?<!\w)(?:" + "|".join(forms) + r")(?!\w)"


def build_patterns(role: str, values: dict[str, object]) -> list[tuple[str, str]]:
    """(regex, placeholder) pairs for one person's identifier values. `role` e.g. SUBJECT."""
    pats: list[tuple[str, str]] = []
    for f in NAME_FIELDS:
        v = values.get(f)
        if isinstance(v, str) and v.strip():
            for part in [v, *re.split(r"[\s\-]+", v)]:
                if len(part.strip()) >= 2:
                    pats.append((r"\b" + _flex(part) + r"\b", f"[{role}_NAME]"))
    for f in ADDRESS_FIELDS:
        v = values.get(f)
        if isinstance(v, str) and len(v.strip()) >= 3:
            pats.append((r"\b" + _flex(v) + r"\b", "[ADDRESS]"))
    dob = values.get("date_of_birth")
    if isinstance(dob, date):
        pats.append((date_regex(dob), "[DOB]"))
    raw_dob = values.get("date_of_birth_raw")
    if isinstance(raw_dob, str) and raw_dob.strip():
        pats.append((r"(?<!\w)" + _flex(raw_dob) + r"(?!\w)", "[DOB]"))
    for f, tag in (("nhs_number", "NHS_NUMBER"), ("phone", "PHONE"), ("uprn", "UPRN")):
        v = values.get(f)
        if isinstance(v, str):
            digits = re.sub(r"\D", "", v)
            if len(digits) >= 4:
                pats.append((_digits_flex(digits), f"[{tag}]"))
                if f == "phone" and digits.startswith("0"):
                    pats.append((r"\+44\s?\(?0?\)?\s?" + _digits_flex(digits[1:]), "[PHONE]"))
    pc = values.get("postcode")
    if isinstance(pc, str):
        compact = re.sub(r"\s", "", pc)
        if len(compact) >= 4:
            pats.append((re.escape(compact[:-3]) + r"\s*" + re.escape(compact[-3:]), "[POSTCODE]"))
    for f, tag in (("email", "EMAIL"), ("upn", "UPN")):
        v = values.get(f)
        if isinstance(v, str) and len(v) >= 3:
            pats.append((re.escape(v.strip()), f"[{tag}]"))
    return pats


def compile_patterns(patterns: Iterable[tuple[str, str]]) -> tuple[re.Pattern[str], list[str]]:
    """One alternation (longest first) so each text is scanned once."""
    ordered = sorted(set(patterns), key=lambda p: -len(p[0]))
    rx = re.compile("|".join(f"({p})" for p, _ in ordered) or r"(?!x)x", re.IGNORECASE)
    return rx, [ph for _, ph in ordered]


def scrub_text(text: str, patterns: Iterable[tuple[str, str]]) -> str:
    """Replace the record's own identifiers, then every generic identifier pattern."""
    rx, placeholders = compile_patterns(patterns)
    if placeholders:
        text = rx.sub(lambda m: placeholders[(m.lastindex or 1) - 1], text)
    for generic, placeholder in _GENERIC:
        text = generic.sub(placeholder, text)
    return text
