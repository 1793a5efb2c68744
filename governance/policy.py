"""Policy model: data-sharing protocols and roles, loaded from YAML and validated.

Every error names the file and the key path, so an IG lead editing a protocol can fix it.
Models are frozen: a decision always sees the policy exactly as it was loaded.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"
PROTOCOLS_DIR = SCHEMAS_DIR / "protocols"
ROLES_FILE = SCHEMAS_DIR / "roles.yaml"
CANONICAL_FILE = SCHEMAS_DIR / "canonical_fields.yaml"

AGENCY_CODES: frozenset[str] = frozenset({"GP", "HV", "SCH", "CSC", "POL", "HSG", "EH"})
ROLE_NAMES: frozenset[str] = frozenset(
    {
        "practitioner",
        "team_manager",
        "analyst",
        "ig_lead",
        "caldicott_guardian",
        "data_officer",
        "administrator",
    }
)

# Statutory gateways a protocol may rely on. Codes match the bridge's `legal_gateway` payload field.
LEGAL_GATEWAYS: dict[str, str] = {
    "CA1989_s17": "Children Act 1989 s.17 (children in need)",
    "CA1989_s47": "Children Act 1989 s.47 (child protection enquiries)",
    "CA2004_s10": "Children Act 2004 s.10 (co-operation to improve well-being)",
    "CA2004_s11": "Children Act 2004 s.11 (duty to safeguard and promote welfare)",
    "CDA1998_s115": "Crime and Disorder Act 1998 s.115 (disclosure for crime reduction)",
}


# Payload fields that steer decisions and are never shared themselves (governance.restricted):
# no protocol may list them and no consent category holds them.
CONTROL_FIELDS = frozenset({"restricted"})


class ConsentRule(StrEnum):
    REQUIRED = "required"
    NOT_REQUIRED_UNDER_GATEWAY = "not_required_under_gateway"
    OVERRIDE_ON_SIGNIFICANT_HARM = "override_on_significant_harm"


class BreakGlassCategory(StrEnum):
    RISK_OF_SIGNIFICANT_HARM = "risk_of_significant_harm"
    IMMEDIATE_DANGER = "immediate_danger"


class PolicyError(ValueError):
    """A protocol or roles file is invalid. The message names the file and the key path."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Role(_Frozen):
    name: str
    doc: str
    row_level: bool
    may_break_glass: bool
    receives_alerts: bool


class BreakGlassRule(_Frozen):
    allowed: bool
    max_hours: int | None = Field(default=None, ge=1, le=72)
    categories: tuple[BreakGlassCategory, ...] = ()
    # A manager of the requester's team must approve before the override counts
    # (governance.access, governance.approvals).
    requires_approval: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> BreakGlassRule:
        if self.requires_approval and not self.allowed:
            raise ValueError("requires_approval given but break-glass is not allowed")
        if self.allowed and (self.max_hours is None or not self.categories):
            raise ValueError("an allowed break-glass needs max_hours and categories")
        if not self.allowed and (self.max_hours is not None or self.categories):
            raise ValueError("max_hours/categories given but break-glass is not allowed")
        return self


class IdentityRule(_Frozen):
    """May a practitioner ask the originating agency who a subject is, under this protocol?
    Default no: a protocol must say so explicitly (the agency's bridge checks it too)."""

    allowed: bool = False


class KnownToRule(_Frozen):
    """The "known to" stage before the detail: for these agencies a worker may learn *that*
    the agency holds records about a person (e.g. that police are involved), never what, when
    or why. It rests on its own statutory gateway, since it shares less than the detail and
    comes before any consent is sought; decided by the same decision function
    (governance.known_to). No agencies: the protocol has no such stage."""

    agencies: tuple[str, ...] = ()
    legal_gateway: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> KnownToRule:
        for code in self.agencies:
            if code not in AGENCY_CODES:
                raise ValueError(f"unknown agency code {code!r}; known: {sorted(AGENCY_CODES)}")
        if len(set(self.agencies)) != len(self.agencies):
            raise ValueError("duplicate agency")
        if self.agencies and self.legal_gateway is None:
            raise ValueError("a known_to stage needs the legal_gateway it rests on")
        if self.legal_gateway is not None and self.legal_gateway not in LEGAL_GATEWAYS:
            raise ValueError(
                f"unknown legal gateway {self.legal_gateway!r}; known: {sorted(LEGAL_GATEWAYS)}"
            )
        return self


