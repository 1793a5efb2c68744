"""The hub warehouse schema for ingested data (DuckDB).

Linkage, households and marts create their own tables (see docs/linkage.md); this module owns
what ingest writes. Columns come from the partnership encoding spec and the canonical payload
fields, so onboarding a field is a schema change in one place (schemas/).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from linkage.config import EncodingContract
from schemas.mapping import load_canonical

_PAYLOAD_TYPES = {
    "date": "DATE",
    "number": "DOUBLE",
    "boolean": "BOOLEAN",
    "category": "VARCHAR",
    "text": "VARCHAR",
}


def _encoded_ddl(enc: EncodingContract) -> str:
    cols = [f'"{c}" VARCHAR' for c in [*enc.token_columns, *enc.blocking_columns]]
    cols += [f'"{c}" BIT' for c in enc.bloom_columns]  # BIT: Dice via native bit_count(a & b)
    cols += [f'"{c}" BOOLEAN' for c in enc.flag_columns]
    return ", ".join(cols)


def payload_column_types(mappings_dir: Path | str | None = None) -> dict[str, str]:
    """Payload column -> DuckDB type: the canonical fields, plus those the partnership's
    agreement file in `mappings_dir` declares (schemas.agreement)."""
    canonical = load_canonical(mappings_dir=mappings_dir)
    return {
        name: _PAYLOAD_TYPES[str(spec["type"])] for name, spec in canonical.payload_fields.items()
    }


BATCH_DDL = """CREATE TABLE IF NOT EXISTS batch (
    batch_id VARCHAR PRIMARY KEY, agency VARCHAR NOT NULL, sequence BIGINT NOT NULL,
    extract_kind VARCHAR NOT NULL, created_at VARCHAR, ingested_at TIMESTAMP,
    manifest_sha256 VARCHAR NOT NULL, mapping_version INTEGER, encoding_spec_version INTEGER,
    link_key_version INTEGER, ref_key_version INTEGER, rows_read BIGINT,
    rows_accepted BIGINT, rows_quarantined BIGINT, identifiers_rows BIGINT,
    related_rows BIGINT, payload_rows BIGINT)"""
REFUSED_DDL = """CREATE TABLE IF NOT EXISTS refused_batch (
    batch_folder VARCHAR, agency VARCHAR, reason_code VARCHAR, detail VARCHAR,
    refused_at TIMESTAMP, moved_to VARCHAR)"""
# Added later (warehouses made before get them on open): the signing agency and sequence when
# the signature verified, i.e. the sequence number the refusal spends; NULL when it did not.
REFUSED_COLUMNS = (("signed_agency", "VARCHAR"), ("sequence", "BIGINT"))
#: Verified batches waiting for an earlier sequence number (linkage.sequence).
HELD_DDL = """CREATE TABLE IF NOT EXISTS held_batch (
    batch_id VARCHAR NOT NULL, agency VARCHAR NOT NULL, sequence BIGINT NOT NULL,
    extract_kind VARCHAR NOT NULL, manifest_sha256 VARCHAR NOT NULL,
    waiting_for BIGINT NOT NULL, held_at TIMESTAMP NOT NULL, held_path VARCHAR NOT NULL)"""
# Added later: why a batch is held when it is not a sequence gap (linkage.snapshot_hold).
HELD_COLUMNS = (("held_reason", "VARCHAR"),)
# Added later: snapshot guards the agency's data officer forced (ig_bridge.snapshot_guard),
# refs sent as present-but-quarantined, and how many records the batch retired.
BATCH_COLUMNS = (
    ("forced_guards", "VARCHAR"),
    ("forced_reason", "VARCHAR"),
    ("present_refs", "BIGINT"),
    ("records_retired", "BIGINT"),
)
#: Snapshots held because they would retire more than the agency's limit, and the operator's
#: confirmation that lets one apply (linkage.snapshot_hold).
RETIREMENT_HOLD_DDL = """CREATE TABLE IF NOT EXISTS retirement_hold (
    agency VARCHAR NOT NULL, batch_id VARCHAR NOT NULL, sequence BIGINT NOT NULL,
    manifest_sha256 VARCHAR NOT NULL, current_records BIGINT NOT NULL,
    would_retire BIGINT NOT NULL, limit_share DOUBLE NOT NULL, held_at TIMESTAMP NOT NULL,
    confirmed_at TIMESTAMP, confirmed_by VARCHAR, confirm_reason VARCHAR,
    applied_at TIMESTAMP, PRIMARY KEY (agency, batch_id))"""
#: Sequence numbers an operator recorded as never coming (linkage.sequence).
ABANDONED_DDL = """CREATE TABLE IF NOT EXISTS sequence_abandoned (
    agency VARCHAR NOT NULL, sequence BIGINT NOT NULL, reason VARCHAR NOT NULL,
    recorded_by VARCHAR NOT NULL, recorded_at TIMESTAMP NOT NULL,
    PRIMARY KEY (agency, sequence))"""


#: Per loaded batch: how many accepted rows had a field nulled or flagged at the bridge, by
#: field and reason (the manifest's signed `field_problems`; counts only, never values).
FIELD_PROBLEM_DDL = """CREATE TABLE IF NOT EXISTS batch_field_problem (
    batch_id VARCHAR NOT NULL, agency VARCHAR NOT NULL, field VARCHAR NOT NULL,
    reason VARCHAR NOT NULL, n BIGINT NOT NULL)"""


def record_field_problems(
    con: duckdb.DuckDBPyConnection, batch_id: str, agency: str, manifest: dict
) -> None:
    """Store a verified manifest's field problem counts (checked by ig_bridge.manifest)."""
    rows = [
        (batch_id, agency, f, r, int(n))
        for f, per in (manifest.get("field_problems") or {}).items()
        for r, n in per.items()
    ]
    con.execute(FIELD_PROBLEM_DDL)
    if rows:
        con.executemany("INSERT INTO batch_field_problem VALUES (?, ?, ?, ?, ?)", rows)


