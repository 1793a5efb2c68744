"""The hub's governance stage: what the hub DAG's `report` task runs after the marts.

1. refresh the consent registry in the governance store from the warehouse's payload consent
   records (the agencies' latest extracts), so decisions use this run's consent states;
   consent recorded directly at the hub (e.g. a withdrawal received by phone) is kept;
2. record the run in the audit log (kind `hub_run`: run id and counts) and sign a checkpoint
   of the log with the hub's audit key (`JOINEDUP_HUB_KEYS_DIR`, else <hub dir>/keys),
   after re-checking the whole chain against every earlier checkpoint (the run fails if the key
   is missing; if the chain is broken it writes the report saying so, then fails);
3. render the IG lead's linkage audit report with the access section from the audit log and the
   legitimate relationships in the store, the quality figures when the partnership's
   evaluation has written them (hub/reports/linkage_quality.json), and whether the audit chain
   verifies against the IG lead's trusted key (`JOINEDUP_AUDIT_TRUSTED_KEYS`, else
   <run>/ig_lead/trusted_keys when present) and up to which checkpoint.

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

from governance.audit import AuditError, AuditLog, make_engine
from governance.audit_keys import TrustedKeys, load_audit_key, load_trusted_keys
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


def hub_keys_dir(hub_dir: Path) -> Path:
    """The hub's keys folder (audit key): `JOINEDUP_HUB_KEYS_DIR`, else <hub dir>/keys."""
    return Path(os.environ.get("JOINEDUP_HUB_KEYS_DIR") or Path(hub_dir) / "keys")


def trusted_audit_keys(run_dir: Path) -> TrustedKeys | None:
    """The IG lead's copy of the hub audit public key(s), if this hub is given one."""
    given = os.environ.get("JOINEDUP_AUDIT_TRUSTED_KEYS")
    path = Path(given) if given else Path(run_dir) / "ig_lead" / "trusted_keys"
    if not given and not path.exists():
        return None
    return load_trusted_keys(path)


def consent_events(warehouse: Path) -> pd.DataFrame:
    """The agencies' consent payload fields keyed by hub person_id (ids and codes only)."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.execute(CONSENT_SQL).df()
    finally:
        con.close()


def refresh_consent(engine: Engine, warehouse: Path, run_id: str | None = None) -> dict[str, Any]:
    """Replace the warehouse-sourced consent events in the governance store with the
    warehouse's current ones (one transaction; a malformed row changes nothing and raises
    ConsentDataError naming the row and field)."""
    t = time.perf_counter()
    reg = SqlConsentRegistry(engine)
    n = reg.replace_warehouse_events(
        consent_events(Path(warehouse)),
        source=f"{Path(warehouse).name}: payload consent fields",
        run_id=run_id,
    )
    return {"consent_events": n, "seconds": round(time.perf_counter() - t, 2)}


def report_stage(
    run_id: str, base: Path | None = None, mappings: Path | None = None
) -> dict[str, Any]:
    """The hub DAG's `report` task (and `joinedup-hub report`): refresh consent, then
    (re-)render the IG report."""
    from governance.reports.linkage_report import build_report
    from linkage.orchestration import hub_paths, run_dir

    run = Path(base) if base is not None else run_dir()
    paths = hub_paths(run, mappings)
    engine = governance_engine(run)
    consent = refresh_consent(engine, paths.warehouse, run_id)
    audit = AuditLog(
        engine, signing_key=load_audit_key(hub_keys_dir(paths.hub)), origin=f"hub_run:{run_id}"
    )
    cp, refused = None, None
    try:
        # The run is an audit entry of its own (ids and counts only), then signed at its end.
        audit.append(
            "hub_run",
            {"type": "hub_run", "run_id": run_id, "consent_events": consent["consent_events"]},
        )
        cp = audit.checkpoint("end_of_run", full=True)
    except AuditError as exc:  # a broken chain is never signed: report it, then fail the run
        refused = exc
    rels = SqlRelationshipRegistry(engine).to_frame()
    out = build_report(
        paths, run_id, audit=audit, relationships=rels, trusted_keys=trusted_audit_keys(run)
    )
    engine.dispose()
    if refused is not None:
        raise refused
    # Write-audit-publish: the workspace reads this copy, never the file a stage writes.
    from linkage.publish import publish

    published = publish(paths, run_id)
    # Agencies' caseload exports waiting in the drop root land as relationships.
    from governance.allocations import import_run

    landed = import_run(run, published, engine, audit)
    return {
        "report": str(out),
        **consent,
        "published": str(published),
        "audit_checkpoint": None if cp is None else int(cp["cp_seq"]),
        "allocations_imported": len(landed),
    }
