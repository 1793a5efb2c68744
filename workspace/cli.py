"""Run the workspace: `python -m workspace serve --run var/demo --demo` (`make workspace`).

Without --demo it is the hub's service: the governance store, audit key and the hub's request
key of the run folder, bridges from --bridge CODE=URL. With --demo it also plays the agencies
of a `make demo` run on this machine: it starts each agency's re-identification service (the
agency side, with that agency's own keys and extract, in this process only because the demo
is one machine) and creates demo sign-ins whose random passwords are written to
<run>/workspace/demo_sign_ins.txt (owner-only) and printed, never stored in the repo.
"""

from __future__ import annotations

import argparse
import secrets
import threading
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEMO_PORT = 8600
#: user, role, agency, what they can see (the demo's allocations: synthetic_data.demo).
DEMO_USERS = (
    (
        "sw.csc.1",
        "practitioner",
        "CSC",
        "social worker: My caseload from CSC's case system: the family under s47 (gateway) "
        "and the MASH household; a MASH break-glass goes to tm.csc.1 for approval",
    ),
    (
        "tm.csc.1",
        "team_manager",
        "CSC",
        "team manager of csc_assessment_1 (sw.csc.1): the team's cases; approves MASH "
        "break-glass on the Approvals page",
    ),
    (
        "ehw.eh.1",
        "practitioner",
        "EH",
        "Early Help worker: one child and family from EH's case system, by consent only",
    ),
    ("pc.pol.9", "practitioner", "POL", "police officer with no allocation: every view refused"),
)


def sign_ins_file(run: Path) -> Path:
    return run / "workspace" / "demo_sign_ins.txt"


def demo_next_steps(run: Path | str = "var/demo", port: int = DEMO_PORT) -> list[str]:
    """Lines for `make demo`'s closing message: how to open the workspace and who signs in."""
    lines = [
        f"Practitioner workspace: make workspace, then http://localhost:{port}/ "
        f"(sign-ins and passwords: {sign_ins_file(Path(run))}, written at first start)"
    ]
    lines += [f"  {u} ({agency}): {what}" for u, _, agency, what in DEMO_USERS]
    return lines


def seed_demo_accounts(accounts: Any, run: Path) -> dict[str, str]:
    """Demo sign-ins with fresh random passwords (written owner-only, never in the repo)."""
    path = sign_ins_file(run)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    known: dict[str, str] = {}
    if path.exists():
        for line in path.read_text("utf-8").splitlines():
            if line and not line.startswith("#"):
                user, _, password = line.partition(" ")
                known[user] = password
    for user, role, agency, _ in DEMO_USERS:
        if user not in known:
            known[user] = secrets.token_urlsafe(12)
            accounts.create(user, known[user], role, agency, team=f"{agency} demo team")
    body = "# user password (synthetic demo only)\n" + "".join(
        f"{u} {p}\n" for u, p in known.items()
    )
    path.touch(mode=0o600)
    path.write_text(body, "utf-8")
    return known


def start_demo_bridges(run: Path, hub_public_key: Path) -> tuple[dict[str, str], list[Any]]:
    """Each demo agency's re-identification service on a local port (the agency side)."""
    from ig_bridge.keys import KeyStore
    from ig_bridge.reid_service import ReidService, extract_lookup, load_hub_public_key, make_server

    urls, servers = {}, []
    for adir in sorted(p for p in (run / "agency").iterdir() if (p / "keys").is_dir()):
        code = adir.name
        mapping = REPO / "schemas" / "agencies" / f"{code.lower()}.yaml"
        extracts = run / "population" / "extracts" / code
        files = sorted(p for p in extracts.iterdir() if p.is_file()) if extracts.exists() else []
        if not mapping.exists() or not files:
            continue
        service = ReidService(
            code,
            KeyStore(adir / "keys", code),
            load_hub_public_key(hub_public_key),
            extract_lookup(files[0], mapping),
            adir / "audit.log",
        )
        server = make_server(service)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        urls[code] = f"http://127.0.0.1:{server.server_address[1]}"
        servers.append((server, service))
    return urls, servers


