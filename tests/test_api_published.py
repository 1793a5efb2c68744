"""The governance API while a hub stage runs: configured with the hub's live warehouse (as
docker/hub_api.yaml and `make demo`'s config name it), it reads the latest copy the hub
published from it (linkage.publish.reader), so requests succeed while the hub's real
`households` stage holds the live file in another process; after the hub publishes again it
reads the new copy. Before anything is published it reads the live file, as before.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hub_stage_running import hub_stage_running
from test_api import World, build_world

from governance.audit import make_engine
from governance.audit_keys import create_audit_key
from governance.testing import partnership_set_up
from linkage.config import HubPaths
from linkage.publish import current, publish, reader

TOKEN = "published-api-token-for-tests-only-0123"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory)


def test_the_api_serves_from_the_published_copy_while_a_hub_stage_runs(
    world: World, tmp_path: Path
) -> None:
    from governance.api import app_from_config

    paths = HubPaths.for_run(tmp_path)
    paths.hub.mkdir(parents=True)
    shutil.copy2(world.warehouse, paths.warehouse)  # a private hub: the stage writes it
    assert reader(paths.warehouse)() == paths.warehouse  # nothing published: the live file
    publish(paths, "r1")
    assert reader(paths.warehouse)() == current(paths) != paths.warehouse
    other = tmp_path / "elsewhere.duckdb"  # not a hub's warehouse: read as named
    assert reader(other)() == other

    (tmp_path / "alloc.csv").write_text(
        f"user_id,kind,subject_id,start,end\nsw9,household,{world.household},2026-01-01,\n"
    )
    create_audit_key(tmp_path / "keys")
    cfg = tmp_path / "hub_api.yaml"
    cfg.write_text(
        f"warehouse: {paths.warehouse}\n"
        f"governance_db: sqlite:///{tmp_path / 'gov.db'}\n"
        f"relationships_csv: {tmp_path / 'alloc.csv'}\n"
        f"audit_signing_key: {tmp_path / 'keys'}\n"
        "tokens:\n"
        f"  - {{token_sha256: {hashlib.sha256(TOKEN.encode()).hexdigest()}, user_id: sw9, "
        "role: practitioner, agency: CSC}\n"
    )
    client = TestClient(app_from_config(cfg))
    partnership_set_up(make_engine(f"sqlite:///{tmp_path / 'gov.db'}"))
    url = f"/households/{world.household}/involvement"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get(url, headers=auth).status_code == 200

    during = served = 0
    with hub_stage_running(tmp_path, paths.warehouse) as held:
        deadline = time.monotonic() + 240
        while during < 5 and time.monotonic() < deadline:
            before = held()
            r = client.get(url, headers=auth)
            assert r.status_code == 200, r.text[:300]
            assert r.json()["agencies"]
            during += before and held()
            served += 1
    assert during >= 5, f"only {during} of {served} requests overlapped the stage"

    before = current(paths)
    publish(paths, "after_stage")
    assert reader(paths.warehouse)() == current(paths) != before
    assert client.get(url, headers=auth).status_code == 200
