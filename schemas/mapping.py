"""Agency onboarding mappings (schemas/agencies/<code>.yaml), mapping_version 1.

Loads and validates a mapping against schemas/canonical_fields.yaml, as fixed in
docs/contracts.md. Shared by the bridge (what to read, encode, drop) and the hub (which payload
fields an agency may send). Depends only on pyyaml and the standard library so both sides can
import it.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from schemas.agreement import AGREEMENT_FILE, AgreementError, agreement_path, load_agreement

MAPPING_VERSION = 1
CANONICAL_PATH = Path(__file__).with_name("canonical_fields.yaml")
# Built-in agency kinds; a partnership declares more in its agreement file (schemas.agreement).
AGENCY_KINDS = frozenset(
    {"gp", "health_visiting", "school", "social_care", "police", "housing", "early_help", "other"}
)
CLASSES = frozenset({"identifier", "payload", "drop"})
FORMATS = frozenset({"csv", "parquet"})
EXTRACT_KINDS = frozenset({"snapshot", "delta"})
SUBJECT = "subject"
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
#: A row keeps going to the hub while it has this many identifying fields (ig_bridge.rowcheck).
DEFAULT_MIN_IDENTIFYING_FIELDS = 2
_AGENCY_KEYS = {"code", "name", "kind"}
_SOURCE_KEYS = {"format", "encoding", "delimiter", "quotechar", "date_formats", "extract_kind"}
_CSV_ONLY = {"encoding", "delimiter", "quotechar"}
_COLUMN_KEYS = {"source", "field", "class", "person", "values", "recode", "pattern", "scrub"}
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
_SLOT_KEYS = {"relationship"}
_GUARD_KEYS = {"min_share_of_last_snapshot", "max_problem_rate", "max_retire_share"}
# Identifier types a `recode` table may target (coded values), and what each may recode to.
_SEX_VALUES = ("M", "F", "U")
_BOOL_VALUES = ("yes", "no")
_RECODABLE_TYPES = frozenset({"sex", "relationship", "boolean", "string"})


class MappingError(ValueError):
    """A mapping file is invalid. The message names the file and the key path."""

    def __init__(self, path: Path | str, key_path: str, problem: str) -> None:
        self.path = str(path)
        self.key_path = key_path
        self.problem = problem
        super().__init__(f"{self.path}: {key_path}: {problem}")


@dataclass(frozen=True)
class CanonicalFields:
    version: int
    identifier_fields: dict[str, dict[str, Any]]
    payload_fields: dict[str, dict[str, Any]]
    relationships: tuple[str, ...]
    agency_kinds: frozenset[str] = AGENCY_KINDS
    agreement: Path | None = None  # the agreement file that added kinds / payload fields

    def field_type(self, name: str) -> str:
        spec = self.identifier_fields.get(name) or self.payload_fields[name]
        return str(spec["type"])


@dataclass(frozen=True)
class SourceSpec:
    format: str
    encoding: str = "utf-8"
    delimiter: str = ","
    quotechar: str | None = '"'
    date_formats: tuple[str, ...] = ("%Y-%m-%d",)
    extract_kind: str = "snapshot"


@dataclass(frozen=True)
class ColumnMapping:
    source: str
    field: str | None
    cls: str
    person: str = SUBJECT
    # Payload vocabulary (docs/contracts.md): closed (values / recode / pattern, or the canonical
    # `allowed` list) or scrub: true (open text, scrubbed like free text at the bridge).
    values: tuple[str, ...] = ()
    # payload: source spelling -> vocabulary value; identifier: source code -> canonical value
    # (None: a known code for "not recorded"), applied before normalisation.
    recode: tuple[tuple[str, str | None], ...] = ()
    pattern: str | None = None
    scrub: bool = False

    def recode_lookup(self) -> dict[str, str | None]:
        """Folded source code -> canonical value, the canonical values themselves included
        (an export mixing "1" and "M" is not an error)."""
        out: dict[str, str | None] = {fold_code(v): v for _, v in self.recode if v is not None}
        out.update({fold_code(k): v for k, v in self.recode})
        return out


def fold_code(value: str) -> str:
    """How source codes are compared: trimmed, whitespace collapsed, case-insensitive."""
    return " ".join(str(value).split()).lower()


@dataclass(frozen=True)
class PayloadPolicy:
    """How the bridge treats one payload field before it leaves the agency.

    kind: "typed" (date / number / boolean: closed by the type), "closed" (a value must be in
    `lookup` or match `pattern`, else it is nulled and reported), "scrub" (free text and open
    categories: scrubbed of identifiers)."""

    field: str
    type: str
    kind: str
    lookup: dict[str, str] = field(default_factory=dict)  # folded spelling -> canonical value
    pattern: re.Pattern[str] | None = None

    @staticmethod
    def fold(value: str) -> str:
        return " ".join(value.split()).lower()


@dataclass(frozen=True)
class SnapshotGuards:
    """Safe-snapshot thresholds (docs/contracts.md, "Snapshot guards"), each a share 0..1.

    The bridge refuses a snapshot whose accepted rows are below `min_share_of_last_snapshot`
    of the last snapshot it landed, or any extract whose quarantined/read rate is above
    `max_problem_rate` (the data officer may force both with a recorded reason); the hub holds
    a snapshot that would retire more than `max_retire_share` of the agency's records until an
    operator confirms it."""

    min_share_of_last_snapshot: float = 0.8
    max_problem_rate: float = 0.1
    max_retire_share: float = 0.2


@dataclass(frozen=True)
class Mapping:
    path: Path
    mapping_version: int
    canonical_version: int
    code: str
    name: str
    kind: str
    schedule: str | None
    source: SourceSpec
    columns: tuple[ColumnMapping, ...]
    related_persons: dict[str, str] = field(default_factory=dict)  # slot -> default relationship
    # Fewer identifying fields than this (after bad values are nulled) and a row is quarantined.
    min_identifying_fields: int = DEFAULT_MIN_IDENTIFYING_FIELDS
    snapshot_guards: SnapshotGuards = field(default_factory=SnapshotGuards)
    canonical: CanonicalFields | None = None  # built-in fields + the partnership's agreement

    @property
    def source_columns(self) -> list[str]:
        """Every column the extract must contain, in mapping order."""
        return [c.source for c in self.columns]

    @property
    def record_id_column(self) -> str:
        return next(
            c.source for c in self.columns if c.field == "record_id" and c.person == SUBJECT
        )

    def identifier_columns(self, person: str = SUBJECT) -> dict[str, str]:
        """canonical field -> source column for one person slot."""
        return {
            c.field: c.source
            for c in self.columns
            if c.cls == "identifier" and c.person == person and c.field is not None
        }

    def payload_columns(self) -> dict[str, str]:
        """canonical payload field -> source column."""
        return {c.field: c.source for c in self.columns if c.cls == "payload" and c.field}

    def identifier_recodes(self) -> dict[str, ColumnMapping]:
        """source column -> its identifier column mapping, for columns with a recode table."""
        return {c.source: c for c in self.columns if c.cls == "identifier" and c.recode}

    def payload_policies(
        self, canonical: CanonicalFields | None = None
    ) -> dict[str, PayloadPolicy]:
        """canonical payload field -> what the bridge does with it (closed, scrubbed, typed)."""
        canonical = canonical or self.canonical or load_canonical()
        out: dict[str, PayloadPolicy] = {}
        for c in self.columns:
            if c.cls != "payload" or not c.field:
                continue
            spec = canonical.payload_fields[c.field]
            ftype = str(spec["type"])
            if ftype in _TYPED:
                out[c.field] = PayloadPolicy(c.field, ftype, "typed")
            elif ftype == "text" or c.scrub:
                out[c.field] = PayloadPolicy(c.field, ftype, "scrub")
            else:
                vocab = [str(v) for v in (c.values or spec.get("allowed") or ())]
                lookup = {PayloadPolicy.fold(v): v for v in vocab}
                lookup.update({PayloadPolicy.fold(k): v for k, v in c.recode})
                out[c.field] = PayloadPolicy(
                    c.field, ftype, "closed", lookup, re.compile(c.pattern) if c.pattern else None
                )
        return out

    @property
    def slots(self) -> list[str]:
        """Related-person slots, in declaration order."""
        return list(self.related_persons)


def load_canonical(
    path: Path | str = CANONICAL_PATH, mappings_dir: Path | str | None = None
) -> CanonicalFields:
    """The canonical fields, plus the agency kinds and payload fields that the agreement file
    in `mappings_dir` (if any) declares. An invalid agreement is a MappingError naming it."""
    path = Path(path)
    with path.open(encoding="utf-8") as fh:
        raw = yaml.safe_load(fh)
    if not isinstance(raw, dict) or not isinstance(raw.get("version"), int):
        raise MappingError(path, "version", "canonical field file has no integer version")
    ident = dict(raw.get("identifier_fields") or {})
    payload = dict(raw.get("payload_fields") or {})
    kinds, agreement_file = AGENCY_KINDS, None
    if mappings_dir is not None:
        try:
            agreement = load_agreement(
                agreement_path(mappings_dir),
                builtin_kinds=AGENCY_KINDS,
                builtin_fields=frozenset(ident) | frozenset(payload),
            )
        except AgreementError as exc:
            raise MappingError(exc.path, exc.key_path, exc.problem) from None
        if agreement is not None:
            kinds = AGENCY_KINDS | frozenset(agreement.agency_kinds)
            payload.update(agreement.payload_fields)
            agreement_file = agreement.path
    return CanonicalFields(
        version=raw["version"],
        identifier_fields=ident,
        payload_fields=payload,
        relationships=tuple(raw.get("relationships") or ()),
        agency_kinds=kinds,
        agreement=agreement_file,
    )


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


_TYPED = frozenset({"date", "number", "boolean"})


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