def build(
    run: Path,
    bridges: dict[str, str] | None = None,
    *,
    secure_cookies: bool = True,
    request_key: Path | None = None,
) -> Any:
    """The Workspace for a run folder: the governance store (JOINEDUP_GOVERNANCE_DB, else the
    run's SQLite file), the hub audit key (JOINEDUP_HUB_KEYS_DIR, else <run>/hub/keys) and the
    hub's request-signing key (`request_key`, else <run>/hub/keys/hub_request.pem, created
    for a demo run that has none)."""
    import os

    from governance.access import configured_access
    from governance.audit import AuditLog, generate_hub_key, load_hub_key
    from governance.audit_checkpointer import process_origin
    from governance.audit_keys import load_audit_key
    from governance.consent import SqlConsentRegistry
    from governance.decisions import Governance
    from governance.hub_stage import governance_engine, hub_keys_dir, refresh_consent
    from governance.relationships import SqlRelationshipRegistry
    from linkage.config import HubPaths
    from workspace.accounts import AccountStore, SessionStore
    from workspace.app import Workspace

    paths = HubPaths.for_run(run)
    engine = governance_engine(run)
    consent = SqlConsentRegistry(engine)
    if not consent.has_warehouse_events() and paths.warehouse.exists():
        refresh_consent(engine, paths.warehouse)
    audit = AuditLog(
        engine,
        signing_key=load_audit_key(hub_keys_dir(paths.hub)),
        origin=process_origin("workspace"),
    )
    gov = Governance(
        audit,
        consent,
        SqlRelationshipRegistry(engine),
        access=configured_access(
            engine,
            os.environ.get("JOINEDUP_ASSIGNMENTS"),
            os.environ.get("JOINEDUP_REQUIRE_SIGN_OFF"),
            source="environment",
        ),
    )
    if request_key is not None:
        hub_key = load_hub_key(request_key)
    else:
        key_path = paths.hub / "keys" / "hub_request.pem"
        hub_key = load_hub_key(key_path) if key_path.exists() else generate_hub_key(key_path)
    from workspace.oidc import OidcConfig, OidcSignIn
    from workspace.oidc_pending import PendingSignIns

    oidc_config = OidcConfig.from_env()  # production: the authority's identity provider
    return Workspace(
        paths,
        gov,
        AccountStore(engine),
        SessionStore(engine),
        hub_key,
        dict(bridges or {}),
        secure_cookies=secure_cookies,
        oidc=OidcSignIn(oidc_config, PendingSignIns(engine)) if oidc_config else None,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m workspace",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="serve the workspace")
    s.add_argument("--run", type=Path, default=Path("var/demo"))
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=DEMO_PORT)
    s.add_argument(
        "--bridge",
        action="append",
        default=[],
        metavar="CODE=URL",
        help="an agency's re-identification service",
    )
    s.add_argument(
        "--request-key", type=Path, default=None, help="the hub's Ed25519 request-signing key (PEM)"
    )
    s.add_argument(
        "--insecure-cookies",
        action="store_true",
        help="session cookies without Secure (plain HTTP other than localhost)",
    )
    s.add_argument(
        "--demo",
        action="store_true",
        help="also play the demo agencies, create demo sign-ins, and publish the "
        "warehouse once if the run predates publishing",
    )
    a = sub.add_parser("add-account", help="create or reset a local account")
    a.add_argument("--run", type=Path, default=Path("var/demo"))
    a.add_argument("--user", required=True)
    a.add_argument("--role", required=True)
    a.add_argument("--agency", default=None)
    a.add_argument("--team", default=None)
    args = p.parse_args(argv)
    run = args.run.resolve()
    if args.cmd == "add-account":
        import getpass

        ws = build(run)
        ws.accounts.create(
            args.user, getpass.getpass("password: "), args.role, args.agency, args.team
        )
        return 0
    import uvicorn

    from linkage.config import HubPaths
    from linkage.publish import current, publish
    from workspace.app import create_app

    paths = HubPaths.for_run(run)
    if args.demo and current(paths) is None:  # a demo run linked before the hub published
        if not paths.warehouse.exists():
            print(f"{paths.warehouse}: no hub warehouse (run make demo first)")
            return 1
        publish(paths)
    bridges = dict(b.split("=", 1) for b in args.bridge)
    ws = build(run, bridges, secure_cookies=not args.insecure_cookies, request_key=args.request_key)
    if args.demo:
        urls, _servers = start_demo_bridges(run, paths.hub / "keys" / "hub_request.pub")
        ws.bridges.update(urls)
        seed_demo_accounts(ws.accounts, run)
        print("\n".join(demo_next_steps(run, args.port)))
    uvicorn.run(create_app(ws), host=args.host, port=args.port, log_level="warning")
    return 0
