"""Person-name normalisation: folding, titles and suffixes, surname particles, placeholder
names, full-name splitting and phonetic codes (used by ig_bridge.normalise)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import jellyfish

from ig_bridge.placeholders import is_placeholder
from ig_bridge.text_fold import _APOSTROPHE, fold

_NON_LETTER = re.compile(r"[\W\d_]+")

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
        return None, None, _family_out(groups[0])
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
        _family_out(" ".join(fam_groups)),
    )


def _family_out(text: str) -> str | None:
    """A surname cut from a full name, stripped as the family-name column is: one word can
    fold to several ("A0IV" -> "a iv"), and a trailing suffix among them would otherwise go
    only when the output is normalised again (not idempotent)."""
    return _ph(" ".join(_strip_affixes(text.split(), titles=False)))


def phonetic(value: str | None) -> str | None:
    """NYSIIS code of a normalised name (spaces removed); None for non-Latin or empty."""
    if not value:
        return None
    compact = value.replace(" ", "")
    if not compact.isascii() or not compact.isalpha():
        return None
    return jellyfish.nysiis(compact) or None


# Reason recorded when a placeholder name is set aside.
PLACEHOLDER_NAME = "placeholder name (schemas/placeholder_names.yaml): nulled, row kept"


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
