"""Moving a running partnership to a new encoding spec version (e.g. v2 -> v3).

Tokens of two spec versions never compare (v3 salts names with the birth year, and drops
tokens v2 had), so the switch follows the K_link re-tokenisation path (docs/keys.md,
"Encoding spec change"):

1. The hub is upgraded to the new spec. From then on it refuses batches of the old version
   (`version_mismatch`); `ensure_schema` adds the new spec's columns to `identifiers` and
   `related` (`warehouse.add_spec_columns`), so old rows stay readable until replaced.
2. Every bridge re-sends its current extract as a full snapshot under the new spec. A snapshot
   replaces the agency's rows, so its old-version rows go.
3. Linking waits: `require_one_spec` refuses a link while any row was encoded under another
   version (mixed rows would meet as strangers and split every person).
4. `finish` drops the columns the new spec no longer has (tok_sex, the DOB-part and postcode
   tokens for v3), so nothing of the old encodings stays at the hub, then the hub relinks.
   Record refs do not change, so person ids carry over (linkage.stable_ids).

    python -m linkage.spec_migration status --run-dir var/demo
    python -m linkage.spec_migration finish --run-dir var/demo
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import duckdb

from linkage.config import EncodingContract, HubPaths, private_umask
from linkage.txn import atomic
from linkage.warehouse import ENCODED_TABLES, has_table, quote_ident

_FIXED = {"record_ref", "agency", "batch_id", "slot", "relationship"}


class SpecMigrationPending(RuntimeError):
    """Rows of another encoding spec version are still in the warehouse."""


@dataclass(frozen=True)
class MigrationStatus:
    spec_version: int
    rows_by_agency: dict[str, dict[int, int]]  # agency -> {spec version: identifier rows}
    stale_columns: dict[str, list[str]]  # table -> columns the current spec does not have

    @property
    def pending_agencies(self) -> list[str]:
        return sorted(
            a for a, by in self.rows_by_agency.items() if any(v != self.spec_version for v in by)
        )

    @property
    def done(self) -> bool:
        return not self.pending_agencies and not any(self.stale_columns.values())


def migration_status(con: duckdb.DuckDBPyConnection, enc: EncodingContract) -> MigrationStatus:
    rows: dict[str, dict[int, int]] = {}
    stale: dict[str, list[str]] = {}
    if has_table(con, "identifiers") and has_table(con, "batch"):
        # A row's version is its batch's (the signed manifest says which spec encoded it);
        # rows loaded without the ledger (tests, tools) are taken as current.
        for agency, version, n in con.execute(
            """
                SELECT i.agency, coalesce(b.encoding_spec_version, ?), count(*)
                FROM identifiers i LEFT JOIN batch b USING (batch_id)
                GROUP BY ALL ORDER BY ALL""",
            [enc.version],
        ).fetchall():
            rows.setdefault(agency, {})[int(version)] = int(n)
    for table in ENCODED_TABLES:
        if has_table(con, table):
            have = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
            stale[table] = [c for c in have if c not in _FIXED and c not in enc.encoded_columns]
    return MigrationStatus(enc.version, rows, stale)


def require_one_spec(con: duckdb.DuckDBPyConnection, enc: EncodingContract | None = None) -> None:
    """Refuse to link rows encoded under different spec versions."""
    enc = enc or EncodingContract.load()
    status = migration_status(con, enc)
    if status.pending_agencies:
        raise SpecMigrationPending(
            f"the warehouse still holds rows encoded under another encoding spec than v"
            f"{enc.version} for {', '.join(status.pending_agencies)}: linking waits until "
            f"every agency has re-sent a full snapshot under v{enc.version} (docs/keys.md, "
            f"'Encoding spec change'; python -m linkage.spec_migration status)"
        )


def finish(con: duckdb.DuckDBPyConnection, enc: EncodingContract | None = None) -> list[str]:
    """Drop the columns the current spec no longer has, once no old-version row is left.
    Returns the `table.column` names dropped."""
    enc = enc or EncodingContract.load()
    require_one_spec(con, enc)
    dropped = []
    with atomic(con):
        for table, cols in migration_status(con, enc).stale_columns.items():
            for col in cols:
                con.execute(f"ALTER TABLE {table} DROP COLUMN {quote_ident(col)}")
                dropped.append(f"{table}.{col}")
    if dropped:
        con.execute("CHECKPOINT")  # the dropped columns' blocks are freed in the file
    return dropped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="encoding spec migration at the hub")
    ap.add_argument("action", choices=("status", "finish"))
    ap.add_argument("--run-dir", type=Path, required=True)
    args = ap.parse_args(argv)
    paths = HubPaths.for_run(args.run_dir)
    enc = EncodingContract.load()
    with private_umask():
        con = duckdb.connect(str(paths.warehouse))
        try:
            status = migration_status(con, enc)
            for agency, by in sorted(status.rows_by_agency.items()):
                desc = ", ".join(f"v{v}: {n:,} rows" for v, n in sorted(by.items()))
                print(f"{agency}: {desc}")
            if args.action == "status":
                pend = status.pending_agencies
                print(
                    f"spec v{enc.version}: "
                    + (
                        f"waiting for {', '.join(pend)}"
                        if pend
                        else "every agency's rows are current"
                    )
                )
                return 0
            try:
                dropped = finish(con, enc)
            except SpecMigrationPending as exc:
                print(f"not finished: {exc}")
                return 1
            print(
                f"dropped {len(dropped)} old-spec columns: {', '.join(dropped) or 'none'}; "
                "now run a full relink"
            )
            return 0
        finally:
            con.close()


if __name__ == "__main__":
    raise SystemExit(main())
