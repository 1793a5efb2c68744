"""docker-compose.yml: who can read or write what, and who knows which secret.

The file is read as Docker Compose reads it (anchors and merge keys resolved) and every service
is held to an access table: the volumes it may write, the volumes it may only read, the .env
secrets it gets and its networks, exactly. On top of the table, invariants that hold whatever
the table says (tests/compose_access.py): no agency container sees another agency's or any hub
volume or any hub secret, no hub service mounts agency keys, Redis needs a password. Known bad
edits (the hub's env anchor merged into a bridge again, a shared landing volume, Redis without
a password ...) are applied to the real file to show the checks catch them. When Docker Compose
is installed, `config` validates the file and its resolved output is scanned for the actual
secret values.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_access import (
    HUB_SECRETS,
    access,
    bridge_secret,
    environment,
    invariant_violations,
    mounts,
    party,
)

from linkage.orchestration import agency_dag_specs

REPO = Path(__file__).resolve().parents[1]
COMPOSE_TEXT = (REPO / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, Any] = COMPOSE["services"]
CODES = [s.code.lower() for s in agency_dag_specs()]
ALL_SECRETS = set(HUB_SECRETS) | {bridge_secret(c) for c in CODES}
AIRFLOW = {
    "POSTGRES_PASSWORD",
    "AIRFLOW_FERNET_KEY",
    "AIRFLOW_JWT_SECRET",
    "AIRFLOW_API_SECRET_KEY",
    "REDIS_HUB_PASSWORD",
}
LANDINGS = {f"landing_{c}" for c in CODES} | {f"rekey_landing_{c}" for c in CODES}
AGENCY_NETS = {f"agency_{c}" for c in CODES}
REID_NETS = {f"reid_{c}" for c in CODES}


def row(rw=(), ro=(), binds=(), secrets_=(), nets=("hub",)) -> dict[str, set[str]]:
    return {
        "rw": set(rw),
        "ro": set(ro),
        "binds": set(binds),
        "secrets": set(secrets_),
        "networks": set(nets),
    }


# The access table: every service, exactly what it may mount, know and reach.
TABLE: dict[str, dict[str, set[str]]] = {
    "postgres": row(
        rw={"airflow_db"},
        binds={"./docker/postgres/initdb:ro"},
        secrets_={"POSTGRES_PASSWORD", "GOVERNANCE_DB_PASSWORD"},
    ),
    "redis": row(
        rw={"redis_data"},
        binds={"./docker/redis/entrypoint.sh:ro"},
        secrets_={"REDIS_HUB_PASSWORD"} | {bridge_secret(c) for c in CODES},
        nets={"hub"} | AGENCY_NETS,
    ),
    "airflow-init": row(secrets_=AIRFLOW | {"AIRFLOW_ADMIN_PASSWORD"}),
    "airflow-apiserver": row(secrets_=AIRFLOW),
    "airflow-execution-api": row(secrets_=AIRFLOW, nets={"hub"} | AGENCY_NETS),
    "airflow-scheduler": row(secrets_=AIRFLOW),
    "airflow-dag-processor": row(secrets_=AIRFLOW),
    "airflow-triggerer": row(secrets_=AIRFLOW),
    "airflow-worker-hub": row(
        rw={"warehouse"} | LANDINGS,
        ro={"hub_config", "hub_sealing_keys", "hub_audit_keys", "ig_lead_trusted_keys"},
        secrets_=AIRFLOW | {"GOVERNANCE_DB_PASSWORD"},
    ),
    "governance-api": row(
        ro={"warehouse", "hub_request_key", "hub_audit_keys"},
        binds={"./docker/hub_api.yaml:ro"},
        secrets_={"GOVERNANCE_DB_PASSWORD"},
        nets={"hub"} | REID_NETS,
    ),
    "workspace": row(
        ro={"warehouse", "hub_request_key", "hub_audit_keys"},
        secrets_={"GOVERNANCE_DB_PASSWORD"},
        nets={"hub"} | REID_NETS,
    ),
    "hub-keygen": row(
        rw={"hub_sealing_keys", "hub_audit_keys", "hub_request_key", "hub_public"}, nets=()
    ),
}
for _c in CODES:
    TABLE[f"bridge-{_c}"] = row(
        rw={f"agency_{_c}", f"landing_{_c}", f"rekey_landing_{_c}"},
        ro={f"keys_{_c}"},
        secrets_={bridge_secret(_c)},
        nets={f"agency_{_c}"},
    )
    TABLE[f"reid-{_c}"] = row(rw={f"agency_{_c}"}, ro={f"keys_{_c}"}, nets={f"reid_{_c}"})


@pytest.mark.parametrize("name", sorted(set(SERVICES) | set(TABLE)))
def test_every_service_has_exactly_the_access_in_the_table(name: str) -> None:
    assert name in SERVICES, f"{name}: in the access table but not in docker-compose.yml"
    assert name in TABLE, f"{name}: a new service; add its access to the table in this test"
    a = access(SERVICES[name], ALL_SECRETS)
    got = {"rw": a.rw, "ro": a.ro, "binds": a.binds, "secrets": a.secrets, "networks": a.networks}
    assert got == TABLE[name], name


def test_invariants_hold() -> None:
    assert invariant_violations(COMPOSE, CODES) == []


def test_table_gives_no_agency_container_anything_of_another_party() -> None:
    """The table itself is checked, so a row edited to make a test pass shows up here."""
    for name, r in TABLE.items():
        kind, code = party(name, CODES)
        if kind == "hub":
            assert not any(v.startswith(("keys_", "agency_")) for v in r["rw"] | r["ro"]), name
            continue
        assert all(v.endswith(f"_{code}") for v in r["rw"] | r["ro"]), name
        own = f"{'agency' if kind == 'bridge' else 'reid'}_{code}"
        assert r["secrets"] <= {bridge_secret(code)} and r["networks"] == {own}
    for c in CODES:  # nobody else of any agency on an agency's networks
        for net in (f"agency_{c}", f"reid_{c}"):
            members = {n for n, r in TABLE.items() if net in r["networks"]}
            assert {party(n, CODES)[1] for n in members} <= {c, None}, net

    def holders(volume: str, mode: str = "any") -> set[str]:
        return {
            n
            for n, r in TABLE.items()
            if volume in (r["rw"] | r["ro"] if mode == "any" else r[mode])
        }

    # the sealing private key only where custody runs; the audit key where checkpoints are
    # signed; the request key where re-identification requests are (the API and the
    # workspace); all written by keygen only
    assert holders("hub_sealing_keys") == {"airflow-worker-hub", "hub-keygen"}
    assert holders("hub_audit_keys") == {
        "airflow-worker-hub",
        "governance-api",
        "workspace",
        "hub-keygen",
    }
    assert holders("hub_request_key") == {"governance-api", "workspace", "hub-keygen"}
    for v in ("hub_sealing_keys", "hub_audit_keys", "hub_request_key"):
        assert holders(v, "rw") == {"hub-keygen"}, v
    # the IG lead's trusted audit key: read by the report stage, written by no service
    assert holders("ig_lead_trusted_keys") == {"airflow-worker-hub"}
    assert holders("ig_lead_trusted_keys", "rw") == set()
    assert holders("hub_public") == {"hub-keygen"}


# ---- the checks catch known bad edits of the real file -----------------------------------
def _edit(old: str, new: str, count: int = 1) -> dict[str, Any]:
    assert COMPOSE_TEXT.count(old) >= count, f"test edit no longer applies: {old!r}"
    return yaml.safe_load(COMPOSE_TEXT.replace(old, new, count))


def _violations(compose: dict[str, Any]) -> list[str]:
    out = invariant_violations(compose, CODES)
    for name, svc in compose["services"].items():
        a = access(svc, ALL_SECRETS)
        got = {
            "rw": a.rw,
            "ro": a.ro,
            "binds": a.binds,
            "secrets": a.secrets,
            "networks": a.networks,
        }
        if got != TABLE.get(name):
            out.append(f"{name}: not as in the access table")
    return out


BAD_EDITS = {
    # the old shared anchor: the hub's Airflow env (DB password, Fernet, JWT) in every bridge
    "hub anchor merged into bridges": (
        ("      <<: *bridge-env\n", "      <<: *hub-env\n", len(CODES)),
        [
            "bridge-csc: gets secret(s) ['AIRFLOW_API_SECRET_KEY', 'AIRFLOW_FERNET_KEY'",
            "bridge-csc: gets hub setting(s) ['AIRFLOW__API_AUTH__JWT_SECRET'",
        ],
    ),
    "one landing volume shared by two agencies": (
        (
            "      - landing_eh:/opt/joinedup/landing/EH\n      - rekey",
            "      - landing_eh:/opt/joinedup/landing/EH\n"
            "      - landing_csc:/opt/joinedup/landing/CSC\n      - rekey",
            1,
        ),
        ["bridge-eh: mounts volume(s) not of agency eh: ['landing_csc']"],
    ),
    "bridge reads the warehouse": (
        (
            "      - agency_gp:/opt/joinedup/agency\n",
            "      - agency_gp:/opt/joinedup/agency\n      - warehouse:/opt/joinedup/hub:ro\n",
            1,
        ),
        ["bridge-gp: mounts volume(s) not of agency gp: ['warehouse']"],
    ),
    "bridge logs in to Redis as the hub": (
        (
            "redis://bridge_pol:"
            "${REDIS_BRIDGE_POL_PASSWORD:?set REDIS_BRIDGE_POL_PASSWORD in .env}",
            "redis://hub:${REDIS_HUB_PASSWORD}",
            1,
        ),
        [
            "bridge-pol: gets secret(s) ['REDIS_HUB_PASSWORD']",
            "bridge-pol: AIRFLOW__CELERY__BROKER_URL logs in to Redis as something other",
        ],
    ),
    "Redis with no password again": (
        ("redis://hub:${REDIS_HUB_PASSWORD:?set REDIS_HUB_PASSWORD in .env}@", "redis://:@", 1),
        ["airflow-scheduler: AIRFLOW__CELERY__BROKER_URL connects to Redis without a user"],
    ),
    "Redis healthcheck without auth": (
        (
            '"REDISCLI_AUTH=\\"$$REDIS_HUB_PASSWORD\\" redis-cli --user hub --no-auth-warning '
            'ping | grep -q PONG"',
            '"redis-cli ping"',
            1,
        ),
        ["redis: healthcheck does not authenticate"],
    ),
    "governance API mounts an agency's keys": (
        (
            "      - hub_audit_keys:/opt/joinedup/audit_keys:ro\n    ports:",
            "      - hub_audit_keys:/opt/joinedup/audit_keys:ro\n      - keys_csc:/keys:ro\n"
            "    ports:",
            1,
        ),
        ["governance-api: hub service mounts agency volume(s) ['keys_csc']"],
    ),
    "governance API given the sealing private key": (
        (
            "      - hub_audit_keys:/opt/joinedup/audit_keys:ro\n    ports:",
            "      - hub_audit_keys:/opt/joinedup/audit_keys:ro\n"
            "      - hub_sealing_keys:/opt/joinedup/hub/keys:ro\n    ports:",
            1,
        ),
        ["governance-api: holds the hub's sealing private key"],
    ),
    "a reid service given the sealing private key": (
        (
            "      - keys_hv:/opt/joinedup/agency/keys:ro\n    networks: [reid_hv]",
            "      - keys_hv:/opt/joinedup/agency/keys:ro\n"
            "      - hub_sealing_keys:/opt/joinedup/hub/keys:ro\n    networks: [reid_hv]",
            1,
        ),
        [
            "reid-hv: holds the hub's sealing private key",
            "reid-hv: mounts volume(s) not of agency hv: ['hub_sealing_keys']",
        ],
    ),
    "a bridge given the sealing private key": (
        (
            "      - keys_pol:/opt/joinedup/agency/keys:ro\n      - landing_pol",
            "      - keys_pol:/opt/joinedup/agency/keys:ro\n"
            "      - hub_sealing_keys:/opt/joinedup/hub/keys:ro\n      - landing_pol",
            1,
        ),
        ["bridge-pol: holds the hub's sealing private key"],
    ),
    "the hub worker can rewrite its keys": (
        (
            "      - hub_sealing_keys:/opt/joinedup/hub/keys:ro\n      - hub_audit_keys:"
            "/opt/joinedup/audit_keys:ro\n      - ig",
            "      - hub_sealing_keys:/opt/joinedup/hub/keys\n      - hub_audit_keys:"
            "/opt/joinedup/audit_keys\n      - ig",
            1,
        ),
        [
            "airflow-worker-hub: mounts hub private key volume(s) ['hub_audit_keys', "
            "'hub_sealing_keys'] read-write"
        ],
    ),
    "the hub worker can write the IG lead's trusted key": (
        (
            "      - ig_lead_trusted_keys:/opt/joinedup/ig_lead/trusted_keys:ro\n",
            "      - ig_lead_trusted_keys:/opt/joinedup/ig_lead/trusted_keys\n",
            1,
        ),
        ["airflow-worker-hub: can write the IG lead's trusted audit key"],
    ),
    "hub-keygen writes the IG lead's trusted key itself": (
        (
            "      - hub_public:/opt/joinedup/public\n",
            "      - hub_public:/opt/joinedup/public\n"
            "      - ig_lead_trusted_keys:/opt/joinedup/ig_lead/trusted_keys\n",
            1,
        ),
        [
            "hub-keygen: can write the IG lead's trusted audit key",
            "hub-keygen: not a network-less container away from the IG lead's keys",
        ],
    ),
    "reid service on the hub network": (
        (
            "    networks: [reid_hv]\n\n  bridge-pol:",
            "    networks: [reid_hv, hub]\n\n  bridge-pol:",
            1,
        ),
        ["reid-hv: networks ['hub', 'reid_hv'], not only reid_hv"],
    ),
    "bridge on another agency's network": (
        ("    networks: [agency_sch]\n", "    networks: [agency_sch, agency_csc]\n", 1),
        ["bridge-sch: networks ['agency_csc', 'agency_sch'], not only agency_sch"],
    ),
    "the Airflow UI reachable from the bridges": (
        (
            "    command: api-server\n",
            "    command: api-server\n    networks: [hub, agency_gp]\n",
            1,
        ),
        ["airflow-apiserver: the Airflow UI/REST API on agency network(s) ['agency_gp']"],
    ),
    "a hub secret as a literal": (
        (
            "AIRFLOW__CORE__FERNET_KEY: ${AIRFLOW_FERNET_KEY:?set AIRFLOW_FERNET_KEY in .env}",
            "AIRFLOW__CORE__FERNET_KEY: c2VjcmV0",
            1,
        ),
        ["airflow-scheduler: AIRFLOW__CORE__FERNET_KEY is a literal, not from .env"],
    ),
}


@pytest.mark.parametrize("edit", sorted(BAD_EDITS))
def test_checks_catch_a_bad_edit(edit: str) -> None:
    (old, new, count), expected = BAD_EDITS[edit]
    found = _violations(_edit(old, new, count))
    for e in expected:
        assert any(v.startswith(e) for v in found), (e, found)


# ---- details the table does not express --------------------------------------------------
@pytest.mark.parametrize("code", CODES)
def test_bridge_and_reid_of_an_agency(code: str) -> None:
    up = code.upper()
    b = SERVICES[f"bridge-{code}"]
    assert b["build"]["dockerfile"] == "docker/Dockerfile.bridge"
    cmd = b["command"].split()
    assert cmd[:4] == ["celery", "worker", "--queues", f"bridge_{code}"]
    assert "--skip-serve-logs" in cmd  # serving logs needs the hub's API secret key
    targets = {m.source: (m.target, m.read_only) for m in mounts(b)}
    assert targets == {
        f"agency_{code}": ("/opt/joinedup/agency", False),
        f"keys_{code}": ("/opt/joinedup/agency/keys", True),
        f"landing_{code}": (f"/opt/joinedup/landing/{up}", False),
        f"rekey_landing_{code}": (f"/opt/joinedup/rekey_landing/{up}", False),
    }
    env = environment(b)
    assert env["JOINEDUP_LANDING_DIR"] == "/opt/joinedup/landing"  # + <CODE>: its own volume
    assert env["AIRFLOW__CELERY__WORKER_ENABLE_REMOTE_CONTROL"] == "false"
    for k in ("UNACKED_KEY", "UNACKED_INDEX_KEY", "UNACKED_MUTEX_KEY"):
        # its own keys, inside what its Redis ACL user may touch (bridge_<code>[^a-z0-9_]*)
        assert env[f"AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__{k}"].startswith(f"bridge_{code}.")
    for k in ("AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CELERY__RESULT_BACKEND"):
        assert env[k].startswith(f"redis://bridge_{code}:${{{bridge_secret(code)}")
    r = SERVICES[f"reid-{code}"]
    cmd = r["command"]
    assert cmd[:3] == ["python", "-m", "ig_bridge.reid_service"]
    assert cmd[cmd.index("--hub-public-key") + 1].startswith("/opt/joinedup/agency/keys/")
    assert cmd[cmd.index("--mapping") + 1] == f"/opt/joinedup/src/schemas/agencies/{code}.yaml"
    assert (REPO / "schemas" / "agencies" / f"{code}.yaml").is_file()


def test_hub_worker_mounts_every_drop_area_where_the_bridge_writes() -> None:
    got = {m.source: m.target for m in mounts(SERVICES["airflow-worker-hub"])}
    for c in CODES:
        assert got[f"landing_{c}"] == f"/opt/joinedup/landing/{c.upper()}"
        assert got[f"rekey_landing_{c}"] == f"/opt/joinedup/rekey_landing/{c.upper()}"
    env = environment(SERVICES["airflow-worker-hub"])
    assert env["JOINEDUP_HUB_DIR"] == "/opt/joinedup/hub"
    # where the code loads each key: custody <hub>/keys (HubPaths.keys), the report stage
    # JOINEDUP_HUB_KEYS_DIR and JOINEDUP_AUDIT_TRUSTED_KEYS
    assert got["hub_sealing_keys"] == env["JOINEDUP_HUB_DIR"] + "/keys"
    assert got["hub_audit_keys"] == env["JOINEDUP_HUB_KEYS_DIR"]
    assert got["ig_lead_trusted_keys"] == env["JOINEDUP_AUDIT_TRUSTED_KEYS"]
    assert env["JOINEDUP_GOVERNANCE_DB"].startswith("postgresql+psycopg://joinedup_gov:${")


def test_airflow_services_pinned_and_on_postgres() -> None:
    hub = [
        "airflow-init",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker-hub",
    ]
    for name in hub:
        env = environment(SERVICES[name])
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql"), name
        assert SERVICES[name]["build"]["dockerfile"] == "docker/Dockerfile.hub"
    commands = {SERVICES[n]["command"].split()[0] for n in hub}
    assert {"api-server", "scheduler", "dag-processor", "triggerer", "celery"} <= commands
    init = environment(SERVICES["airflow-init"])
    assert init["_AIRFLOW_DB_MIGRATE"] == "true" and init["_AIRFLOW_WWW_USER_CREATE"] == "true"
    for df in ("Dockerfile.hub", "Dockerfile.bridge"):
        text = (REPO / "docker" / df).read_text()
        assert re.search(r"^FROM apache/airflow:3\.3\.2$", text, re.M), df
    assert '[hub]"' in (REPO / "docker" / "Dockerfile.hub").read_text()
    bridge_df = (REPO / "docker" / "Dockerfile.bridge").read_text()
    assert '[bridge]"' in bridge_df and "hub]" not in bridge_df


def test_redis_users_match_the_agencies_and_api_reaches_every_reid() -> None:
    assert environment(SERVICES["redis"])["JOINEDUP_BRIDGE_CODES"].split() == CODES
    cfg = yaml.safe_load((REPO / "docker" / "hub_api.yaml").read_text())
    assert cfg["bridges"] == {c.upper(): f"http://reid-{c}:8701" for c in CODES}
    api = {m.source: m.target for m in mounts(SERVICES["governance-api"])}
    assert cfg["hub_signing_key"] == api["hub_request_key"] + "/hub_request.pem"
    assert cfg["audit_signing_key"] == api["hub_audit_keys"]  # required by app_from_config
    # a user but no password in the file: the password comes from PGPASSWORD
    assert re.match(r"postgresql\+psycopg://[a-z_]+@postgres/", cfg["governance_db"])


def test_example_env_has_placeholders_only_and_every_secret() -> None:
    used: set[str] = set()
    for m in re.finditer(r"(?<!\$)\$\{([A-Z0-9_]+)", COMPOSE_TEXT):
        used.add(m.group(1))
    values = {}
    for line in (REPO / "docker" / "example.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            k, _, v = line.partition("=")
            values[k] = v
    assert set(values) == used
    assert {k for k, v in values.items() if v} == {"AIRFLOW_ADMIN_USER"}
    for key in ALL_SECRETS:  # required: Compose refuses to start without it
        assert f"${{{key}:?" in COMPOSE_TEXT, key


# ---- Docker Compose itself ---------------------------------------------------------------
def _compose_cmd() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False
        ).returncode
        == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


COMPOSE_CMD = _compose_cmd()
needs_compose = pytest.mark.skipif(
    COMPOSE_CMD is None, reason="neither `docker compose` nor `docker-compose` is installed"
)


def _env_file(tmp_path: Path, drop: str | None = None) -> tuple[Path, dict[str, str]]:
    values = {k: secrets.token_hex(32) for k in ALL_SECRETS if k != drop}
    values["AIRFLOW_ADMIN_USER"] = "admin"
    f = tmp_path / "test.env"
    f.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return f, values


def _config(env_file: Path) -> subprocess.CompletedProcess[str]:
    assert COMPOSE_CMD is not None
    return subprocess.run(
        [
            *COMPOSE_CMD,
            "--env-file",
            str(env_file),
            "-f",
            str(REPO / "docker-compose.yml"),
            "config",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=REPO,
    )


@needs_compose
def test_compose_config_resolves_and_no_agency_container_holds_a_foreign_secret(
    tmp_path: Path,
) -> None:
    env_file, values = _env_file(tmp_path)
    res = _config(env_file)
    assert res.returncode == 0, res.stderr
    resolved = yaml.safe_load(res.stdout)["services"]
    # Compose v2 leaves out services of an inactive profile (hub-keygen), v1 lists them
    assert set(SERVICES) - {"hub-keygen"} <= set(resolved) <= set(SERVICES)
    for name, svc in resolved.items():
        text = json.dumps(svc)
        held = {k for k, v in values.items() if k in ALL_SECRETS and v in text}
        kind, code = party(name, CODES)
        if kind == "hub":
            assert held == TABLE[name]["secrets"], name
        else:
            assert held == ({bridge_secret(code)} if kind == "bridge" else set()), name


@needs_compose
@pytest.mark.parametrize(
    "missing",
    [
        "REDIS_BRIDGE_CSC_PASSWORD",
        "REDIS_HUB_PASSWORD",
        "GOVERNANCE_DB_PASSWORD",
        "AIRFLOW_API_SECRET_KEY",
    ],
)
def test_compose_refuses_to_start_without_a_secret(tmp_path: Path, missing: str) -> None:
    env_file, values = _env_file(tmp_path, drop=missing)
    res = _config(env_file)
    assert res.returncode != 0 and missing in res.stderr
    assert not any(v in res.stderr + res.stdout for v in values.values() if len(v) == 64)
