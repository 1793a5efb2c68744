"""The compose file's mounts and environment, run with the real bridge and hub code.

A bridge container sees its own volumes only: its working folder, its keys (read-only) and its
drop areas at landing/<CODE> and rekey_landing/<CODE>; everything else in its file system is
the container's own layer, which nobody else sees and which is lost on restart. This test lays
out bridge-csc's file system as docker-compose.yml mounts it (volumes at their targets under a
folder standing for the container's root), sets the service's own environment, and runs the real
bridge tasks (validate -> split/sign -> land, and a re-keying batch). Everything the bridge
writes must land inside a volume it mounts read-write, never in its keys; and the hub worker,
with its own environment and mounts, must find both batches where the bridge put them.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml
from compose_access import environment, mounts

from ig_bridge.keys import KeyStore, encrypt_record_refs
from ig_bridge.rotation import build_rekey_batch, start_ref_key_rotation
from linkage.orchestration import (
    agency_dag_specs,
    hub_paths,
    land_task,
    pending_batch_dirs,
    provision,
    split_sign_task,
    validate_task,
)
from linkage.rekey import rekey_landing
from synthetic_data.generate import generate_population

REPO = Path(__file__).resolve().parents[1]
SERVICES = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
PREFIX = "/opt/joinedup"


def _files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _use_env(monkeypatch: pytest.MonkeyPatch, service: str, root: Path) -> None:
    for k in (
        "JOINEDUP_RUN_DIR",
        "JOINEDUP_LANDING_DIR",
        "JOINEDUP_AGENCY_DIR",
        "JOINEDUP_HUB_DIR",
    ):
        monkeypatch.delenv(k, raising=False)
    # a run folder that does not exist: nothing may fall back to the demo layout
    monkeypatch.setenv("JOINEDUP_RUN_DIR", str(root / "nowhere"))
    for k, v in environment(SERVICES[service]).items():
        if v.startswith(PREFIX):
            monkeypatch.setenv(k, str(root) + v)


def test_bridge_writes_only_into_its_own_volumes_and_the_hub_finds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = next(s for s in agency_dag_specs() if s.code == "CSC")
    run = tmp_path / "provisioned"
    generate_population(run / "population", seed=11, people=150)
    provision(run, ["CSC"])
    start_ref_key_rotation(run / "agency" / "CSC", "CSC")  # an operator step, keys writable
    v1 = KeyStore(run / "agency" / "CSC" / "keys", "CSC").ref_key(1)

    # bridge-csc's file system: every volume at its mount target, nothing else
    root = tmp_path / "container"
    rw: list[Path] = []
    keys_target = None
    for m in mounts(SERVICES["bridge-csc"]):
        target = root / m.target.removeprefix("/")
        target.mkdir(parents=True, exist_ok=True)
        if m.source == "keys_csc":
            assert m.read_only
            keys_target = target
            shutil.copytree(run / "agency" / "CSC" / "keys", target, dirs_exist_ok=True)
        else:
            assert not m.read_only
            rw.append(target)
    assert keys_target is not None and len(rw) == 3
    extract = next((run / "population" / "extracts" / "CSC").glob("*.csv"))
    inbox = root / "opt/joinedup/agency/inbox"
    inbox.mkdir()
    shutil.copy(extract, inbox / "current.csv")  # where reid-csc reads the extract too
    before = _files(root)

    _use_env(monkeypatch, "bridge-csc", root)
    checked = validate_task("CSC", spec.mapping_path, None)
    split = split_sign_task("CSC", spec.mapping_path, checked["extract"], "snapshot")
    landed = land_task(split)
    refs = encrypt_record_refs(v1, [f"local-{i}" for i in range(5)])
    agency = root / "opt/joinedup/agency"
    rekey = build_rekey_batch(agency, "CSC", root / "opt/joinedup/rekey_landing", refs)

    after = _files(root)
    written = {p for p in after if before.get(p) != after[p]}
    assert written, "the bridge wrote nothing"
    outside = sorted(p for p in written if not any((root / p).is_relative_to(t) for t in rw))
    assert outside == []  # nothing in the container's own layer or in another agency's area
    assert not any((root / p).is_relative_to(keys_target) for p in written)  # keys read-only
    assert sorted(p.name for p in (root / "opt/joinedup/landing").iterdir()) == ["CSC"]
    assert sorted(p.name for p in (root / "opt/joinedup/rekey_landing").iterdir()) == ["CSC"]
    assert Path(landed["landed"]).parent == root / "opt/joinedup/landing/CSC"
    assert rekey.path.parent == root / "opt/joinedup/rekey_landing/CSC"

    # the hub worker: its own environment; landing_csc / rekey_landing_csc at the same targets
    hub_targets = {m.source: m.target for m in mounts(SERVICES["airflow-worker-hub"])}
    bridge_targets = {m.source: m.target for m in mounts(SERVICES["bridge-csc"])}
    for vol in ("landing_csc", "rekey_landing_csc"):
        assert hub_targets[vol] == bridge_targets[vol]
    # hub_sealing_keys at its mount in the hub worker (hub-keygen's volume): custody opens the
    # sealed batch with it, and finds it where the code looks (<JOINEDUP_HUB_DIR>/keys)
    sealing = root / hub_targets["hub_sealing_keys"].removeprefix("/")
    sealing.mkdir(parents=True, mode=0o700)
    for f in (run / "hub" / "keys").glob("sealing_key.v*.json"):
        shutil.copy2(f, sealing / f.name)
    _use_env(monkeypatch, "airflow-worker-hub", root)
    taken = pending_batch_dirs()
    paths = hub_paths()
    # taken into hub storage (a copy across volumes) and opened there; gone from the drop area
    name = Path(landed["landed"]).name
    assert taken == [str(paths.incoming / "CSC" / name)]
    assert (Path(taken[0]) / "identifiers.parquet").read_bytes()[:4] == b"PAR1"
    assert not Path(landed["landed"]).exists()
    assert [p.name for p in (rekey_landing(paths) / "CSC").iterdir()] == [rekey.batch_id]
