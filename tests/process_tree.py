"""Stopping a test's server processes and everything they started: Airflow's scheduler and
`airflow standalone` start children of their own (executor workers, log servers, the
components), some outside the process group, which outlive a killpg of the parent."""

from __future__ import annotations

import contextlib
import os
import signal

import psutil


def stop_tree(*pids: int, timeout: float = 30.0) -> None:
    """SIGTERM to each pid's process group and to every descendant found now (all at once),
    then SIGKILL to whatever is still running after `timeout` seconds."""
    procs: list[psutil.Process] = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(pid)
            procs += [root, *root.children(recursive=True)]
    _signal_groups(pids, signal.SIGTERM)
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _gone, alive = psutil.wait_procs(procs, timeout=timeout)
    _signal_groups(pids, signal.SIGKILL)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=10)


def _signal_groups(pids: tuple[int, ...], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
