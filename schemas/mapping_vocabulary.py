"""Vocabularies of mapping columns (schemas.mapping): a payload column's values / recode /
pattern / scrub, and an identifier column's recode table of source codes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from schemas.mapping_model import _TYPED, CanonicalFields, MappingError, fold_code

_VOCAB_KEYS = ("values", "recode", "pattern", "scrub")
# A `pattern` vocabulary is for codes (an ODS practice code): it must refuse a person's details.
_PATTERN_PROBES = (
    "Amelia Smith born 04/03/2012",
    "Amelia Smith",
    "12 Acacia Avenue",
    "BD7 1AB",
    "943 476 5919",
    "amelia.smith@example.org",
    "04/03/2012",
)
_MAX_PATTERN = 200

# Identifier types a `recode` table may target (coded values), and what each may recode to.
_SEX_VALUES = ("M", "F", "U")
_BOOL_VALUES = ("yes", "no")
_RECODABLE_TYPES = frozenset({"sex", "relationship", "boolean", "string"})


def _parse_vocabulary(
    path: Path, where: str, col: dict[str, Any], cls: str, fname: str, canonical: CanonicalFields
) -> dict[str, Any]:
    """values / recode / pattern / scrub of one column. Every category payload field must be
    closed or scrubbed: an open category once carried names, DOBs and addresses to the hub."""
    given = [k for k in _VOCAB_KEYS if k in col]
    if cls == "identifier" and given == ["recode"]:
        return {
            "recode": _identifier_recode(path, f"{where}.recode", col["recode"], fname, canonical)
        }
    if cls != "payload":
        if given:
            raise MappingError(
                path,
                f"{where}.{given[0]}",
                "only payload columns take a "
                "vocabulary (values, pattern) or scrub; identifier columns of "
                "coded fields (sex, relationship, yes/no, title) take recode",
            )
        return {}
    spec = canonical.payload_fields[fname]
    ftype = str(spec["type"])
    if ftype in _TYPED or ftype == "text":
        if given and not (ftype == "text" and given == ["scrub"] and col["scrub"] is True):
            closed_by = "its type" if ftype in _TYPED else "nothing: free text is always scrubbed"
            raise MappingError(
                path,
                f"{where}.{given[0]}",
                f"{fname!r} is a {ftype} field, closed by {closed_by}; "
                "values/recode/pattern/scrub do not apply",
            )
        return {"scrub": ftype == "text"}
    allowed = [str(a) for a in spec.get("allowed") or ()]
    scrub = col.get("scrub", False)
    if not isinstance(scrub, bool):
        raise MappingError(path, f"{where}.scrub", "expected true or false")
    values = col.get("values")
    if values is not None:
        if (
            not isinstance(values, list)
            or not values
            or not all(isinstance(v, str) and v.strip() for v in values)
        ):
            raise MappingError(path, f"{where}.values", "expected a non-empty list of strings")
        folded = [" ".join(v.split()).lower() for v in values]
        if len(set(folded)) != len(folded):
            raise MappingError(path, f"{where}.values", "a value is listed twice")
        if allowed and (extra := sorted(set(values) - set(allowed))):
            raise MappingError(
                path,
                f"{where}.values",
                f"not in the canonical vocabulary of "
                f"{fname!r}: {', '.join(extra)} (allowed: {', '.join(allowed)})",
            )
    recode = col.get("recode")
    if recode is not None:
        if (
            not isinstance(recode, dict)
            or not recode
            or not all(isinstance(k, str | int) and isinstance(v, str) for k, v in recode.items())
        ):
            raise MappingError(
                path, f"{where}.recode", "expected a mapping of source spelling -> vocabulary value"
            )
        targets = set(values or allowed)
        if targets and (bad := sorted(set(recode.values()) - targets)):
            raise MappingError(
                path,
                f"{where}.recode",
                f"recodes to values outside the vocabulary of {fname!r}: {', '.join(bad)}",
            )
    pattern = col.get("pattern")
    if pattern is not None:
        if allowed:
            raise MappingError(path, f"{where}.pattern", f"{fname!r} has a canonical vocabulary")
        if not isinstance(pattern, str) or not pattern or len(pattern) > _MAX_PATTERN:
            raise MappingError(
                path,
                f"{where}.pattern",
                f"expected a regular expression of at most {_MAX_PATTERN} characters",
            )
        try:
            rx = re.compile(pattern)
        except re.error as exc:
            raise MappingError(path, f"{where}.pattern", f"not a valid regex ({exc})") from None
        if any(rx.fullmatch(p) for p in _PATTERN_PROBES):
            raise MappingError(
                path,
                f"{where}.pattern",
                "matches a name, date, address or number: a pattern vocabulary is for codes only",
            )
    closed = bool(allowed or values or recode or pattern)
    if scrub and closed:
        raise MappingError(
            path,
            f"{where}.scrub",
            f"{fname!r} has a closed vocabulary; scrub: true is for open categories only",
        )
    if not closed and not scrub:
        raise MappingError(
            path,
            where,
            f"category payload field {fname!r} has neither a closed "
            "vocabulary (values, recode or pattern) nor scrub: true; an open "
            "category could carry a name or an address to the hub",
        )
    return {
        "values": tuple(values or ()),
        "recode": tuple((str(k), v) for k, v in (recode or {}).items()),
        "pattern": pattern,
        "scrub": scrub,
    }


def _identifier_recode(
    path: Path, where: str, recode: Any, fname: str, canonical: CanonicalFields
) -> tuple[tuple[str, str | None], ...]:
    """An identifier column's recode table: source code -> canonical value (or null)."""
    ftype = canonical.field_type(fname)
    if ftype not in _RECODABLE_TYPES or fname == "record_id":
        raise MappingError(
            path,
            where,
            f"{fname!r} is not a coded field; recode applies to "
            "sex, relationship, yes/no fields and title",
        )
    if (
        not isinstance(recode, dict)
        or not recode
        or not all(
            isinstance(k, str | int) and (v is None or isinstance(v, str | bool))
            for k, v in recode.items()
        )
    ):
        raise MappingError(
            path,
            where,
            "expected a mapping of source code -> canonical value "
            "(or null for a code meaning 'not recorded')",
        )
    targets: tuple[str, ...] = ()
    if ftype == "sex":
        targets = _SEX_VALUES
    elif ftype == "relationship":
        targets = canonical.relationships
    elif ftype == "boolean":
        targets = _BOOL_VALUES
    out: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for k, v in recode.items():
        if isinstance(v, bool):  # YAML reads yes/no as booleans
            v = "yes" if v else "no"
        if v is not None and targets and v not in targets:
            raise MappingError(
                path,
                where,
                f"recodes {k!r} to {v!r}, not a value of {fname!r} (allowed: {', '.join(targets)})",
            )
        folded = fold_code(str(k))
        if folded in seen:
            raise MappingError(path, where, f"source code {k!r} is listed twice")
        seen.add(folded)
        out.append((str(k), v))
    return tuple(out)
