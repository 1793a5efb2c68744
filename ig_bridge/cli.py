"""`joinedup-bridge`: the data officer's command line for the agency bridge."""

# Start-up is kept light: pandas, Great Expectations, Presidio and the bridge stages are
# imported inside the commands that use them (benchmarks/bench_cli_start.py; a test checks
# that `--help` imports none of them).
from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from rich.table import Table

from ig_bridge import consent_notice
from ig_bridge.cli_console import _console, console
from ig_bridge.cli_keys import _keys


def _summary(res) -> None:  # type: ignore[no-untyped-def]
    t = Table(title=f"Batch {res.batch_id}")
    t.add_column("item")
    # fold, never "…": in a narrow terminal a path wraps but stays whole
    t.add_column("value", justify="right", overflow="fold")
    for k, v in (
        ("rows read", res.rows_read),
        ("accepted", res.rows_accepted),
        ("quarantined", res.rows_quarantined),
        ("landed at", str(res.landed_path)),
        ("quarantine file", str(res.quarantine_path or "-")),
        ("report", str(res.report_path)),
    ):
        t.add_row(k, str(v))
    for reason, n in sorted(res.reasons.items()):
        t.add_row(f"  {reason}", str(n))
    _field_rows(t, res.field_counts)
    _console().print(t)
    for hint in res.hints:
        console.print(f"[yellow]hint[/yellow] {hint}")


def _field_rows(t: Table, counts: dict[str, dict[str, int]]) -> None:
    """Field problems in accepted rows (value nulled, or kept and flagged), per field/reason."""
    if counts:
        t.add_row("field problems (rows kept)", str(sum(sum(v.values()) for v in counts.values())))
    for f, per in sorted(counts.items()):
        for reason, n in sorted(per.items(), key=lambda kv: -kv[1]):
            t.add_row(f"  {f}: {reason}", f"{n:,}")


def _validate(a: argparse.Namespace) -> int:
    """The dry run: every row check of `run`, nothing written. 2 = refused, 1 = warnings."""
    from ig_bridge.dryrun import dry_run

    res = dry_run(a.extract, a.mapping)
    for prob in res.problems:
        console.print(f"[red]refused[/red] {prob}")
    if res.refused:
        return 2
    t = Table(title=f"Dry run of {a.extract.name} with {a.mapping.name}")
    t.add_column("item")
    t.add_column("value", justify="right", overflow="fold")
    for k, v in (
        ("rows read", res.rows_read),
        ("would be accepted", res.rows_accepted),
        ("would be quarantined", res.rows_quarantined),
        ("min identifying fields", res.min_identifying_fields),
    ):
        t.add_row(k, f"{v:,}")
    for reason, n in sorted(res.reasons.items()):
        t.add_row(f"  {reason}", f"{n:,}")
    _field_rows(t, res.fields.counts)
    _console().print(t)
    for line, reason in res.quarantined_lines[:10]:
        console.print(f"quarantine: line {line}: {reason}")
    for hint in res.hints:
        console.print(f"[yellow]hint[/yellow] {hint}")
    warnings = res.warnings()
    for w in warnings:
        console.print(f"[yellow]warning[/yellow] {w}")
    if not warnings:
        console.print(
            f"[green]ok[/green] {a.extract.name}: every row checked against {a.mapping.name}"
        )
    return 1 if warnings else 0


def _reidentify_out(a: argparse.Namespace) -> int:
    """--out: the agency's own local ids for a file of refs (CSV record_ref,local_id, 0600),
    for its quality checks. Refs it cannot resolve are reported per line, not fatal."""
    from ig_bridge.keys import KeyFileError, KeyStore, RecordRefError
    from ig_bridge.reidentify import RefLine, export_local_ids, read_ref_lines

    if a.mapping is None and not a.agency:
        raise SystemExit("reidentify --out needs --agency CODE (or --mapping)")
    if a.mapping is not None:
        from schemas.mapping import load_mapping

        code = load_mapping(a.mapping).code
    else:
        code = a.agency
    try:
        refs = [RefLine(0, r) for r in (a.ref or [])]
        if a.refs_file is not None:
            refs += read_ref_lines(a.refs_file)
        if not refs:
            raise SystemExit("give record refs with --refs-file (or --ref)")
        keys = KeyStore(a.agency_dir / "keys", code).ref_keys()
        res = export_local_ids(
            refs,
            ref_keys=keys,
            out=a.out,
            audit_log=a.agency_dir / "audit.log",
            requested_by=a.user or getpass.getuser(),
            source=str(a.refs_file or "--ref"),
        )
    except (RecordRefError, KeyFileError, ValueError, OSError) as exc:
        console.print(f"[red]refused[/red] {exc}")
        return 2
    where = str(a.refs_file or "--ref")
    for line, reason in res.problems:
        console.print(f"[yellow]skipped[/yellow] {where} line {line}: {reason}")
    console.print(
        f"[green]written[/green] {res.written:,} local id(s) to {res.path} (0600)"
        + (f"; {len(res.problems):,} ref(s) skipped" if res.problems else "")
    )
    return 0


