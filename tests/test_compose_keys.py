"""The hub's keys as docker-compose.yml creates and mounts them, with the real CLIs and code.

hub-keygen's own script (from the compose file) runs in a folder laid out as its container's
file system; what it leaves in each named volume is then mounted, exactly as the compose file
says, into the hub worker, the governance API, a bridge and a reid service. The hub worker must
open a batch the bridge sealed to the record the agency imported (custody), sign an audit
checkpoint and read the IG lead's trusted key; the API must load both keys its config names;
and no other container's file system may hold a byte of the sealing private key.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_access import environment, mounts

from governance.audit import load_hub_key
from governance.audit_keys import AuditKeyError, load_audit_key
from governance.hub_stage import hub_keys_dir, trusted_audit_keys
from ig_bridge.cli import main as bridge_cli
from ig_bridge.sealing import bridge_hub_key, load_hub_sealing_keys, seal_stream, unseal_stream
from linkage.orchestration import hub_paths

REPO = Path(__file__).resolve().parents[1]
SERVICES: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
PREFIX = "/opt/joinedup"


def _keygen_script(root: Path) -> str:
    """hub-keygen's command as its shell runs it ($$ is Compose's escape for $), with the
    container's paths under `root` and this interpreter for `python`."""
    svc = SERVICES["hub-keygen"]
    assert svc["entrypoint"] == ["/bin/bash", "-c"] and svc.get("network_mode") == "none"
    script = svc["command"][0].replace("$$", "$")
    return script.replace(PREFIX, str(root) + PREFIX).replace("python -m", f"{sys.executable} -m")


