"""The person-linkage input at the hub: the features table built from `identifiers` record by
record, its layout and digests, and the compact record keys and ranks Splink joins on."""

from __future__ import annotations

import json
import logging
from typing import Any

import duckdb

from linkage.comparisons import (
    BLOOM_COLUMNS,
    BLOOM_WORD_HEX_DIGITS,
    bloom_word_column,
    bloom_word_count_for,
)
from linkage.txn import atomic
from linkage.warehouse import (
    quote_ident,
)

log = logging.getLogger(__name__)

# The linkage input: a TEMP view (INPUT_TABLE) over the warehouse table FEATURES_TABLE, which
# `prepare_input` keeps current record by record (FEATURES_LAYOUT_TABLE: how it was built).
# What the next incremental run needs is one content digest per linked record
# (DIGEST_TABLE) and the input's column signature (SIGNATURE_TABLE).
INPUT_TABLE = "person_linkage_input"
FEATURES_TABLE = "linkage_features"
FEATURES_LAYOUT_TABLE = "linkage_features_layout"
FEATURES_FORMAT = 2  # 2: flag_* columns (booleans) kept
DIGEST_TABLE = "linkage_input_digest"
SIGNATURE_TABLE = "linkage_input_signature"
# Splink joins and orients pairs on this compact id, not on `unique_id` (agency:record_ref,
# ~36 characters): at 1M records the tens of millions of candidate pairs are BIGINTs.
RECORD_KEY_TABLE = "linkage_record_key"
ID_COLUMN = "uid"
# Clustering and person ids run on each record's rank in unique_id order (a TEMP table per
# run): integers, where pandas joins, hashing and sorting of 36-character ids cost ~5 s of a
# 1M-record run. The rank keeps every tie-break (edge order, a cluster's lowest member, which
# cluster takes an earlier id) exactly as the ids themselves decide it.
ORDER_TABLE = "linkage_record_order"
ORDER_COLUMN = "ord"


def popcount_column(bloom: str) -> str:
    """Name of the input column holding a Bloom filter's popcount (see `prepare_input`)."""
    return f"pop_{bloom}"


def _first_bad_row(con: duckdb.DuckDBPyConnection, source: str, bad_sql: str) -> tuple | None:
    rows = con.execute(
        f"SELECT agency, record_ref FROM {source} s WHERE {bad_sql} LIMIT 1"
    ).fetchall()
    return rows[0] if rows else None


