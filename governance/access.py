"""Access: who may act under which protocol, team managers' rights, and protocol sign-off.

A role named by a protocol is necessary but not enough: `schemas/assignments.yaml` assigns each
protocol to agencies, teams and named users, and only those may act under it (a school's
designated safeguarding lead is a `practitioner`, but the s.47 protocol is assigned to
children's social care and the police, so the DSL's allocation does not open social-care case
notes). Teams name their members and managers: a manager has a legitimate relationship with
every subject currently allocated to a member of a team they manage, and approves break-glass
requests where the protocol requires it (governance.approvals). A protocol version is in force
only when every agency named in it has signed off its content hash (governance.signoff).

The API and the workspace always run with it (configured_access: the shipped assignments
unless a config names another file; sign-off always required). Every rule is checked on each
decision, reading the store, so a sign-off or an allocation recorded by another process
counts at once.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from governance.policy import AGENCY_CODES, SCHEMAS_DIR, PolicyError, Protocol
from governance.relationships import Relationship, RelationshipRegistry, Subject

CHALLENGE_TO = ("ig_lead", "caldicott_guardian")  # whom a refusal is challenged to

if TYPE_CHECKING:
    from governance.decision_records import BreakGlass
    from governance.decisions import User
    from governance.signoff import SignOffStore

ASSIGNMENTS_FILE = SCHEMAS_DIR / "assignments.yaml"
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_TEAM = re.compile(r"^[a-z][a-z0-9_]{1,63}$")

NOT_ASSIGNED = "not_assigned_to_protocol"
NOT_SIGNED_OFF = "protocol_not_signed_off"
NEEDS_APPROVAL = "break_glass_needs_manager_approval"
APPROVER_NOT_MANAGER = "break_glass_approver_not_manager_of_requester"
SELF_APPROVED = "break_glass_self_approved"


@dataclass(frozen=True)
class Team:
    team_id: str
    agency: str
    managers: frozenset[str]
    members: frozenset[str]


@dataclass(frozen=True)
class ProtocolAssignment:
    agencies: frozenset[str] = frozenset()
    teams: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Assignments:
    teams: Mapping[str, Team]
    protocols: Mapping[str, ProtocolAssignment]
    restricted_contacts: Mapping[str, str]  # agency -> whom to contact about a restricted record
    source: str = "<memory>"
    # role (ig_lead | caldicott_guardian) -> who decides challenges addressed to it
    # (governance.challenges); a role not listed: anyone holding it
    challenge_deciders: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def teams_of(self, user_id: str) -> list[Team]:
        return [t for t in self.teams.values() if user_id in t.members]

    def managed_by(self, user_id: str) -> list[Team]:
        return [t for t in self.teams.values() if user_id in t.managers]

    def manages(self, manager_id: str, member_id: str) -> bool:
        """Does `manager_id` manage a team `member_id` belongs to (never themself)?"""
        return manager_id != member_id and any(
            member_id in t.members for t in self.managed_by(manager_id)
        )

    def may_act(self, user: User, protocol_id: str) -> bool:
        a = self.protocols.get(protocol_id)
        if a is None:
            return False
        if user.user_id in a.users:
            return True
        if user.agency is not None and user.agency in a.agencies:
            return True
        mine = {t.team_id for t in self.teams_of(user.user_id)} | {
            t.team_id for t in self.managed_by(user.user_id)
        }
        return bool(mine & a.teams)

    def contact_for(self, agency: str) -> str:
        return self.restricted_contacts.get(agency, f"the {agency} information governance lead")


def _err(path: Path | str, where: str, problem: str) -> PolicyError:
    return PolicyError(f"{path}: {where}: {problem}")


def _id_list(
    path: Path | str, where: str, raw: Any, pattern: re.Pattern[str] = _ID
) -> frozenset[str]:
    if raw is None:
        return frozenset()
    if not isinstance(raw, list):
        raise _err(path, where, "must be a list")
    for i, v in enumerate(raw):
        if not isinstance(v, str) or not pattern.fullmatch(v):
            raise _err(path, f"{where}.{i}", f"{v!r} is not a valid id")
    if len(set(raw)) != len(raw):
        raise _err(path, where, "duplicate entry")
    return frozenset(raw)


def _keys(path: Path | str, where: str, obj: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _err(path, where, "must be a mapping")
    extra = sorted(set(obj) - allowed)
    if extra:
        raise _err(path, f"{where}.{extra[0]}", f"unknown key; allowed: {sorted(allowed)}")
    return obj


def parse_assignments(
    doc: Any, path: Path | str, protocols: Mapping[str, Protocol] | None = None
) -> Assignments:
    """Validate an assignments document; every error names the file and the key path."""
    doc = _keys(
        path,
        "<root>",
        doc,
        {
            "assignments_version",
            "teams",
            "protocols",
            "restricted_contacts",
            "challenge_deciders",
        },
    )
    if doc.get("assignments_version") != 1:
        raise _err(path, "assignments_version", "must be 1")
    teams: dict[str, Team] = {}
    raw_t = doc.get("teams") or {}
    if not isinstance(raw_t, dict):
        raise _err(path, "teams", "must be a mapping of team id to team")
    for tid, body in raw_t.items():
        where = f"teams.{tid}"
        if not isinstance(tid, str) or not _TEAM.fullmatch(tid):
            raise _err(path, where, "team id must be lower-case letters, digits and _")
        body = _keys(path, where, body, {"agency", "managers", "members"})
        agency = body.get("agency")
        if agency not in AGENCY_CODES:
            raise _err(
                path, f"{where}.agency", f"unknown agency {agency!r}; known: {sorted(AGENCY_CODES)}"
            )
        managers = _id_list(path, f"{where}.managers", body.get("managers"))
        if not managers:
            raise _err(path, f"{where}.managers", "a team needs at least one manager")
        members = _id_list(path, f"{where}.members", body.get("members"))
        both = sorted(managers & members)
        if both:
            raise _err(path, f"{where}.members", f"{both[0]!r} is also a manager of the team")
        teams[tid] = Team(tid, agency, managers, members)
    assigned: dict[str, ProtocolAssignment] = {}
    raw_p = doc.get("protocols")
    if not isinstance(raw_p, dict) or not raw_p:
        raise _err(path, "protocols", "missing or empty: nobody could act under any protocol")
    for pid, body in raw_p.items():
        where = f"protocols.{pid}"
        if protocols is not None and pid not in protocols:
            raise _err(path, where, f"unknown protocol; known: {sorted(protocols)}")
        body = _keys(path, where, body, {"agencies", "teams", "users"})
        agencies = _id_list(path, f"{where}.agencies", body.get("agencies"))
        for a in sorted(agencies):
            if a not in AGENCY_CODES:
                raise _err(path, f"{where}.agencies", f"unknown agency {a!r}")
        tids = _id_list(path, f"{where}.teams", body.get("teams"), _TEAM)
        for t in sorted(tids):
            if t not in teams:
                raise _err(path, f"{where}.teams", f"unknown team {t!r}; define it under teams")
        users = _id_list(path, f"{where}.users", body.get("users"))
        if not (agencies or tids or users):
            raise _err(path, where, "assigned to nobody: give agencies, teams or users")
        assigned[pid] = ProtocolAssignment(agencies, tids, users)
    contacts_raw = _keys(
        path, "restricted_contacts", doc.get("restricted_contacts") or {}, set(AGENCY_CODES)
    )
    contacts: dict[str, str] = {}
    for a, text in contacts_raw.items():
        if not isinstance(text, str) or not 3 <= len(text.strip()) <= 120:
            raise _err(path, f"restricted_contacts.{a}", "a team or role contact (3-120 chars)")
        contacts[a] = text.strip()
    deciders_raw = _keys(
        path, "challenge_deciders", doc.get("challenge_deciders") or {}, set(CHALLENGE_TO)
    )
    deciders = {
        role: _id_list(path, f"challenge_deciders.{role}", users)
        for role, users in deciders_raw.items()
    }
    return Assignments(teams, assigned, contacts, str(path), deciders)


def load_assignments(
    path: Path = ASSIGNMENTS_FILE, protocols: Mapping[str, Protocol] | None = None
) -> Assignments:
    try:
        doc = yaml.safe_load(path.read_text("utf-8"))
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from exc
    return parse_assignments(doc, path, protocols)


class TeamRelationships(RelationshipRegistry):
    """A relationship registry that also gives a team manager the current allocations of the
    members of the teams they manage. Storage is the wrapped registry's (`base`)."""

    def __init__(self, base: RelationshipRegistry, assignments: Assignments) -> None:
        self.base = base
        self.assignments = assignments

    def __getattr__(self, name: str) -> Any:  # e.g. load_frame, add_many of the SQL registry
        return getattr(self.base, name)

    def add(self, rel: Relationship) -> None:
        self.base.add(rel)

    def all(self) -> list[Relationship]:
        return self.base.all()

    def to_frame(self) -> Any:
        return self.base.to_frame()

    def end(self, user_id: str, kind: Any, subject_id: str, on: dt.date) -> int:
        return self.base.end(user_id, kind, subject_id, on)

    def team_allocations(self, manager_id: str, on: dt.date) -> list[Relationship]:
        """The current allocations of the members of the teams this user manages."""
        members = {m for t in self.assignments.managed_by(manager_id) for m in t.members}
        return [r for r in self.base.all() if r.user_id in members and r.current(on)]

    def current(
        self, user_id: str, subject: Subject, at: dt.date | dt.datetime
    ) -> Relationship | None:
        own = self.base.current(user_id, subject, at)
        if own is not None:
            return own
        for team in self.assignments.managed_by(user_id):
            for member in sorted(team.members):
                rel = self.base.current(member, subject, at)
                if rel is not None:
                    return Relationship(
                        user_id,
                        rel.kind,
                        rel.subject_id,
                        rel.start,
                        rel.end,
                        f"team_manager:{team.team_id}",
                    )
        return None


