"""`python -m governance.audit`: verify the audit log, create the hub audit key, checkpoint.

verify --db URL [--schema S] --trusted-key FILE|DIR [--receipt FILE]
    exit 0 verified; 1 tampered; 2 refused (no trusted key) or usage/connection error
keygen --keys-dir HUB_KEYS --export IG_LEAD_DIR   (hub audit key: next version)
keygen --out FILE                                  (the hub's identity-request key, PEM)
checkpoint --db URL [--schema S] --key HUB_KEYS [--origin NAME]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from governance.audit import DEFAULT_DB_URL, AuditError, AuditLog, generate_hub_key
from governance.audit_checkpoints import NO_TRUSTED_KEY, read_receipt, write_receipt
from governance.audit_keys import (
    AuditKeyError,
    create_audit_key,
    export_public_record,
    fingerprint,
    load_audit_key,
    load_trusted_keys,
)


def _sqlite_path(url: str) -> Path | None:
    return Path(url.split("///", 1)[1]) if url.startswith("sqlite:///") else None


def _cmd_verify(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = Console(soft_wrap=True)  # one line per finding, for logs and grep
    if not args.trusted_key:
        console.print(f"REFUSED: {NO_TRUSTED_KEY}", style="bold red")
        return 2
    db_file = _sqlite_path(args.db)
    trusted_path = Path(args.trusted_key).resolve()
    if db_file is not None and trusted_path.is_relative_to(db_file.resolve().parent):
        # A key beside the log is whatever an insider put there: not the IG lead's copy.
        raise AuditKeyError(
            f"{args.trusted_key}: lies beside the governance store; give the "
            f"IG lead's own copy of the hub audit public key"
        )
    trusted = load_trusted_keys(trusted_path)
    if db_file is not None and not db_file.exists():
        raise AuditError(f"no governance store at {db_file}")
    receipt_path = Path(args.receipt) if args.receipt else None
    receipt = read_receipt(receipt_path) if receipt_path is not None else None
    log = AuditLog(args.db, schema=args.schema, create=False)
    total = log.count()
    with Progress(
        TextColumn("verifying audit chain"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("verify", total=total)
        report = log.verify(
            trusted,
            receipt=receipt,
            progress=lambda i: (
                bar.update(task, completed=i) if i % 500 == 0 or i == total else None
            ),
        )
    log.engine.dispose()
    console.print(report.summary(), style="bold green" if report.ok else "bold red")
    for seq, msg in report.all_problems[1:]:
        console.print(f"  also ({seq}): {msg}")
    for note in report.notes:
        console.print(f"  note: {note}", style="yellow")
    if report.ok and receipt_path is not None:
        write_receipt(receipt_path, report)
        console.print(
            f"  receipt: checkpoint #{report.last_checkpoint['cp_seq']} kept in {receipt_path}"
            if report.last_checkpoint
            else "  receipt unchanged"
        )
    return 0 if report.ok else (2 if report.refused else 1)


def _cmd_keygen(args: argparse.Namespace) -> int:
    if args.out:  # the identity-request key (docs/api.md), unchanged
        generate_hub_key(Path(args.out))
        print(f"wrote {args.out} (0600) and {Path(args.out).with_suffix('.pub')}")
        return 0
    if not args.export:
        raise AuditKeyError("--export: give the IG lead's folder for the public key record")
    audit_key = create_audit_key(Path(args.keys_dir))
    dest = export_public_record(audit_key, Path(args.export))
    print(
        f"created {audit_key.key_id} in {args.keys_dir} (0600); public record for the IG "
        f"lead: {dest}; fingerprint {fingerprint(audit_key.private_key.public_key())}"
    )
    return 0


def _cmd_checkpoint(args: argparse.Namespace) -> int:
    log = AuditLog(
        args.db, schema=args.schema, signing_key=load_audit_key(Path(args.key)), origin=args.origin
    )
    cp = log.checkpoint("cli")
    log.engine.dispose()
    print(
        "log is empty; nothing to sign"
        if cp is None
        else f"checkpoint #{cp['cp_seq']} covers entries 1..{cp['entry_seq']} ({cp['key_id']})"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m governance.audit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("verify", help="verify the chain and its signed checkpoints")
    v.add_argument("--db", default=DEFAULT_DB_URL, help="SQLAlchemy URL of the governance store")
    v.add_argument("--schema", default=None, help="database schema (PostgreSQL)")
    v.add_argument(
        "--trusted-key",
        default=None,
        help="the IG lead's hub audit public key record (file) or folder of records",
    )
    v.add_argument(
        "--receipt",
        default=None,
        help="the IG lead's receipt file: the last verified checkpoint must still be "
        "there; updated after a successful verify",
    )
    v.set_defaults(func=_cmd_verify)
    k = sub.add_parser("keygen", help="create the hub's audit key (or identity-request key)")
    g = k.add_mutually_exclusive_group(required=True)
    g.add_argument("--keys-dir", help="the hub's keys folder (audit_signing.v<N>.json)")
    g.add_argument("--out", help="identity-request key file (PEM) instead")
    k.add_argument("--export", help="the IG lead's folder for the public key record")
    k.set_defaults(func=_cmd_keygen)
    c = sub.add_parser("checkpoint", help="sign a checkpoint at the current head")
    c.add_argument("--db", default=DEFAULT_DB_URL)
    c.add_argument("--schema", default=None)
    c.add_argument("--key", required=True, help="the hub's keys folder or audit key file")
    c.add_argument("--origin", default="cli", help="who signs (shown in the checkpoint)")
    c.set_defaults(func=_cmd_checkpoint)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (AuditError, AuditKeyError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        # The URL may carry a password: name the failure, not the URL.
        print(
            f"error: cannot read the governance store ({type(exc).__name__}); "
            f"is --db right and the log created?",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
