"""Play the partnership's parties for demos, DAGs and tests: provision every bridge's keys.

In production each step is a person at a different organisation running `joinedup-bridge keys`:
the partnership lead creates ONE linkage key and sends it, wrapped under a passphrase, to every
agency's data officer, who imports it; each agency creates its own record-ref and signing keys
and sends its public key to the hub; the hub creates its sealing key pair and every agency
imports the hub's public sealing key (batches land sealed to it). This module does the same
with the same library calls, for a run folder laid out as docs/contracts.md says.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import yaml

from ig_bridge.keys import KeyStore, LinkKey, save_key, wrap_link_key
from ig_bridge.reid_controls import AgreedProtocols, agree_protocol, protocol_document_sha256
from ig_bridge.sealing import (
    create_hub_sealing_key,
    export_hub_public_key,
    hub_key_versions,
    import_hub_public_key,
)

PARTNERSHIP_DIR = "partnership"
IG_LEAD_TRUSTED_KEYS = "ig_lead/trusted_keys"  # the IG lead's copy of the hub audit public key


def provision_hub_audit_key(run_dir: Path) -> Path:
    """The hub's audit-signing key (run_dir/hub/keys, 0600) and its public record in the IG
    lead's folder (run_dir/ig_lead/trusted_keys), as `python -m governance.audit keygen` does.
    Idempotent: an existing key is kept (and its record given to the IG lead again)."""
    from governance.audit_keys import create_audit_key, export_public_record, load_audit_key

    keys = Path(run_dir) / "hub" / "keys"
    existing = sorted(keys.glob("audit_signing.v*.json")) if keys.is_dir() else []
    key = load_audit_key(keys) if existing else create_audit_key(keys)
    keys.chmod(0o700)
    return export_public_record(key, Path(run_dir) / IG_LEAD_TRUSTED_KEYS)


PROTOCOLS_DIR = Path(__file__).resolve().parent.parent / "schemas" / "protocols"


def agree_partnership_protocols(
    run_dir: Path, agencies: list[str], protocols_dir: Path = PROTOCOLS_DIR
) -> None:
    """Each agency's IG lead agrees the partnership protocols that name the agency (what
    `joinedup-bridge protocols agree` does): `run_dir/agency/<CODE>/agreed_protocols.yaml`,
    read by the agency's re-identification service. Protocols already agreed as they stand
    are left alone."""
    for code in dict.fromkeys(agencies):
        adir = Path(run_dir) / "agency" / code
        agreed = AgreedProtocols.load(adir, code).protocols
        for path in sorted(protocols_dir.glob("*.yaml")):
            doc = yaml.safe_load(path.read_text("utf-8")) or {}
            if code not in (doc.get("agencies") or {}):
                continue
            have = agreed.get(str(doc.get("id")))
            if have is None or have.sha256 != protocol_document_sha256(path):
                agree_protocol(adir, code, path, agreed_by=f"ig.lead.{code.lower()}")


def _existing_link_key(stores: list[KeyStore], lead: KeyStore) -> LinkKey | None:
    """The partnership key already held by any bridge (all holders must agree)."""
    found: dict[str, LinkKey] = {}
    for store in [lead, *stores]:
        if store.versions("link"):
            key = store.link_key()
            found[key.key_check] = key
    if len(found) > 1:
        raise ValueError(
            "bridges hold different partnership linkage keys (key checks "
            f"{sorted(found)}); re-provision the run folder from scratch"
        )
    return next(iter(found.values()), None)


def provision_partnership(
    run_dir: Path, agencies: list[str], passphrase: str | None = None
) -> dict[str, Path]:
    """Keys for every agency of a run: `{code: run_dir/agency/<CODE>/keys}`.

    Creates one linkage key (kept by the lead under `run_dir/partnership/keys`), exports it
    wrapped under `passphrase` to `run_dir/partnership/link_key.v<N>.wrapped.json` (a random
    one-off passphrase when none is given) and imports it into every agency's KeyStore; creates
    each agency's ref and signing keys; writes each public key to `run_dir/hub/public_keys/`;
    creates the hub's audit-signing key and gives its public record to the IG lead
    (`provision_hub_audit_key`); has each agency agree the protocols that name it
    (agree_partnership_protocols); creates the hub's sealing key pair in `run_dir/hub/keys/`
    (private, 0600), publishes its public record as `run_dir/hub/hub_sealing_key.v<N>.json` and
    imports it into every bridge. Idempotent: existing keys are kept, missing ones added.
    """
    run_dir = Path(run_dir)
    codes = list(dict.fromkeys(agencies))
    stores = [KeyStore(run_dir / "agency" / c / "keys", c) for c in codes]
    lead_dir = run_dir / PARTNERSHIP_DIR
    lead = KeyStore(lead_dir / "keys", "LEAD")
    link = _existing_link_key(stores, lead)
    if link is None:
        link = lead.create_link_key()
    elif not lead.versions("link"):
        save_key(link, lead.directory / f"link_key.v{link.version}.json")
    pending = [s for s in stores if link.version not in s.versions("link")]
    if pending:
        phrase = passphrase or secrets.token_urlsafe(18)
        wrapped = lead_dir / f"link_key.v{link.version}.wrapped.json"
        blob = wrap_link_key(link, phrase)
        wrapped.unlink(missing_ok=True)
        wrapped.parent.mkdir(parents=True, exist_ok=True)
        wrapped.write_bytes(blob)
        wrapped.chmod(0o600)
        for store in pending:
            imported = store.import_link_key(wrapped.read_bytes(), phrase)
            if imported.key_check != link.key_check:  # the transfer itself went wrong
                raise ValueError(f"{store.directory}: imported link key check differs")
    hub_keys = run_dir / "hub" / "keys"
    if not hub_key_versions(hub_keys):
        create_hub_sealing_key(hub_keys)
    hub_public = export_hub_public_key(hub_keys, run_dir / "hub")
    public = run_dir / "hub" / "public_keys"
    out: dict[str, Path] = {}
    for code, store in zip(codes, stores, strict=True):
        if not store.versions("ref"):
            store.create_ref_key()
        if not store.versions("signing"):
            store.create_signing_key()
        import_hub_public_key(store.directory, hub_public.read_bytes())
        store.directory.chmod(0o700)
        for v in store.versions("signing"):
            store.export_public_key(public, v)
        out[code] = store.directory
    provision_hub_audit_key(run_dir)
    agree_partnership_protocols(run_dir, codes)
    return out
