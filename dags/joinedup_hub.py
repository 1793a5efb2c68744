"""The hub DAG: scheduled on any agency's landing Asset.

apply re-keying batches -> list landed batches -> ingest (mapped, one per batch) -> link
persons -> households -> marts -> report (consent registry refresh + IG report). Single writer
to the DuckDB warehouse: one active run, one ingest at a time.
Every stage is idempotent for a run_id (linkage.pipeline), so a retried or re-run task yields
the same warehouse.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, AssetAny, dag, task

from linkage.orchestration import HUB_DAG_ID, HUB_STAGES, agency_dag_specs, asset_name

ASSETS = [Asset(asset_name(s.code)) for s in agency_dag_specs()]


@dag(
    dag_id=HUB_DAG_ID,
    description="Hub: verify and ingest landed batches, link persons, households, marts, report",
    schedule=AssetAny(*ASSETS),
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["joinedup", "hub"],
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=20),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=5),
    },
)
def hub_linkage() -> None:
    @task
    def apply_rekeys() -> list[dict]:
        # Record-ref key rotation first: a snapshot under the new key needs the refs moved.
        from linkage.orchestration import apply_rekeys

        return apply_rekeys()

    @task
    def list_batches() -> list[str]:
        from linkage.orchestration import pending_batch_dirs

        return pending_batch_dirs()

    @task(max_active_tis_per_dagrun=1)  # DuckDB: one writer
    def ingest(batch_dir: str) -> dict:
        from linkage.orchestration import ingest_one

        return ingest_one(batch_dir)

    def stage(name: str):  # noqa: ANN202 - a TaskFlow task
        # none_failed: a run with nothing new to ingest (empty mapping) still relinks.
        # `report` is the governance stage (consent refresh, audit checkpoint, IG report).
        @task(task_id=name, trigger_rule="none_failed")
        def run(run_id: str | None = None) -> dict:
            from linkage.orchestration import run_stage

            return run_stage(name, run_id)

        return run

    # The same functions `joinedup-hub` calls (linkage.cli): one code path with or without
    # Airflow.
    batches = list_batches()
    apply_rekeys() >> batches
    ingested = ingest.expand(batch_dir=batches)
    link, households, marts, report = (stage(n)() for n in HUB_STAGES)
    ingested >> link >> households >> marts >> report


hub_linkage()
