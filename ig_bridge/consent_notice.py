"""The agency side of a consent withdrawal: verify the hub's signed notice and apply it.

The hub drops signed notices in this agency's inbox (governance.consent_notices writes
`<outbox>/<AGENCY>/<notice_id>.json`). `apply_notices` reads each new one and applies it only
if every check passes:
- the Ed25519 signature by the hub's request key (the PEM given at onboarding, the same key
  identity requests are checked with) over the canonical JSON of the notice;
- `kind` is a consent withdrawal of a known version (a signed identity request is not one);
- it is addressed to this agency, and is not one already applied (replay);
- every record ref decrypts with this agency's own ref key (so the hub can only name this
  agency's own records).
Applying it appends one line per record to the agency's own chained withdrawal register
(`<agency dir>/consent_withdrawals.jsonl`, 0600): local record id, purpose, categories, time,
notice and hub audit reference. That is what the agency's case system actions and what
`withdrawn` reads. A refused notice is one line with its file name and a code, and nothing
else is taken from it. The register never leaves the agency.

    joinedup-bridge consent apply --agency-dir DIR --agency EH --hub-public-key hub.pem \
        --inbox landing/consent/EH
    joinedup-bridge consent list --agency-dir DIR
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ig_bridge.keys import KeyStore, RecordRefError, decrypt_record_ref
from ig_bridge.manifest import canonical_json
from ig_bridge.reid_controls import append_audit, read_audit

if TYPE_CHECKING:  # pandas loads only where an extract is split (bridge commands start fast)
    import pandas as pd

NOTICE_VERSION = 1
NOTICE_KIND = "consent_withdrawal"
MAX_NOTICE = 64 * 1024
REGISTER = "consent_withdrawals.jsonl"
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_CODE = re.compile(r"^[a-z][a-z0-9_]{1,63}$")
_REQUIRED = (
    "notice_version",
    "kind",
    "notice_id",
    "agency",
    "record_refs",
    "purpose",
    "categories",
    "consent_record_id",
    "withdrawn_at",
    "hub_audit_seq",
)


class NoticeRefused(Exception):  # noqa: N818 - an outcome, not a fault
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True)
class Outcome:
    file: str
    outcome: str  # applied | already_applied | refused
    code: str | None = None
    records: int = 0


def verify_notice(raw: bytes, hub_key: Ed25519PublicKey, agency: str) -> dict[str, Any]:
    """The notice if signed by the hub and well formed for this agency; else NoticeRefused."""
    if len(raw) > MAX_NOTICE:
        raise NoticeRefused("oversized")
    try:
        envelope = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise NoticeRefused("malformed_json") from None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("notice"), dict):
        raise NoticeRefused("malformed_envelope")
    notice: dict[str, Any] = envelope["notice"]
    try:
        sig = base64.b64decode(str(envelope.get("signature", "")), validate=True)
        hub_key.verify(sig, canonical_json(notice))
    except (InvalidSignature, binascii.Error, ValueError, TypeError):
        raise NoticeRefused("bad_signature") from None
    if (
        any(k not in notice for k in _REQUIRED)
        or notice["kind"] != NOTICE_KIND
        or notice["notice_version"] != NOTICE_VERSION
    ):
        raise NoticeRefused("not_a_withdrawal_notice")
    if notice["agency"] != agency:
        raise NoticeRefused("wrong_agency")
    refs, cats = notice["record_refs"], notice["categories"]
    if (
        not isinstance(notice["notice_id"], str)
        or not _HEX32.fullmatch(notice["notice_id"])
        or not isinstance(refs, list)
        or not refs
        or not all(isinstance(r, str) for r in refs)
        or not isinstance(notice["purpose"], str)
        or not _CODE.fullmatch(notice["purpose"])
        or not isinstance(cats, list)
        or not all(isinstance(c, str) and _CODE.fullmatch(c) for c in cats)
    ):
        raise NoticeRefused("malformed_notice")
    try:
        when = dt.datetime.fromisoformat(str(notice["withdrawn_at"]))
    except ValueError:
        raise NoticeRefused("malformed_notice") from None
    if when.tzinfo is None:
        raise NoticeRefused("malformed_notice")
    return notice


def _applied_ids(register: Path) -> set[str]:
    return {
        e["notice_id"]
        for e in read_audit(register)
        if e.get("outcome") == "applied" and "notice_id" in e
    }


def apply_notices(
    inbox: Path, agency_dir: Path, agency: str, hub_key: Ed25519PublicKey
) -> list[Outcome]:
    """Verify and apply every notice file in `inbox` (sorted by name); one outcome each."""
    register = Path(agency_dir) / REGISTER
    done = _applied_ids(register)
    ref_keys = KeyStore(Path(agency_dir) / "keys", agency).ref_keys()
    out: list[Outcome] = []
    for path in sorted(Path(inbox).glob("*.json")):
        now = dt.datetime.now(dt.UTC).isoformat()
        try:
            if path.is_symlink() or not path.is_file():
                raise NoticeRefused("not_a_regular_file")
            notice = verify_notice(path.read_bytes(), hub_key, agency)
            if notice["notice_id"] in done:
                out.append(Outcome(path.name, "already_applied"))
                continue
            try:
                local = [decrypt_record_ref(r, ref_keys) for r in notice["record_refs"]]
            except RecordRefError:
                raise NoticeRefused("record_ref_not_this_agency") from None
        except NoticeRefused as exc:
            append_audit(
                register, {"outcome": "refused", "code": exc.code, "file": path.name, "at": now}
            )
            out.append(Outcome(path.name, "refused", exc.code))
            continue
        for ref, local_id in zip(notice["record_refs"], local, strict=True):
            append_audit(
                register,
                {
                    "outcome": "applied",
                    "notice_id": notice["notice_id"],
                    "at": now,
                    "record_ref": ref,
                    "local_id": local_id,
                    "purpose": notice["purpose"],
                    "categories": notice["categories"],
                    "withdrawn_at": notice["withdrawn_at"],
                    "consent_record_id": notice["consent_record_id"],
                    "hub_audit_seq": notice["hub_audit_seq"],
                },
            )
        done.add(notice["notice_id"])
        out.append(Outcome(path.name, "applied", records=len(local)))
    return out


def withdrawn(agency_dir: Path, purpose: str | None = None) -> dict[str, dt.datetime]:
    """Local record id -> when consent was last withdrawn (for a purpose, or any)."""
    out: dict[str, dt.datetime] = {}
    for e in read_audit(Path(agency_dir) / REGISTER):
        if e.get("outcome") == "applied" and (purpose is None or e.get("purpose") == purpose):
            when = dt.datetime.fromisoformat(e["withdrawn_at"])
            if e["local_id"] not in out or when > out[e["local_id"]]:
                out[e["local_id"]] = when
    return out


def carry_withdrawals(pay: pd.DataFrame, local_ids: pd.Series, agency_dir: Path) -> int:
    """Carry applied withdrawals into an outgoing payload (the agency's next extract): a row
    whose consent for a purpose was given on or before a withdrawal the hub sent for that
    record and purpose leaves as withdrawn, dated the withdrawal, until the agency's own system
    records something newer. Returns the number of rows changed."""
    import pandas as pd

    if "consent_status" not in pay.columns or "consent_purpose" not in pay.columns:
        return 0
    latest: dict[tuple[str, str], dt.datetime] = {}
    for e in read_audit(Path(agency_dir) / REGISTER):
        if e.get("outcome") == "applied":
            key = (str(e["local_id"]), str(e["purpose"]))
            when = dt.datetime.fromisoformat(e["withdrawn_at"])
            latest[key] = max(when, latest.get(key, when))
    if not latest:
        return 0
    ids = local_ids.astype(str).reset_index(drop=True)
    when = pd.Series(
        [latest.get((i, str(p))) for i, p in zip(ids, pay["consent_purpose"], strict=True)],
        dtype=object,
    )
    on = pd.to_datetime(when.map(lambda t: None if t is None else t.date()), errors="coerce")
    dated = (
        pd.to_datetime(pay["consent_date"], errors="coerce")
        if "consent_date" in pay.columns
        else pd.Series(pd.NaT, index=pay.index)
    )
    hit = (
        on.notna() & (pay["consent_status"] == "given") & (dated.isna() | (dated <= on))
    ).to_numpy()
    if not hit.any():
        return 0
    pay.loc[hit, "consent_status"] = "withdrawn"
    if "consent_date" in pay.columns:
        col = pay["consent_date"]
        new = on[hit] if pd.api.types.is_datetime64_any_dtype(col) else on[hit].dt.date
        pay.loc[hit, "consent_date"] = new.to_numpy()
    return int(hit.sum())


# --- joinedup-bridge consent ------------------------------------------------------------------


def add_cli(sub: Any) -> None:
    c = sub.add_parser(
        "consent",
        help="apply the hub's signed consent withdrawal notices "
        "(apply) or list the withdrawals applied (list)",
    )
    c.add_argument("action", choices=["apply", "list"])
    c.add_argument("--agency-dir", type=Path, required=True)
    c.add_argument("--agency", help="apply: this agency's code")
    c.add_argument("--hub-public-key", type=Path, help="apply: the hub's request key (PEM)")
    c.add_argument("--inbox", type=Path, help="apply: folder the hub's notices arrive in")
    c.add_argument("--purpose", help="list: only this consent purpose")


def run_cli(a: argparse.Namespace) -> int:
    if a.action == "list":
        for local_id, when in sorted(withdrawn(a.agency_dir, a.purpose).items()):
            print(f"{local_id}\t{when.isoformat()}")
        return 0
    if not (a.agency and a.hub_public_key and a.inbox):
        print("consent apply needs --agency, --hub-public-key and --inbox")
        return 2
    from ig_bridge.reid_service import load_hub_public_key

    outcomes = apply_notices(a.inbox, a.agency_dir, a.agency, load_hub_public_key(a.hub_public_key))
    for o in outcomes:
        print(f"{o.outcome}\t{o.file}\t{o.code or ''}\t{o.records}")
    return 2 if any(o.outcome == "refused" for o in outcomes) else 0
