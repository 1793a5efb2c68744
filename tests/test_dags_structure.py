"""The DAG folder: imports cleanly, one bridge DAG per mapping with the right tasks, Params,
retries and Asset; the hub DAG on the agencies' Assets; a refused extract fails its run with
the report's location, and nothing lands."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from linkage.orchestration import (
    EXTRACT_KINDS,
    HUB_DAG_ID,
    agency_dag_specs,
    asset_name,
)
from schemas.mapping import load_all_mappings

REPO = Path(__file__).resolve().parents[1]
SPECS = agency_dag_specs()


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Airflow reads its config at import: point it at a private home (SQLite) first."""
    home = tmp_path_factory.mktemp("airflow_home")
    run = tmp_path_factory.mktemp("airflow_run")
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "JOINEDUP_RUN_DIR": str(run),
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        yield run


@pytest.fixture(scope="module")
def dagbag(airflow_env: Path):  # noqa: ANN201 - airflow DagBag
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_dag_folder_imports_without_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    expected = {f"bridge_{s.code.lower()}" for s in SPECS} | {HUB_DAG_ID}
    assert set(dagbag.dag_ids) == expected
    # one bridge DAG per onboarded mapping, validated by the mapping loader itself
    assert {s.code for s in SPECS} == set(load_all_mappings(REPO / "schemas" / "agencies"))


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.code)
def test_bridge_dag_structure(dagbag, spec) -> None:
    dag = dagbag.dags[f"bridge_{spec.code.lower()}"]
    tasks = {t.task_id: t for t in dag.tasks}
    assert set(tasks) == {"validate", "split_sign", "land"}
    assert tasks["validate"].downstream_task_ids == {"split_sign"}
    assert tasks["split_sign"].downstream_task_ids == {"land"}
    assert tasks["land"].downstream_task_ids == set()
    # the extract is refused, not retried; transport steps retry with exponential back-off
    assert tasks["validate"].retries == 0
    for tid in ("split_sign", "land"):
        assert tasks[tid].retries >= 2 and tasks[tid].retry_exponential_backoff
        assert tasks[tid].retry_delay >= timedelta(seconds=10)
    # only the agency's own worker (holding its keys) runs its tasks
    assert {t.queue for t in dag.tasks} == {f"bridge_{spec.code.lower()}"}
    assert [a.name for a in tasks["land"].outlets] == [asset_name(spec.code)]
    assert dag.max_active_runs == 1
    schema = {k: dag.params.get_param(k).schema for k in dag.params}
    assert schema["extract_kind"]["enum"] == list(EXTRACT_KINDS)
    assert dag.params["extract_kind"] == spec.extract_kind
    assert schema["extract_path"]["type"] == "string"
    assert spec.schedule is not None and dag.timetable is not None


def test_bridge_param_rejects_unknown_extract_kind(dagbag) -> None:
    from airflow.sdk.definitions.param import ParamValidationError

    param = dagbag.dags["bridge_sch"].params.get_param("extract_kind")
    assert param.resolve("delta") == "delta"
    with pytest.raises(ParamValidationError):
        param.resolve("everything")


def test_hub_dag_structure(dagbag) -> None:
    dag = dagbag.dags[HUB_DAG_ID]
    tasks = {t.task_id: t for t in dag.tasks}
    chain = [
        "apply_rekeys",
        "list_batches",
        "ingest",
        "link_persons",
        "households",
        "marts",
        "report",
    ]
    assert set(tasks) == set(chain)
    for a, b in zip(chain, chain[1:], strict=False):
        assert tasks[a].downstream_task_ids == {b}, a
    assert dag.max_active_runs == 1
    assert tasks["ingest"].max_active_tis_per_dagrun == 1  # DuckDB has one writer
    assert type(tasks["ingest"]).__name__.endswith("MappedOperator")  # one per landed batch
    cond = dag.timetable.asset_condition
    assert type(cond).__name__ == "AssetAny"
    assert sorted(a.name for a in cond.objects) == sorted(asset_name(s.code) for s in SPECS)


def test_dag_files_are_thin() -> None:
    """Parsing must not pull heavy libraries: a fresh interpreter imports the DAG modules
    and none of pandas / duckdb / splink / great_expectations gets loaded."""
    code = (
        "import runpy, sys\n"
        "for f in ('joinedup_bridges.py', 'joinedup_hub.py'):\n"
        f"    runpy.run_path({str(REPO / 'dags')!r} + '/' + f)\n"
        "heavy = [m for m in ('duckdb', 'splink', 'great_expectations', 'ig_bridge.split',"
        " 'linkage.pipeline') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"},
        check=True,
        timeout=180,
    )
    assert "HEAVY []" in out.stdout, out.stdout[-2000:]


def test_refused_extract_fails_the_run_with_report_location(
    dagbag, airflow_env, caplog, capfd
) -> None:
    from airflow.utils.state import DagRunState

    subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    bad = airflow_env / "bad.csv"
    bad.write_text("NotAColumn;Other\nx;y\n", encoding="cp1252")
    dag = dagbag.dags["bridge_sch"]
    dr = dag.test(run_conf={"extract_path": str(bad), "extract_kind": "snapshot"})
    assert dr.state == DagRunState.FAILED
    reports = list((airflow_env / "agency" / "SCH" / "reports").glob("refused-SCH-*.json"))
    assert len(reports) == 1
    assert "bad.csv" in reports[0].read_text()
    # nothing was split, nothing landed, and the error names the report for the data officer
    assert not (airflow_env / "landing").exists() or not any(
        (airflow_env / "landing").rglob("manifest.json*")
    )
    captured = capfd.readouterr()
    logs = caplog.text + captured.out + captured.err
    assert "extract refused" in logs and reports[0].name in logs
