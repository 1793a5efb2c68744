"""Test helpers for sealed batches: open a landed batch with the hub's private key (as only the
hub can), or seal a plaintext batch folder to the hub (as any landing writer can, since the
hub's sealing key is public). Tests that forge batches work on plaintext (the agency's own
batch, re-signed with its real key), then seal it: `open_landing`, forge, `ingest_sealed`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
            unseal_stream(
                src, dst, keys, agency=landed.parent.name, batch_id=landed.name, file_name=plain
            )
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
            seal_file(
                f,
                f.with_name(f.name + SEALED_SUFFIX),
                hub_key,
                agency=batch.parent.name,
                batch_id=batch.name,
            )
            f.unlink()


def open_landing(landing: Path, keys_dir: Path) -> None:
    """Every landed batch (landing/<CODE>/<batch>) back to plaintext, to be forged."""
    for b in sorted(landing.glob("*/*")):
        unseal_in_place(b, keys_dir)


def seal_landing(landing: Path, keys_dir: Path) -> list[Path]:
    """Seal every batch folder under `landing` (any folder name) that holds plaintext files
    to the hub's public key, bound to the folder it sits in: what any landing writer can do.
    Sub-folders and already sealed files are left as they are."""
    key = hub_public(keys_dir)
    sealed = []
    for b in sorted(landing.glob("*/*")):
        if (
            b.is_dir()
            and not b.is_symlink()
            and any(f.is_file() and not f.name.endswith(SEALED_SUFFIX) for f in b.iterdir())
        ):
            seal_in_place(b, key)
            sealed.append(b)
    return sealed


def ingest_sealed(paths: Any, **kw: Any) -> Any:
    """Seal whatever plaintext batch a test left in the landing zone, then ingest
    (`paths`: linkage.config.HubPaths; returns linkage.ingest.IngestReport)."""
    from linkage.ingest import ingest_landing

    seal_landing(paths.landing, paths.keys)
    return ingest_landing(paths, **kw)


def warehouse_rows(run: Path, sql: str, params: list | None = None) -> list[tuple]:
    """Rows of a query on a run's warehouse, opened read-only (what the attack tests assert on)."""
    import duckdb

    from linkage.config import HubPaths

    con = duckdb.connect(str(HubPaths.for_run(run).warehouse), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()