def prepare_input(con: duckdb.DuckDBPyConnection, source: str = "identifiers") -> list[str]:
    """Bring the linkage input up to date with `source`; returns its column names.

    The input is FEATURES_TABLE, kept in the warehouse and refreshed record by record: only
    records whose source row changed (new, re-sent, re-keyed; a 64-bit hash of the row) are
    converted again, and records gone from `source` are dropped. Ingest refreshes it after
    loading (`linkage.ingest`), so a linkage run finds it current and converts nothing
    (at 1M records: ~0.8 s to check instead of ~6 s to convert every record each run).
    INPUT_TABLE is a TEMP view over it adding `unique_id` (agency:record_ref), so a
    re-keyed record_ref can never leave a stale unique_id behind.

    One row per (agency, record_ref): the latest batch wins. Representation is chosen for
    the comparisons that run on every candidate pair, once per record here:
    - tokens and blocking keys (128-bit keyed hashes, hex) become UBIGINT, their first 64
      bits (`_token_sql`): fixed-width keys hash-join and compare far faster than
      32-character strings and take a sixth of the memory (1.5x faster scoring at 100k
      records, benchmarks/bench_linkage.py);
    - Bloom filters compared by the model become 124-bit integer words (`bf_<name>_w<i>`,
      HUGEINT) with their popcount alongside, so a Dice coefficient costs one `&` and one
      `bit_count` per word and no casts (comparisons.dice_sql); the BIT column stays for
      models trained before.
    """
    cols = [r[0] for r in con.execute(f"DESCRIBE {source}").fetchall()]
    for required in ("record_ref", "agency", "batch_id"):
        if required not in cols:
            raise ValueError(f"table {source}: missing column {required!r}")
    _drop_persisted_input(con)
    row_hash = "hash(" + ", ".join(f's."{c}"' for c in cols) + ")"
    # The warehouse keeps one row per record (ingest replaces); other sources may hold
    # several batches of a record. The window costs a sort of every column, so only then.
    dupes = con.execute(f"""SELECT count(*) - count(DISTINCT (agency, record_ref))
                            FROM {source}""").fetchall()[0][0]
    latest = (
        f"(SELECT * FROM {source} QUALIFY row_number() OVER ("
        "PARTITION BY agency, record_ref ORDER BY batch_id DESC) = 1)"
        if dupes
        else source
    )
    # A converted row `f` is current for source row `s`: same record, same content.
    current = f"f.agency = s.agency AND f.record_ref = s.record_ref AND f.src_hash = {row_hash}"
    stored = _stored_layout(con)
    if stored is not None and stored["source_columns"] == cols:
        changed, gone = con.execute(f"""
            SELECT (SELECT count(*) FROM {latest} s ANTI JOIN {FEATURES_TABLE} f ON {current}),
                   (SELECT count(*) FROM {FEATURES_TABLE} f ANTI JOIN {latest} s ON {current})
            """).fetchall()[0]
        if not changed and not gone:
            return _expose_input(con, stored)
    layout = _input_layout(con, source, cols)
    _register_record_keys(con, source)
    full = stored is None or stored != layout
    rows = f"""SELECT {_feature_select(layout, row_hash)} FROM {latest} s
               JOIN {RECORD_KEY_TABLE} k USING (agency, record_ref)"""
    with atomic(con):
        if full:
            con.execute(f"CREATE OR REPLACE TABLE {FEATURES_TABLE} AS {rows}")
            _check_tokens(con, source, FEATURES_TABLE, layout["as_int"])
        else:
            staging = f"{FEATURES_TABLE}_staging"
            con.execute(f"""CREATE OR REPLACE TEMP TABLE {staging} AS {rows}
                            ANTI JOIN {FEATURES_TABLE} f ON {current}""")
            try:
                _check_tokens(con, source, staging, layout["as_int"])
                # Replaced records (their uid is staged) and records gone from the source.
                con.execute(f"""DELETE FROM {FEATURES_TABLE}
                                WHERE {ID_COLUMN} IN (SELECT {ID_COLUMN} FROM {staging})
                                   OR {ID_COLUMN} IN (SELECT f.{ID_COLUMN} FROM {FEATURES_TABLE} f
                                        ANTI JOIN {latest} s USING (agency, record_ref))""")
                con.execute(f"INSERT INTO {FEATURES_TABLE} SELECT * FROM {staging}")
            finally:
                con.execute(f"DROP TABLE IF EXISTS {staging}")
        con.execute(
            f"CREATE OR REPLACE TABLE {FEATURES_LAYOUT_TABLE} AS SELECT ? AS layout",
            [json.dumps(layout)],
        )
    return _expose_input(con, layout)


def _stored_layout(con: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
    """The layout FEATURES_TABLE was built with, if it is there and was built by this DuckDB
    version under this format (otherwise everything is converted again)."""
    have = {
        r[0]
        for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE NOT temporary AND schema_name = 'main' "
            "AND database_name = current_database()"
        ).fetchall()
    }
    if not {FEATURES_TABLE, FEATURES_LAYOUT_TABLE} <= have:
        return None
    rows = con.execute(f"SELECT layout FROM {FEATURES_LAYOUT_TABLE}").fetchall()
    if len(rows) != 1:
        return None
    layout = json.loads(rows[0][0])
    if layout.get("format") != FEATURES_FORMAT or layout.get("duckdb") != duckdb.__version__:
        return None
    return layout


