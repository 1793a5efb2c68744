"""`make airflow` for real: the Makefile target's own command, run with a PATH that lacks the
venv (a fresh clone's shell), starts `airflow standalone` on a free loopback port; the REST API
lists exactly the project's DAGs (no examples) and the process tree stays small."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from process_tree import stop_tree

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent.parent
BOUND_S = 300
PROJECT_DAGS = {"hub_linkage"} | {
    f"bridge_{p.stem}" for p in (REPO / "schemas" / "agencies").glob("*.yaml")
}

psutil = pytest.importorskip("psutil")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bare_env(**extra: str) -> dict[str, str]:
    """A fresh shell: no venv on PATH, no Airflow or joinedup settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "JOINEDUP", "VIRTUAL_ENV"))
    }
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    env.update(extra)
    return env


def _make_command(var: Path) -> str:
    res = subprocess.run(
        ["make", "-n", "-s", "airflow", f"VENV={VENV}", f"VAR={var}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    line = res.stdout.strip().splitlines()[-1]
    assert "scripts/airflow_env.sh airflow standalone" in line, res.stdout
    return line


def _get(url: str, token: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(url, headers=headers)  # noqa: S310 - loopback only
    with urllib.request.urlopen(req, timeout=20) as r:  # noqa: S310 - loopback only
        return json.loads(r.read())


def _token(port: int, home: Path) -> str:
    pw = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/auth/token",
        method="POST",
        data=json.dumps({"username": "admin", "password": pw["admin"]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=20) as r:  # noqa: S310 - loopback only
        return json.loads(r.read())["access_token"]


def test_env_script_says_what_to_do_without_a_venv(tmp_path: Path) -> None:
    res = subprocess.run(
        [str(REPO / "scripts" / "airflow_env.sh"), "airflow", "version"],
        env=_bare_env(JOINEDUP_VENV=str(tmp_path / "no-venv")),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 2 and "make demo" in res.stderr


def test_make_airflow_starts_the_ui_with_only_our_dags_and_few_workers(tmp_path: Path) -> None:
    var = tmp_path / "var"
    cmd = _make_command(var)
    port = _free_port()
    env = _bare_env(
        JOINEDUP_AIRFLOW_PORT=str(port),
        # other Airflows on this machine may hold the default log-server ports
        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(_free_port()),
        AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(_free_port()),
    )
    # without the script, this shell has no airflow at all (the README command's failure)
    assert (
        subprocess.run(
            ["bash", "-c", "command -v airflow"], env=env, capture_output=True
        ).returncode
        != 0
    )
    home = var / "demo" / "airflow"
    log = (tmp_path / "standalone.log").open("w")
    proc = subprocess.Popen(
        ["bash", "-c", cmd],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + BOUND_S
    tree: list = []
    try:
        dags: dict = {}
        token = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "standalone.log").read_text()[-3000:]
            with contextlib.suppress(OSError, KeyError, ValueError):
                token = token or _token(port, home)
                dags = _get(f"http://127.0.0.1:{port}/api/v2/dags?limit=200", token)
                if {d["dag_id"] for d in dags["dags"]} >= PROJECT_DAGS:
                    break
            time.sleep(3)
        ids = {d["dag_id"] for d in dags.get("dags", [])}
        assert ids == PROJECT_DAGS and dags["total_entries"] == len(PROJECT_DAGS), (
            ids,
            (tmp_path / "standalone.log").read_text()[-3000:],
        )
        # the environment the target gave Airflow
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        rss = sum(p.memory_info().rss for p in tree if p.is_running())
        envs = tree[0].environ()
        assert envs["AIRFLOW_HOME"] == str(home) and envs["JOINEDUP_RUN_DIR"] == str(var / "demo")
        assert envs["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
        assert envs["AIRFLOW__CORE__DAGS_FOLDER"] == str(REPO / "dags")
        assert envs["PATH"].split(":")[0] == str(VENV / "bin")
        # standalone = scheduler, dag-processor, api-server (1 worker), triggerer, and their
        # helpers; Airflow's defaults (parallelism 32, 4 api workers) start several times more
        print(f"make airflow: {len(tree)} processes, {rss / 1e6:.0f} MB resident")
        assert len(tree) <= 16, [p.cmdline()[:3] for p in tree]
        assert rss < 3e9
    finally:
        stop_tree(proc.pid, timeout=60)
        proc.wait(timeout=10)
        log.close()
    # nothing left running from this session
    time.sleep(2)
    left = [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(home) in " ".join(p.info["cmdline"] or [])
    ]
    assert not left
    # nor anything the standalone started (its components run in sessions of their own)
    assert not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
