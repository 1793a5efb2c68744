"""Address-line text normalisation: abbreviations, 'St' as saint or street, tenement flats,
and splitting a whole-address column into lines and a postcode (ig_bridge.address then parses
flats and premises from these lines)."""

from __future__ import annotations

import re

from ig_bridge.name_normalise import PLACEHOLDERS
from ig_bridge.text_fold import _APOSTROPHE, fold

_SLASH_FLAT = re.compile(r"(\d)\s*/\s*(\d)")
_ADDR_NON_WORD = re.compile(r"[^\w/]+|_")
_NUM_LETTER = re.compile(r"\b(\d+) ([a-z])\b(?= [a-z]{2,})")

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


def _norm_whole_address(
    value: str,
) -> tuple[str | None, str | None, str | None, str | None, str | None]:
    """Whole-address column -> (normalised address without postcode, line 1, postcode text,
    line 2: the segment after line 1, town).

    The town is the last segment when at least two follow line 1 and it holds no digit
    ("12 Oak Rd, Heaton, Bradford"): a single segment after line 1 may be a locality or a
    town ("12 Oak Rd, Heaton" / "12 Oak Rd, Bradford") and stays line 2, with no town."""
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
        return None, None, postcode, None, None
    line1, used = norm[0], 1
    # "12, High Street" / "Flat 3, 12 High Street": the first segment alone is not a street.
    if len(norm) > 1 and re.fullmatch(r"(?:flat \w+|\d+[a-z]?|\d+/\d+)", line1):
        line1, used = f"{line1} {norm[1]}", 2
    line2 = norm[used] if len(norm) > used else None
    town = norm[-1] if len(norm) > used + 1 and not re.search(r"\d", norm[-1]) else None
    return " ".join(norm), line1, postcode, line2, town
