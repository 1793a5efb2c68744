"""Shared test fixtures."""

# --- helper-7 (Airflow orchestration): one small synthetic run shared by the DAG tests --------
import shutil as _shutil  # noqa: E402
from pathlib import Path as _Path  # noqa: E402

import pytest as _pytest  # noqa: E402

ORCH_PEOPLE = 1500
ORCH_SEED = 20240601


# The longest test files (measured, issue 18), started first: with two xdist workers taking
# a file at a time in collection order (make test: --dist loadfile --no-loadscope-reorder), a
# long file picked up last would run alone at the end.
SLOW_FIRST = (  # by their time in a two-worker run of main (2026-12-04, later; loaded machine)
    "test_airflow_scheduler.py",  # 166 s
    "test_airflow_e2e.py",  # 140 s: builds the shared demo run that two more files read
    "test_spark_linkage.py",  # 147 s
    "test_onboarding_path.py",  # 92 s
    "test_hub_kill_rerun.py",  # 62 s
    "test_access.py",  # 51 s
    "test_make_airflow.py",  # 42 s
    "test_access_browser.py",  # 42 s
    "test_cli_start.py",  # 40 s
    "test_workspace_app.py",  # 38 s
    "test_compose_redis.py",  # 36 s
    "test_demo_post_hub.py",  # 35 s
    "test_attack_ingest.py",  # 34 s
    "test_linkage_person.py",  # 33 s
    "test_consent_property.py",  # 31 s
    "test_consent_records.py",  # 30 s
    "test_dags_structure.py",  # 28 s
    "test_known_to.py",  # 28 s
)