def _reidentify(a: argparse.Namespace) -> int:
    if a.out is not None:
        return _reidentify_out(a)
    missing = [
        f"--{n.replace('_', '-')}"
        for n in ("extract", "mapping", "protocol", "user", "reason")
        if getattr(a, n) is None
    ]
    if missing:
        raise SystemExit(f"reidentify needs {', '.join(missing)} (or --out FILE for local ids)")
    import pandas as pd

    from ig_bridge.keys import KeyFileError, KeyStore, RecordRefError
    from ig_bridge.reader import iter_chunks
    from ig_bridge.reidentify import ReidentificationRequest, frame_lookup, reidentify
    from schemas.mapping import SUBJECT, load_mapping

    refs = list(a.ref or [])
    if a.refs_file is not None:
        refs += [x.strip() for x in a.refs_file.read_text("utf-8").split() if x.strip()]
    if not refs:
        raise SystemExit("give record refs with --ref or --refs-file")
    mapping = load_mapping(a.mapping)
    cols = mapping.identifier_columns(SUBJECT)
    frames = [
        c.frame[list(cols.values())].rename(columns={v: k for k, v in cols.items()})
        for c in iter_chunks(a.extract, mapping.source)
    ]
    frame = pd.concat(frames, ignore_index=True)
    frame["record_id"] = frame["record_id"].str.strip()
    if "address" not in frame and "address_line_1" in frame:
        frame["address"] = frame["address_line_1"]
    try:
        keys = KeyStore(a.agency_dir / "keys", mapping.code).ref_keys()
        request = ReidentificationRequest(
            a.protocol, a.user, a.reason, hub_decision_id=a.decision_id
        )
        found = reidentify(
            refs,
            request,
            ref_keys=keys,
            lookup=frame_lookup(frame),
            audit_log=a.agency_dir / "audit.log",
        )
    except (RecordRefError, KeyFileError, ValueError) as exc:
        console.print(f"[red]refused[/red] {exc}")
        return 2
    t = Table(title=f"Re-identification for {a.user} ({a.protocol})")
    t.add_column("record_ref")
    t.add_column("found")
    for k in ("given_name", "family_name", "date_of_birth", "address", "postcode"):
        t.add_column(k)
    for ident in found:
        d = ident.display or {}
        t.add_row(
            ident.record_ref[:16] + "...",
            "yes" if ident.found else "no",
            *(
                str(d.get(k) or "")
                for k in ("given_name", "family_name", "date_of_birth", "address", "postcode")
            ),
        )
    _console().print(t)
    return 0


def _rotation(a: argparse.Namespace) -> int:
    """Re-keying (ref key) and re-tokenisation (K_link) steps of docs/keys.md."""
    from ig_bridge.keys import KeyFileError
    from ig_bridge.rotation import (
        RotationError,
        build_rekey_batch,
        read_refs_file,
        retokenise_snapshot,
        start_ref_key_rotation,
    )
    from ig_bridge.split import BridgeKeysMissing, ExtractRefused

    out = _console()
    try:
        if a.action == "ref":
            if a.new_version:
                key = start_ref_key_rotation(a.agency_dir, a.agency)
                out.print(f"[green]created[/green] record-ref key v{key.version}")
            b = build_rekey_batch(
                a.agency_dir, a.agency, a.rekey_landing, read_refs_file(a.refs), source=str(a.refs)
            )
            out.print(
                f"[green]re-keying batch[/green] {b.batch_id}: {b.mapped:,} refs "
                f"v{b.from_versions} -> v{b.to_version} ({b.already_current:,} already "
                f"current), landed at {b.path}"
            )
        else:
            res = retokenise_snapshot(
                a.extract,
                a.mapping,
                a.agency_dir,
                a.landing,
                link_key_version=a.link_key_version,
                progress=True,
            )
            _summary(res)
    except (RotationError, KeyFileError, BridgeKeysMissing, FileNotFoundError) as exc:
        console.print(f"[red]refused[/red] {exc}")
        return 2
    except ExtractRefused as exc:
        for prob in exc.problems:
            console.print(f"[red]refused[/red] {prob}")
        return 2
    return 0