class AccessControl:
    """The access rules a Governance applies beyond role and relationship."""

    def __init__(self, assignments: Assignments, signoffs: SignOffStore | None) -> None:
        self.assignments = assignments
        self.signoffs = signoffs

    def refusal_reasons(self, user: User, protocol: Protocol | None) -> list[str]:
        """Recipient-side reasons this user may not act under this protocol now."""
        if protocol is None:
            return []
        out = []
        if not self.assignments.may_act(user, protocol.id):
            out.append(NOT_ASSIGNED)
        if self.signoffs is not None and self.signoffs.missing(protocol):
            out.append(NOT_SIGNED_OFF)
        return out

    def break_glass_problems(self, user: User, protocol: Protocol, bg: BreakGlass) -> list[str]:
        """Where the protocol requires approval, an override counts only once a manager of a
        team the requester belongs to has approved it (governance.approvals)."""
        if not protocol.break_glass.requires_approval:
            return []
        if bg.approved_by is None:
            return [NEEDS_APPROVAL]
        if bg.approved_by == user.user_id:
            return [SELF_APPROVED]
        if not self.assignments.manages(bg.approved_by, user.user_id):
            return [APPROVER_NOT_MANAGER]
        return []

    def wrap_relationships(self, relationships: RelationshipRegistry) -> TeamRelationships:
        return TeamRelationships(relationships, self.assignments)

    def protocols_for(self, user: User, protocols: Iterable[Protocol]) -> list[Protocol]:
        return [p for p in protocols if self.assignments.may_act(user, p.id)]


