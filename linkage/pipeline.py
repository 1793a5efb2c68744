"""The hub's stages as plain functions: what the Airflow hub DAG and the demo call.

Each stage opens the warehouse itself (one writer at a time: the hub DAG runs with
max_active_runs=1), returns a small JSON-serialisable summary (an XCom in Airflow), and is
idempotent: a stage already completed for a run_id returns its recorded summary instead of
running again, and the stages that write do so inside one transaction, so a killed run leaves
either everything or nothing of a stage behind.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import duckdb

from linkage.config import HubPaths, private_file, private_umask
from linkage.txn import atomic

log = logging.getLogger(__name__)

LINKAGE_BACKEND_ENV = "JOINEDUP_LINKAGE_BACKEND"
LINKAGE_BACKENDS = ("duckdb", "spark")

STAGE_DDL = """CREATE TABLE IF NOT EXISTS pipeline_stage (
    run_id VARCHAR NOT NULL, stage VARCHAR NOT NULL, finished_at TIMESTAMP NOT NULL,
    summary JSON, PRIMARY KEY (run_id, stage))"""


def _summary(obj: Any) -> dict[str, Any]:
    if is_dataclass(obj) and not isinstance(obj, type):
        data = asdict(obj)
    elif isinstance(obj, dict):
        data = obj
    else:
        data = {"result": obj}
    return json.loads(json.dumps(data, default=str))


def _once(
    paths: HubPaths,
    run_id: str,
    stage: str,
    work: Callable[[duckdb.DuckDBPyConnection], Any],
    *,
    one_transaction: bool = True,
) -> dict[str, Any]:
    with private_umask():  # the warehouse, its WAL, marts and reports: owner-only
        return _once_private(paths, run_id, stage, work, one_transaction=one_transaction)


def _once_private(
    paths: HubPaths,
    run_id: str,
    stage: str,
    work: Callable[[duckdb.DuckDBPyConnection], Any],
    *,
    one_transaction: bool = True,
) -> dict[str, Any]:
    paths.ensure()
    con = duckdb.connect(str(paths.warehouse))
    private_file(paths.warehouse)
    try:
        con.execute(STAGE_DDL)
        done = con.execute(
            "SELECT summary FROM pipeline_stage WHERE run_id = ? AND stage = ?", [run_id, stage]
        ).fetchone()
        if done is not None:
            log.info("stage %s already completed for run %s", stage, run_id)
            return {**json.loads(done[0]), "skipped": True}
        # The stage's writes and its completion marker commit together: a run killed anywhere
        # in between leaves nothing of the stage, and the re-run starts it afresh.
        # (Splink probes tables by catching errors, which aborts a DuckDB transaction, so the
        # linkage stage commits its own writes atomically and finds an earlier commit itself.)
        with atomic(con) if one_transaction else nullcontext():
            summary = _summary(work(con))
            summary.pop("model", None)  # the model is persisted in linkage_model, not in XComs
            con.execute(
                "INSERT INTO pipeline_stage VALUES (?, ?, now(), ?)",
                [run_id, stage, json.dumps(summary)],
            )
        return summary
    finally:
        con.close()


def stage_ingest(
    paths: HubPaths, batch_dirs: list[str] | None = None, progress: bool = False
) -> dict[str, Any]:
    """Not keyed by run: every batch is verified and loaded exactly once, whichever run sees
    it first (re-ingesting a loaded batch is a no-op)."""
    from linkage.ingest import ingest_landing

    dirs = [Path(d) for d in batch_dirs] if batch_dirs is not None else None
    report = ingest_landing(paths, batch_dirs=dirs, progress=progress)
    return _summary(report.to_dict())


def linkage_backend() -> str:
    """Where the link stage runs: JOINEDUP_LINKAGE_BACKEND, `duckdb` (default, one machine)
    or `spark` (linkage.spark_linkage; JOINEDUP_SPARK_* as in SparkConfig.from_env)."""
    backend = os.environ.get(LINKAGE_BACKEND_ENV, "").strip().lower() or "duckdb"
    if backend not in LINKAGE_BACKENDS:
        raise ValueError(
            f"environment variable {LINKAGE_BACKEND_ENV}: {backend!r} is not one "
            f"of {', '.join(LINKAGE_BACKENDS)}"
        )
    return backend


def stage_link_persons(
    paths: HubPaths,
    run_id: str,
    show_progress: bool = False,
) -> dict[str, Any]:
    from linkage.person_linkage import LinkageSettings, link_persons
    from linkage.person_run import RUN_DDL

    # Read up front: a bad setting fails before the warehouse opens.
    spark_config = None
    if linkage_backend() == "spark":
        from linkage.spark_session import SparkConfig

        spark_config = SparkConfig.from_env(paths.hub)

    def work(con: duckdb.DuckDBPyConnection) -> Any:
        # A run killed after link_persons committed but before its stage marker: the run's
        # result is already in linkage_run, so report it rather than link again.
        con.execute(RUN_DDL)
        row = con.execute("SELECT * FROM linkage_run WHERE run_id = ?", [run_id]).df()
        if len(row):
            return row.iloc[0].to_dict()
        settings = LinkageSettings(show_progress=show_progress)
        if spark_config is not None:
            from linkage.spark_linkage import run_configured

            return run_configured(con, run_id, settings, spark_config)
        return link_persons(con, run_id, settings)

    return _once(paths, run_id, "link_persons", work, one_transaction=False)


def stage_households(paths: HubPaths, run_id: str) -> dict[str, Any]:
    from linkage.family import build_family_network
    from linkage.households import build_households

    def work(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        hh = build_households(con, run_id, mappings_dir=paths.mappings)
        fam = build_family_network(con, run_id)
        return {"households": _summary(hh), "family": _summary(fam)}

    return _once(paths, run_id, "households", work)


def stage_marts(paths: HubPaths, run_id: str) -> dict[str, Any]:
    """Analyst marts (hub/marts/analyst.duckdb), rebuilt from the warehouse, then checked:
    a marts file that breaks the suppression rules fails the stage."""
    from linkage.disclosure import check_marts
    from linkage.marts import build_marts

    def work(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        summary = build_marts(con, paths.marts / "analyst.duckdb", run_id)
        problems = check_marts(summary.path)
        if problems:
            raise RuntimeError(
                f"{summary.path}: {len(problems)} disclosure breach(es), first: {problems[0]}"
            )
        return _summary(summary)

    return _once(paths, run_id, "marts", work)


def stage_report(paths: HubPaths, run_id: str, audit_db: str | None = None) -> dict[str, Any]:
    """The IG lead's linkage audit report (hub/reports/linkage_report_<run>.html); the access
    section is filled when a governance audit log URL is given."""
    from governance.reports.linkage_report import build_report

    def work(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        audit = None
        if audit_db is not None:
            from governance.audit import AuditLog

            audit = AuditLog(audit_db, create=False)
        out = build_report(paths, run_id, audit=audit, con=con)
        return {"report": str(out)}

    return _once(paths, run_id, "report", work)


def stage_link_incremental(
    paths: HubPaths,
    run_id: str,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Link only the records that changed since the last linkage run, with the stored model
    (linkage.incremental): for a landed delta between nightly full relinks. Falls back to a
    full relink (stage_link_persons' work) when the warehouse needs one: no earlier run, or
    identifier columns changed since."""
    from linkage.incremental import NeedsFullRelink, link_incremental
    from linkage.person_linkage import LinkageSettings, link_persons
    from linkage.person_run import RUN_DDL

    def work(con: duckdb.DuckDBPyConnection) -> Any:
        con.execute(RUN_DDL)
        row = con.execute("SELECT * FROM linkage_run WHERE run_id = ?", [run_id]).df()
        if len(row):  # committed before a kill, marker missing: report, don't relink
            return row.iloc[0].to_dict()
        settings = LinkageSettings(show_progress=show_progress)
        try:
            return link_incremental(con, run_id, settings)
        except NeedsFullRelink as exc:
            log.warning("incremental linkage not possible (%s); full relink instead", exc)
            return {**_summary(link_persons(con, run_id, settings)), "fallback": str(exc)}

    return _once(paths, run_id, "link_persons", work, one_transaction=False)
