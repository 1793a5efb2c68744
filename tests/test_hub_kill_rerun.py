"""Kill-and-rerun of the hub stages against an uninterrupted run on the same landed batches
(split from test_airflow_e2e.py so the two run on different xdist workers)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from test_airflow_e2e import REQUIRED

REPO = Path(__file__).resolve().parents[1]
# Tables whose contents define the linkage result; wall-clock columns are left out.
COMPARED = (
    *REQUIRED,
    "identifiers",
    "related",
    "payload",
    "person_lineage",
    "family_network",
    "household_lineage",
    "linkage_model",
)
VOLATILE = {"ingested_at", "started_at", "finished_at", "created_at", "timings_json", "retired_at"}


def _stable(column: str, value: object) -> object:
    """The model document carries its wall-clock time and Splink's random linker uid."""
    if column == "model_json" and isinstance(value, str):
        doc = json.loads(value)
        doc.pop("created_at", None)
        doc.get("splink_settings", {}).pop("linker_uid", None)
        return json.dumps(doc, sort_keys=True)
    return value


def table_checksums(warehouse: Path) -> dict[str, tuple[int, str]]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        out = {}
        for t in COMPARED:
            cols = [
                c
                for (c,) in con.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                    "ORDER BY ordinal_position",
                    [t],
                ).fetchall()
                if c not in VOLATILE
            ]
            rows = [
                tuple(_stable(c, v) for c, v in zip(cols, r, strict=True))
                for r in con.execute(f'SELECT {", ".join(cols)} FROM "{t}"').fetchall()
            ]
            digest = hashlib.sha256("\n".join(sorted(repr(r) for r in rows)).encode())
            out[t] = (len(rows), digest.hexdigest())
        return out
    finally:
        con.close()


HUB_SCRIPT = """
import os, signal, sys
from pathlib import Path
from linkage.orchestration import hub_paths, pending_batch_dirs, ingest_one, run_stage
import linkage.person_run as pr  # the link stage's writers
import linkage.households as hh

base, run_id, kill_in = Path(sys.argv[1]), sys.argv[2], sys.argv[3]

def killer(fn):
    def wrapped(*a, **k):
        result = fn(*a, **k)          # part of the stage's writes are done ...
        os.kill(os.getpid(), signal.SIGKILL)   # ... and the process dies mid-transaction
        return result
    return wrapped

if kill_in == "link":
    pr._write_outputs = killer(pr._write_outputs)
elif kill_in == "households":
    hh.build_households = killer(hh.build_households)
    import linkage.pipeline  # noqa: F401  (stage_households imports it at call time)
for b in pending_batch_dirs(base):
    ingest_one(b, base)
for stage in ("link_persons", "households"):
    run_stage(stage, run_id, base)
print("HUB DONE")
"""


def run_hub(base: Path, run_id: str, kill_in: str = "none") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOINEDUP")}
    return subprocess.run(
        [sys.executable, "-c", HUB_SCRIPT, str(base), run_id, kill_in],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


RUN_ID = "scheduled__2025-01-01T00:00:00+00:00"


@pytest.fixture(scope="module")
def uninterrupted(
    orchestrated_run: Path, tmp_path_factory: pytest.TempPathFactory, copy_run
) -> dict[str, tuple[int, str]]:
    """The reference: one uninterrupted hub run on the landed batches, shared by every kill
    point (the same input and run id give the same warehouse; built once, not per kill)."""
    clean = copy_run(orchestrated_run, tmp_path_factory.mktemp("clean") / "run")
    done = run_hub(clean, RUN_ID)
    assert done.returncode == 0 and "HUB DONE" in done.stdout, done.stderr[-3000:]
    want = table_checksums(clean / "hub" / "warehouse.duckdb")
    assert want["record_person"][0] > 0 and want["household_member"][0] > 0
    return want


@pytest.mark.parametrize("kill_in", ["link", "households"])
def test_killed_hub_run_reruns_to_the_same_warehouse(
    orchestrated_run: Path, tmp_path: Path, copy_run, kill_in: str, uninterrupted
) -> None:  # noqa: ANN001
    killed = copy_run(orchestrated_run, tmp_path / "killed")
    first = run_hub(killed, RUN_ID, kill_in)
    assert first.returncode == -signal.SIGKILL, (first.returncode, first.stderr[-2000:])
    assert "HUB DONE" not in first.stdout
    second = run_hub(killed, RUN_ID)
    assert second.returncode == 0 and "HUB DONE" in second.stdout, second.stderr[-3000:]
    assert table_checksums(killed / "hub" / "warehouse.duckdb") == uninterrupted
