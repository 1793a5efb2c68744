"""Who works where: user id -> (agency, team), for attributing decisions to agencies and teams.

Read by table name from the workspace's accounts table (`ws_accounts`) when the governance store
has one: governance never imports the workspace, and a store without accounts (API tokens
only) simply has no teams.
"""

from __future__ import annotations

from sqlalchemy import Engine, MetaData, Table, inspect, select


def staff_directory(engine: Engine) -> dict[str, tuple[str | None, str | None]]:
    schema = (engine.get_execution_options().get("schema_translate_map") or {}).get(None)
    if "ws_accounts" not in set(inspect(engine).get_table_names(schema=schema)):
        return {}
    t = Table("ws_accounts", MetaData(), autoload_with=engine)
    with engine.connect() as conn:
        return {
            r.user_id: (r.agency, r.team)
            for r in conn.execute(select(t.c.user_id, t.c.agency, t.c.team))
        }