_OFF = (False, "0", "false", "no", "off", "none")


def configured_access(
    engine: Any,
    assignments: str | Path | None = None,
    require_sign_off: Any = None,
    protocols: Mapping[str, Protocol] | None = None,
    *,
    source: str = "settings",
) -> AccessControl:
    """Access control for a hub process from its settings: the API config's `assignments` and
    `require_sign_off` keys, or the workspace's JOINEDUP_ASSIGNMENTS and
    JOINEDUP_REQUIRE_SIGN_OFF. On by default: no `assignments` means the shipped
    schemas/assignments.yaml, and sign-off is always required. Neither can be turned off
    (docs/governance.md, "Turning it on"): a setting that tries is refused, naming `source`, so
    a hub never silently falls back to the role-only rules; a partnership that wants wider
    access writes it into its assignments file, where it is reviewed and versioned."""
    from governance.policy import load_protocols
    from governance.signoff import SignOffStore

    if isinstance(assignments, bool) or (
        assignments is not None and str(assignments).strip().lower() in _OFF[1:]
    ):
        raise PolicyError(
            f"{source}: assignments: {assignments!r}: protocol assignment cannot "
            "be turned off; give an assignments file (default "
            f"{ASSIGNMENTS_FILE.name}) that assigns each protocol to whom it may"
        )
    if require_sign_off is False or (
        require_sign_off is not None and str(require_sign_off).strip().lower() in _OFF[1:]
    ):
        raise PolicyError(
            f"{source}: require_sign_off: {require_sign_off!r}: sign-off by each "
            "data controller cannot be turned off; have each agency's IG lead "
            "sign (python -m governance.signoff sign)"
        )
    if require_sign_off not in (None, True, "", "1", "true"):
        raise PolicyError(
            f"{source}: require_sign_off: must be true or absent, not {require_sign_off!r}"
        )
    path = Path(assignments) if assignments else ASSIGNMENTS_FILE
    loaded = load_assignments(path, protocols if protocols is not None else load_protocols())
    return AccessControl(loaded, SignOffStore(engine))
