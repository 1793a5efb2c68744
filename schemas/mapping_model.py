"""The onboarding mapping's data model (schemas.mapping validates files into it) and the
canonical fields it is checked against. Standard library and pyyaml only: the bridge and the
hub both import it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from schemas.agreement import AgreementError, agreement_path, load_agreement

CANONICAL_PATH = Path(__file__).with_name("canonical_fields.yaml")
# Built-in agency kinds; a partnership declares more in its agreement file (schemas.agreement).
AGENCY_KINDS = frozenset(
    {"gp", "health_visiting", "school", "social_care", "police", "housing", "early_help", "other"}
)

SUBJECT = "subject"

#: A row keeps going to the hub while it has this many identifying fields (ig_bridge.rowcheck).
DEFAULT_MIN_IDENTIFYING_FIELDS = 2

_TYPED = frozenset({"date", "number", "boolean"})


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
