"""`joinedup-bridge`: the data officer's command line for the agency bridge."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console(stderr=True)


def _summary(res) -> None:  # type: ignore[no-untyped-def]
    t = Table(title=f"Batch {res.batch_id}")
    t.add_column("item")
    t.add_column("value", justify="right")
    for k, v in (("rows read", res.rows_read), ("accepted", res.rows_accepted),
                 ("quarantined", res.rows_quarantined), ("landed at", str(res.landed_path)),
                 ("quarantine file", str(res.quarantine_path or "-")),
                 ("report", str(res.report_path))):
        t.add_row(k, str(v))
    for reason, n in sorted(res.reasons.items()):
        t.add_row(f"  {reason}", str(n))
    Console().print(t)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="joinedup-bridge", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("validate", help="extract-level checks only")
    r = sub.add_parser("run", help="validate, split, sign and land one extract")
    for sp in (v, r):
        sp.add_argument("extract", type=Path)
        sp.add_argument("--mapping", type=Path, required=True)
        sp.add_argument("--agency-dir", type=Path, required=True)
    r.add_argument("--landing", type=Path, required=True)
    r.add_argument("--extract-kind", choices=["snapshot", "delta"])
    k = sub.add_parser("keys", help="agency key management (ig_bridge.keys)")
    k.add_argument("action", choices=["init", "export-link-key", "import-link-key",
                                      "show-public", "rotate"])
    k.add_argument("--agency-dir", type=Path, required=True)
    k.add_argument("--agency", required=True)
    sub.add_parser("reidentify", help="resolve record refs for an authorised request")
    a = p.parse_args(argv)

    from ig_bridge.split import ExtractRefused, run_bridge, validate_extract

    if a.cmd == "validate":
        problems = validate_extract(a.extract, a.mapping, a.agency_dir)
        for prob in problems:
            console.print(f"[red]refused[/red] {prob}")
        if not problems:
            console.print(f"[green]ok[/green] {a.extract.name} matches {a.mapping.name}")
        return 2 if problems else 0
    if a.cmd == "run":
        try:
            res = run_bridge(a.extract, a.mapping, a.agency_dir, a.landing, a.extract_kind,
                             progress=True)
        except ExtractRefused as exc:
            for prob in exc.problems:
                console.print(f"[red]refused[/red] {prob}")
            console.print(f"report: {exc.report_path}")
            return 2
        _summary(res)
        return 0
    if a.cmd == "keys" and a.action == "init":
        from ig_bridge._adapters import load_keys

        keys = load_keys(a.agency_dir / "keys", a.agency)
        console.print(f"keys ready, signing key id {keys.signing_key_id}")
        return 0
    console.print(f"[yellow]{a.cmd} {getattr(a, 'action', '')}: not wired yet "
                  "(waiting for ig_bridge.keys / reidentify)[/yellow]")
    return 3


if __name__ == "__main__":
    sys.exit(main())
