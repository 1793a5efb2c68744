"""A partnership's data-sharing agreement file (`agreement.yaml` beside the agency mappings).

The built-in agency kinds and canonical payload fields (schemas/canonical_fields.yaml) cover the
demo partnership's seven agencies. A real partnership also shares with services nobody listed
(a benefits system, a youth offending team): the agreement file declares those agency kinds and
the payload fields they send, so a mapping can use them without a code change. Bridges and the
hub read the same file from the same mappings folder, so both sides agree on what may travel.

Depends only on pyyaml and the standard library (the bridge installs alone).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

AGREEMENT_FILE = "agreement.yaml"
AGREEMENT_VERSION = 1
PAYLOAD_TYPES = frozenset({"date", "category", "text", "number", "boolean"})
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{1,47}$")
_TOP_KEYS = {"agreement_version", "name", "agency_kinds", "payload_fields"}
_KIND_KEYS = {"doc"}
_FIELD_KEYS = {"type", "doc", "allowed"}


class AgreementError(ValueError):
    """The agreement file is invalid. Same shape as schemas.mapping.MappingError (file, key)."""

    def __init__(self, path: Path | str, key_path: str, problem: str) -> None:
        self.path = str(path)
        self.key_path = key_path
        self.problem = problem
        super().__init__(f"{self.path}: {key_path}: {problem}")


@dataclass(frozen=True)
class Agreement:
    path: Path
    name: str
    agency_kinds: dict[str, str]  # kind -> doc
    payload_fields: dict[str, dict[str, Any]]  # field -> {type, doc, allowed?}


def agreement_path(mappings_dir: Path | str) -> Path:
    return Path(mappings_dir) / AGREEMENT_FILE


def _mapping(path: Path, where: str, obj: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise AgreementError(path, where, f"expected a mapping, got {type(obj).__name__}")
    for key in obj:
        if key not in allowed:
            raise AgreementError(
                path,
                f"{where}.{key}" if where else str(key),
                f"unknown key (allowed: {', '.join(sorted(allowed))})",
            )
    return obj


def parse_agreement(
    raw: Any, path: Path | str, *, builtin_kinds: frozenset[str], builtin_fields: frozenset[str]
) -> Agreement:
    """Validate an agreement document. `builtin_*`: what canonical_fields.yaml and
    schemas.mapping already define (an agreement may add, never redefine)."""
    path = Path(path)
    top = _mapping(path, "", raw, _TOP_KEYS)
    if top.get("agreement_version") != AGREEMENT_VERSION:
        raise AgreementError(
            path,
            "agreement_version",
            f"expected {AGREEMENT_VERSION}, got {top.get('agreement_version')!r}",
        )
    name = top.get("name", "")
    if not isinstance(name, str):
        raise AgreementError(path, "name", "expected a string")
    kinds: dict[str, str] = {}
    for kind, spec in _as_dict(path, "agency_kinds", top.get("agency_kinds")).items():
        where = f"agency_kinds.{kind}"
        if not isinstance(kind, str) or not _NAME_RE.match(kind):
            raise AgreementError(path, where, "kind names are lower_snake_case (2-48 chars)")
        if kind in builtin_kinds:
            raise AgreementError(path, where, "already a built-in agency kind")
        spec = _mapping(path, where, spec if spec is not None else {}, _KIND_KEYS)
        doc = spec.get("doc", "")
        if not isinstance(doc, str):
            raise AgreementError(path, f"{where}.doc", "expected a string")
        kinds[kind] = doc
    fields: dict[str, dict[str, Any]] = {}
    for fname, spec in _as_dict(path, "payload_fields", top.get("payload_fields")).items():
        where = f"payload_fields.{fname}"
        if not isinstance(fname, str) or not _NAME_RE.match(fname):
            raise AgreementError(path, where, "field names are lower_snake_case (2-48 chars)")
        if fname in builtin_fields:
            raise AgreementError(
                path,
                where,
                "already a canonical field (schemas/canonical_fields.yaml); use it as it is",
            )
        spec = _mapping(path, where, spec, _FIELD_KEYS)
        ftype = spec.get("type")
        if ftype not in PAYLOAD_TYPES:
            raise AgreementError(
                path,
                f"{where}.type",
                f"unknown payload type {ftype!r} (allowed: {', '.join(sorted(PAYLOAD_TYPES))})",
            )
        out: dict[str, Any] = {"type": ftype, "doc": spec.get("doc", "")}
        if not isinstance(out["doc"], str):
            raise AgreementError(path, f"{where}.doc", "expected a string")
        if "allowed" in spec:
            allowed = spec["allowed"]
            if ftype != "category":
                raise AgreementError(
                    path, f"{where}.allowed", "only category fields take an allowed list"
                )
            if (
                not isinstance(allowed, list)
                or not allowed
                or not all(isinstance(a, str) and a.strip() for a in allowed)
            ):
                raise AgreementError(
                    path, f"{where}.allowed", "expected a non-empty list of strings"
                )
            if len({a.strip().lower() for a in allowed}) != len(allowed):
                raise AgreementError(path, f"{where}.allowed", "a value is listed twice")
            out["allowed"] = list(allowed)
        fields[fname] = out
    return Agreement(path, name, kinds, fields)


def _as_dict(path: Path, where: str, obj: Any) -> dict[Any, Any]:
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise AgreementError(path, where, f"expected a mapping, got {type(obj).__name__}")
    return obj


def load_agreement(
    path: Path | str, *, builtin_kinds: frozenset[str], builtin_fields: frozenset[str]
) -> Agreement | None:
    """The agreement at `path`, or None when the partnership has none."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise AgreementError(
            path, f"line {mark.line + 1}" if mark else "", "not valid YAML"
        ) from None
    except UnicodeDecodeError:
        raise AgreementError(path, "", "not UTF-8 text") from None
    return parse_agreement(raw, path, builtin_kinds=builtin_kinds, builtin_fields=builtin_fields)