def _input_layout(con: duckdb.DuckDBPyConnection, source: str, cols: list[str]) -> dict[str, Any]:
    """What the input holds for `source` as it is now: populated token/key columns (and which
    become integers), Bloom filters and their words. One scan of `source`."""
    blooms = [c for c in cols if c.startswith("bf_")]
    keep = [c for c in cols if c.startswith(("tok_", "blk_"))]
    flags = [c for c in cols if c.startswith("flag_")]
    aggs = [f'count("{c}")' for c in keep + blooms]
    aggs += [f'max(length("{c}"))' for c in keep]
    aggs += [f'min(octet_length("{c}")), max(octet_length("{c}"))' for c in blooms]
    aggs += [f'count_if("{c}")' for c in flags]
    stats = list(con.execute(f"SELECT {', '.join(aggs) or '0'} FROM {source}").fetchall()[0])
    raised = stats[len(stats) - len(flags) :] if flags else []
    stats = stats[: len(stats) - len(flags)]
    # A flag no record raises says nothing (its comparison level would be untrainable).
    flags = [c for c, n in zip(flags, raised, strict=True) if n]
    n_k, n_b = len(keep), len(blooms)
    counts = dict(zip(keep + blooms, stats[: n_k + n_b], strict=True))
    widths = dict(zip(keep, stats[n_k + n_b : 2 * n_k + n_b], strict=True))
    lengths = stats[2 * n_k + n_b :]
    for i, c in enumerate(blooms):
        lo, hi = lengths[2 * i], lengths[2 * i + 1]
        if lo != hi:
            bad = con.execute(
                f"""SELECT agency, record_ref, octet_length("{c}") AS n FROM {source}
                    WHERE octet_length("{c}") <> (
                        SELECT mode(octet_length("{c}")) FROM {source} WHERE "{c}" IS NOT NULL)
                    LIMIT 1"""
            ).fetchall()[0]
            raise ValueError(
                f"table {source}: row agency={bad[0]} record_ref={bad[1]} field {c}: "
                f"Bloom filter of {bad[2]} bytes differs from the column's fixed length"
            )
    n_bytes = {c: lengths[2 * i + 1] for i, c in enumerate(blooms)}
    # A column no agency populates carries no evidence and would leave EM levels untrainable.
    keep = [c for c in keep if counts[c]]
    blooms = [c for c in blooms if counts[c]]
    # Tokens of up to 128 bits (the spec's default) become 64-bit integers; wider stay text.
    as_int = {c: widths[c] for c in keep if widths[c] <= 32}
    words = [
        [c, i]
        for c in blooms
        if c in BLOOM_COLUMNS
        for i in range(bloom_word_count_for(n_bytes[c]))
    ]
    layout = {
        "format": FEATURES_FORMAT,
        "duckdb": duckdb.__version__,
        "source_columns": cols,
        "keep": keep,
        "blooms": blooms,
        "as_int": as_int,
        "words": words,
        "flags": flags,
    }
    return layout


def _feature_select(layout: dict[str, Any], row_hash: str) -> str:
    as_int = layout["as_int"]
    return ", ".join(
        [f"k.{ID_COLUMN}", "s.record_ref", "s.agency", "s.batch_id"]
        + [
            f'{_token_sql(c, as_int[c])} AS "{c}"' if c in as_int else f's."{c}"'
            for c in layout["keep"]
        ]
        + [f'CAST("{c}" AS BIT) AS "{c}"' for c in layout["blooms"]]
        + [f'bit_count(CAST("{c}" AS BIT)) AS "{popcount_column(c)}"' for c in layout["blooms"]]
        + [f'{_bloom_word_sql(c, i)} AS "{bloom_word_column(c, i)}"' for c, i in layout["words"]]
        + [f'coalesce(s."{c}", FALSE) AS "{c}"' for c in layout.get("flags", [])]
        + [
            f"{row_hash} AS src_hash",
            # Tokens present in the source row: the check that none failed to convert.
            " + ".join([f'(s."{c}" IS NOT NULL)::INTEGER' for c in as_int] or ["0"])
            + " AS src_tokens",
        ]
    )


