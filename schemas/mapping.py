"""Agency onboarding mappings (schemas/agencies/<code>.yaml), mapping_version 1.

Loads and validates a mapping against schemas/canonical_fields.yaml, as fixed in
docs/contracts.md. Shared by the bridge (what to read, encode, drop) and the hub (which payload
fields an agency may send). Depends only on pyyaml and the standard library so both sides can
import it.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from schemas.agreement import AGREEMENT_FILE

# The model is re-exported: the bridge and the hub import all of it from schemas.mapping.
from schemas.mapping_model import (  # noqa: F401
    AGENCY_KINDS,
    CANONICAL_PATH,
    DEFAULT_MIN_IDENTIFYING_FIELDS,
    SUBJECT,
    CanonicalFields,
    ColumnMapping,
    Mapping,
    MappingError,
    PayloadPolicy,
    SnapshotGuards,
    SourceSpec,
    fold_code,
    load_canonical,
)
from schemas.mapping_vocabulary import _parse_vocabulary

MAPPING_VERSION = 1
CLASSES = frozenset({"identifier", "payload", "drop"})
FORMATS = frozenset({"csv", "parquet"})
EXTRACT_KINDS = frozenset({"snapshot", "delta"})
_CODE_RE = re.compile(r"^[A-Z]{2,8}$")
_SLOT_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")

_TOP_KEYS = {
    "mapping_version",
    "agency",
    "schedule",
    "source",
    "columns",
    "related_persons",
    "validation",
    "snapshot_guards",
}
_VALIDATION_KEYS = {"min_identifying_fields"}
_AGENCY_KEYS = {"code", "name", "kind"}
_SOURCE_KEYS = {"format", "encoding", "delimiter", "quotechar", "date_formats", "extract_kind"}
_CSV_ONLY = {"encoding", "delimiter", "quotechar"}
_COLUMN_KEYS = {"source", "field", "class", "person", "values", "recode", "pattern", "scrub"}
_SLOT_KEYS = {"relationship"}
_GUARD_KEYS = {"min_share_of_last_snapshot", "max_problem_rate", "max_retire_share"}


def _check_keys(path: Path, where: str, obj: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise MappingError(path, where, f"expected a mapping, got {type(obj).__name__}")
    for key in obj:
        if key not in allowed:
            sub = f"{where}.{key}" if where else str(key)
            raise MappingError(path, sub, f"unknown key (allowed: {', '.join(sorted(allowed))})")
    return obj


def _str(path: Path, where: str, value: Any, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise MappingError(path, where, "expected a non-empty string")
    return value


def _parse_source(path: Path, raw: Any) -> SourceSpec:
    src = _check_keys(path, "source", raw, _SOURCE_KEYS)
    fmt = _str(path, "source.format", src.get("format"))
    if fmt not in FORMATS:
        raise MappingError(path, "source.format", f"unknown format {fmt!r} (csv | parquet)")
    if fmt == "parquet":
        for key in _CSV_ONLY & set(src):
            raise MappingError(path, f"source.{key}", "only allowed for csv sources")
    encoding = src.get("encoding", "utf-8")
    try:
        codecs.lookup(_str(path, "source.encoding", encoding) or "")
    except LookupError:
        raise MappingError(path, "source.encoding", f"unknown encoding {encoding!r}") from None
    delimiter = src.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in "\r\n":
        raise MappingError(path, "source.delimiter", "must be a single character")
    quotechar = src.get("quotechar", '"')
    if quotechar is not None and (not isinstance(quotechar, str) or len(quotechar) != 1):
        raise MappingError(path, "source.quotechar", "must be a single character or null")
    if quotechar is not None and quotechar == delimiter:
        raise MappingError(path, "source.quotechar", "must differ from the delimiter")
    formats = src.get("date_formats", ["%Y-%m-%d"])
    if not isinstance(formats, list) or not formats:
        raise MappingError(path, "source.date_formats", "expected a non-empty list")
    for i, f in enumerate(formats):
        if not isinstance(f, str) or "%" not in f:
            raise MappingError(path, f"source.date_formats[{i}]", "not a strftime format")
    kind = src.get("extract_kind", "snapshot")
    if kind not in EXTRACT_KINDS:
        raise MappingError(path, "source.extract_kind", f"unknown extract kind {kind!r}")
    return SourceSpec(
        format=fmt,
        encoding=codecs.lookup(encoding).name,
        delimiter=delimiter,
        quotechar=quotechar,
        date_formats=tuple(formats),
        extract_kind=kind,
    )


def _parse_guards(path: Path, raw: Any) -> SnapshotGuards:
    guards = _check_keys(path, "snapshot_guards", raw or {}, _GUARD_KEYS)
    values: dict[str, float] = {}
    for key, v in guards.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
            raise MappingError(path, f"snapshot_guards.{key}", "expected a share from 0 to 1")
        values[key] = float(v)
    return SnapshotGuards(**values)


def parse_mapping(raw: Any, path: Path | str, canonical: CanonicalFields | None = None) -> Mapping:
    """Validate an already-parsed YAML document; `path` is only used in error messages.
    Without `canonical`, the built-in fields plus the agreement file beside `path`."""
    path = Path(path)
    canonical = canonical or load_canonical(mappings_dir=path.parent)
    top = _check_keys(path, "", raw, _TOP_KEYS)
    version = top.get("mapping_version")
    if version != MAPPING_VERSION:
        raise MappingError(path, "mapping_version", f"expected {MAPPING_VERSION}, got {version!r}")
    agency = _check_keys(path, "agency", top.get("agency"), _AGENCY_KEYS)
    code = _str(path, "agency.code", agency.get("code"))
    if not _CODE_RE.match(code or ""):
        raise MappingError(path, "agency.code", "must be 2-8 upper-case letters")
    name = _str(path, "agency.name", agency.get("name"))
    kind = agency.get("kind", "other")
    if kind not in canonical.agency_kinds:
        where = (
            f" or {canonical.agreement}"
            if canonical.agreement
            else f" (declare new kinds in {path.parent / AGREEMENT_FILE})"
        )
        raise MappingError(
            path, "agency.kind", f"unknown agency kind {kind!r}: not built in{where}"
        )
    schedule = _str(path, "schedule", top.get("schedule"), required=False)
    source = _parse_source(path, top.get("source"))

    slots_raw = top.get("related_persons") or {}
    if not isinstance(slots_raw, dict):
        raise MappingError(path, "related_persons", "expected a mapping of slot -> settings")
    related: dict[str, str] = {}
    for slot, spec in slots_raw.items():
        where = f"related_persons.{slot}"
        if not isinstance(slot, str) or not _SLOT_RE.match(slot) or slot == SUBJECT:
            raise MappingError(path, where, "slot names are lower_snake_case, not 'subject'")
        spec = _check_keys(path, where, spec or {}, _SLOT_KEYS)
        rel = spec.get("relationship", "household_member")
        if rel not in canonical.relationships:
            raise MappingError(path, f"{where}.relationship", f"unknown relationship {rel!r}")
        related[slot] = rel

    cols_raw = top.get("columns")
    if not isinstance(cols_raw, list) or not cols_raw:
        raise MappingError(path, "columns", "expected a non-empty list")
    columns: list[ColumnMapping] = []
    seen_sources: set[str] = set()
    seen_fields: set[tuple[str, str]] = set()
    for i, col in enumerate(cols_raw):
        where = f"columns[{i}]"
        col = _check_keys(path, where, col, _COLUMN_KEYS)
        src = col.get("source")
        if isinstance(src, int | float):
            src = str(src)
        src = _str(path, f"{where}.source", src)
        if src in seen_sources:
            raise MappingError(path, f"{where}.source", f"duplicate source column {src!r}")
        seen_sources.add(src)
        cls = col.get("class")
        if cls not in CLASSES:
            raise MappingError(path, f"{where}.class", f"unknown class {cls!r}")
        fname = col.get("field")
        person = col.get("person", SUBJECT)
        if cls == "drop":
            _parse_vocabulary(path, where, col, cls, "", canonical)
            columns.append(ColumnMapping(src, None, cls, SUBJECT))
            continue
        fname = _str(path, f"{where}.field", fname)
        if cls == "identifier" and fname not in canonical.identifier_fields:
            hint = " (it is a payload field)" if fname in canonical.payload_fields else ""
            raise MappingError(path, f"{where}.field", f"unknown identifier field {fname!r}{hint}")
        if cls == "payload" and fname not in canonical.payload_fields:
            hint = " (it is an identifier field)" if fname in canonical.identifier_fields else ""
            raise MappingError(path, f"{where}.field", f"unknown payload field {fname!r}{hint}")
        if person != SUBJECT and person not in related:
            raise MappingError(
                path, f"{where}.person", f"unknown slot {person!r}; declare it in related_persons"
            )
        if cls == "payload" and person != SUBJECT:
            raise MappingError(path, f"{where}.person", "payload fields belong to the subject")
        if fname == "record_id" and person != SUBJECT:
            raise MappingError(path, f"{where}.person", "record_id belongs to the subject")
        if fname == "relationship" and person == SUBJECT:
            raise MappingError(
                path,
                f"{where}.person",
                "relationship needs a related-person "
                "slot; the subject's own relationship to the household lead is "
                "the payload field 'relationship_to_lead'",
            )
        if (person, fname) in seen_fields:
            raise MappingError(path, f"{where}.field", f"field {fname!r} mapped twice for {person}")
        seen_fields.add((person, fname))
        vocab = _parse_vocabulary(path, where, col, cls, fname, canonical)
        columns.append(ColumnMapping(src, fname, cls, person, **vocab))

    n_ids = sum(1 for c in columns if c.field == "record_id")
    if n_ids != 1:
        raise MappingError(path, "columns", f"exactly one record_id column needed, found {n_ids}")
    for slot in related:
        if not any(c.person == slot for c in columns):
            raise MappingError(path, f"related_persons.{slot}", "slot has no mapped columns")
    return Mapping(
        min_identifying_fields=_parse_validation(path, top.get("validation")),
        path=path,
        mapping_version=version,
        canonical_version=canonical.version,
        code=code or "",
        name=name or "",
        kind=kind,
        schedule=schedule,
        source=source,
        columns=tuple(columns),
        related_persons=related,
        snapshot_guards=_parse_guards(path, top.get("snapshot_guards")),
        canonical=canonical,
    )


def _parse_validation(path: Path, raw: Any) -> int:
    """validation.min_identifying_fields: 1-10 (ig_bridge.rowcheck.IDENTIFYING has 10)."""
    val = _check_keys(path, "validation", raw or {}, _VALIDATION_KEYS)
    n = val.get("min_identifying_fields", DEFAULT_MIN_IDENTIFYING_FIELDS)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10:
        raise MappingError(
            path, "validation.min_identifying_fields", "expected an integer from 1 to 10"
        )
    return n


def load_mapping(path: Path | str, canonical: CanonicalFields | None = None) -> Mapping:
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except FileNotFoundError:
        raise MappingError(path, "", "file not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        raise MappingError(path, where, "not valid YAML") from None
    return parse_mapping(raw, path, canonical)


def load_all_mappings(directory: Path | str) -> dict[str, Mapping]:
    """Every *.yaml mapping in a folder, keyed by agency code (codes must be unique)."""
    canonical = load_canonical(mappings_dir=directory)
    out: dict[str, Mapping] = {}
    for p in sorted(Path(directory).glob("*.yaml")):
        if p.name == AGREEMENT_FILE:
            continue
        m = load_mapping(p, canonical)
        if m.code in out:
            other = out[m.code].path
            raise MappingError(p, "agency.code", f"code {m.code} already used by {other}")
        out[m.code] = m
    return out


@dataclass(frozen=True)
class HubContract:
    """What the hub accepts from one agency: the allowed payload fields and slots."""

    agency: str
    mapping_version: int
    canonical_version: int
    payload_fields: frozenset[str]
    slots: frozenset[str]
    max_retire_share: float = SnapshotGuards.max_retire_share

    @property
    def payload_columns(self) -> frozenset[str]:
        """Allowed columns of payload.parquet."""
        return frozenset({"record_ref", "agency", "batch_id"}) | self.payload_fields


def hub_contract(mapping: Mapping) -> HubContract:
    return HubContract(
        agency=mapping.code,
        mapping_version=mapping.mapping_version,
        canonical_version=mapping.canonical_version,
        payload_fields=frozenset(mapping.payload_columns()),
        slots=frozenset(mapping.slots),
        max_retire_share=mapping.snapshot_guards.max_retire_share,
    )
