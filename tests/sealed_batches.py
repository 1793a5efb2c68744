"""Test helpers for sealed batches: open a landed batch with the hub's private key (as only the
hub can), or seal a plaintext batch folder to the hub (as any landing writer can, since the
hub's sealing key is public). Tests that forge batches work on plaintext, then seal it."""

from __future__ import annotations

from pathlib import Path

from ig_bridge.sealing import (
    SEALED_SUFFIX,
    HubPublicKey,
    load_hub_sealing_keys,
    seal_file,
    unseal_stream,
)


def hub_keys_dir(landed: Path) -> Path:
    """run/hub/keys for a batch at run/landing/<CODE>/<batch> (or run/rekey_landing/...)."""
    return landed.parents[2] / "hub" / "keys"


def hub_public(keys_dir: Path) -> HubPublicKey:
    keys = load_hub_sealing_keys(keys_dir)
    return max(keys.values(), key=lambda k: k.version).public_key()


def open_batch(landed: Path, dest: Path, keys_dir: Path | None = None) -> Path:
    """Unseal every file of a landed batch into `dest` (plaintext names)."""
    keys = load_hub_sealing_keys(keys_dir or hub_keys_dir(landed))
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted(landed.iterdir()):
        assert f.name.endswith(SEALED_SUFFIX), f"{f.name}: not sealed"
        plain = f.name[: -len(SEALED_SUFFIX)]
        with f.open("rb") as src, (dest / plain).open("wb") as dst:
            unseal_stream(src, dst, keys, agency=landed.parent.name, batch_id=landed.name,
                          file_name=plain)
    return dest


def unseal_in_place(landed: Path, keys_dir: Path | None = None) -> None:
    """Replace a landed batch's sealed files by their plaintext (to tamper with them)."""
    tmp = landed.with_name(landed.name + ".opening")
    open_batch(landed, tmp, keys_dir)
    for f in landed.iterdir():
        f.unlink()
    for f in tmp.iterdir():
        f.rename(landed / f.name)
    tmp.rmdir()


def seal_in_place(batch: Path, hub_key: HubPublicKey) -> None:
    """Seal every plaintext file of a batch folder to the hub, as a bridge (or any landing
    writer) would; folder names give the agency and batch id bound into each file."""
    for f in sorted(batch.iterdir()):
        if f.is_file() and not f.name.endswith(SEALED_SUFFIX):
            seal_file(f, f.with_name(f.name + SEALED_SUFFIX), hub_key,
                      agency=batch.parent.name, batch_id=batch.name)
            f.unlink()
