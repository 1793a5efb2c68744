"""What next, after `make demo`: the governance API over the demo run, ready to use.

Writes, in <run>/api/ (0700):
  - hub_api.yaml (0600): the API config (docs/api.md) over the demo's warehouse, governance
    store and hub keys, with absolute paths so the printed command works from any folder;
  - tokens/<user>.token (0600 each): a bearer token per demo user, minted into the demo's
    governance store (stored there hashed only), valid for one working shift (12 h).
and returns, for printing, the command that serves the API, each user's current allocations
(the family ids they may look at) with a request to try, and the report paths.
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# The demo's practitioners (simulate_week allocates them): user -> (role, employing agency).
DEMO_USERS: dict[str, tuple[str, str]] = {
    "sw.csc.1": ("practitioner", "CSC"),
    "tm.csc.1": ("team_manager", "CSC"),
    "ehw.eh.1": ("practitioner", "EH"),
    "pc.pol.9": ("practitioner", "POL"),
}
API_PORT = 8000


@dataclass
class DemoUser:
    user_id: str
    role: str
    agency: str
    token_file: Path
    households: list[str] = field(default_factory=list)  # allocated today
    persons: list[str] = field(default_factory=list)
    try_url: str | None = None


@dataclass
class NextSteps:
    config: Path
    command: str
    base_url: str
    users: list[DemoUser]
    reports: dict[str, Path]


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def _write_private(path: Path, text: str) -> None:
    """Created 0600 before anything is written: a token is never readable by others."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_api_config(out: Path) -> Path:
    """<out>/api/hub_api.yaml for `uvicorn --factory governance.api:app_from_env`."""
    from governance.hub_stage import governance_db_url, hub_keys_dir
    from linkage.config import HubPaths

    out = out.resolve()
    paths = HubPaths.for_run(out)
    cfg: dict[str, Any] = {
        "warehouse": str(paths.warehouse.resolve()),
        "governance_db": governance_db_url(out),
        "hub_signing_key": str((paths.hub / "keys" / "hub_request.pem").resolve()),
        "audit_signing_key": str(hub_keys_dir(paths.hub).resolve()),
        "audit_checkpoint_seconds": 300,
        # The demo's re-identification service ran only during the simulated week; start one
        # (docs/api.md) and name it here to answer identity requests.
        "bridges": {},
    }
    schema = os.environ.get("JOINEDUP_GOVERNANCE_SCHEMA")
    if schema:
        cfg["governance_schema"] = schema
    path = _private_dir(out / "api") / "hub_api.yaml"
    _write_private(
        path,
        "# Governance API over the demo run (written by make demo).\n"
        + yaml.safe_dump(cfg, sort_keys=False),
    )
    return path


def mint_tokens(out: Path, users: dict[str, tuple[str, str]] = DEMO_USERS) -> dict[str, Path]:
    """One fresh token per demo user in the demo's governance store; plaintext only in its
    0600 file."""
    from governance.api_tokens import TokenStore
    from governance.hub_stage import governance_engine

    folder = _private_dir(out / "api" / "tokens")
    engine = governance_engine(out)
    try:
        store = TokenStore(engine)
        files = {}
        for user, (role, agency) in users.items():
            files[user] = folder / f"{user}.token"
            _write_private(files[user], store.issue(user, role, agency) + "\n")
    finally:
        engine.dispose()
    return files


def current_allocations(out: Path, on: dt.date) -> dict[str, list[tuple[str, str]]]:
    """user -> [(kind, subject id)] allocated on `on`, from the governance store; a team
    manager's include the current allocations of the teams they manage."""
    from governance.hub_stage import governance_engine
    from governance.relationships import SqlRelationshipRegistry
    from synthetic_data.demo_access import team_cases

    engine = governance_engine(out)
    try:
        registry = SqlRelationshipRegistry(engine)
        rels = registry.all()
        got: dict[str, list[tuple[str, str]]] = {}
        for r in rels:
            if r.current(on) and (r.kind.value, r.subject_id) not in got.get(r.user_id, []):
                got.setdefault(r.user_id, []).append((r.kind.value, r.subject_id))
        for user, (role, _agency) in DEMO_USERS.items():  # a manager holds the team's cases
            if role == "team_manager":
                for case in team_cases(user, on, registry):
                    if case not in got.get(user, []):
                        got.setdefault(user, []).append(case)
    finally:
        engine.dispose()
    return got


def prepare_next_steps(
    out: Path, reports: dict[str, Path], users: dict[str, tuple[str, str]] = DEMO_USERS
) -> NextSteps:
    config = write_api_config(out)
    tokens = mint_tokens(out, users)
    alloc = current_allocations(out, dt.datetime.now(dt.UTC).date())
    base = f"http://127.0.0.1:{API_PORT}"
    people = []
    for user, (role, agency) in users.items():
        u = DemoUser(user, role, agency, tokens[user])
        for kind, sid in alloc.get(user, []):
            (u.households if kind == "household" else u.persons).append(sid)
        if u.households:
            u.try_url = f"/households/{u.households[0]}/involvement"
        elif u.persons:
            u.try_url = f"/persons/{u.persons[0]}?protocol=early_help_family_support"
        people.append(u)
    uvicorn = Path(sys.executable).with_name("uvicorn")
    command = (
        f"JOINEDUP_API_CONFIG={shlex.quote(_shown(config))} "
        f"{shlex.quote(_shown(uvicorn))} --factory governance.api:app_from_env "
        f"--port {API_PORT}"
    )
    return NextSteps(config, command, base, people, reports)


def _shown(path: Path) -> str:
    """A path as short as it can be shown: relative to the working folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def show_next_steps(steps: NextSteps, console: Any) -> None:
    console.print("[bold]What next")
    console.print("  Serve the governance API over this run (docs/api.md):")
    console.print(f"    {steps.command}", soft_wrap=True)
    console.print("  Demo users (token files are 0600, valid 12 h; `make demo` mints new ones):")
    for u in steps.users:
        where = (
            ", ".join([f"household {h}" for h in u.households] + [f"person {p}" for p in u.persons])
            or "no allocation (refused)"
        )
        console.print(f"    {u.user_id} ({u.role}, {u.agency}): {where}", soft_wrap=True)
    for u in steps.users:
        if u.try_url:
            console.print(f"  Try, as {u.user_id}:")
            console.print(
                f'    curl -s -H "Authorization: Bearer $(cat '
                f"{shlex.quote(_shown(u.token_file))})\" '{steps.base_url}"
                f"{u.try_url}'",
                soft_wrap=True,
            )
            break
    console.print("  Reports:")
    for name, path in steps.reports.items():
        console.print(f"    {name}: {_shown(Path(path))}", soft_wrap=True)
    from workspace.cli import demo_next_steps  # the workspace's own sign-in lines

    for line in demo_next_steps(steps.config.parent.parent):
        console.print(f"  {line}", soft_wrap=True)
