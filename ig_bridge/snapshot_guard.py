"""The bridge's snapshot guards: a run that would land a suspiciously small snapshot, or one
with too many quarantined rows, is refused before anything lands (docs/contracts.md,
"Snapshot guards").

- min share: a snapshot whose accepted rows fall below the mapping's
  `snapshot_guards.min_share_of_last_snapshot` of the last snapshot this bridge landed for the
  agency (kept in `<agency_dir>/snapshot_state.json`: counts only);
- problem rate: an extract (snapshot or delta) whose quarantined / read rows exceed
  `snapshot_guards.max_problem_rate`.

The data officer may force either with a reason (`joinedup-bridge run --force --reason ...`):
the reason and the figures go into the signed manifest (`forced`), the agency-side log
(`<agency_dir>/bridge_log.jsonl`, hash-chained) and the hub's IG report. A snapshot with no
accepted row is never landed, forced or not: the hub would read it as "the agency holds no
one" (present-but-quarantined refs keep records, but a snapshot of none is never right).
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ig_bridge.manifest import FORCE_REASON
from ig_bridge.manifest import IDENTIFYING as MANIFEST_IDENTIFYING
from ig_bridge.reid_controls import append_audit
from ig_bridge.validate import ExtractRefused, write_report
from schemas.mapping import SnapshotGuards

STATE_NAME = "snapshot_state.json"
LOG_NAME = "bridge_log.jsonl"
# The reason travels to the hub, which refuses a manifest whose reason breaks the same rule
# (ig_bridge.manifest): checked here first, before any work.
REASON, IDENTIFYING = FORCE_REASON, MANIFEST_IDENTIFYING


class ForceReasonInvalid(ValueError):
    """--reason is missing, too long, or looks identifying."""


def check_reason(reason: str | None) -> str:
    text = " ".join((reason or "").split())
    if not REASON.fullmatch(text) or IDENTIFYING.search(text):
        raise ForceReasonInvalid(
            "--reason must be 3-200 letters, digits and punctuation, with no run of 4 or more "
            "digits and no '@' (it is sent to the hub: no dates, NHS numbers or addresses)"
        )
    return text


class SnapshotRefused(ExtractRefused):
    """A snapshot guard refused the run; nothing landed. `breaches`: which guards, with their
    figures; `forceable`: whether `--force --reason` may override them."""

    def __init__(
        self,
        report_path: Path | None,
        problems: list[str],
        breaches: list[Breach],
        quarantine_path: Path | None,
    ) -> None:
        super().__init__(report_path, problems)
        self.breaches = breaches
        self.forceable = all(b.forceable for b in breaches)
        self.quarantine_path = quarantine_path


@dataclass(frozen=True)
class Breach:
    guard: str  # min_share | problem_rate | no_accepted_rows
    message: str
    figures: dict[str, Any]
    forceable: bool = True


def last_snapshot(agency_dir: Path, code: str) -> dict[str, Any] | None:
    path = Path(agency_dir) / STATE_NAME
    if not path.exists():
        return None
    data = json.loads(path.read_text("utf-8"))
    entry = data.get(code)
    return entry if isinstance(entry, dict) else None


def record_snapshot(agency_dir: Path, code: str, batch_id: str, rows: dict[str, int]) -> None:
    """After a snapshot landed: its counts become the baseline for the next one."""
    path = Path(agency_dir) / STATE_NAME
    data = json.loads(path.read_text("utf-8")) if path.exists() else {}
    data[code] = {
        "batch_id": batch_id,
        "rows": dict(rows),
        "landed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1), "utf-8")
    os.replace(tmp, path)


def evaluate(
    kind: str, rows: dict[str, int], guards: SnapshotGuards, last: dict[str, Any] | None
) -> list[Breach]:
    """Which guards this run breaks (empty: it may land)."""
    read, accepted, quarantined = rows["read"], rows["accepted"], rows["quarantined"]
    out: list[Breach] = []
    if kind == "snapshot" and accepted == 0:
        out.append(
            Breach(
                "no_accepted_rows",
                f"all {read:,} rows were quarantined: a snapshot with no accepted row would tell "
                "the hub this agency holds no one; fix the extract or the mapping (see the "
                "quarantine file and report)",
                {"read": read, "accepted": 0},
                forceable=False,
            )
        )
        return out
    rate = quarantined / read if read else 0.0
    if rate > guards.max_problem_rate:
        out.append(
            Breach(
                "problem_rate",
                f"{quarantined:,} of {read:,} rows quarantined ({rate:.1%}), above the mapping's "
                f"limit snapshot_guards.max_problem_rate = {guards.max_problem_rate:.1%}",
                {
                    "quarantined": quarantined,
                    "read": read,
                    "rate": round(rate, 6),
                    "limit": guards.max_problem_rate,
                },
            )
        )
    prev = int((last or {}).get("rows", {}).get("accepted", 0))
    if kind == "snapshot" and prev:
        share = accepted / prev
        if share < guards.min_share_of_last_snapshot:
            out.append(
                Breach(
                    "min_share",
                    f"{accepted:,} rows accepted, {share:.1%} of the {prev:,} accepted in the last "
                    f"snapshot ({last.get('batch_id') if last else '-'}), below the mapping's "
                    "minimum snapshot_guards.min_share_of_last_snapshot = "
                    f"{guards.min_share_of_last_snapshot:.1%}",
                    {
                        "accepted": accepted,
                        "last_accepted": prev,
                        "share": round(share, 6),
                        "limit": guards.min_share_of_last_snapshot,
                    },
                )
            )
    return out


def forced_record(breaches: list[Breach], reason: str) -> dict[str, Any]:
    """The manifest's `forced` entry: which guards were overridden, their figures, why (no
    user name: that stays in the agency-side log)."""
    return {
        "guards": [b.guard for b in breaches],
        "reason": reason,
        "figures": {b.guard: b.figures for b in breaches},
    }


def log_forced(agency_dir: Path, code: str, batch_id: str, forced: dict[str, Any]) -> None:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container)
        user = str(os.getuid())
    append_audit(
        Path(agency_dir) / LOG_NAME,
        {
            "type": "snapshot_guard_forced",
            "agency": code,
            "batch_id": batch_id,
            "by": user,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            **forced,
        },
    )


def enforce(
    agency_dir: Path,
    code: str,
    batch_id: str,
    extract_path: Path,
    kind: str,
    rows: dict[str, int],
    guards: SnapshotGuards,
    force_reason: str | None,
    keep_quarantine: Callable[[], Path | None],
) -> dict[str, Any] | None:
    """The guards on one run's counts: None when none fires, the manifest's `forced` entry
    when the data officer forced them; otherwise raises SnapshotRefused with a report (the
    quarantine file is kept, via `keep_quarantine`, under the refused batch id)."""
    breaches = evaluate(kind, rows, guards, last_snapshot(agency_dir, code))
    if not breaches:
        return None
    if force_reason is not None and all(b.forceable for b in breaches):
        return forced_record(breaches, force_reason)
    q_path = keep_quarantine()
    problems = [f"{extract_path.name}: {b.guard} guard: {b.message}" for b in breaches]
    report = write_report(
        Path(agency_dir) / "reports" / f"{batch_id}.refused.json",
        {
            "batch_id": batch_id,
            "file": str(extract_path),
            "status": "refused",
            "guards": [
                {"guard": b.guard, "figures": b.figures, "forceable": b.forceable} for b in breaches
            ],
            "problems": problems,
            "rows": rows,
            "quarantine": str(q_path) if q_path else None,
        },
    )
    raise SnapshotRefused(report, problems, breaches, q_path)
