"""The hub's governance stage: what the hub DAG's `report` task runs after the marts.

1. refresh the consent registry in the governance store from the warehouse's payload consent
   records (the agencies' latest extracts), so decisions use this run's consent states;
   consent recorded directly at the hub (e.g. a withdrawal received by phone) is kept;
2. render the IG lead's linkage audit report with the access section from the audit log and the
   legitimate relationships in the store, and the quality figures when the partnership's
   evaluation has written them (hub/reports/linkage_quality.json).

The governance store is `JOINEDUP_GOVERNANCE_DB` (a SQLAlchemy URL; PostgreSQL in production,
with `JOINEDUP_GOVERNANCE_SCHEMA` if set), else SQLite at <run>/hub/governance.db.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
from sqlalchemy import Engine

from governance.audit import AuditLog, make_engine
from governance.consent import SqlConsentRegistry
from governance.relationships import SqlRelationshipRegistry

CONSENT_SQL = """
    SELECT rp.person_id, p.agency, p.consent_purpose, p.consent_status, p.consent_date
    FROM payload p JOIN record_person rp USING (agency, record_ref)
    WHERE p.consent_status IS NOT NULL AND p.consent_purpose IS NOT NULL
      AND p.consent_date IS NOT NULL"""


def governance_db_url(run_dir: Path) -> str:
    default = f"sqlite:///{run_dir / 'hub' / 'governance.db'}"
    return os.environ.get("JOINEDUP_GOVERNANCE_DB") or default


def governance_engine(run_dir: Path) -> Engine:
    url = governance_db_url(run_dir)
    if url.startswith("sqlite:///"):
        _private_sqlite(Path(url.split("///", 1)[1]))
    return make_engine(url, os.environ.get("JOINEDUP_GOVERNANCE_SCHEMA"))


def _private_sqlite(path: Path) -> None:
    """The governance store is created 0600 (SQLite gives its journal the same mode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    path.chmod(0o600)


def consent_events(warehouse: Path) -> pd.DataFrame:
    """The agencies' consent payload fields keyed by hub person_id (ids and codes only)."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.execute(CONSENT_SQL).df()
    finally:
        con.close()


def refresh_consent(engine: Engine, warehouse: Path, run_id: str | None = None
                    ) -> dict[str, Any]:
    """Replace the warehouse-sourced consent events in the governance store with the
    warehouse's current ones (one transaction; a malformed row changes nothing and raises
    ConsentDataError naming the row and field)."""
    t = time.perf_counter()
    reg = SqlConsentRegistry(engine)
    n = reg.replace_warehouse_events(consent_events(Path(warehouse)),
                                     source=f"{Path(warehouse).name}: payload consent fields",
                                     run_id=run_id)
    return {"consent_events": n, "seconds": round(time.perf_counter() - t, 2)}


def report_stage(run_id: str, base: Path | None = None) -> dict[str, Any]:
    """The hub DAG's `report` task: refresh consent, then (re-)render the IG report."""
    from governance.reports.linkage_report import build_report
    from linkage.orchestration import hub_paths, run_dir

    run = Path(base) if base is not None else run_dir()
    paths = hub_paths(run)
    engine = governance_engine(run)
    consent = refresh_consent(engine, paths.warehouse, run_id)
    audit = AuditLog(engine)
    rels = SqlRelationshipRegistry(engine).to_frame()
    out = build_report(paths, run_id, audit=audit, relationships=rels)
    engine.dispose()
    return {"report": str(out), **consent}