class Retention(_Frozen):
    months: int = Field(ge=1, le=1200)
    after: str = Field(min_length=1)


class Protocol(_Frozen):
    protocol_version: Literal[1]
    id: str = Field(pattern=r"^[a-z][a-z0-9_]{2,63}$")
    version: int = Field(default=1, ge=1)  # of this protocol's content; bump on every change
    title: str = Field(min_length=3)
    purpose: str = Field(min_length=10)
    consent_purpose: str = Field(pattern=r"^[a-z][a-z0-9_]{1,63}$")
    consent_rule: ConsentRule
    legal_gateway: str | None = None
    agencies: dict[str, tuple[str, ...]]
    roles: tuple[str, ...] = Field(min_length=1)
    break_glass: BreakGlassRule
    identity: IdentityRule = IdentityRule()
    known_to: KnownToRule = KnownToRule()
    retention: Retention
    effective_from: dt.date
    review_date: dt.date
    owner_role: str = "ig_lead"
    # SHA-256 of the document's bytes as loaded: what an agency's bridge checks against the
    # protocols it agreed (ig_bridge.reid_controls). Not a YAML key; "" if not from a file.
    _sha256: str = PrivateAttr(default="")

    @property
    def document_sha256(self) -> str:
        return self._sha256

    @field_validator("legal_gateway")
    @classmethod
    def _gateway_known(cls, v: str | None) -> str | None:
        if v is not None and v not in LEGAL_GATEWAYS:
            raise ValueError(f"unknown legal gateway {v!r}; known: {sorted(LEGAL_GATEWAYS)}")
        return v

    @field_validator("agencies")
    @classmethod
    def _agencies_known(cls, v: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        if not v:
            raise ValueError("at least one participating agency is required")
        for code, fields in v.items():
            if code not in AGENCY_CODES:
                raise ValueError(f"unknown agency code {code!r}; known: {sorted(AGENCY_CODES)}")
            if not fields:
                raise ValueError(f"agency {code}: empty minimum dataset")
            if len(set(fields)) != len(fields):
                raise ValueError(f"agency {code}: duplicate field in minimum dataset")
        return v

    @field_validator("roles")
    @classmethod
    def _roles_known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for r in v:
            if r not in ROLE_NAMES:
                raise ValueError(f"unknown role {r!r}; known: {sorted(ROLE_NAMES)}")
        return v

    @model_validator(mode="after")
    def _rules_consistent(self) -> Protocol:
        needs_gateway = self.consent_rule in (
            ConsentRule.NOT_REQUIRED_UNDER_GATEWAY,
            ConsentRule.OVERRIDE_ON_SIGNIFICANT_HARM,
        )
        if needs_gateway and self.legal_gateway is None:
            raise ValueError(f"consent_rule {self.consent_rule.value} needs a legal_gateway")
        overridable = self.consent_rule is ConsentRule.OVERRIDE_ON_SIGNIFICANT_HARM
        if self.break_glass.allowed and not overridable:
            raise ValueError("break_glass.allowed needs consent_rule override_on_significant_harm")
        if overridable and not self.break_glass.allowed:
            raise ValueError("consent_rule override_on_significant_harm needs break_glass.allowed")
        if self.review_date <= self.effective_from:
            raise ValueError("review_date must be after effective_from")
        return self

    def in_force(self, on: dt.date) -> bool:
        return self.effective_from <= on <= self.review_date

    def minimum_dataset(self, agency: str) -> frozenset[str]:
        return frozenset(self.agencies.get(agency, ()))


def _fmt_loc(loc: Iterable[Any]) -> str:
    return ".".join(str(p) for p in loc) or "<root>"


def _load_yaml(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from exc


def _raise_validation(path: Path, exc: ValidationError) -> None:
    problems = "; ".join(f"{_fmt_loc(e['loc'])}: {e['msg']}" for e in exc.errors())
    raise PolicyError(f"{path}: {problems}") from None


def load_payload_fields(canonical_file: Path = CANONICAL_FILE) -> frozenset[str]:
    doc = _load_yaml(canonical_file)
    fields = doc.get("payload_fields") if isinstance(doc, dict) else None
    if not isinstance(fields, dict):
        raise PolicyError(f"{canonical_file}: payload_fields: missing or not a mapping")
    return frozenset(fields)


def load_roles(path: Path = ROLES_FILE) -> dict[str, Role]:
    doc = _load_yaml(path)
    if not isinstance(doc, dict) or doc.get("roles_version") != 1:
        raise PolicyError(f"{path}: roles_version: must be 1")
    raw = doc.get("roles")
    if not isinstance(raw, dict):
        raise PolicyError(f"{path}: roles: missing or not a mapping")
    extra = set(doc) - {"roles_version", "roles"}
    if extra:
        raise PolicyError(f"{path}: {sorted(extra)[0]}: unknown key")
    roles: dict[str, Role] = {}
    for name, body in raw.items():
        if name not in ROLE_NAMES:
            raise PolicyError(f"{path}: roles.{name}: unknown role; known: {sorted(ROLE_NAMES)}")
        if not isinstance(body, dict):
            raise PolicyError(f"{path}: roles.{name}: must be a mapping")
        try:
            roles[name] = Role(name=name, **body)
        except ValidationError as exc:
            problems = "; ".join(
                f"roles.{name}.{_fmt_loc(e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise PolicyError(f"{path}: {problems}") from None
    missing = ROLE_NAMES - set(roles)
    if missing:
        raise PolicyError(f"{path}: roles: missing {sorted(missing)}")
    return roles


def load_protocol(path: Path, payload_fields: frozenset[str] | None = None) -> Protocol:
    payload_fields = payload_fields if payload_fields is not None else load_payload_fields()
    doc = _load_yaml(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not isinstance(doc, dict):
        raise PolicyError(f"{path}: <root>: must be a mapping")
    try:
        proto = Protocol.model_validate(doc)
    except ValidationError as exc:
        _raise_validation(path, exc)
        raise  # unreachable; keeps type checkers happy
    for code, fields in proto.agencies.items():
        for i, f in enumerate(fields):
            if f in CONTROL_FIELDS:
                raise PolicyError(
                    f"{path}: agencies.{code}.{i}: {f!r} is a control "
                    "marker, not shareable information"
                )
            if f not in payload_fields:
                raise PolicyError(
                    f"{path}: agencies.{code}.{i}: {f!r} is not a payload field in "
                    f"canonical_fields.yaml"
                )
    if path.stem != proto.id:
        raise PolicyError(f"{path}: id: {proto.id!r} must match the file name {path.stem!r}")
    proto._sha256 = digest
    return proto


def load_protocols(
    directory: Path = PROTOCOLS_DIR,
    canonical_file: Path = CANONICAL_FILE,
    roles_file: Path = ROLES_FILE,
) -> dict[str, Protocol]:
    payload_fields = load_payload_fields(canonical_file)
    roles = load_roles(roles_file)
    protocols: dict[str, Protocol] = {}
    for path in sorted(directory.glob("*.yaml")):
        proto = load_protocol(path, payload_fields)
        for i, r in enumerate(proto.roles):
            if not roles[r].row_level:
                raise PolicyError(
                    f"{path}: roles.{i}: role {r!r} never sees person-level payload "
                    f"(row_level: false in {roles_file.name})"
                )
        protocols[proto.id] = proto
    if not protocols:
        raise PolicyError(f"{directory}: no protocol files (*.yaml)")
    return protocols
