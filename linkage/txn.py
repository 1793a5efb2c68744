"""One transaction per hub stage, whoever opens it.

Stage functions (link_persons, build_households, ...) are atomic on their own; when the pipeline
runs several of them as one stage it opens the transaction itself, and theirs become part of it.
DuckDB has no nested transactions (and a refused BEGIN aborts the open one), so the connections
with an open `atomic` block are tracked here and an inner block simply joins the outer one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

_open: set[int] = set()


@contextmanager
def atomic(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    key = id(con)
    if key in _open:
        yield  # inside the caller's transaction: it commits or rolls back for us
        return
    con.execute("BEGIN TRANSACTION")
    _open.add(key)
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    else:
        con.execute("COMMIT")
    finally:
        _open.discard(key)
