"""Subject access report: who touched one person's records, when, under which protocol, which
fields, on what basis (consent, statutory gateway or break-glass override).

Split along the trust boundary:
- hub side, `collect_sar(audit, person_id, con)`: every audit entry whose subject is that
  person_id (decisions and withheld requests), plus the person's record refs per agency. Only
  hub ids and codes: the hub never learns who the person is. Entries about other people,
  including other members of the same household, are never included;
- agency side, `reidentify_for_sar(...)`: the originating agency decrypts its own refs with its
  own keys through `ig_bridge.reidentify` (audited in the agency's log) so the report can be
  addressed to the person, and `agency_identity_requests` lists earlier re-identification
  requests that named the person's refs; `render_sar` writes the HTML the agency sends.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb

SAR_PROTOCOL = "subject_access_request"


@dataclass(frozen=True)
class SarField:
    agency: str
    field: str
    allowed: bool
    legal_basis: str | None
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class SarEntry:
    audit_seq: int
    recorded_at: str
    at: str | None
    entry_type: str  # decision | withheld_request
    user_id: str
    role: str | None
    protocol_id: str
    purpose: str | None
    legal_gateway: str | None
    interactions: tuple[str, ...]
    fields: tuple[SarField, ...]
    break_glass: Mapping[str, Any] | None = None
    # reasons recorded on the interactions (a withheld request has no fields, only these)
    interaction_reasons: tuple[str, ...] = ()

    @property
    def disclosed(self) -> list[SarField]:
        return [f for f in self.fields if f.allowed]

    @property
    def refused(self) -> list[SarField]:
        return [f for f in self.fields if not f.allowed]


@dataclass
class SarReport:
    person_id: str
    generated_at: str
    record_refs: dict[str, list[str]]
    entries: list[SarEntry] = field(default_factory=list)

    @property
    def protocols(self) -> list[str]:
        return sorted({e.protocol_id for e in self.entries})

    @property
    def users(self) -> list[str]:
        return sorted({e.user_id for e in self.entries})


def _entry(seq: int, recorded_at: str, body: Mapping[str, Any]) -> SarEntry:
    return SarEntry(
        audit_seq=seq,
        recorded_at=recorded_at,
        at=body.get("at"),
        entry_type=str(body.get("type")),
        user_id=str(body.get("user_id")),
        role=body.get("role"),
        protocol_id=str(body.get("protocol_id")),
        purpose=body.get("purpose"),
        legal_gateway=body.get("legal_gateway"),
        interactions=tuple(str(i.get("kind")) for i in body.get("interactions") or []),
        fields=tuple(
            SarField(
                str(f.get("agency")),
                str(f.get("field")),
                bool(f.get("allowed")),
                f.get("legal_basis"),
                tuple(f.get("reasons") or []),
            )
            for f in body.get("fields") or []
        ),
        break_glass=body.get("break_glass"),
        interaction_reasons=tuple(
            dict.fromkeys(
                str(r) for i in body.get("interactions") or [] for r in i.get("reasons") or []
            )
        ),
    )


def collect_sar(
    audit: Any, person_id: str, con: duckdb.DuckDBPyConnection | None = None
) -> SarReport:
    """Hub side. `audit` is a governance.audit.AuditLog; `con` the warehouse (for record refs).
    Reads the whole chain: a subject access request must be complete, not a sample."""
    entries = []
    for rec in audit.entries():
        body = rec.data()
        subject = body.get("subject") or {}
        if subject.get("person_id") == person_id:
            entries.append(_entry(rec.seq, rec.recorded_at, body))
        # A household view records one entry with a decision per member: the person's own
        # decision is theirs; the other members' decisions are not.
        for sub in body.get("decisions") or () if body.get("type") == "household_decision" else ():
            if (sub.get("subject") or {}).get("person_id") == person_id:
                entries.append(_entry(rec.seq, rec.recorded_at, sub))
    refs: dict[str, list[str]] = {}
    if con is not None:
        for agency, ref in con.execute(
            "SELECT agency, record_ref FROM record_person WHERE person_id = ? ORDER BY ALL",
            [person_id],
        ).fetchall():
            refs.setdefault(agency, []).append(ref)
    return SarReport(
        person_id, dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), refs, entries
    )


def reidentify_for_sar(
    report: SarReport,
    agency: str,
    *,
    ref_keys: Any,
    lookup: Any,
    audit_log: Path | str,
    requesting_user: str,
) -> list[Any]:
    """Agency side: decrypt this agency's refs of the person (ig_bridge.reidentify, audited)."""
    from ig_bridge.reidentify import ReidentificationRequest, reidentify

    refs = report.record_refs.get(agency, [])
    if not refs:
        return []
    req = ReidentificationRequest(
        protocol_id=SAR_PROTOCOL, requesting_user=requesting_user, reason="subject_access_request"
    )
    return reidentify(refs, req, ref_keys=ref_keys, lookup=lookup, audit_log=audit_log)


