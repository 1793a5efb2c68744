"""What a consent covers: which agencies, and which categories of information.

A family agrees to "school attendance and health visiting, shared with the Team Around the
Family", not to field names, so each payload field belongs to exactly one category
(schemas/consent_categories.yaml) and a consent's scope is (agencies x categories). A field is
in scope only if both its agency and its category are named: deny by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from governance.policy import (
    AGENCY_CODES,
    CONTROL_FIELDS,
    SCHEMAS_DIR,
    PolicyError,
    load_payload_fields,
)

CATEGORIES_FILE = SCHEMAS_DIR / "consent_categories.yaml"


@dataclass(frozen=True)
class Categories:
    titles: dict[str, str]
    of_field: dict[str, str]  # payload field -> its category

    def category(self, field: str) -> str | None:
        return self.of_field.get(field)


def load_categories(path: Path = CATEGORIES_FILE) -> Categories:
    """Every payload field in exactly one category; errors name the file and the key."""
    try:
        doc = yaml.safe_load(path.read_text("utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyError(f"{path}: cannot read: {type(exc).__name__}") from None
    if not isinstance(doc, dict) or doc.get("consent_categories_version") != 1:
        raise PolicyError(f"{path}: consent_categories_version: must be 1")
    raw = doc.get("categories")
    if not isinstance(raw, dict) or not raw:
        raise PolicyError(f"{path}: categories: missing or not a mapping")
    payload = load_payload_fields() - CONTROL_FIELDS  # markers are never shared
    titles: dict[str, str] = {}
    of_field: dict[str, str] = {}
    for name, body in raw.items():
        if not isinstance(body, dict) or not isinstance(body.get("title"), str):
            raise PolicyError(f"{path}: categories.{name}.title: missing")
        for i, f in enumerate(body.get("fields") or []):
            if f not in payload:
                raise PolicyError(
                    f"{path}: categories.{name}.fields.{i}: {f!r} is not a "
                    "payload field in canonical_fields.yaml"
                )
            if f in of_field:
                raise PolicyError(
                    f"{path}: categories.{name}.fields.{i}: {f!r} is already in {of_field[f]!r}"
                )
            of_field[f] = name
        titles[name] = body["title"]
    missing = sorted(payload - set(of_field))
    if missing:
        raise PolicyError(f"{path}: categories: payload field(s) in no category: {missing}")
    return Categories(titles, of_field)


@lru_cache(maxsize=1)
def categories() -> Categories:
    return load_categories()


@dataclass(frozen=True)
class Scope:
    """The agencies and categories a consent names."""

    agencies: frozenset[str]
    categories: frozenset[str]

    @classmethod
    def of(
        cls,
        agencies: list[str] | tuple[str, ...] | frozenset[str],
        cats: list[str] | tuple[str, ...] | frozenset[str],
    ) -> Scope:
        bad_a = sorted(set(agencies) - AGENCY_CODES)
        if bad_a or not agencies:
            raise ValueError(
                "scope.agencies: name one or more of "
                f"{sorted(AGENCY_CODES)}" + (f" (unknown {bad_a})" if bad_a else "")
            )
        known = set(categories().titles)
        bad_c = sorted(set(cats) - known)
        if bad_c or not cats:
            raise ValueError(
                f"scope.categories: name one or more of {sorted(known)}"
                + (f" (unknown {bad_c})" if bad_c else "")
            )
        return cls(frozenset(agencies), frozenset(cats))

    def covers(self, agency: str, field: str) -> bool:
        cat = categories().category(field)
        return agency in self.agencies and cat is not None and cat in self.categories

    def overlaps(self, other: Scope) -> bool:
        return bool(self.agencies & other.agencies) and bool(self.categories & other.categories)
