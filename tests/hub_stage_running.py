"""A real hub stage running in another process, for tests of pages served meanwhile.

`hub_stage_running(run)` starts a process that runs the hub's `households` stage
(linkage.orchestration.run_stage, what the hub DAG's task and `joinedup-hub households` call)
on the run's live warehouse, over and over under fresh run ids until told to stop, and returns
once the stage holds the warehouse. `held()` says whether a process holds a lock on the
warehouse file now, read from /proc/locks (DuckDB's writer takes a POSIX lock on the file), so
looking never takes a lock the stage could trip over.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

STAGE_LOOP = """
import select, sys
from pathlib import Path
from linkage.orchestration import run_stage
n = 0
while True:
    n += 1
    run_stage("households", f"concurrent_{n}", Path(sys.argv[1]))
    print(f"stage done {n}", flush=True)
    if select.select([sys.stdin], [], [], 0)[0]:
        break
"""


def lock_held(path: Path) -> bool:
    """Whether any process holds a POSIX lock on `path` (from /proc/locks; takes none)."""
    st = path.stat()
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields:  # a process waiting for a lock: "N: -> POSIX ..."
            continue
        if len(fields) >= 6 and fields[5] == ident:
            return True
    return False


@contextmanager
def hub_stage_running(run: Path, warehouse: Path) -> Iterator[Callable[[], bool]]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", STAGE_LOOP, str(run)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 180
        while not lock_held(warehouse):
            assert proc.poll() is None, f"the hub stage ended (exit {proc.returncode})"
            assert time.monotonic() < deadline, "the hub stage never took the warehouse"
            time.sleep(0.01)
        yield lambda: lock_held(warehouse)
    finally:
        proc.stdin.write("stop\n")
        proc.stdin.flush()
        out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "stage done 1" in out, f"hub stage failed: {out[-2000:]}"
