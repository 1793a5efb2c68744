"""Atomic landing: a batch becomes visible at the hub all at once or not at all.

Files are written into a hidden temp folder on the same filesystem as the landing zone, fsynced,
then the folder is renamed to `landing/<CODE>/<batch_id>/` (rename is atomic within a
filesystem). A crash mid-write leaves only a `.tmp-*` folder, which readers ignore and the next
run removes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_PREFIX = ".tmp-"


class LandingError(Exception):
    pass


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def staged_batch(landing_dir: Path | str, agency: str, batch_id: str) -> Iterator[Path]:
    """Yield a temp folder to write the batch into; on clean exit rename it into place."""
    agency_dir = Path(landing_dir) / agency
    agency_dir.mkdir(parents=True, exist_ok=True)
    final = agency_dir / batch_id
    if final.exists():
        raise LandingError(f"batch {batch_id} already landed for {agency}")
    for stale in agency_dir.glob(f"{TMP_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by an earlier crash
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{batch_id}-", dir=agency_dir))
    try:
        yield tmp
        for f in tmp.iterdir():
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
        os.rename(tmp, final)
        _fsync_dir(agency_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def landed_batches(landing_dir: Path | str, agency: str) -> list[Path]:
    """Complete batches only (temp folders are never listed)."""
    d = Path(landing_dir) / agency
    if not d.exists():
        return []
    return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(TMP_PREFIX))
