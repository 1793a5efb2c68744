"""The partnership's placeholder-name list (schemas/placeholder_names.yaml).

A placeholder ("Baby", "The Occupier", "Mum", "XXX") is not a name: as a token it would match
every record holding the same placeholder. ig_bridge.normalise nulls such names before they are
encoded and reports them per field.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import yaml


@lru_cache(maxsize=1)
def placeholder_names() -> tuple[frozenset[str], tuple[str, ...]]:
    """(exact names, prefixes), normalised as names are (lower case, single spaces)."""
    doc = yaml.safe_load(
        resources.files("schemas").joinpath("placeholder_names.yaml").read_text("utf-8")
    )
    if not isinstance(doc, dict) or doc.get("version") != 1:
        raise ValueError("schemas/placeholder_names.yaml: version: expected 1")
    for key in ("exact", "prefixes"):
        if not isinstance(doc.get(key), list) or not all(isinstance(v, str) for v in doc[key]):
            raise ValueError(f"schemas/placeholder_names.yaml: {key}: expected a list of strings")
    exact = frozenset(" ".join(v.lower().split()) for v in doc["exact"])
    prefixes = tuple(" ".join(v.lower().split()) + " " for v in doc["prefixes"])
    return exact, prefixes


def is_placeholder(normalised: str | None) -> bool:
    """Whether an already-normalised name (ig_bridge.name_normalise.normalise_name_value's folding)
    is a placeholder: listed whole, or starting with a listed prefix."""
    if not normalised:
        return False
    exact, prefixes = placeholder_names()
    return normalised in exact or normalised.startswith(prefixes) or (normalised + " ") in prefixes