def _expose_input(con: duckdb.DuckDBPyConnection, layout: dict[str, Any]) -> list[str]:
    """INPUT_TABLE as a TEMP view over FEATURES_TABLE; returns its column names."""
    columns = [
        ID_COLUMN,
        "unique_id",
        "record_ref",
        "agency",
        "batch_id",
        *layout["keep"],
        *layout["blooms"],
        *[popcount_column(c) for c in layout["blooms"]],
        *[bloom_word_column(c, i) for c, i in layout["words"]],
        *layout.get("flags", []),
    ]
    select = ", ".join(
        "agency || ':' || record_ref AS unique_id" if c == "unique_id" else f'"{c}"'
        for c in columns
    )
    # Named with its database, so Splink can read it from `scratch_database`.
    db, schema = con.execute("SELECT current_database(), current_schema()").fetchall()[0]
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {INPUT_TABLE} AS SELECT {select} "
        f"FROM {quote_ident(db)}.{quote_ident(schema)}.{FEATURES_TABLE}"
    )
    return columns


def _drop_persisted_input(con: duckdb.DuckDBPyConnection) -> None:
    # Warehouses linked before the input became a TEMP table hold it as a table of their own.
    for (db,) in con.execute(
        "SELECT database_name FROM duckdb_tables() WHERE table_name = ? AND NOT temporary",
        [INPUT_TABLE],
    ).fetchall():
        con.execute(f"DROP TABLE {quote_ident(db)}.main.{INPUT_TABLE}")


def input_signature(con: duckdb.DuckDBPyConnection) -> str:
    """The built input's columns and types, and the DuckDB version whose `hash` made the
    digests: if any of them changes, stored digests no longer compare."""
    cols = con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {INPUT_TABLE})").fetchall()
    return json.dumps({"duckdb": duckdb.__version__, "columns": [list(c) for c in cols]})


def input_digest_sql(columns: list[str]) -> str:
    """SELECT uid, unique_id, digest over the built input: a 64-bit hash of every column a
    comparison could read (batch_id left out: a snapshot re-sends unchanged records under a new
    batch id). Two versions of a record collide with probability 2^-64."""
    content = ", ".join(f'"{c}"' for c in columns if c not in ("batch_id", ID_COLUMN))
    return f"SELECT {ID_COLUMN}, unique_id, hash({content}) AS digest FROM {INPUT_TABLE}"


def save_input_digest(con: duckdb.DuckDBPyConnection, columns: list[str]) -> None:
    """Record what this run linked, for the next incremental run (inside the run's
    transaction, so a failed run leaves the last successful one's)."""
    con.execute(f"""CREATE OR REPLACE TABLE {DIGEST_TABLE} AS
                    SELECT {ID_COLUMN}, digest FROM ({input_digest_sql(columns)})""")
    con.execute(
        f"CREATE OR REPLACE TABLE {SIGNATURE_TABLE} AS SELECT ? AS signature",
        [input_signature(con)],
    )


