"""What the bridge reads from the agency's folder before it makes a batch: its own keys, the
hub's public sealing key, and the batch sequence (state.json)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ig_bridge.keys import KeyFileError, KeyStore
from ig_bridge.sealing import HubKeyMissing, HubPublicKey, bridge_hub_key


class BridgeKeysMissing(Exception):  # noqa: N818 - reads as what the data officer must fix
    """The agency's key directory lacks a key the bridge needs; nothing was written."""


@dataclass
class _Keys:
    link: object
    ref: object
    signing: object


def load_bridge_keys(agency_dir: Path, code: str, link_key_version: int | None = None) -> _Keys:
    """The bridge's current keys (the newest link key unless a version is asked for: K_link
    rotation). Never creates the partnership link key: every bridge must hold the SAME one, so
    a bridge that made its own would silently link nothing."""
    store = KeyStore(agency_dir / "keys", code)
    if not store.versions("link"):
        raise BridgeKeysMissing(
            f"{store.directory}: no partnership linkage key for {code}. Import the key the "
            "partnership lead sent you: joinedup-bridge keys import-link-key --agency-dir "
            f"{agency_dir} --agency {code} --file <wrapped key file>"
        )
    missing = [k for k in ("ref", "signing") if not store.versions(k)]
    if missing:
        raise BridgeKeysMissing(
            f"{store.directory}: no {' or '.join(missing)} key for {code}. Create them with: "
            f"joinedup-bridge keys init --agency-dir {agency_dir} --agency {code}, and send the "
            "public key (keys show-public) to the hub"
        )
    try:
        return _Keys(store.link_key(link_key_version), store.ref_key(), store.signing_key())
    except KeyFileError as exc:
        raise BridgeKeysMissing(str(exc)) from None


def load_hub_key(agency_dir: Path) -> HubPublicKey:
    """The hub's public sealing key the agency imported: without it nothing lands."""
    try:
        return bridge_hub_key(agency_dir / "keys")
    except (HubKeyMissing, KeyFileError) as exc:
        raise BridgeKeysMissing(str(exc)) from None


def _next_sequence(agency_dir: Path, code: str) -> int:
    state = agency_dir / "state.json"
    data = json.loads(state.read_text()) if state.exists() else {}
    return int(data.get(code, {}).get("sequence", 0)) + 1


def _save_sequence(agency_dir: Path, code: str, seq: int, batch_id: str) -> None:
    state = agency_dir / "state.json"
    data = json.loads(state.read_text()) if state.exists() else {}
    data[code] = {"sequence": seq, "last_batch_id": batch_id}
    tmp = state.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, state)