def ensure_batch_tables(con: duckdb.DuckDBPyConnection) -> None:
    """The batch ledger: loaded, refused, held, abandoned (re-keying uses it too)."""
    for ddl in (
        BATCH_DDL,
        REFUSED_DDL,
        HELD_DDL,
        ABANDONED_DDL,
        FIELD_PROBLEM_DDL,
        RETIREMENT_HOLD_DDL,
    ):
        con.execute(ddl)
    for table, added in (
        ("refused_batch", REFUSED_COLUMNS),
        ("held_batch", HELD_COLUMNS),
        ("batch", BATCH_COLUMNS),
    ):
        for name, typ in added:
            con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {name} {typ}")


ENCODED_TABLES = ("identifiers", "related")


def has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? "
            "AND database_name = current_database()",
            [name],
        ).fetchall()[0][0]
    )


def ensure_schema(
    con: duckdb.DuckDBPyConnection, enc: EncodingContract, mappings_dir: Path | str | None = None
) -> None:
    enc_ddl = _encoded_ddl(enc)
    pay_types = payload_column_types(mappings_dir)
    pay_ddl = ", ".join(f'"{c}" {t}' for c, t in pay_types.items())
    ensure_batch_tables(con)
    con.execute("""CREATE TABLE IF NOT EXISTS record_retired (
        record_ref VARCHAR, agency VARCHAR, batch_id VARCHAR, retired_at TIMESTAMP)""")
    con.execute(f"""CREATE TABLE IF NOT EXISTS identifiers (
        record_ref VARCHAR PRIMARY KEY, agency VARCHAR NOT NULL, batch_id VARCHAR NOT NULL,
        {enc_ddl})""")
    con.execute(f"""CREATE TABLE IF NOT EXISTS related (
        record_ref VARCHAR NOT NULL, agency VARCHAR NOT NULL, batch_id VARCHAR NOT NULL,
        {enc_ddl}, slot VARCHAR NOT NULL, relationship VARCHAR)""")
    con.execute(f"""CREATE TABLE IF NOT EXISTS payload (
        record_ref VARCHAR NOT NULL, agency VARCHAR NOT NULL, batch_id VARCHAR NOT NULL,
        {pay_ddl})""")
    # Fields added since the table was made (a new canonical version, an agreement's field).
    for c, t in pay_types.items():
        con.execute(f'ALTER TABLE payload ADD COLUMN IF NOT EXISTS "{c}" {t}')
    add_spec_columns(con, enc)  # a warehouse of an older spec (linkage.spec_migration)


