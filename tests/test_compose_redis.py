"""The Celery broker's access control, attacked on a real Redis with real Celery workers.

docker/redis/entrypoint.sh (what the compose `redis` service runs) writes one ACL user per
party; this test starts a real redis-server through that script, then runs real Celery workers
configured from docker-compose.yml's own environment for the bridges and the hub (broker URL,
result backend, unacked keys, remote control off, the worker flags of the bridge command), the
way Airflow's Celery executor configures them. A bridge runs its own queue; acting as one
agency against another's queue, the hub's queue, their unacked messages (each Airflow message
carries that task's Execution API token), admin commands, MONITOR or a Lua script is refused,
and the refused message is still there for its rightful worker.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from linkage.orchestration import agency_dag_specs

redis = pytest.importorskip("redis", reason="redis-py is in the dev extra")
pytest.importorskip("celery", reason="celery is in the dev extra")
if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
    pytest.skip(
        "redis-server / redis-cli not installed (Debian: redis-server)", allow_module_level=True
    )

REPO = Path(__file__).resolve().parents[1]
ENTRYPOINT = REPO / "docker" / "redis" / "entrypoint.sh"
SERVICES = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
CODES = [s.code.lower() for s in agency_dag_specs()]
TOKEN = "eyJhbGciOiJIUzUxMiJ9.task-token-of-another-party"  # what a workload message carries

# Airflow's DEFAULT_CELERY_CONFIG (providers/celery/executors/default_celery.py), fed from the
# same AIRFLOW__CELERY__* variables; execute_workload stands in for Airflow's task.
APP = """
import os, pathlib
from celery import Celery
env = os.environ
topts = {"visibility_timeout": 86400}
prefix = "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__"
topts.update({k[len(prefix):].lower(): v for k, v in env.items() if k.startswith(prefix)})
app = Celery("airflow.providers.celery.executors.celery_executor")
app.conf.update(
    accept_content=["json"], event_serializer="json", worker_prefetch_multiplier=1,
    task_acks_late=True, task_default_queue="default", task_default_exchange="default",
    task_track_started=True, broker_url=env["AIRFLOW__CELERY__BROKER_URL"],
    broker_transport_options=topts, broker_connection_retry_on_startup=True,
    result_backend=env["AIRFLOW__CELERY__RESULT_BACKEND"],
    worker_enable_remote_control=env.get(
        "AIRFLOW__CELERY__WORKER_ENABLE_REMOTE_CONTROL", "true").lower() == "true",
    worker_redirect_stdouts=False, worker_hijack_root_logger=False)