def _run_keygen(root: Path) -> subprocess.CompletedProcess[str]:
    for m in mounts(SERVICES["hub-keygen"]):
        (root / m.target.removeprefix("/")).mkdir(parents=True, exist_ok=True)
    (root / "opt/joinedup/hub").mkdir(parents=True, exist_ok=True)  # the image's own folder
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run(
        ["bash", "-c", _keygen_script(root)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    return res


def _volumes_of(service: str, root: Path, store: Path) -> None:
    """Copy what the service left at each of its mount targets into store/<volume>."""
    for m in mounts(SERVICES[service]):
        if not m.bind:
            shutil.copytree(root / m.target.removeprefix("/"), store / m.source, dirs_exist_ok=True)


def _container(service: str, store: Path, root: Path) -> dict[str, Path]:
    """The service's file system: each volume it mounts at its target (shallow first)."""
    out = {}
    for m in sorted(mounts(SERVICES[service]), key=lambda m: m.target.count("/")):
        if m.bind:
            continue
        target = root / m.target.removeprefix("/")
        src = store / m.source
        if src.is_dir():
            shutil.copytree(src, target, dirs_exist_ok=True)
        else:
            target.mkdir(parents=True, exist_ok=True)
        out[m.source] = target
    return out


def _use_env(monkeypatch: pytest.MonkeyPatch, service: str, root: Path) -> None:
    for k in (
        "JOINEDUP_RUN_DIR",
        "JOINEDUP_HUB_DIR",
        "JOINEDUP_HUB_KEYS_DIR",
        "JOINEDUP_AUDIT_TRUSTED_KEYS",
        "JOINEDUP_LANDING_DIR",
    ):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("JOINEDUP_RUN_DIR", str(root / "nowhere"))  # no demo-layout fallback
    for k, v in environment(SERVICES[service]).items():
        if v.startswith(PREFIX):
            monkeypatch.setenv(k, str(root) + v)


def _tree(d: Path) -> dict[str, str]:
    return {
        str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(d.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def hub_volumes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The named volumes after `docker compose --profile setup run --rm hub-keygen`."""
    base = tmp_path_factory.mktemp("compose_keys")
    _run_keygen(base / "keygen")
    store = base / "volumes"
    _volumes_of("hub-keygen", base / "keygen", store)
    return store


def test_keygen_creates_each_key_once_in_its_own_volume(hub_volumes: Path, tmp_path: Path) -> None:
    assert sorted(os.listdir(hub_volumes / "hub_sealing_keys")) == ["sealing_key.v1.json"]
    assert sorted(os.listdir(hub_volumes / "hub_audit_keys")) == ["audit_signing.v1.json"]
    assert sorted(os.listdir(hub_volumes / "hub_request_key")) == [
        "hub_request.pem",
        "hub_request.pub",
    ]
    # only public records go out: the sealing record, the audit record and the request key
    assert sorted(os.listdir(hub_volumes / "hub_public")) == [
        "hub-audit-ed25519-v1.json",
        "hub_request.pub",
        "hub_sealing_key.v1.json",
    ]
    # the one-off steps in the compose header and docs/contracts.md name these very files
    header = (REPO / "docker-compose.yml").read_text().split("\nx-hub-env")[0]
    contracts = (REPO / "docs" / "contracts.md").read_text()
    for f in ("hub-audit-ed25519-v1.json", "hub_sealing_key.v1.json", "hub_request.pub"):
        assert f"/hub_public/{f}" in header, f
    for f in ("hub-audit-ed25519-v<N>.json", "hub_sealing_key.v<N>.json", "hub_request.pub"):
        assert f in contracts, f
    for vol in ("hub_sealing_keys", "hub_audit_keys", "hub_request_key"):
        for f in (hub_volumes / vol).iterdir():
            if f.suffix != ".pub":
                assert f.stat().st_mode & 0o077 == 0, f  # 0600
    # a second run (an operator re-running setup) rotates and overwrites nothing
    root = tmp_path / "again"
    _container("hub-keygen", hub_volumes, root)
    before = {
        v: _tree(hub_volumes / v) for v in ("hub_sealing_keys", "hub_audit_keys", "hub_request_key")
    }
    _run_keygen(root)
    again = tmp_path / "store"
    _volumes_of("hub-keygen", root, again)
    assert {v: _tree(again / v) for v in before} == before


def test_sealed_batch_opens_only_on_the_hub_worker(
    hub_volumes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "volumes"
    shutil.copytree(hub_volumes, store)
    # one-off agency step: import the hub's public sealing record into keys_csc (writable
    # there only), with the real CLI, reading hub_public as mounted read-only at /hub_public
    onboard = tmp_path / "csc_onboarding"
    (onboard / "agency").mkdir(parents=True)
    shutil.copytree(store / "hub_public", onboard / "hub_public")
    assert (
        bridge_cli(
            [
                "keys",
                "import-hub-key",
                "--agency-dir",
                str(onboard / "agency"),
                "--agency",
                "CSC",
                "--file",
                str(onboard / "hub_public" / "hub_sealing_key.v1.json"),
            ]
        )
        == 0
    )
    shutil.copytree(onboard / "agency" / "keys", store / "keys_csc")

    # bridge-csc seals with what its keys volume holds
    bridge = _container("bridge-csc", store, tmp_path / "bridge-csc")
    hub_pub = bridge_hub_key(bridge["keys_csc"])
    plain = os.urandom(3000)
    sealed = io.BytesIO()
    seal_stream(
        io.BytesIO(plain),
        sealed,
        hub_pub,
        agency="CSC",
        batch_id="CSC-1",
        file_name="identifiers.parquet",
    )

    # the hub worker, with its own environment, opens it with the key where custody loads it
    worker_root = tmp_path / "worker"
    _container("airflow-worker-hub", store, worker_root)
    _use_env(monkeypatch, "airflow-worker-hub", worker_root)
    keys = load_hub_sealing_keys(hub_paths().keys)
    assert list(keys) == [hub_pub.key_id]
    out = io.BytesIO()
    unseal_stream(
        io.BytesIO(sealed.getvalue()),
        out,
        keys,
        agency="CSC",
        batch_id="CSC-1",
        file_name="identifiers.parquet",
    )
    assert out.getvalue() == plain

    # the attack: with any other container's file system, find the sealing private key
    secret = json.loads((store / "hub_sealing_keys" / "sealing_key.v1.json").read_text())
    needles = [secret["secret"].encode(), base64.b64decode(secret["secret"])]
    for name in sorted(SERVICES):
        if name in ("airflow-worker-hub", "hub-keygen"):
            continue
        root = tmp_path / "c" / name
        _container(name, store, root)
        files = [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
        for p in files:
            data = p.read_bytes()
            assert not any(n in data for n in needles), f"{name}: sealing key in {p}"
        if name == "governance-api":  # it has keys, just not that one
            assert files and load_hub_sealing_keys(root / "opt/joinedup/hub/keys") == {}


def test_report_stage_and_api_load_the_keys_compose_gives_them(
    hub_volumes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "volumes"
    shutil.copytree(hub_volumes, store)
    worker_root = tmp_path / "worker"
    _container("airflow-worker-hub", store, worker_root)
    _use_env(monkeypatch, "airflow-worker-hub", worker_root)
    audit_key = load_audit_key(hub_keys_dir(hub_paths().hub))
    # before the IG lead's one-off step the trusted folder is empty: the report stage refuses
    # rather than report an unverified chain
    with pytest.raises(AuditKeyError, match="no hub audit public key record"):
        trusted_audit_keys(worker_root / "nowhere")
    # the IG lead's step: the public record from hub_public into ig_lead_trusted_keys
    (store / "ig_lead_trusted_keys").mkdir()
    shutil.copy(
        store / "hub_public" / "hub-audit-ed25519-v1.json",
        store / "ig_lead_trusted_keys" / "hub-audit-ed25519-v1.json",
    )
    worker_root = tmp_path / "worker2"
    _container("airflow-worker-hub", store, worker_root)
    _use_env(monkeypatch, "airflow-worker-hub", worker_root)
    trusted = trusted_audit_keys(worker_root / "nowhere")
    assert trusted is not None and list(trusted) == [audit_key.key_id]
    msg = b"checkpoint"
    trusted[audit_key.key_id].verify(audit_key.sign(msg), msg)  # raises if not the same key

    # the governance API: both paths in docker/hub_api.yaml resolve inside its mounts
    cfg = yaml.safe_load((REPO / "docker" / "hub_api.yaml").read_text())
    api_root = tmp_path / "api"
    _container("governance-api", store, api_root)
    api_audit = load_audit_key(str(api_root) + cfg["audit_signing_key"])
    assert api_audit.key_id == audit_key.key_id
    load_hub_key(Path(str(api_root) + cfg["hub_signing_key"]))
    # and the reid service checks requests with the public key the agency put in its volume
    pub = (store / "hub_public" / "hub_request.pub").read_bytes()
    assert pub == (store / "hub_request_key" / "hub_request.pub").read_bytes()
