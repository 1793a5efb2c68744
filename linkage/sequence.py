"""Each agency's batch sequence at the hub: no gap passes unnoticed, no late batch is lost.

An agency numbers its batches 1, 2, 3, ... (extract and re-keying batches share the counter).
A sequence number is *spent* when a batch carrying it was loaded, or was refused for its
content after its signature verified (the agency did send it; it re-sends the data under a new
number; a refusal because the files are not what was signed does not spend it: NOT_SPENT), or
an operator recorded it as abandoned. The hub loads sequence n only when every number below n is
spent. A verified batch that arrives early is *held* in hub-private storage (`hub/held/`,
status "held", listed with what it waits for in `held_batch` and the IG report) and loads,
in order, as soon as the gap is filled or abandoned; a number already spent is a replay.

Operators: `python -m linkage.sequence status RUN_DIR` lists what is held and why;
`python -m linkage.sequence abandon RUN_DIR AGENCY SEQUENCE --reason ... --by ...` records a
number that will never arrive (then held batches load at the next ingest, or at once with
`--release`). `linkage.orchestration.abandon_sequence_task` does the same for a DAG.
A snapshot held because it would retire too many records (held_reason "mass_retirement",
linkage.snapshot_hold) applies once an operator confirms it:
`python -m linkage.sequence confirm-retirement RUN_DIR AGENCY BATCH_ID --reason ... --by ...`
(`--release` applies it at once).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import duckdb

from ig_bridge.manifest import BatchRefused, VerifiedManifest
from linkage.batch_store import free_slot, move_to
from linkage.config import HubPaths, private_umask
from linkage.warehouse import ensure_batch_tables, has_table

#: Refusals that do NOT spend the sequence number: a replay (the number belongs to the batch
#: first seen with it), and integrity failures, where the files or folder are not what the
#: agency signed (tampered or moved in transit): the genuine batch may still be landed and
#: load in its turn; until then later batches are held, visibly, or an operator abandons it.
NOT_SPENT = (
    "replay",
    "checksum_mismatch",
    "size_mismatch",
    "missing_file",
    "extra_file",
    "not_a_file",
    "row_count_mismatch",
    "path_mismatch",
)
_NOT_SPENT_SQL = ", ".join(f"'{c}'" for c in NOT_SPENT)

# An operator's reason is free text kept at the hub: short, and no run of 4+ digits or an
# '@' (dates, NHS numbers, phone numbers, e-mail addresses have no place in it).
_REASON = re.compile(r"[A-Za-z0-9 .,:;()/#_-]{3,200}")
_IDENTIFYING = re.compile(r"\d{4,}|@")


def ensure_sequence_schema(con: duckdb.DuckDBPyConnection) -> None:
    ensure_batch_tables(con)


def next_expected(con: duckdb.DuckDBPyConnection, agency: str) -> int:
    """The sequence number the hub loads next for `agency`."""
    last = con.execute(
        "SELECT coalesce(max(sequence), 0) FROM batch WHERE agency = ?", [agency]
    ).fetchall()[0][0]
    spent = {
        r[0]
        for r in con.execute(
            f"""SELECT sequence FROM refused_batch WHERE signed_agency = $a AND sequence > $last
               AND reason_code NOT IN ({_NOT_SPENT_SQL})
           UNION SELECT sequence FROM sequence_abandoned WHERE agency = $a AND sequence > $last
        """,
            {"a": agency, "last": last},
        ).fetchall()
    }
    n = int(last) + 1
    while n in spent:
        n += 1
    return n


def _spent_above(con: duckdb.DuckDBPyConnection, agency: str, sequence: int) -> bool:
    return bool(
        con.execute(
            f"""SELECT (SELECT count(*) FROM refused_batch WHERE signed_agency = $a
                     AND sequence = $s AND reason_code NOT IN ({_NOT_SPENT_SQL}))
                + (SELECT count(*) FROM sequence_abandoned WHERE agency = $a AND sequence = $s)
        """,
            {"a": agency, "s": sequence},
        ).fetchall()[0][0]
    )


def decide(con: duckdb.DuckDBPyConnection, vm: VerifiedManifest, sha: str) -> str:
    """'load' | 'hold' | 'already_ingested' | 'already_held'; raises BatchRefused('replay')."""
    ensure_sequence_schema(con)
    row = con.execute(
        "SELECT manifest_sha256 FROM batch WHERE batch_id = ?", [vm.batch_id]
    ).fetchall()
    if row:
        if row[0][0] == sha:
            return "already_ingested"
        raise BatchRefused("replay", f"batch_id {vm.batch_id} was ingested with another manifest")
    for held_id, held_sha, held_path in con.execute(
        """SELECT batch_id, manifest_sha256, held_path FROM held_batch
               WHERE batch_id = ? OR (agency = ? AND sequence = ?)""",
        [vm.batch_id, vm.agency, vm.sequence],
    ).fetchall():
        if Path(held_path) == vm.batch_dir:
            continue  # this is the held copy itself, back for its turn
        if held_id == vm.batch_id and held_sha == sha:
            return "already_held"
        raise BatchRefused(
            "replay", f"another batch with sequence {vm.sequence} or batch_id {vm.batch_id} is held"
        )
    expected = next_expected(con, vm.agency)
    if vm.sequence < expected or _spent_above(con, vm.agency, vm.sequence):
        raise BatchRefused(
            "replay", f"sequence {vm.sequence} already spent (next expected {expected})"
        )
    return "load" if vm.sequence == expected else "hold"


def hold(
    con: duckdb.DuckDBPyConnection,
    paths: HubPaths,
    vm: VerifiedManifest,
    sha: str,
    reason: str | None = None,
) -> tuple[Path, int]:
    """Keep a verified early batch in hub/held/ until its turn; (where, what it waits for).
    `reason`: why, when it is not a sequence gap (a mass retirement: linkage.snapshot_hold)."""
    expected = next_expected(con, vm.agency)
    if vm.batch_dir.parent.parent == paths.held:
        dest = vm.batch_dir  # still waiting: already in place and listed
    else:
        # Listed first, then moved: a crash in between leaves a row whose folder is missing
        # (dropped by `ready`) and the batch where it was, to be verified again next run.
        dest = free_slot(paths.held, vm.agency, vm.batch_dir.name)
        con.execute(
            """INSERT INTO held_batch (batch_id, agency, sequence, extract_kind,
                       manifest_sha256, waiting_for, held_at, held_path)
                       VALUES (?, ?, ?, ?, ?, ?, now(), ?)""",
            [vm.batch_id, vm.agency, vm.sequence, vm.extract_kind, sha, expected, str(dest)],
        )
        try:
            move_to(vm.batch_dir, dest)
        except BaseException:
            release(con, dest)
            raise
    con.execute(
        "UPDATE held_batch SET waiting_for = ?, held_reason = ? WHERE held_path = ?",
        [expected, reason, str(dest)],
    )
    return dest, expected


def release(con: duckdb.DuckDBPyConnection, held_path: Path) -> None:
    con.execute("DELETE FROM held_batch WHERE held_path = ?", [str(held_path)])


@dataclass(frozen=True)
class Held:
    agency: str
    sequence: int
    batch_id: str
    extract_kind: str
    path: Path


def ready(
    con: duckdb.DuckDBPyConnection, skip: set[Path] | frozenset[Path] = frozenset()
) -> Held | None:
    """The first held batch whose turn has come, if any. Rows whose folder has gone (removed
    by an operator) are dropped: the number stays a gap until it arrives or is abandoned."""
    ensure_sequence_schema(con)
    rows = con.execute("""SELECT agency, sequence, batch_id, extract_kind, held_path
                          FROM held_batch ORDER BY agency, sequence""").fetchall()
    for agency, seq, batch_id, kind, path in rows:
        if not Path(path).is_dir():
            release(con, Path(path))
            continue
        if Path(path) not in skip and seq == next_expected(con, agency):
            return Held(agency, int(seq), batch_id, kind, Path(path))
    return None


def held_batches(con: duckdb.DuckDBPyConnection) -> list[dict[str, object]]:
    """What is held and why (read-only connections too)."""
    if not has_table(con, "held_batch"):
        return []
    reason = (
        "held_reason"
        if any(r[0] == "held_reason" for r in con.execute("DESCRIBE held_batch").fetchall())
        else "NULL AS held_reason"
    )
    cur = con.execute(f"""SELECT agency, batch_id, sequence, extract_kind, waiting_for,
                                 held_at, {reason} FROM held_batch ORDER BY agency, sequence""")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def check_operator_text(agency: str, **texts: str) -> None:
    """An operator command's agency code and free texts (reason, name): ValueError unless the
    code is an agency code and each text is 3-200 plain characters that do not look
    identifying (no run of 4+ digits, no '@'). Shared by every hub operator command."""
    if not re.fullmatch(r"[A-Z]{2,8}", agency):
        raise ValueError("agency must be an agency code")
    for name, text in texts.items():
        if not _REASON.fullmatch(text or "") or _IDENTIFYING.search(text):
            raise ValueError(
                f"{name}: 3-200 letters, digits and punctuation, no run of 4+ digits and no '@'"
            )


def abandon_sequence(
    paths: HubPaths, agency: str, sequence: int, reason: str, recorded_by: str
) -> dict[str, object]:
    """Record that `agency`'s batch `sequence` will never arrive, so later ones may load.

    Refused (ValueError) for a number already spent, one a held batch carries (it loads when
    its turn comes), or a reason/name that is empty, long or looks identifying."""
    check_operator_text(agency)
    if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 1:
        raise ValueError("sequence must be an integer >= 1")
    check_operator_text(agency, reason=reason, recorded_by=recorded_by)
    with private_umask():
        paths.ensure()
        con = duckdb.connect(str(paths.warehouse))
        try:
            ensure_sequence_schema(con)
            expected = next_expected(con, agency)
            if sequence < expected or _spent_above(con, agency, sequence):
                raise ValueError(
                    f"{agency} sequence {sequence} is already spent (next expected {expected})"
                )
            if con.execute(
                "SELECT count(*) FROM held_batch WHERE agency = ? AND sequence = ?",
                [agency, sequence],
            ).fetchall()[0][0]:
                raise ValueError(
                    f"a batch with {agency} sequence {sequence} is held; it loads "
                    "when its turn comes"
                )
            con.execute(
                "INSERT INTO sequence_abandoned VALUES (?, ?, ?, ?, now())",
                [agency, sequence, reason, recorded_by],
            )
            return {
                "agency": agency,
                "sequence": sequence,
                "next_expected": next_expected(con, agency),
            }
        finally:
            con.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m linkage.sequence",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("status", help="list held batches and what each waits for")
    st.add_argument("run_dir", type=Path)
    ab = sub.add_parser("abandon", help="record a sequence number that will never arrive")
    ab.add_argument("run_dir", type=Path)
    ab.add_argument("agency")
    ab.add_argument("sequence", type=int)
    ab.add_argument("--reason", required=True)
    ab.add_argument("--by", required=True, dest="recorded_by")
    ab.add_argument(
        "--release", action="store_true", help="ingest the held batches that can now load"
    )
    cr = sub.add_parser(
        "confirm-retirement",
        help="confirm that a snapshot held for mass "
        "retirement may retire what it retires (applies at the next ingest)",
    )
    cr.add_argument("run_dir", type=Path)
    cr.add_argument("agency")
    cr.add_argument("batch_id")
    cr.add_argument("--reason", required=True)
    cr.add_argument("--by", required=True, dest="recorded_by")
    cr.add_argument("--release", action="store_true", help="ingest it (and what waits) now")
    args = ap.parse_args(argv)
    paths = HubPaths.for_run(args.run_dir)
    if args.cmd == "status":
        con = duckdb.connect(str(paths.warehouse), read_only=True)
        try:
            print(json.dumps(held_batches(con), default=str, indent=1))
        finally:
            con.close()
        return 0
    try:
        if args.cmd == "confirm-retirement":
            from linkage.snapshot_hold import confirm_retirement

            out = confirm_retirement(
                paths, args.agency, args.batch_id, args.reason, args.recorded_by
            )
        else:
            out = abandon_sequence(paths, args.agency, args.sequence, args.reason, args.recorded_by)
    except ValueError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    if args.release:
        from linkage.ingest import ingest_landing

        out["released"] = [o.__dict__ for o in ingest_landing(paths, batch_dirs=[]).outcomes]
    print(json.dumps(out, default=str, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