def add_spec_columns(con: duckdb.DuckDBPyConnection, enc: EncodingContract) -> None:
    """Columns of the current spec missing from an older warehouse's encoded tables (null for
    the old rows: nothing compares with them until they are replaced)."""
    for table in ENCODED_TABLES:
        if not has_table(con, table):
            continue
        have = {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}
        for col in enc.encoded_columns:
            if col not in have:
                typ = (
                    "BLOB"
                    if col in enc.bloom_columns
                    else "BOOLEAN"
                    if col in enc.flag_columns
                    else "VARCHAR"
                )
                con.execute(f"ALTER TABLE {table} ADD COLUMN {quote_ident(col)} {typ}")


def ensure_keyless_table(con: duckdb.DuckDBPyConnection, table: str, columns_ddl: str) -> None:
    """Create `table` (columns_ddl: its column list, no key) if missing, or rebuild it without
    the PRIMARY KEY an earlier version gave it.

    Linkage rewrites record_person and person every run. A key's index made that slow (1M
    record_person rows replaced in one transaction: ~10 s with the key, ~0.4 s without);
    their writers produce one row per key by construction, which the tests check."""
    con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns_ddl})")
    keyed = con.execute(
        """SELECT count(*) FROM duckdb_constraints() WHERE table_name = ?
           AND constraint_type = 'PRIMARY KEY' AND database_name = current_database()
           AND schema_name = current_schema()""",
        [table],
    ).fetchall()[0][0]
    if keyed:
        con.execute(f"ALTER TABLE {table} RENAME TO {table}__keyed")
        con.execute(f"CREATE TABLE {table} ({columns_ddl})")
        con.execute(f"INSERT INTO {table} SELECT * FROM {table}__keyed")
        con.execute(f"DROP TABLE {table}__keyed")


@contextmanager
def optimizers_disabled(con: duckdb.DuckDBPyConnection, *names: str) -> Iterator[None]:
    """Run a block with DuckDB optimizers `names` switched off on `con` (those this DuckDB
    has), adding to any already off, and put the setting back afterwards."""
    known = {r[0] for r in con.execute("SELECT name FROM duckdb_optimizers()").fetchall()}
    before = con.execute("SELECT current_setting('disabled_optimizers')").fetchall()[0][0]
    off = [n for n in before.split(",") if n.strip()]
    off += [n for n in names if n in known and n not in off]
    con.execute(f"SET disabled_optimizers = '{','.join(off)}'")
    try:
        yield
    finally:
        con.execute(f"SET disabled_optimizers = '{before}'")


#: Name under which `scratch_database` attaches its in-memory database.
SCRATCH_DATABASE = "linkage_scratch"


@contextmanager
def scratch_database(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Run a block with tables created without a database name going to a fresh in-memory
    database, then drop it and return to the database and schema in use before.

    For Splink's working tables: scoring 1M records writes ~38M candidate pairs, which in the
    warehouse file were compressed onto disk, read back and dropped again (blocking 17.9 ->
    14.0 s, benchmarks/bench_linkage.py), and left the file that much larger. Tables the block
    reads must be named with their database (the linkage input view is). Outside a
    transaction only: DuckDB writes to one database per transaction."""
    home_db, home_schema = con.execute("SELECT current_database(), current_schema()").fetchall()[0]
    if home_db == SCRATCH_DATABASE:  # already in one: an inner stage shares it
        yield
        return
    con.execute(f"ATTACH ':memory:' AS {SCRATCH_DATABASE}")
    try:
        con.execute(f"USE {SCRATCH_DATABASE}")
        yield
    finally:
        con.execute(f"USE {quote_ident(home_db)}.{quote_ident(home_schema)}")
        con.execute(f"DETACH {SCRATCH_DATABASE}")


def quote_ident(name: str) -> str:
    """`name` as a DuckDB identifier, whatever characters it holds."""
    return '"' + name.replace('"', '""') + '"'
