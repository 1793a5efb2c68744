"""Sealed, atomic landing: a batch becomes visible at the hub all at once or not at all, and
only the hub can read it.

The bridge writes a batch in plaintext into a private folder of its own (`sealed_batch`, under
the agency's working folder, 0700). On a clean exit every file is sealed to the hub's public
key (ig_bridge.sealing) into a hidden temp folder of the landing zone, fsynced, and the folder
is renamed to `landing/<CODE>/<batch_id>/` (rename is atomic within a filesystem); the
plaintext is then removed. A crash mid-write leaves only a `.tmp-*` folder, which the hub
ignores and the next run removes. Nothing readable ever reaches the landing zone.

`landing/<CODE>/` is created mode 1733 (sticky, write + search for others, no listing): an
agency's writer can drop a batch but cannot list or read what others dropped. The real control
is that every landed file is sealed (and per-agency volumes in docker-compose.yml).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ig_bridge.sealing import HubPublicKey, seal_file, sealed_name

TMP_PREFIX = ".tmp-"
PLAIN_PREFIX = ".plain-"
DROP_MODE = 0o1733  # sticky, no read for others: write and search, never list
BATCH_DIR_MODE = 0o755  # sealed files only: the hub (another account in production) reads them
SEALED_FILE_MODE = 0o644


class LandingError(Exception):
    pass


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def drop_area(landing_dir: Path | str, agency: str) -> Path:
    """`landing/<CODE>/`, created write-but-not-list (mode 1733) when it does not exist."""
    d = Path(landing_dir) / agency
    if not d.is_dir():
        d.parent.mkdir(parents=True, exist_ok=True)
        try:
            d.mkdir(mode=0o700)
            d.chmod(DROP_MODE)  # independent of umask
        except FileExistsError:
            pass
    return d


@contextmanager
def staged_batch(landing_dir: Path | str, agency: str, batch_id: str) -> Iterator[Path]:
    """Yield a temp folder in the landing zone to put SEALED files into; on clean exit rename
    it into place. Use `sealed_batch` to write a batch: this is its last step."""
    agency_dir = drop_area(landing_dir, agency)
    final = agency_dir / batch_id
    if final.exists():
        raise LandingError(f"batch {batch_id} already landed for {agency}")
    try:
        stale = list(agency_dir.glob(f"{TMP_PREFIX}*"))
    except PermissionError:  # a drop area this account may not list
        stale = []
    for s in stale:
        shutil.rmtree(s, ignore_errors=True)  # left by an earlier crash
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{batch_id}-", dir=agency_dir))
    try:
        yield tmp
        for f in tmp.iterdir():
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
            f.chmod(SEALED_FILE_MODE)
        tmp.chmod(BATCH_DIR_MODE)
        os.rename(tmp, final)
        _fsync_dir(agency_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def seal_into(
    plain_dir: Path, dest: Path, hub_key: HubPublicKey, agency: str, batch_id: str
) -> None:
    """Seal every file of `plain_dir` into `dest` as `<name>.sealed`."""
    for f in sorted(plain_dir.iterdir()):
        if not f.is_file() or f.is_symlink():
            raise LandingError(f"{f}: batch folders hold regular files only")
        seal_file(f, dest / sealed_name(f.name), hub_key, agency=agency, batch_id=batch_id)


@contextmanager
def sealed_batch(
    landing_dir: Path | str, agency: str, batch_id: str, hub_key: HubPublicKey, work_dir: Path | str
) -> Iterator[Path]:
    """Yield a private plaintext folder (under `work_dir`, 0700) to write the batch into. On
    clean exit the files are sealed to `hub_key` and landed atomically as
    `landing/<CODE>/<batch_id>/<name>.sealed`; the plaintext is removed either way."""
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True, mode=0o700)
    plain = Path(tempfile.mkdtemp(prefix=f"{PLAIN_PREFIX}{batch_id}-", dir=work))  # 0700
    try:
        yield plain
        with staged_batch(landing_dir, agency, batch_id) as tmp:
            seal_into(plain, tmp, hub_key, agency, batch_id)
    finally:
        shutil.rmtree(plain, ignore_errors=True)


def land_sealed_batch(src: Path | str, landing_dir: Path | str, agency: str, batch_id: str) -> Path:
    """Copy an already sealed batch (a bridge's outbox) into the landing zone atomically. Safe
    to retry: an identical batch already landed is success; a different one is refused."""
    src = Path(src)
    final = Path(landing_dir) / agency / batch_id
    manifest = sealed_name("manifest.json")
    if final.exists():
        if src.exists() and (final / manifest).read_bytes() != (src / manifest).read_bytes():
            raise LandingError(f"landing {final} holds a different batch with id {batch_id}")
    else:
        with staged_batch(landing_dir, agency, batch_id) as tmp:
            for f in sorted(src.iterdir()):
                if not f.name.endswith(".sealed") or not f.is_file() or f.is_symlink():
                    raise LandingError(f"{f}: only sealed files land")
                shutil.copyfile(f, tmp / f.name)
    if src.exists():
        shutil.rmtree(src)
    return final


def landed_batches(landing_dir: Path | str, agency: str) -> list[Path]:
    """Complete batches only (temp folders are never listed)."""
    d = Path(landing_dir) / agency
    if not d.exists():
        return []
    return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(TMP_PREFIX))
