"""Data-controller sign-off of each protocol version.

Every agency named in a protocol is a data controller for what it shares under it, in the
detail or in its known-to stage (governance.known_to: involvement only), so each of them signs
off (`parties`); each stage is in force only once the agencies it covers have signed. Each signs
off the exact content of a version: (protocol id, version, SHA-256 of the document). A protocol
is in force only once all of its agencies have signed off that hash, so an edit to the file that
nobody signed (even without a version bump) stops every decision under it with
`protocol_not_signed_off`. A sign-off is recorded by the agency's own IG lead (or data officer),
as one audit entry with the sign-off row in the same transaction.

    python -m governance.signoff sign --db URL [--schema S] --protocol ID --agency CSC --by USER
    python -m governance.signoff status --db URL [--schema S]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from dataclasses import dataclass

from sqlalchemy import BigInteger, Engine, Integer, String, UniqueConstraint, insert, select
from sqlalchemy.orm import Mapped, mapped_column

from governance.audit import AuditLog, make_engine
from governance.models import Base
from governance.policy import Protocol, load_protocols

SIGNING_ROLES = frozenset({"ig_lead", "data_officer"})


class SignOffError(ValueError):
    """A sign-off that may not be recorded; the message says why (codes and ids only)."""


class ProtocolSignOff(Base):
    __tablename__ = "gov_protocol_signoffs"
    __table_args__ = (
        UniqueConstraint(
            "protocol_id", "version", "sha256", "agency", name="uq_gov_protocol_signoff"
        ),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    protocol_id: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    agency: Mapped[str] = mapped_column(String(8), nullable=False)
    signed_by: Mapped[str] = mapped_column(String(128), nullable=False)
    signed_at: Mapped[str] = mapped_column(String(40), nullable=False)
    audit_seq: Mapped[int] = mapped_column(BigInteger, nullable=False)


@dataclass(frozen=True)
class SignOff:
    protocol_id: str
    version: int
    sha256: str
    agency: str
    signed_by: str
    signed_at: str
    audit_seq: int


def parties(protocol: Protocol) -> list[str]:
    """The agencies that sign off a protocol: those sharing detail under it and those whose
    involvement its known-to stage shows (that stage is decided as a protocol of its own, over
    those agencies, and is refused until each of them has signed)."""
    return sorted(set(protocol.agencies) | set(protocol.known_to.agencies))


class SignOffStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        Base.metadata.create_all(engine, tables=[ProtocolSignOff.__table__])

    def signed(self, protocol: Protocol) -> set[str]:
        """Agencies that signed off this protocol's current version and content hash."""
        c = ProtocolSignOff
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(c.agency).where(
                    c.protocol_id == protocol.id,
                    c.version == protocol.version,
                    c.sha256 == protocol.document_sha256,
                )
            ).all()
        return {r[0] for r in rows}

    def missing(self, protocol: Protocol) -> list[str]:
        if not protocol.document_sha256:  # not loaded from a file: nothing was signed
            return sorted(protocol.agencies)
        return sorted(set(protocol.agencies) - self.signed(protocol))

    def all(self) -> list[SignOff]:
        c = ProtocolSignOff
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    c.protocol_id,
                    c.version,
                    c.sha256,
                    c.agency,
                    c.signed_by,
                    c.signed_at,
                    c.audit_seq,
                ).order_by(c.id)
            ).all()
        return [SignOff(*r) for r in rows]

    def sign(
        self,
        audit: AuditLog,
        protocol: Protocol,
        agency: str,
        signed_by: str,
        signer_role: str,
        signer_agency: str | None,
        at: dt.datetime | None = None,
    ) -> SignOff:
        """Record `agency`'s sign-off of this protocol version's content, by that agency's own
        IG lead or data officer. Refused (nothing written) otherwise."""
        if agency not in parties(protocol):
            raise SignOffError(
                f"{protocol.id} v{protocol.version}: {agency} is not a party to this protocol"
            )
        if signer_role not in SIGNING_ROLES:
            raise SignOffError(
                f"role {signer_role} may not sign off a protocol; allowed: {sorted(SIGNING_ROLES)}"
            )
        if signer_agency != agency:
            raise SignOffError(
                f"{signed_by} does not act for {agency}: only {agency}'s own "
                "data controller signs off for it"
            )
        if not protocol.document_sha256:
            raise SignOffError(f"{protocol.id}: not loaded from a file; no content hash to sign")
        if agency in self.signed(protocol):
            raise SignOffError(
                f"{protocol.id} v{protocol.version}: {agency} already signed off this content"
            )
        at = at or dt.datetime.now(dt.UTC)
        body = {
            "type": "protocol_sign_off",
            "at": at.isoformat(),
            "protocol_id": protocol.id,
            "protocol_version": protocol.version,
            "protocol_sha256": protocol.document_sha256,
            "agency": agency,
            "user_id": signed_by,
            "role": signer_role,
        }
        row = {
            "protocol_id": protocol.id,
            "version": protocol.version,
            "sha256": protocol.document_sha256,
            "agency": agency,
            "signed_by": signed_by,
            "signed_at": at.isoformat(),
        }
        rec = audit.append(
            "protocol_sign_off",
            body,
            also=lambda conn, seq: conn.execute(
                insert(ProtocolSignOff).values(**row, audit_seq=seq)
            ),
        )
        return SignOff(**row, audit_seq=rec.seq)


def ig_lead_of(agency: str) -> str:
    """The user id a partnership's set-up uses for an agency's IG lead (demo and tests)."""
    return f"ig.{agency.lower()}"


def sign_off_all(
    audit: AuditLog, protocols: dict[str, Protocol] | None = None, at: dt.datetime | None = None
) -> list[SignOff]:
    """What a partnership does at set-up: each agency's IG lead signs off the current version
    of every protocol it is party to. Already-signed content is left as it is, so this may run
    again; each new sign-off is one audit entry (SignOffStore.sign)."""
    store = SignOffStore(audit.engine)
    done = []
    for _pid, proto in sorted((protocols or load_protocols()).items()):
        for agency in sorted(set(parties(proto)) - store.signed(proto)):
            done.append(store.sign(audit, proto, agency, ig_lead_of(agency), "ig_lead", agency, at))
    return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m governance.signoff")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("sign", "status"):
        s = sub.add_parser(name)
        s.add_argument("--db", required=True)
        s.add_argument("--schema", default=None)
        if name == "sign":
            s.add_argument("--protocol", required=True)
            s.add_argument("--agency", required=True)
            s.add_argument("--by", required=True, help="the signing IG lead's user id")
            s.add_argument("--role", default="ig_lead", choices=sorted(SIGNING_ROLES))
    a = p.parse_args(argv)
    engine = make_engine(a.db, a.schema)
    store = SignOffStore(engine)
    protocols = load_protocols()
    if a.cmd == "status":
        for pid, proto in sorted(protocols.items()):
            missing = sorted(set(parties(proto)) - store.signed(proto))
            state = "in force" if not missing else "NOT signed off by " + ", ".join(missing)
            print(f"{pid} v{proto.version} {proto.document_sha256[:12]}: {state}")
        return 0
    proto = protocols.get(a.protocol)
    if proto is None:
        print(f"unknown protocol {a.protocol}; known: {sorted(protocols)}", file=sys.stderr)
        return 2
    try:
        s = store.sign(AuditLog(engine), proto, a.agency, a.by, a.role, a.agency)
    except SignOffError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    print(
        f"{s.agency} signed off {s.protocol_id} v{s.version} ({s.sha256[:12]}), "
        f"audit entry {s.audit_seq}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
