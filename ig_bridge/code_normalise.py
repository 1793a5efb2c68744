"""Normalisers for coded identifier fields: postcodes, NHS numbers, UPRNs, UPNs, phone
numbers, email addresses, sex, yes/no flags and relationships. Each is a pure
`str -> (value..., reason)` function; a reason never contains the value."""

from __future__ import annotations

import re

from ig_bridge.text_fold import fold

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

_NON_WORD = re.compile(r"[\W_]+")

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