def pytest_collection_modifyitems(items: list[_pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order kept


def shared_dir(tmp_path_factory: _pytest.TempPathFactory) -> _Path:
    """The folder every worker of this test session shares: with pytest-xdist (`make test`
    runs two workers) each worker's basetemp is <session basetemp>/popen-gwN."""
    import os

    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def built_once(tmp_path_factory: _pytest.TempPathFactory, name: str, build) -> _Path:  # noqa: ANN001
    """`build(folder)` run once per test session, whichever worker asks first (the others
    wait on a file lock and reuse it): <shared>/<name>/, marked DONE when complete."""
    from filelock import FileLock

    root = shared_dir(tmp_path_factory)
    folder = root / name
    with FileLock(str(root / f"{name}.lock")):
        if not (folder / "DONE").exists():
            _shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            build(folder)
            (folder / "DONE").touch()
    return folder


@_pytest.fixture(scope="session")
def orchestrated_run(tmp_path_factory: _pytest.TempPathFactory) -> _Path:
    """A run folder (docs/contracts.md layout) with a 1,500-person population, provisioned
    partnership keys, and every agency's extract bridged and landed through the bridge DAGs'
    task functions (no scheduler). Built once per session (shared by the xdist workers):
    tests copy it with `copy_run` before changing anything."""
    return built_once(tmp_path_factory, "orchestrated", _build_orchestrated) / "run"


def _build_orchestrated(folder: _Path) -> None:
    from linkage.orchestration import (
        agency_dag_specs,
        land_task,
        provision,
        split_sign_task,
        validate_task,
    )
    from synthetic_data.generate import generate_population

    run = folder / "run"
    generate_population(run / "population", seed=ORCH_SEED, people=ORCH_PEOPLE)
    specs = agency_dag_specs()
    provision(run, [s.code for s in specs])
    for s in specs:
        checked = validate_task(s.code, s.mapping_path, None, base=run)
        split = split_sign_task(
            s.code, s.mapping_path, checked["extract"], s.extract_kind, base=run
        )
        land_task(split, base=run)


@_pytest.fixture(scope="session")
def airflow_demo(tmp_path_factory: _pytest.TempPathFactory, orchestrated_run: _Path) -> dict:
    """`make demo` as a subprocess (every bridge DAG and the hub DAG through Airflow's
    dag.test on SQLite, then post_hub: evaluation against ground truth and the plaintext
    baseline, IG report) on `orchestrated_run`'s population and keys. Run once per session and
    shared, read only: {"run": folder, "returncode", "stdout", "stderr"}; tests assert the
    return code (a failed run is not rebuilt by every test that asks)."""
    import json
    import os
    import subprocess
    import sys

    def build(folder: _Path) -> None:
        out = _copy_run(orchestrated_run, folder / "demo", landed=False)
        pop = json.loads((out / "population" / "population.json").read_text())
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "JOINEDUP"))}
        proc = subprocess.run(
            [sys.executable, "-m", "synthetic_data.demo", "--out", str(out)]
            + ["--people", str(pop["people"]), "--seed", str(pop["seed"])],
            cwd=_Path(__file__).resolve().parents[1],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        (folder / "proc.json").write_text(
            json.dumps(
                {"returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}
            )
        )

    folder = built_once(tmp_path_factory, "airflow_demo", build)
    return {"run": folder / "demo", **json.loads((folder / "proc.json").read_text())}


@_pytest.fixture(scope="session")
def copy_run():  # noqa: ANN201 - returns the copier below
    """`copy_run(src, dest, landed=True)`: a private copy of a run folder to change."""
    return _copy_run


def _copy_run(src: _Path, dest: _Path, *, landed: bool = True) -> _Path:
    """A private copy of a run folder; without `landed`, only population and keys."""
    if landed:
        _shutil.copytree(src, dest, symlinks=True)
        return dest
    # the hub's keys (audit, sealing) and the IG lead's copy of the audit public record
    for part in ("population", "partnership", "hub/public_keys", "hub/keys", "ig_lead"):
        if (src / part).exists():
            _shutil.copytree(src / part, dest / part)
    for record in (src / "hub").glob("hub_sealing_key.v*.json"):  # the hub's public key
        _shutil.copy2(record, dest / "hub" / record.name)
    for keys in (src / "agency").glob("*/keys"):
        _shutil.copytree(keys, dest / "agency" / keys.parent.name / "keys")
    return dest


# --- the evaluation harness (benchmarks/evaluate_linkage.py), loaded once by path ------------
@_pytest.fixture(scope="session")
def evaluate_linkage():
    """The benchmark script that plays all parties and scores against ground truth."""
    import importlib.util

    path = _Path(__file__).resolve().parents[1] / "benchmarks" / "evaluate_linkage.py"
    spec = importlib.util.spec_from_file_location("evaluate_linkage", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --- one messy partnership (bridges and hub) shared by the recall and household-guard tests ---
MESSY_SEED, MESSY_PEOPLE, MESSY_RUN = 5, 1500, "messy-1"


@_pytest.fixture(scope="session")
def messy_run_dir(tmp_path_factory: _pytest.TempPathFactory, evaluate_linkage) -> _Path:  # noqa: ANN001
    """A run folder of a 1,500-person messy-profile partnership (keys, every agency's bridge)
    after the hub's stages (run MESSY_RUN). Built once per session, read only: copy it
    (`copy_run`) to change anything."""

    def build(folder: _Path) -> None:
        run = folder / "run"
        evaluate_linkage.play_partnership(
            run, people=MESSY_PEOPLE, seed=MESSY_SEED, profile="messy"
        )
        evaluate_linkage.run_hub(run, MESSY_RUN)

    return built_once(tmp_path_factory, "messy", build) / "run"


# --- the hub's audit key, its public record with the IG lead (the audit-log tests) ------------
@_pytest.fixture
def hub_key(tmp_path: _Path):  # noqa: ANN201 - governance.audit_keys.HubAuditKey
    """The hub's audit key in its keys folder; its public record handed to the IG lead."""
    from governance.audit_keys import create_audit_key, export_public_record

    key = create_audit_key(tmp_path / "hub" / "keys")
    export_public_record(key, tmp_path / "ig_lead" / "trusted_keys")
    return key


@_pytest.fixture
def trusted(tmp_path: _Path, hub_key):  # noqa: ANN001, ANN201 - governance.audit_keys types
    """What the IG lead verifies with: the trusted public record, never the hub's own copy."""
    from governance.audit_keys import load_trusted_keys

    return load_trusted_keys(tmp_path / "ig_lead" / "trusted_keys")


# --- the audit store on both backends (SQLite file; PostgreSQL schema, skipped if absent) -----
@_pytest.fixture(params=["sqlite", _pytest.param("postgres", marks=_pytest.mark.postgres)])
def backend(request: _pytest.FixtureRequest, tmp_path: _Path):  # noqa: ANN201 - (url, schema)
    """(url, schema) of a fresh governance store; a test module names its PostgreSQL schemas
    with `PG_SCHEMA_PREFIX` so concurrent runs and leftovers are told apart."""
    from governance.testing import postgres_url, temp_schema

    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/hub/governance.db", None
        return
    url, why = postgres_url()
    if url is None:
        _pytest.skip(why)
    with temp_schema(url, prefix=getattr(request.module, "PG_SCHEMA_PREFIX", "gov_test")) as schema:
        yield url, schema
