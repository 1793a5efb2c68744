"""Shared by the person-linkage tests: loading toy identifiers into a warehouse and reading the
person partition back."""

from __future__ import annotations

import duckdb
import pandas as pd

from linkage.person_linkage import LinkageSettings

QUIET = LinkageSettings(show_progress=False)


def _load(con: duckdb.DuckDBPyConnection, ids: pd.DataFrame) -> None:
    con.register("_ids", ids)
    con.execute("CREATE OR REPLACE TABLE identifiers AS SELECT * FROM _ids")
    con.unregister("_ids")


def _partition(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return con.execute("SELECT record_ref, agency, person_id AS cluster_id FROM record_person").df()