def agency_identity_requests(audit_log: Path | str, refs: Sequence[str]) -> list[dict[str, Any]]:
    """Agency side: earlier re-identification requests in the agency's log that named any of
    the person's refs (only this person's refs are echoed back, never anyone else's)."""
    path = Path(audit_log)
    if not path.exists():
        return []
    mine = set(refs)
    out = []
    for line in path.read_text("utf-8").splitlines():
        if not line.strip():
            continue
        e = json.loads(line)
        hit = [r for r in e.get("record_refs") or [] if r in mine]
        if hit:
            out.append(
                {
                    "at": e.get("at"),
                    "protocol_id": e.get("protocol_id"),
                    "requesting_user": e.get("requesting_user"),
                    "reason": e.get("reason"),
                    "outcome": e.get("outcome"),
                    "n_records": len(hit),
                }
            )
    return out


IDENTITY_LABELS = {
    "given_name": "First name",
    "family_name": "Last name",
    "date_of_birth": "Date of birth",
    "address": "Address",
    "postcode": "Postcode",
}


def merge_identities(identities: Sequence[Any]) -> list[tuple[str, list[str]]]:
    """One identity for the person out of the agency's records of them: each detail once, with
    any other values the records hold (an old address) listed after it, never repeated."""
    merged: dict[str, list[str]] = {}
    for i in identities:
        if not getattr(i, "found", False) or not i.display:
            continue
        for k, v in i.display.items():
            if v is None or str(v).strip() == "":
                continue
            vals = merged.setdefault(k, [])
            if str(v) not in vals:
                vals.append(str(v))
    order = [k for k in IDENTITY_LABELS if k in merged] + sorted(set(merged) - set(IDENTITY_LABELS))
    return [(IDENTITY_LABELS.get(k, k.replace("_", " ").capitalize()), merged[k]) for k in order]


def _glossary(report: SarReport) -> list[tuple[str, str]]:
    """The agreements and laws this report mentions, explained once."""
    from governance.reports import sar_words as w

    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for e in report.entries:
        if e.protocol_id not in seen and e.protocol_id != "None":
            seen.add(e.protocol_id)
            out.append((w.protocol(e.protocol_id), w.protocol_purpose(e.protocol_id)))
        for basis in [e.legal_gateway, *(f.legal_basis for f in e.disclosed)]:
            if basis and basis not in seen:
                seen.add(basis)
                out.append((w.legal_basis(basis).split(" (")[0], w.legal_basis_explained(basis)))
    return out


def render_sar(
    report: SarReport,
    identities: Sequence[Any] = (),
    identity_requests: Sequence[Mapping[str, Any]] = (),
) -> str:
    """HTML for the person, in plain English (codes turned into words by sar_words). With
    `identities` (agency side only) the identity block is filled once; the hub renders without
    it."""
    import jinja2

    from governance.reports import sar_words

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resources.files("governance.reports") / "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template("sar.html.j2").render(
        r=report,
        identity=merge_identities(identities),
        w=sar_words,
        identity_requests=list(identity_requests),
        glossary=_glossary(report),
    )


def write_sar_file(path: Path | str, html: str) -> Path:
    """Write the report readable by its owner only (0600): it holds name, date of birth and
    address. Created under a fresh temporary name (O_EXCL, O_NOFOLLOW) and renamed into place,
    so a file or symlink planted at `path` beforehand is replaced, never written through, and
    never keeps wider permissions."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(html)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
