"""One bridge DAG per onboarded agency (schemas/agencies/*.yaml): validate -> split/sign -> land.

Thin: parse time only reads the mapping YAML; every task body is a call into
linkage.orchestration (which calls ig_bridge). The tasks run on the agency's own worker (queue
``bridge_<code>``, the only worker that holds that agency's keys); quarantine and reports stay in
the agency folder. A successful landing updates the agency's Asset with the batch id, which
schedules the hub DAG.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, Param, dag, task

from linkage.orchestration import EXTRACT_KINDS, AgencyDagSpec, agency_dag_specs, asset_name

RETRY = {
    "retries": 3,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
}


def build_bridge_dag(spec: AgencyDagSpec):  # noqa: ANN201 - an airflow DAG
    code, mapping = spec.code, str(spec.mapping_path)
    landing_asset = Asset(asset_name(code))
    queue = f"bridge_{code.lower()}"

    @dag(
        dag_id=f"bridge_{code.lower()}",
        description=f"IG bridge for {spec.name} ({code}): extract -> signed batch -> landing",
        schedule=spec.schedule,
        start_date=datetime(2025, 1, 1),
        catchup=False,
        max_active_runs=1,  # batch sequence numbers are per agency and strictly increasing
        tags=["joinedup", "bridge", code],
        default_args={**RETRY, "queue": queue},
        params={
            "extract_path": Param(
                "",
                type="string",
                title="Extract file",
                description="Path of the extract to bridge, as seen by the agency's bridge. "
                "Empty: the newest file in agency/<CODE>/inbox/.",
            ),
            "extract_kind": Param(
                spec.extract_kind,
                type="string",
                enum=list(EXTRACT_KINDS),
                title="Full or delta",
                description="snapshot = full extract; delta = changes since the last batch.",
            ),
        },
        render_template_as_native_obj=False,
    )
    def bridge() -> None:
        @task(retries=0)  # a refused extract will not improve by retrying
        def validate(params: dict | None = None) -> dict:
            from linkage.orchestration import validate_task

            return validate_task(code, mapping, (params or {}).get("extract_path") or None)

        @task
        def split_sign(checked: dict, params: dict | None = None) -> dict:
            from linkage.orchestration import split_sign_task

            kind = (params or {}).get("extract_kind") or spec.extract_kind
            return split_sign_task(code, mapping, checked["extract"], kind)

        @task(outlets=[landing_asset])
        def land(split: dict, outlet_events=None) -> dict:  # noqa: ANN001 - airflow context
            from linkage.orchestration import land_task

            landed = land_task(split)
            outlet_events[landing_asset].extra = {
                "batch_id": landed["batch_id"],
                "agency": code,
                "sequence": landed["sequence"],
                "rows": landed["rows"],
            }
            return landed

        land(split_sign(validate()))

    return bridge()


for _spec in agency_dag_specs():
    globals()[f"bridge_{_spec.code.lower()}"] = build_bridge_dag(_spec)