def _protocols(a: argparse.Namespace) -> int:
    """The agency IG lead's record of the protocols the agency agreed (what the
    re-identification service will answer identity requests under)."""
    from ig_bridge.reid_controls import AgreedProtocols, AgreementError, agree_protocol

    try:
        if a.action == "agree":
            if not a.protocol or not a.agreed_by:
                raise SystemExit("protocols agree needs --protocol FILE and --agreed-by WHO")
            for path in a.protocol:
                e = agree_protocol(a.agency_dir, a.agency, path, agreed_by=a.agreed_by)
                console.print(
                    f"[green]agreed[/green] {e.protocol_id} v{e.version} "
                    f"sha256 {e.sha256[:16]}... identity "
                    f"{'allowed' if e.identity_allowed else 'not allowed'}"
                )
        agreed = AgreedProtocols.load(a.agency_dir, a.agency)
    except AgreementError as exc:
        console.print(f"[red]refused[/red] {exc}")
        return 2
    t = Table(title=f"Protocols agreed by {a.agency}")
    for c in ("protocol", "version", "sha256", "identity", "agreed at", "by"):
        t.add_column(c)
    for e in sorted(agreed.protocols.values(), key=lambda e: e.protocol_id):
        t.add_row(
            e.protocol_id,
            str(e.version),
            e.sha256[:16],
            "allowed" if e.identity_allowed else "no",
            e.agreed_at,
            e.agreed_by,
        )
    _console().print(t)
    return 0


