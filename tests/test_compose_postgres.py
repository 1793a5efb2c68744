"""docker/postgres/initdb/10-governance.sh, run as the postgres image runs it, on a private
PostgreSQL cluster with password (SCRAM) authentication over TCP, then attacked: the governance
role cannot open the Airflow metadata database, nobody gets in without the right password, and
a missing or unsafe password stops the script with nothing created and the value never shown.

Needs PostgreSQL's server binaries and, when run as root, the `postgres` system user (initdb
refuses to run as root); skips with the reason otherwise.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "docker" / "postgres" / "initdb" / "10-governance.sh"


def _pg_bin() -> Path | None:
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


PG_BIN = _pg_bin()
RUN_AS: list[str] = []
if os.geteuid() == 0:
    try:
        pwd.getpwnam("postgres")
        RUN_AS = ["runuser", "-u", "postgres", "--"]
    except KeyError:
        RUN_AS = ["<none>"]
pytestmark = pytest.mark.skipif(
    PG_BIN is None or shutil.which("psql") is None or RUN_AS == ["<none>"],
    reason="PostgreSQL server binaries, psql and (as root) a postgres user are needed",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, base: Path) -> None:
        assert PG_BIN is not None
        self.base, self.port = base, _free_port()
        self.data, self.sock = base / "data", base / "sock"
        self.sock.mkdir()
        if RUN_AS:
            shutil.chown(base, "postgres")
            shutil.chown(self.sock, "postgres")
        self._run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "airflow",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ]
        )
        self._run(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.data),
                "-w",
                "-l",
                str(base / "pg.log"),
                "-o",
                f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1",
                "start",
            ]
        )
        # what the image's entrypoint does before running docker-entrypoint-initdb.d
        self.psql_local("CREATE DATABASE airflow")

    def _run(self, cmd: list[str]) -> None:
        subprocess.run([*RUN_AS, *cmd], check=True, capture_output=True, timeout=120)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        return {**env, "PGHOST": str(self.sock), "PGPORT": str(self.port), **extra}

    def psql_local(self, sql: str, db: str = "postgres") -> None:
        subprocess.run(
            ["psql", "-v", "ON_ERROR_STOP=1", "-U", "airflow", "-d", db, "-c", sql],
            env=self.env(),
            check=True,
            capture_output=True,
            timeout=60,
        )

    def init_script(self, password: str | None) -> subprocess.CompletedProcess[str]:
        env = self.env(POSTGRES_USER="airflow", POSTGRES_DB="airflow")
        if password is not None:
            env["GOVERNANCE_DB_PASSWORD"] = password
        return subprocess.run(
            ["sh", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    def tcp(
        self, user: str, password: str, db: str, sql: str = "SELECT 1"
    ) -> subprocess.CompletedProcess[str]:
        """A client on the network, as the governance API connects: TCP + password."""
        env = self.env(PGPASSWORD=password)
        env.pop("PGHOST")
        return subprocess.run(
            ["psql", "-w", "-h", "127.0.0.1", "-U", user, "-d", db, "-tAc", sql],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def roles_and_dbs(self) -> str:
        res = subprocess.run(
            [
                "psql",
                "-U",
                "airflow",
                "-d",
                "postgres",
                "-tAc",
                "SELECT string_agg(rolname, ',') FROM pg_roles WHERE rolname = 'joinedup_gov' "
                "UNION ALL SELECT string_agg(datname, ',') FROM pg_database "
                "WHERE datname = 'governance'",
            ],
            env=self.env(),
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return res.stdout.strip()

    def stop(self) -> None:
        assert PG_BIN is not None
        subprocess.run(
            [*RUN_AS, str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"],
            capture_output=True,
            timeout=120,
            check=False,
        )


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # not under pytest's tmp dir: its parents are root-only and the server runs as postgres
    base = Path(tempfile.mkdtemp(prefix="joinedup-pg-"))
    try:
        c = Cluster(base)
        try:
            yield c
        finally:
            c.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


BAD = {
    "missing": (None, "is not set"),
    "short": ("abc", "at least 32"),
    "quote injection": ("x' SUPERUSER; --" + "a" * 32, "may hold only"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_password_stops_the_script_with_nothing_created(cluster: Cluster, case: str) -> None:
    password, message = BAD[case]
    before = cluster.roles_and_dbs()
    res = cluster.init_script(password)
    assert res.returncode != 0 and message in res.stderr
    if password:
        assert password not in res.stderr + res.stdout
    assert cluster.roles_and_dbs() == before  # nothing created


def test_governance_role_gets_its_store_and_nothing_else(cluster: Cluster) -> None:
    password = secrets.token_hex(32)
    res = cluster.init_script(password)
    assert res.returncode == 0, res.stderr
    assert password not in res.stdout + res.stderr
    ok = cluster.tcp(
        "joinedup_gov",
        password,
        "governance",
        "CREATE TABLE t (x int); INSERT INTO t VALUES (1); SELECT count(*) FROM t",
    )
    assert ok.returncode == 0 and ok.stdout.strip().endswith("1"), ok.stderr
    # attack: the governance credentials against the Airflow metadata database
    meta = cluster.tcp("joinedup_gov", password, "airflow")
    assert meta.returncode != 0 and "permission denied for database" in meta.stderr
    # attack: guessing, or another party's password
    for user, pw, db in [
        ("joinedup_gov", secrets.token_hex(32), "governance"),
        ("joinedup_gov", "", "governance"),
        ("airflow", password, "airflow"),
    ]:
        r = cluster.tcp(user, pw, db)
        assert r.returncode != 0, (user, db)
        if pw:
            assert "password authentication failed" in r.stderr, r.stderr
    assert password not in (cluster.base / "pg.log").read_text()