@app.task(name="execute_workload")
def execute_workload(input: str) -> None:
    out = pathlib.Path(env["T_OUT"])
    (out / (input.split("|")[0] + ".done")).write_text(input)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Deployment:
    """A running Redis started by the shipped entrypoint, with this test's passwords."""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.port = tmp, _free_port()
        self.passwords = {"REDIS_HUB_PASSWORD": secrets.token_hex(32)}
        for c in CODES:
            self.passwords[f"REDIS_BRIDGE_{c.upper()}_PASSWORD"] = secrets.token_hex(32)
        (tmp / "out").mkdir()
        (tmp / "airflow_celery_app.py").write_text(APP)
        env = {
            **os.environ,
            **self.passwords,
            "JOINEDUP_REDIS_ACL_DIR": str(tmp / "acl"),
            "JOINEDUP_BRIDGE_CODES": SERVICES["redis"]["environment"]["JOINEDUP_BRIDGE_CODES"],
        }
        self.proc = subprocess.Popen(  # our own child; stopped by its pid below
            [
                "sh",
                str(ENTRYPOINT),
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp),
            ],
            env=env,
            stdout=(tmp / "redis.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                if self.client("hub").ping():
                    break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.1)

    def client(self, user: str, password: str | None = None, db: int = 0) -> Any:
        if password is None:
            key = (
                "REDIS_HUB_PASSWORD"
                if user == "hub"
                else f"REDIS_BRIDGE_{user.removeprefix('bridge_').upper()}_PASSWORD"
            )
            password = self.passwords[key]
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            username=user,
            password=password,
            db=db,
            socket_timeout=10,
        )

    def service_env(self, service: str) -> dict[str, str]:
        """A compose service's environment with .env interpolated and the host rewired."""

        def interp(v: str) -> str:
            v = re.sub(
                r"\$\{([A-Z0-9_]+)(?::[?-][^}]*)?\}",
                lambda m: self.passwords.get(m.group(1), ""),
                v,
            )
            return v.replace("@redis:6379", f"@127.0.0.1:{self.port}")

        env = SERVICES[service]["environment"]
        return {k: interp(str(v)) for k, v in env.items()}

    def worker(self, service: str, queues: str | None = None) -> subprocess.Popen[str]:
        """A Celery worker with the compose service's env and its worker flags."""
        cmd = SERVICES[service]["command"].split()
        flags = [f for f in cmd if f in ("--without-mingle", "--without-gossip")]
        queue = queues or cmd[cmd.index("--queues") + 1]
        env = {
            **os.environ,
            **self.service_env(service),
            "T_OUT": str(self.tmp / "out"),
            "PYTHONPATH": str(self.tmp),
        }
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "airflow_celery_app",
                "worker",
                "-O",
                "fair",
                "--queues",
                queue,
                "--concurrency",
                "1",
                "--loglevel",
                "INFO",
                *flags,
            ],
            cwd=self.tmp,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def hub_send(self, queue: str, payload: str) -> str:
        """What the scheduler's Celery executor does: apply_async to the task's queue."""
        env = {
            **os.environ,
            **self.service_env("airflow-scheduler"),
            "T_OUT": str(self.tmp / "out"),
            "PYTHONPATH": str(self.tmp),
        }
        code = (
            "from airflow_celery_app import app\n"
            "import sys\n"
            "r = app.tasks['execute_workload'].apply_async(args=(sys.argv[2],), "
            "queue=sys.argv[1])\nprint(r.id)"
        )
        res = subprocess.run(
            [sys.executable, "-c", code, queue, payload],
            cwd=self.tmp,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return res.stdout.strip().splitlines()[-1]

    def hub_state(self, task_id: str) -> str:
        """The state the scheduler reads back from the result backend."""
        raw = self.client("hub", db=1).get(f"celery-task-meta-{task_id}")
        return "PENDING" if raw is None else json.loads(raw)["status"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    d = Deployment(tmp_path_factory.mktemp("redis"))
    try:
        yield d
    finally:
        d.stop()


def _stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.terminate()
    out, _ = proc.communicate(timeout=30)
    return out


def _wait(pred: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return False


def test_acl_file_is_private_and_names_every_party(dep: Deployment) -> None:
    acl = dep.tmp / "acl" / "users.acl"
    assert acl.stat().st_mode & 0o077 == 0
    users = {line.split()[1] for line in acl.read_text().splitlines()}
    assert users == {"default", "hub"} | {f"bridge_{c}" for c in CODES}
    log = (dep.tmp / "redis.log").read_text() + acl.parent.name
    assert "Ready to accept connections" in log
    assert not any(p in log for p in dep.passwords.values())


def test_bridge_worker_runs_its_own_queue_and_the_hub_sees_the_result(dep: Deployment) -> None:
    task_id = dep.hub_send("bridge_csc", f"csc-own|{TOKEN}")
    worker = dep.worker("bridge-csc")
    try:
        assert _wait(lambda: dep.hub_state(task_id) == "SUCCESS", 60), _stop(worker)
    finally:
        log = _stop(worker)
    assert (dep.tmp / "out" / "csc-own.done").read_text().endswith(TOKEN)
    assert "NoPermission" not in log and "NOPERM" not in log, log
    # acked: nothing left in its queue or its unacked hash
    hub = dep.client("hub")
    assert hub.llen("bridge_csc") == 0 and hub.hlen("bridge_csc.unacked") == 0


def test_bridge_worker_pointed_at_another_agencys_queue_is_refused(dep: Deployment) -> None:
    task_id = dep.hub_send("bridge_eh", f"eh-victim|{TOKEN}")
    thief = dep.worker("bridge-csc", queues="bridge_eh")
    try:
        assert thief.wait(timeout=60) != 0
    finally:
        log = _stop(thief)
    assert "NoPermissionError" in log and TOKEN not in log
    assert not (dep.tmp / "out" / "eh-victim.done").exists()
    assert dep.client("hub").llen("bridge_eh") == 1  # not lost: still queued for EH
    owner = dep.worker("bridge-eh")
    try:
        assert _wait(lambda: dep.hub_state(task_id) == "SUCCESS", 60), _stop(owner)
    finally:
        _stop(owner)
    assert (dep.tmp / "out" / "eh-victim.done").exists()


ATTACKS = {
    "read the hub's queue": ("LRANGE", "default", "0", "-1"),
    "read another agency's queue": ("LRANGE", "bridge_eh", "0", "-1"),
    "pop another agency's task": ("RPOP", "bridge_eh"),
    "queue work for the hub worker": ("LPUSH", "default", "{}"),
    "queue work for another bridge": ("LPUSH", "bridge_eh", "{}"),
    "read the hub's unacked messages": ("HGETALL", "unacked"),
    "read another bridge's unacked messages": ("HGETALL", "bridge_eh.unacked"),
    "a queue whose name only starts like its own": ("LRANGE", "bridge_cscx", "0", "-1"),
    "rebind the hub's exchange": ("SADD", "_kombu.binding.default", "x"),
    "list every key": ("KEYS", "*"),
    "scan every key": ("SCAN", "0"),
    "sample key names": ("RANDOMKEY",),
    "list the active channels": ("PUBSUB", "CHANNELS"),
    "watch every command": ("MONITOR",),
    "list other clients": ("CLIENT", "LIST"),
    "read the config": ("CONFIG", "GET", "*"),
    "read the ACL": ("ACL", "LIST"),
    "wipe the broker": ("FLUSHALL",),
    "flush the script cache": ("SCRIPT", "FLUSH"),
    "subscribe to everything": ("PSUBSCRIBE", "*"),
    "a Lua script reading the hub's queue": (
        "EVAL",
        "return redis.call('LRANGE', 'default', 0, -1)",
        "0",
    ),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_bridge_credentials_are_refused(dep: Deployment, attack: str) -> None:
    hub = dep.client("hub")
    hub.lpush("default", f"hub-message|{TOKEN}")
    hub.hset("unacked", "tag", f"hub-message|{TOKEN}")
    attacker = dep.client("bridge_csc")
    try:
        # NOPERM, or for a script "can't access at least one of the keys"
        with pytest.raises(redis.exceptions.ResponseError, match=r"no permissions|can't access"):
            attacker.execute_command(*ATTACKS[attack])
    finally:
        attacker.close()
    assert hub.lrange("default", 0, -1)[-1].decode().endswith(TOKEN)  # nothing taken
    assert hub.dbsize() > 0
    hub.delete("default", "unacked")


def test_no_login_without_the_partys_own_password(dep: Deployment) -> None:
    anon = redis.Redis(host="127.0.0.1", port=dep.port, socket_timeout=10)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anon.ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        dep.client("bridge_csc", dep.passwords["REDIS_BRIDGE_EH_PASSWORD"]).ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        dep.client("default", "").ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        dep.client("hub", dep.passwords["REDIS_BRIDGE_CSC_PASSWORD"]).ping()


def _healthcheck(dep: Deployment, password: str) -> int:
    test = SERVICES["redis"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    cmd = test[1].replace("$$", "$").replace("redis-cli", f"redis-cli -p {dep.port}")
    env = {**os.environ, "REDIS_HUB_PASSWORD": password}
    return subprocess.run(
        ["sh", "-c", cmd], env=env, capture_output=True, timeout=30, check=False
    ).returncode


def test_compose_healthcheck_authenticates(dep: Deployment) -> None:
    assert _healthcheck(dep, dep.passwords["REDIS_HUB_PASSWORD"]) == 0
    assert _healthcheck(dep, "0" * 64) != 0


def _good_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")}
    env.update(
        {
            "JOINEDUP_REDIS_ACL_DIR": str(tmp / "acl"),
            "JOINEDUP_BRIDGE_CODES": "csc eh",
            "REDIS_HUB_PASSWORD": secrets.token_hex(32),
            "REDIS_BRIDGE_CSC_PASSWORD": secrets.token_hex(32),
            "REDIS_BRIDGE_EH_PASSWORD": secrets.token_hex(32),
        }
    )
    return env


BAD_SETUPS = {
    "missing password": ({"REDIS_BRIDGE_EH_PASSWORD": ""}, "REDIS_BRIDGE_EH_PASSWORD is not set"),
    "short password": ({"REDIS_BRIDGE_EH_PASSWORD": "abc123"}, "at least 32"),
    "password with a space": ({"REDIS_BRIDGE_EH_PASSWORD": "a" * 32 + " ~* +@all"}, "may hold"),
    "bridge reuses the hub's password": ({"REDIS_BRIDGE_CSC_PASSWORD": "@hub"}, "each party"),
    "two bridges share one": ({"REDIS_BRIDGE_EH_PASSWORD": "@csc"}, "each party"),
    "code that would widen the key pattern": ({"JOINEDUP_BRIDGE_CODES": "csc *"}, "lower-case"),
    "no hub password": ({"REDIS_HUB_PASSWORD": ""}, "REDIS_HUB_PASSWORD is not set"),
}


@pytest.mark.parametrize("setup", sorted(BAD_SETUPS))
def test_entrypoint_refuses_a_bad_setup_and_writes_no_acl(tmp_path: Path, setup: str) -> None:
    env = _good_env(tmp_path)
    change, message = BAD_SETUPS[setup]
    for k, v in change.items():
        env[k] = {"@hub": env["REDIS_HUB_PASSWORD"], "@csc": env["REDIS_BRIDGE_CSC_PASSWORD"]}.get(
            v, v
        )
    res = subprocess.run(
        ["sh", str(ENTRYPOINT), "true"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert res.returncode != 0 and message in res.stderr, res.stderr
    assert not (tmp_path / "acl" / "users.acl").exists()
    for k, v in env.items():
        if k.startswith("REDIS_") and len(v) >= 6:
            assert v not in res.stderr + res.stdout
    env = _good_env(tmp_path)  # and the same call with a good setup goes through
    ok = subprocess.run(
        ["sh", str(ENTRYPOINT), "true"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "acl" / "users.acl").exists()
