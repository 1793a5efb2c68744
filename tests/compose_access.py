"""What each docker-compose.yml service can read, write and know: the access model that
tests/test_compose.py checks against its table, and the invariants that hold whatever the table
says (no agency container sees another agency's or the hub's data or secrets).

Reads the compose file as Docker Compose does: YAML anchors and merge keys resolved (PyYAML's
safe loader), volumes in short or long syntax, `${VAR}` / `${VAR:?msg}` / `${VAR:-x}`
interpolation (but not `$$`, Compose's escape for a `$` the container's shell expands).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

# .env variables that only hub services may receive.
HUB_SECRETS = frozenset(
    {
        "POSTGRES_PASSWORD",
        "AIRFLOW_FERNET_KEY",
        "AIRFLOW_JWT_SECRET",
        "AIRFLOW_API_SECRET_KEY",
        "AIRFLOW_ADMIN_PASSWORD",
        "GOVERNANCE_DB_PASSWORD",
        "REDIS_HUB_PASSWORD",
    }
)
# Container settings that carry a hub secret whatever .env variable (or literal) is behind them.
HUB_SECRET_SETTINGS = frozenset(
    {
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CORE__SQL_ALCHEMY_CONN",
        "AIRFLOW__WEBSERVER__SECRET_KEY",
        "POSTGRES_PASSWORD",
        "PGPASSWORD",
        "JOINEDUP_GOVERNANCE_DB",
        "_AIRFLOW_WWW_USER_PASSWORD",
        "REDIS_HUB_PASSWORD",
    }
)
HUB_VOLUMES = frozenset(
    {
        "airflow_db",
        "redis_data",
        "warehouse",
        "hub_config",
        "hub_sealing_keys",
        "hub_audit_keys",
        "hub_request_key",
        "hub_public",
        "ig_lead_trusted_keys",
    }
)
# The hub's private keys: written by the one-off hub-keygen only, read-only everywhere else.
HUB_KEY_VOLUMES = frozenset({"hub_sealing_keys", "hub_audit_keys", "hub_request_key"})
KEYGEN = "hub-keygen"
# Custody (opening sealed batches) runs in the hub worker: the only reader of the sealing key.
SEALING_KEY_READERS = frozenset({"airflow-worker-hub", KEYGEN})
# The IG lead's copy of the hub audit public key: no service may write it (the IG lead puts it
# there in a one-off container), or the hub could vouch for a key of its own choosing.
TRUSTED_KEYS = "ig_lead_trusted_keys"
AGENCY_VOLUME_KINDS = ("agency", "keys", "landing", "rekey_landing")

_INTERP = re.compile(r"(?<!\$)\$(?:\{([A-Za-z_][A-Za-z0-9_]*)|([A-Za-z_][A-Za-z0-9_]*))")
_REDIS_URL = re.compile(r"rediss?://([^@/]*)@")


def bridge_secret(code: str) -> str:
    return f"REDIS_BRIDGE_{code.upper()}_PASSWORD"


def env_vars_used(obj: Any) -> set[str]:
    """The .env variables Compose interpolates anywhere in a service definition."""
    text = json.dumps(obj)
    return {a or b for a, b in _INTERP.findall(text)}


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool
    bind: bool  # a host path, not a named volume


def mounts(service: dict[str, Any]) -> list[Mount]:
    out = []
    for v in service.get("volumes") or []:
        if isinstance(v, dict):  # long syntax
            src, tgt = str(v.get("source", "")), str(v["target"])
            ro = bool(v.get("read_only", False))
            bind = v.get("type") == "bind"
        else:
            parts = str(v).split(":")
            src, tgt = parts[0], parts[1]
            ro = len(parts) > 2 and "ro" in parts[2].split(",")
            bind = src.startswith((".", "/", "~"))
        out.append(Mount(src, tgt, ro, bind))
    return out


def networks(service: dict[str, Any]) -> set[str]:
    n = service.get("networks") or []
    return set(n) if isinstance(n, list) else set(n.keys())


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def party(name: str, codes: list[str]) -> tuple[str, str | None]:
    """("bridge"|"reid", code) for an agency container, ("hub", None) for everything else."""
    for kind in ("bridge", "reid"):
        for c in codes:
            if name == f"{kind}-{c}":
                return kind, c
    return "hub", None


@dataclass
class Access:
    rw: set[str] = field(default_factory=set)
    ro: set[str] = field(default_factory=set)
    binds: set[str] = field(default_factory=set)
    secrets: set[str] = field(default_factory=set)
    networks: set[str] = field(default_factory=set)


def access(service: dict[str, Any], all_secrets: set[str]) -> Access:
    a = Access(networks=networks(service), secrets=env_vars_used(service) & all_secrets)
    for m in mounts(service):
        if m.bind:
            a.binds.add(f"{m.source}:{'ro' if m.read_only else 'rw'}")
        else:
            (a.ro if m.read_only else a.rw).add(m.source)
    return a


def _agency_of_volume(volume: str, codes: list[str]) -> str | None:
    for kind in AGENCY_VOLUME_KINDS:
        for c in codes:
            if volume == f"{kind}_{c}":
                return c
    return None


def invariant_violations(compose: dict[str, Any], codes: list[str]) -> list[str]:
    """Properties that must hold for any deployment of this design, table or no table."""
    out: list[str] = []
    services: dict[str, Any] = compose.get("services") or {}
    declared_networks = compose.get("networks") or {}
    all_secrets = set(HUB_SECRETS) | {bridge_secret(c) for c in codes}
    for name, svc in services.items():
        kind, code = party(name, codes)
        acc = access(svc, all_secrets)
        env = environment(svc)
        volumes = acc.rw | acc.ro
        if "hub_sealing_keys" in volumes and name not in SEALING_KEY_READERS:
            out.append(f"{name}: holds the hub's sealing private key")
        writable_keys = sorted(acc.rw & HUB_KEY_VOLUMES)
        if writable_keys and name != KEYGEN:
            out.append(f"{name}: mounts hub private key volume(s) {writable_keys} read-write")
        if TRUSTED_KEYS in acc.rw:
            out.append(f"{name}: can write the IG lead's trusted audit key")
        if name == KEYGEN and (
            TRUSTED_KEYS in volumes or networks(svc) or svc.get("network_mode") != "none"
        ):
            out.append(f"{name}: not a network-less container away from the IG lead's keys")
        if kind == "hub":
            bad = sorted(v for v in volumes if v.startswith(("keys_", "agency_")))
            if bad:
                out.append(f"{name}: hub service mounts agency volume(s) {bad}")
            continue
        foreign = sorted(v for v in volumes if _agency_of_volume(v, codes) != code)
        if foreign:
            out.append(f"{name}: mounts volume(s) not of agency {code}: {foreign}")
        if acc.binds:
            out.append(f"{name}: bind-mounts host paths {sorted(acc.binds)}")
        if f"keys_{code}" in acc.rw:
            out.append(f"{name}: mounts its keys read-write")
        wrong = sorted(acc.secrets - {bridge_secret(code)} if kind == "bridge" else acc.secrets)
        if wrong:
            out.append(f"{name}: gets secret(s) {wrong}")
        settings = sorted(HUB_SECRET_SETTINGS & set(env))
        if settings:
            out.append(f"{name}: gets hub setting(s) {settings}")
        for key, value in env.items():
            for cred in _REDIS_URL.findall(value):
                if cred != f"bridge_{code}:${{{bridge_secret(code)}}}" and not (
                    cred.startswith(f"bridge_{code}:${{{bridge_secret(code)}:")
                ):
                    out.append(
                        f"{name}: {key} logs in to Redis as something other than "
                        f"bridge_{code} with its own password"
                    )
        own = f"{'agency' if kind == 'bridge' else 'reid'}_{code}"
        if networks(svc) != {own}:
            out.append(f"{name}: networks {sorted(networks(svc))}, not only {own}")
        if svc.get("network_mode"):
            out.append(f"{name}: network_mode {svc['network_mode']}")
    # Networks: PostgreSQL never on an agency network; agency networks internal and never
    # shared by two agencies' containers.
    pg = services.get("postgres")
    if pg is not None and networks(pg) != {"hub"}:
        out.append(f"postgres: networks {sorted(networks(pg))}, not only hub")
    for c in codes:
        for net in (f"agency_{c}", f"reid_{c}"):
            if not (declared_networks.get(net) or {}).get("internal"):
                out.append(f"network {net} is not internal")
    for name, svc in services.items():
        cmd = svc.get("command") or ""
        cmd = cmd if isinstance(cmd, str) else " ".join(map(str, cmd))
        on_agency = sorted(n for n in networks(svc) if n.startswith(("agency_", "reid_")))
        # the UI / REST API: never where an agency container can reach it
        if cmd.startswith("api-server") and "--apps execution" not in cmd and on_agency:
            out.append(f"{name}: the Airflow UI/REST API on agency network(s) {on_agency}")
        is_pg = name == "postgres" or str(svc.get("image", "")).startswith("postgres")
        if is_pg and on_agency:
            out.append(f"{name}: PostgreSQL on agency network(s) {on_agency}")
    # Redis: every login needs a password, the healthcheck too.
    redis = services.get("redis")
    if redis is None:
        out.append("redis: no service")
    else:
        entry = " ".join(redis.get("entrypoint") or [])
        if (
            "docker/redis/entrypoint.sh" not in json.dumps(redis.get("volumes"))
            or "entrypoint.sh" not in entry
        ):
            out.append("redis: not started by docker/redis/entrypoint.sh (no ACL users)")
        if "REDIS_HUB_PASSWORD" not in env_vars_used(redis.get("environment")):
            out.append("redis: no REDIS_HUB_PASSWORD")
        check = json.dumps((redis.get("healthcheck") or {}).get("test"))
        if "REDISCLI_AUTH" not in check or "--user" not in check:
            out.append("redis: healthcheck does not authenticate")
    for name, svc in services.items():
        for key, value in environment(svc).items():
            if value.startswith(("redis://", "rediss://")) and not re.match(
                r"rediss?://[a-z_]+:\$\{[A-Z0-9_]+(:\?[^}]*)?\}@", value
            ):
                out.append(f"{name}: {key} connects to Redis without a user and password")
            if key in HUB_SECRET_SETTINGS and value and "${" not in value:
                out.append(f"{name}: {key} is a literal, not from .env")
    return out
