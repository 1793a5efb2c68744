"""Pages served while a real hub stage runs: the hub's `households` stage (the function the
hub DAG's task calls) runs in another process on the live warehouse, over and over, and every
page a worker opens meanwhile succeeds, read from the published copy (write-audit-publish,
linkage.publish). The requests counted are those during which the stage held the warehouse
(its lock seen in /proc/locks before and after). Then the hub publishes and pages follow.
"""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import pytest
from hub_stage_running import hub_stage_running
from test_api import World, build_world
from test_workspace_app import client, sign_in
from workspace_world import MASH, S47, workspace

from linkage.publish import current, publish


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory)


def test_every_page_succeeds_while_a_hub_stage_holds_the_warehouse(
    world: World, tmp_path: Path
) -> None:
    with workspace(world, tmp_path) as s:
        c = sign_in(client(s))
        hh, live = s.world.household, s.ws.paths.warehouse
        pages = [
            (f"/households/{hh}?protocol={S47}", f"Member {s.world.members[0]}"),
            (f"/households/{hh}/summary?protocol={S47}", "Multi-agency chronology"),
            (f"/households/{hh}/involvement", "Lead practitioner contact"),
            (f"/people/{s.person}/known-to?protocol={MASH}", "ws-known-to"),
            ("/caseload", "My caseload"),
        ]
        during, served = 0, 0
        with hub_stage_running(s.tmp, live) as held:
            deadline = time.monotonic() + 240
            while during < len(pages) and time.monotonic() < deadline:
                path, expect = pages[served % len(pages)]
                before = held()
                r = c.get(path)
                assert r.status_code == 200 and expect in r.text, (path, r.status_code)
                during += before and held()
                served += 1
        assert during >= len(pages), f"only {during} of {served} pages overlapped the stage"

        con = duckdb.connect(str(live), read_only=True)  # the stage really wrote the live file
        runs = con.execute(
            "SELECT count(*) FROM pipeline_stage WHERE stage = 'households' "
            "AND run_id LIKE 'concurrent_%'"
        ).fetchone()[0]
        con.close()
        assert runs >= 1
        # the hub then publishes (as its report stage does): pages move to the new copy
        before = current(s.ws.paths)
        publish(s.ws.paths, "concurrent")
        assert current(s.ws.paths) != before
        r = c.get(pages[0][0])
        assert r.status_code == 200 and pages[0][1] in r.text
