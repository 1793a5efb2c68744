"""Custody: the hub takes every landed batch into hub-private storage before it looks at it.

The landing zone is written by others (every agency's bridge, and whoever else can reach it),
so nothing under it is followed, moved or written through. The scan works on directory file
descriptors only: the landing root is opened once, every agency folder and batch folder below
it with O_DIRECTORY | O_NOFOLLOW relative to its parent's fd (so a symlink, or a folder
swapped for one mid-scan, fails to open instead of leading elsewhere), and each file with
O_NOFOLLOW | O_NONBLOCK and checked on the open fd: a regular file, the very inode that was
listed, one link only (no hard link to a hub file), under a size cap, with a known name.

Each file is unsealed (ig_bridge.sealing) straight from that fd into
`hub/incoming/<CODE>/<batch_id>/` (dirs 0700, files 0600): a folder only the hub can write.
Signature, checksums and contract are then verified on that copy and the load reads that same
copy, so the bytes verified are the bytes loaded, whatever happens in the landing zone
meanwhile. The landed batch is then removed (unlink/rmdir through the parent's fd, never
following). An item that is not a well-formed sealed batch is refused with a reason and
removed the same way, or left in place and ignored when it cannot be removed safely; it never
blocks another agency's batches. Inside an agency folder, names starting with '.' (bridges'
temp folders) are ignored, never opened.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ig_bridge.manifest import MANIFEST_NAME
from ig_bridge.sealing import HubSealingKey, SealError, sealed_name, unseal_stream

log = logging.getLogger(__name__)

AGENCY_NAME = re.compile(r"^[A-Z]{2,8}$")
BATCH_NAME = re.compile(r"^[A-Z]{2,8}-[A-Za-z0-9-]{1,100}$")  # no dots, no slashes
EXTRACT_FILES = frozenset(
    {MANIFEST_NAME, "identifiers.parquet", "related.parquet", "payload.parquet", "present.parquet"}
)
MAX_MANIFEST_BYTES = 1 << 20
MAX_FILE_BYTES = int(os.environ.get("JOINEDUP_MAX_BATCH_FILE_BYTES", str(8 << 30)))
_SEAL_OVERHEAD = 4096  # header + sealed key + per-chunk tags stay far below this per MiB
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass
class CustodyRefusal:
    """A landed item the hub refused before reading anything from it."""

    agency: str  # the agency folder, or "-" for an item at the landing root
    item: str  # the batch id, or a digest label for a name that is not one
    reason_code: str
    detail: str
    removed: bool


@dataclass
class Custody:
    taken: list[tuple[str, Path]] = field(default_factory=list)  # (agency, hub-private dir)
    refused: list[CustodyRefusal] = field(default_factory=list)
    left: list[str] = field(default_factory=list)  # landed batches skipped this round


class _Refused(Exception):  # noqa: N818 - internal signal, becomes a CustodyRefusal
    def __init__(self, reason_code: str, detail: str) -> None:
        super().__init__(reason_code)
        self.reason_code = reason_code
        self.detail = detail


def label(name: str) -> str:
    """A name fit for records and logs: agency codes and batch ids as they are, anything else
    (it may be whatever a writer chose, even a person's name) as a digest."""
    if AGENCY_NAME.match(name) or BATCH_NAME.match(name):
        return name
    return "item-" + hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def _kind(st: os.stat_result) -> str:
    m = st.st_mode
    for test, name in (
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISDIR, "folder"),
        (stat.S_ISREG, "file"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(m):
            return name
    return "special file"


def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _open_dir(name: str, dir_fd: int, st: os.stat_result) -> int:
    """Open a listed folder without following anything; it must be the inode listed."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        raise _Refused(
            "not_a_folder",
            f"cannot be opened as a folder without following links ({exc.__class__.__name__})",
        ) from None
    fst = os.fstat(fd)
    if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise _Refused("changed_during_scan", "replaced between listing and opening")
    return fd


def _listdir(fd: int) -> list[str]:
    with os.scandir(fd) as it:
        return sorted(e.name for e in it)


def remove_item(name: str, dir_fd: int) -> bool:
    """Remove `name` itself from the folder `dir_fd`: unlink a non-folder (a symlink is
    removed, never followed), remove a folder with the fd-based rmtree (which refuses
    symlinks and never leaves the tree). False when it cannot be removed safely."""
    st = _lstat(name, dir_fd)
    if st is None:
        return True
    try:
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)
    except OSError as exc:
        log.warning("landed item %s left in place: %s", label(name), exc.__class__.__name__)
        return False
    return True


def _private_opener(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_CLOEXEC, 0o600)


def _check_file(bfd: int, name: str, plain_name: str) -> tuple[os.stat_result, int]:
    """lstat checks of one listed batch file, before anything is opened: (stat, cap)."""
    cap = MAX_MANIFEST_BYTES if plain_name == MANIFEST_NAME else MAX_FILE_BYTES
    st = _lstat(name, bfd)
    if st is None:
        raise _Refused("missing_file", f"{plain_name} vanished during custody")
    if not stat.S_ISREG(st.st_mode):
        raise _Refused("not_regular_file", f"{name} is a {_kind(st)}")
    if st.st_nlink != 1:
        raise _Refused("hard_link", f"{name} has {st.st_nlink} links")
    if st.st_size > cap + _SEAL_OVERHEAD + (cap >> 20) * 17 + 17:
        raise _Refused("too_large", f"{name} is over the {cap}-byte cap")
    return st, cap


def _unseal_file(
    bfd: int,
    name: str,
    dest: Path,
    hub_keys: Mapping[str, HubSealingKey],
    agency: str,
    batch_id: str,
    plain_name: str,
) -> None:
    st, cap = _check_file(bfd, name, plain_name)
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=bfd)
    except OSError as exc:
        raise _Refused(
            "not_regular_file",
            f"{name} cannot be opened without following links ({exc.__class__.__name__})",
        ) from None
    fst = os.fstat(fd)
    if (
        not stat.S_ISREG(fst.st_mode)
        or (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino)
        or fst.st_nlink != 1
    ):
        os.close(fd)
        raise _Refused("changed_during_scan", f"{name} was replaced while being opened")
    os.set_blocking(fd, True)
    with (
        os.fdopen(fd, "rb", buffering=1 << 20) as src,
        open(dest, "xb", opener=_private_opener) as dst,
    ):
        try:
            unseal_stream(
                src,
                dst,
                hub_keys,
                agency=agency,
                batch_id=batch_id,
                file_name=plain_name,
                max_bytes=cap,
            )
        except SealError as exc:
            raise _Refused(exc.reason_code, exc.detail) from None
        dst.flush()
        os.fsync(dst.fileno())


def _take_batch(
    afd: int,
    agency: str,
    name: str,
    st: os.stat_result,
    incoming: Path,
    hub_keys: Mapping[str, HubSealingKey],
    files: Collection[str],
) -> Path | None:
    """Unseal one landed batch into incoming/<CODE>/<batch>/; None when a batch of that name
    is already waiting there (this one is taken on a later run)."""
    if not stat.S_ISDIR(st.st_mode):
        raise _Refused("not_a_folder", f"a batch must be a folder, this is a {_kind(st)}")
    if not BATCH_NAME.match(name):
        raise _Refused("bad_name", "not a batch id")
    bfd = _open_dir(name, afd, st)
    try:
        entries = _listdir(bfd)
        expected = {sealed_name(f): f for f in files}
        unknown = [e for e in entries if e not in expected]
        if unknown:
            raise _Refused(
                "unexpected_file",
                f"{len(unknown)} item(s) not named as a sealed "
                "batch file: " + ", ".join(sorted(label(u) for u in unknown)[:5]),
            )
        if sealed_name(MANIFEST_NAME) not in entries:
            raise _Refused("manifest_missing", f"no {sealed_name(MANIFEST_NAME)}")
        parent = incoming / agency
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        final = parent / name
        if final.exists():
            return None
        for e in entries:  # every file looks right before any is opened
            _check_file(bfd, e, expected[e])
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=parent))  # 0700
        try:
            for e in entries:
                _unseal_file(bfd, e, tmp / expected[e], hub_keys, agency, name, expected[e])
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # nothing half-taken stays at the hub
            raise
        return final
    finally:
        os.close(bfd)


def take_custody(
    landing: Path,
    incoming: Path,
    hub_keys: Mapping[str, HubSealingKey],
    *,
    files: Collection[str] = EXTRACT_FILES,
    only: Collection[tuple[str, str]] | None = None,
) -> Custody:
    """Take every landed batch (or only the given (agency, batch) pairs) into `incoming`.

    Returns the hub-private batch folders taken and the items refused. Removes what it took
    or refused from the landing zone. Never raises for anything a landing writer planted.
    """
    out = Custody()
    if not hub_keys:
        from ig_bridge.sealing import HubKeyMissing

        raise HubKeyMissing("the hub holds no sealing key: nothing landed can be opened")
    incoming.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in incoming.glob("*/.tmp-*"):  # a custody cut short by a crash: start again
        shutil.rmtree(stale, ignore_errors=True)
    try:
        root = os.open(landing, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return out
    wanted = {a for a, _ in only} if only is not None else None
    try:
        for aname in _listdir(root):
            if wanted is not None and aname not in wanted:
                continue
            ast = _lstat(aname, root)
            if ast is None:
                continue
            if not AGENCY_NAME.match(aname) or not stat.S_ISDIR(ast.st_mode):
                why = (
                    "not an agency code"
                    if AGENCY_NAME.match(aname) is None
                    else f"a {_kind(ast)}, not a folder"
                )
                out.refused.append(
                    CustodyRefusal(
                        "-",
                        label(aname),
                        "landing_item_refused",
                        f"landing root item: {why}",
                        remove_item(aname, root),
                    )
                )
                continue
            try:
                afd = _open_dir(aname, root, ast)
            except _Refused as exc:
                out.refused.append(CustodyRefusal("-", aname, exc.reason_code, exc.detail, False))
                continue
            try:
                _take_agency(afd, aname, incoming, hub_keys, files, only, out)
            finally:
                os.close(afd)
    finally:
        os.close(root)
    return out


def _take_agency(
    afd: int,
    agency: str,
    incoming: Path,
    hub_keys: Mapping[str, HubSealingKey],
    files: Collection[str],
    only: Collection[tuple[str, str]] | None,
    out: Custody,
) -> None:
    for name in _listdir(afd):
        if name.startswith(".") or (only is not None and (agency, name) not in only):
            continue
        st = _lstat(name, afd)
        if st is None:
            continue
        try:
            taken = _take_batch(afd, agency, name, st, incoming, hub_keys, files)
        except _Refused as exc:
            removed = remove_item(name, afd)
            out.refused.append(
                CustodyRefusal(agency, label(name), exc.reason_code, exc.detail, removed)
            )
            log.warning("refused landed item %s/%s: %s", agency, label(name), exc.reason_code)
            continue
        if taken is None:
            out.left.append(f"{agency}/{name}")
            continue
        remove_item(name, afd)
        out.taken.append((agency, taken))


def hub_private_batches(incoming: Path) -> list[tuple[str, Path]]:
    """(agency, folder) for every batch in hub custody, unordered. The hub wrote these."""
    out: list[tuple[str, Path]] = []
    if not incoming.is_dir():
        return out
    for adir in sorted(incoming.iterdir()):
        if adir.is_dir() and not adir.is_symlink() and AGENCY_NAME.match(adir.name):
            out.extend(
                (adir.name, b)
                for b in sorted(adir.iterdir())
                if b.is_dir() and not b.name.startswith(".")
            )
    return out


def record_refusals(refused_root: Path, refusals: list[CustodyRefusal]) -> list[Path]:
    """`refused/<CODE or _landing>/<item>/refusal.json` for each refusal (no content is kept:
    the hub never read any). linkage.batch_store.record_custody_refusals also lists them in
    the refused_batch table."""
    written = []
    for r in refusals:
        d = refused_root / (r.agency if AGENCY_NAME.match(r.agency) else "_landing") / r.item
        n = 1
        while d.exists():
            d = d.with_name(f"{r.item}.{n}")
            n += 1
        d.mkdir(parents=True, mode=0o700)
        doc = {
            "batch_id": r.item,
            "agency": r.agency,
            "reason_code": r.reason_code,
            "detail": r.detail,
            "stage": "custody",
            "removed_from_landing": r.removed,
            "manifest_kept": False,
            "refused_at": datetime.now(UTC).isoformat(),
        }
        (d / "refusal.json").write_text(json.dumps(doc, indent=1), "utf-8")
        written.append(d)
    return written


def main(argv: list[str] | None = None) -> int:
    """`python -m linkage.custody init-key --hub-dir <hub>`: the hub's sealing key pair (the
    next version, private file 0600 in <hub>/keys/) and its public record for the bridges."""
    import argparse

    from ig_bridge.sealing import create_hub_sealing_key, export_hub_public_key

    p = argparse.ArgumentParser(prog="python -m linkage.custody")
    p.add_argument("action", choices=["init-key"])
    p.add_argument("--hub-dir", type=Path, required=True)
    a = p.parse_args(argv)
    key = create_hub_sealing_key(a.hub_dir / "keys")
    record = export_hub_public_key(a.hub_dir / "keys", a.hub_dir)
    pub = key.public_key()
    print(
        f"created {key.key_id} (fingerprint {pub.fingerprint}); send {record} to every "
        "bridge: joinedup-bridge keys import-hub-key --file <it>"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