def _check_tokens(
    con: duckdb.DuckDBPyConnection, source: str, built: str, as_int: dict[str, int]
) -> None:
    """Refuse a token that is not hex of its column's width (`_token_sql` made it NULL): the
    tokens converted in `built` must number the tokens its source rows held (`src_tokens`);
    only a shortfall scans the source, to name the first bad row and field."""
    if not as_int:
        return
    held, got = con.execute(
        "SELECT coalesce(sum(src_tokens), 0), "
        + " + ".join(f'count("{c}")' for c in as_int)
        + f" FROM {built}"
    ).fetchall()[0]
    if held == got:
        return
    malformed = con.execute(
        "SELECT "
        + ", ".join(
            f'count_if("{c}" IS NOT NULL AND {_token_sql(c, w)} IS NULL)' for c, w in as_int.items()
        )
        + f" FROM {source} s"
    ).fetchall()[0]
    for (c, w), n in zip(as_int.items(), malformed, strict=True):
        if n:
            # The value stays out of the message (a pseudonym, but still an identifier);
            # the row and field are enough to find it.
            bad = _first_bad_row(con, source, f'"{c}" IS NOT NULL AND {_token_sql(c, w)} IS NULL')
            raise ValueError(
                f"table {source}: row agency={bad[0]} record_ref={bad[1]} field {c}: "
                f"not a {w * 4}-bit hex token like the rest of the column"
            )


def _bloom_word_sql(col: str, i: int) -> str:
    # Hex digits 31i .. 31i+30 of the filter as a HUGEINT (the last word shorter: the same
    # on both sides of a pair, so intersections count every bit once). Via hex: casting BIT
    # to its text of 0s and 1s was 4x slower (7 s at 1M records).
    d = BLOOM_WORD_HEX_DIGITS
    return f"CAST('0x' || substr(hex(CAST(s.\"{col}\" AS BLOB)), {i * d + 1}, {d}) AS HUGEINT)"


def _register_record_keys(con: duckdb.DuckDBPyConnection, source: str) -> None:
    """Give records not seen before the next integer ids. An id is never changed or reused
    (a retired record keeps its id), so the input of successive runs compares row by row."""
    con.execute(f"""CREATE TABLE IF NOT EXISTS {RECORD_KEY_TABLE} (
        agency VARCHAR NOT NULL, record_ref VARCHAR NOT NULL, {ID_COLUMN} BIGINT NOT NULL,
        PRIMARY KEY (agency, record_ref))""")
    con.execute(f"""
        INSERT INTO {RECORD_KEY_TABLE}
        SELECT agency, record_ref,
               (SELECT coalesce(max({ID_COLUMN}), 0) FROM {RECORD_KEY_TABLE})
                   + row_number() OVER (ORDER BY agency, record_ref)
        FROM (SELECT DISTINCT agency, record_ref FROM {source}) new
        WHERE NOT EXISTS (SELECT 1 FROM {RECORD_KEY_TABLE} k
                          WHERE k.agency = new.agency AND k.record_ref = new.record_ref)""")


def build_record_order(con: duckdb.DuckDBPyConnection) -> str:
    """ORDER_TABLE (ord, uid, agency, record_ref) for the current input: ord is the record's
    rank by unique_id, so comparing ords compares unique_ids. Returns the table name."""
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {ORDER_TABLE} AS
        SELECT row_number() OVER (ORDER BY unique_id) AS {ORDER_COLUMN}, {ID_COLUMN},
               agency, record_ref
        FROM {INPUT_TABLE}""")
    return ORDER_TABLE


def drop_record_order(con: duckdb.DuckDBPyConnection) -> None:
    """The run's rank table is done with (it holds a row per record until dropped)."""
    con.execute(f"DROP TABLE IF EXISTS {ORDER_TABLE}")


def _token_sql(col: str, width: int) -> str:
    # Fixed width per column, so "0f" and "f" can never both stand for 15. One parse both
    # checks every digit and gives the first 64 bits of the keyed hash: two different values
    # of one column agree by chance with probability 2^-64 per pair (any such collision among
    # a million distinct values: ~3e-8), and a UBIGINT is half the width of the 128-bit token
    # the candidate pairs would carry.
    hexed = f"'0x' || s.\"{col}\""
    if width <= 16:
        value = f"TRY_CAST({hexed} AS UBIGINT)"
    else:
        value = f"CAST(TRY_CAST({hexed} AS UHUGEINT) >> {4 * width - 64} AS UBIGINT)"
    return f'CASE WHEN length(s."{col}") = {width} THEN {value} END'