def _glue_ref_values(argv: list[str]) -> list[str]:
    """A record_ref is base64url, so one in 64 starts with '-' and argparse would take it for
    an option: pass each --ref value glued to its flag ('--ref=-Xy..') instead."""
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg == "--ref":
            value = next(it, None)
            out.append(arg if value is None else f"--ref={value}")
        else:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = _glue_ref_values(sys.argv[1:] if argv is None else list(argv))
    p = argparse.ArgumentParser(prog="joinedup-bridge", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser(
        "validate",
        help="dry run: every check of `run` on every row, counts "
        "per field and reason, nothing written (exit 1: warnings, 2: refused)",
    )
    r = sub.add_parser("run", help="validate, split, sign and land one extract")
    for sp in (v, r):
        sp.add_argument("extract", type=Path)
        sp.add_argument("--mapping", type=Path, required=True)
        sp.add_argument("--agency-dir", type=Path, required=True)
    r.add_argument("--landing", type=Path, required=True)
    r.add_argument("--extract-kind", choices=["snapshot", "delta"])
    r.add_argument(
        "--force",
        action="store_true",
        help="land it although a snapshot guard refused it (min share of the last "
        "snapshot, problem rate); needs --reason, which goes to the hub",
    )
    r.add_argument(
        "--data-docs",
        action="store_true",
        help="render Great Expectations Data Docs for this batch even when every row passed "
        "(a batch with a row problem always gets them)",
    )
    r.add_argument(
        "--reason",
        help="with --force: why (kept in the manifest, the agency's "
        "bridge_log.jsonl and the hub's IG report; no identifiers)",
    )
    k = sub.add_parser("keys", help="agency key management (ig_bridge.keys)")
    k.add_argument(
        "action",
        choices=[
            "init",
            "export-link-key",
            "import-link-key",
            "import-hub-key",
            "show-public",
            "rotate",
        ],
    )
    k.add_argument("--agency-dir", type=Path, required=True)
    k.add_argument("--agency", required=True)
    k.add_argument(
        "--file",
        type=Path,
        help="wrapped link key file (export/import-link-key) "
        "or the hub's public sealing key record (import-hub-key)",
    )
    k.add_argument(
        "--passphrase-env", help="read the wrap passphrase from this env variable (default: prompt)"
    )
    k.add_argument("--out", type=Path, help="show-public: also write public key records here")
    k.add_argument(
        "--kind", choices=["ref", "signing", "link"], default="signing", help="rotate: which key"
    )
    k.add_argument(
        "--partnership-lead",
        action="store_true",
        help="init/rotate: this bridge creates the partnership link key",
    )
    ri = sub.add_parser(
        "reidentify",
        help="resolve record refs for an authorised request, "
        "or (--out) write this agency's own local ids for a file of refs",
    )
    ri.add_argument("--agency-dir", type=Path, required=True)
    ri.add_argument("--extract", type=Path, help="the agency's own extract")
    ri.add_argument("--mapping", type=Path)
    ri.add_argument("--ref", action="append", help="a record_ref (repeatable)")
    ri.add_argument(
        "--refs-file",
        type=Path,
        help="file of record refs: one per line, CSV "
        "with a record_ref column (and agency), or Parquet",
    )
    ri.add_argument("--protocol")
    ri.add_argument("--user")
    ri.add_argument("--reason")
    ri.add_argument("--decision-id", help="the hub's decision id for this request")
    ri.add_argument(
        "--out",
        type=Path,
        help="write record_ref,local_id CSV here (0600, never "
        "overwritten) for the agency's own quality checks; needs only the ref key",
    )
    ri.add_argument("--agency", help="--out: agency code (or give --mapping)")
    pr = sub.add_parser(
        "protocols",
        help="the data-sharing protocols this agency agreed: "
        "identity requests are answered under these only",
    )
    pr.add_argument("action", choices=["agree", "list"])
    pr.add_argument("--agency-dir", type=Path, required=True)
    pr.add_argument("--agency", required=True)
    pr.add_argument(
        "--protocol",
        type=Path,
        action="append",
        help="agree: the protocol document (YAML) as agreed; repeatable",
    )
    pr.add_argument("--agreed-by", help="agree: who signed it off (e.g. the IG lead's user id)")
    ro = sub.add_parser(
        "rotation",
        help="key rotation: re-key refs (ref) or re-tokenise a "
        "snapshot under a new link key (link); see docs/keys.md",
    )
    ro_sub = ro.add_subparsers(dest="action", required=True)
    rr = ro_sub.add_parser(
        "ref",
        help="map the hub's refs for this agency to the newest ref "
        "key and land the signed re-keying batch",
    )
    rr.add_argument("--agency-dir", type=Path, required=True)
    rr.add_argument("--agency", required=True)
    rr.add_argument(
        "--refs",
        type=Path,
        required=True,
        help="refs the hub exported for this agency (.parquet or one per line)",
    )
    rr.add_argument("--rekey-landing", type=Path, required=True)
    rr.add_argument(
        "--new-version", action="store_true", help="create the next ref key version first"
    )
    rl = ro_sub.add_parser(
        "link",
        help="re-run the current extract as a snapshot under the "
        "newest (or given) link key version",
    )
    rl.add_argument("extract", type=Path)
    rl.add_argument("--mapping", type=Path, required=True)
    rl.add_argument("--agency-dir", type=Path, required=True)
    rl.add_argument("--landing", type=Path, required=True)
    rl.add_argument("--link-key-version", type=int)
    consent_notice.add_cli(sub)
    a = p.parse_args(argv)

    if a.cmd == "consent":
        return consent_notice.run_cli(a)
    if a.cmd == "rotation":
        return _rotation(a)
    if a.cmd == "keys":
        return _keys(a)
    if a.cmd == "reidentify":
        return _reidentify(a)
    if a.cmd == "protocols":
        return _protocols(a)

    from ig_bridge.split import BridgeKeysMissing, ExtractRefused, run_bridge

    if a.cmd == "validate":
        return _validate(a)
    from ig_bridge.snapshot_guard import ForceReasonInvalid, SnapshotRefused

    if a.force != bool(a.reason):
        console.print(
            "[red]refused[/red] --force and --reason go together: say why the "
            "snapshot guard should be overridden"
        )
        return 2
    try:
        res = run_bridge(
            a.extract,
            a.mapping,
            a.agency_dir,
            a.landing,
            a.extract_kind,
            progress=True,
            force_reason=a.reason if a.force else None,
            data_docs=a.data_docs,
        )
    except (BridgeKeysMissing, ForceReasonInvalid) as exc:
        console.print(f"[red]refused[/red] {exc}")
        return 2
    except ExtractRefused as exc:
        for prob in exc.problems:
            console.print(f"[red]refused[/red] {prob}")
        if isinstance(exc, SnapshotRefused):
            _guard_hint(a, exc)
        console.print(f"report: {exc.report_path}")
        return 2
    _summary(res)
    if res.forced:
        console.print(
            f"[yellow]forced[/yellow] {', '.join(res.forced['guards'])}: "
            f"{res.forced['reason']} (recorded in the manifest and bridge_log.jsonl)"
        )
    return 0


def _guard_hint(a: argparse.Namespace, exc) -> None:  # type: ignore[no-untyped-def]
    """Nothing landed: say so, where the quarantined rows are, and how to force it."""
    console.print("nothing landed; the sequence number is not spent")
    if exc.quarantine_path:
        console.print(f"quarantined rows (with reasons): {exc.quarantine_path}")
    if exc.forceable:
        console.print(
            "if the extract is right (e.g. the agency really closed that many "
            "records), land it anyway with: joinedup-bridge run "
            f"{a.extract} --mapping {a.mapping} --agency-dir {a.agency_dir} "
            f"--landing {a.landing}"
            + (f" --extract-kind {a.extract_kind}" if a.extract_kind else "")
            + ' --force --reason "<why>"'
        )
    else:
        console.print("this guard cannot be forced: fix the extract or the mapping")


if __name__ == "__main__":
    sys.exit(main())
