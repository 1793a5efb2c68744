"""docker-compose.yml (no Docker engine here): parse it and check the production properties,
above all that no hub service can read an agency's keys."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from linkage.orchestration import agency_dag_specs

REPO = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
CODES = [s.code.lower() for s in agency_dag_specs()]
HUB = ["airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
       "airflow-triggerer", "airflow-worker-hub"]


def volume_names(service: dict) -> list[str]:
    return [v.split(":")[0] for v in service.get("volumes", [])]


def test_airflow_services_on_postgres_and_pinned_image() -> None:
    assert set(HUB) <= set(SERVICES)
    assert SERVICES["postgres"]["image"].startswith("postgres:")
    for name in HUB:
        env = SERVICES[name]["environment"]
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql"), name
        assert SERVICES[name]["build"]["dockerfile"] == "docker/Dockerfile.hub"
    commands = {SERVICES[n]["command"].split()[0] for n in HUB}
    assert {"api-server", "scheduler", "dag-processor", "triggerer", "celery"} <= commands
    init = SERVICES["airflow-init"]["environment"]
    assert init["_AIRFLOW_DB_MIGRATE"] == "true" and init["_AIRFLOW_WWW_USER_CREATE"] == "true"
    for df in ("Dockerfile.hub", "Dockerfile.bridge"):
        text = (REPO / "docker" / df).read_text()
        assert re.search(r"^FROM apache/airflow:3\.3\.2$", text, re.M), df
    assert '[hub]"' in (REPO / "docker" / "Dockerfile.hub").read_text()
    bridge_df = (REPO / "docker" / "Dockerfile.bridge").read_text()
    assert '[bridge]"' in bridge_df and "hub]" not in bridge_df


def test_hub_volumes_and_no_secrets_in_file() -> None:
    for name in HUB:
        vols = volume_names(SERVICES[name])
        assert {"landing", "rekey_landing", "warehouse", "hub_config"} <= set(vols), name
    text = (REPO / "docker-compose.yml").read_text()
    # secrets come from .env, required, never a literal in the repo
    for key in ("POSTGRES_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET",
                "AIRFLOW_ADMIN_PASSWORD"):
        assert f"${{{key}:?" in text, key


@pytest.mark.parametrize("code", CODES)
def test_one_bridge_per_agency_with_only_its_keys(code: str) -> None:
    svc = SERVICES[f"bridge-{code}"]
    assert svc["build"]["dockerfile"] == "docker/Dockerfile.bridge"
    assert svc["command"].split()[:4] == ["celery", "worker", "--queues", f"bridge_{code}"]
    vols = volume_names(svc)
    assert [v for v in vols if v.startswith("keys_")] == [f"keys_{code}"]
    assert [v for v in vols if v.startswith("agency_")] == [f"agency_{code}"]
    assert "warehouse" not in vols and "hub_config" not in vols
    assert {"landing", "rekey_landing"} <= set(vols)  # extracts and re-keying batches


def test_no_hub_service_mounts_any_agency_volume() -> None:
    bridges = {f"bridge-{c}" for c in CODES}
    for name, svc in SERVICES.items():
        if name in bridges:
            continue
        bad = [v for v in volume_names(svc) if v.startswith(("keys_", "agency_"))]
        assert bad == [], (name, bad)
        assert "JOINEDUP_AGENCY_DIR" not in (svc.get("environment") or {}), name
    declared = set(COMPOSE["volumes"])
    assert {f"keys_{c}" for c in CODES} <= declared
