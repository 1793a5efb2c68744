"""Unicode text folding shared by the identifier normalisers (names, codes, address lines)."""

from __future__ import annotations

import re
import unicodedata

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
