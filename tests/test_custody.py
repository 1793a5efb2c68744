"""The landing zone attacks the hub (issue #15, items 1, 2 and the sealing refusals of 6).

Each test plants what a landing-zone writer can plant (symlinks into the hub, hard links to
hub files, FIFOs, names with '..', files sealed for another key or swapped from another batch,
truncated streams, a payload swapped while ingest runs) next to real sealed batches of two
other agencies, runs the hub's real ingest (or re-keying) over the real landing folder, and
checks: the attack is refused with its reason, the hub's own folders and keys are byte for byte
what they were, nothing of the attack reached the warehouse, and the good batches loaded.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from nacl.public import PrivateKey
from sealed_batches import hub_public, open_batch
from sealed_batches import warehouse_rows as _q

from ig_bridge.sealing import HubSealingKey, seal_file
from linkage.config import HubPaths
from linkage.ingest import ingest_landing

GOOD = ("GP", "HSG")  # agencies whose real batches must still load next to each attack


@pytest.fixture()
def run(orchestrated_run: Path, copy_run, tmp_path: Path) -> Path:
    """A copy of the orchestrated run, its landing zone trimmed to GP's and HSG's sealed batch,
    with a marts file and a report in the hub (the hub's own data an attack must not move)."""
    r = copy_run(orchestrated_run, tmp_path / "run")
    for d in (r / "landing").iterdir():
        if d.name not in GOOD:
            shutil.rmtree(d)
    paths = HubPaths.for_run(r).ensure()
    (paths.marts / "analyst.duckdb").write_bytes(b"hub marts")
    (paths.reports / "report.html").write_bytes(b"hub report")
    return r


def _batch(run: Path, agency: str) -> Path:
    (b,) = [p for p in (run / "landing" / agency).iterdir() if not p.name.startswith(".")]
    return b


def _hub_state(hub: Path) -> dict[str, str]:
    """Every file of the hub's own folders (keys, public keys, marts, reports) by digest."""
    out = {}
    for part in ("keys", "public_keys", "marts", "reports"):
        for p in sorted((hub / part).rglob("*")):
            assert not p.is_symlink()
            if p.is_file():
                out[str(p.relative_to(hub))] = hashlib.sha256(p.read_bytes()).hexdigest()
    for p in hub.glob("hub_sealing_key.v*.json"):
        out[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _check_after(run: Path, report, before: dict[str, str], good: dict[str, str]) -> None:
    """The hub's folders intact and real (no symlink, nothing of them moved to refused/), the
    good batches accepted and loaded, nothing left in custody, no plaintext anywhere but the
    hub's own folders."""
    hub = run / "hub"
    assert _hub_state(hub) == before
    for part in ("keys", "public_keys", "marts", "reports", "ingested", "refused", "incoming"):
        assert (hub / part).is_dir() and not (hub / part).is_symlink()
    for p in (hub / "refused").rglob("*"):
        assert p.name not in ("public_keys", "keys", "marts", "ingested", "reports")
        assert not p.is_symlink()
    status = {o.batch_id: o.status for o in report.outcomes}
    for agency, batch_id in good.items():
        assert status[batch_id] == "accepted", report.outcomes
        assert _q(run, "SELECT count(*) FROM identifiers WHERE batch_id = ?", [batch_id])[0][0] > 0
        assert (hub / "ingested" / agency / batch_id / "manifest.json").is_file()
    assert not [p for p in (hub / "incoming").rglob("*") if p.is_file()]


def _refused(report, code: str | tuple[str, ...]) -> list:
    codes = (code,) if isinstance(code, str) else code
    return [o for o in report.outcomes if o.status == "refused" and o.reason_code in codes]


def _recorded(run: Path, code: str) -> int:
    return _q(run, "SELECT count(*) FROM refused_batch WHERE reason_code = ?", [code])[0][0]


def _prepare(run: Path) -> tuple[dict[str, str], dict[str, str]]:
    good = {a: _batch(run, a).name for a in GOOD}
    return _hub_state(run / "hub"), good


# -- item 1: symlinks, hard links, special files, names ----------------------------------------


def test_symlink_agency_folder_to_hub_dir_moves_nothing(run: Path) -> None:
    """landing/ZZ -> hub/: ingest used to 'refuse' public_keys/, keys/, ingested/, marts/ by
    moving them into refused/. Now the link is refused and removed, never followed."""
    before, good = _prepare(run)
    (run / "landing" / "ZZ").symlink_to(run / "hub", target_is_directory=True)
    (run / "landing" / "YY").symlink_to(run / "hub" / "public_keys", target_is_directory=True)
    report = ingest_landing(HubPaths.for_run(run))
    assert len(_refused(report, "landing_item_refused")) == 2
    assert not os.path.lexists(run / "landing" / "ZZ")
    assert not os.path.lexists(run / "landing" / "YY")
    assert _recorded(run, "landing_item_refused") == 2
    _check_after(run, report, before, good)


def test_symlink_batch_into_public_keys_does_not_break_later_ingests(run: Path) -> None:
    """A 'batch' that is a symlink into the hub's public_keys/ (or keys/): refused, removed,
    the hub's key folders untouched, and the next ingest works."""
    before, good = _prepare(run)
    gp = run / "landing" / "GP"
    (gp / "GP-000099-20250101T000000Z-aaaaaa").symlink_to(run / "hub" / "public_keys")
    (gp / "GP-000098-20250101T000000Z-bbbbbb").symlink_to(run / "hub" / "keys")
    report = ingest_landing(HubPaths.for_run(run))
    assert len(_refused(report, "not_a_folder")) == 2
    assert sorted(p.name for p in gp.iterdir()) == []
    _check_after(run, report, before, good)
    again = ingest_landing(HubPaths.for_run(run))  # later ingests are not broken
    assert again.outcomes == []
    assert _hub_state(run / "hub") == before


def test_symlinked_and_hard_linked_files_inside_a_batch_refused(run: Path) -> None:
    """A batch whose payload is a symlink to the hub's private sealing key, and one whose
    manifest is a hard link to it: both refused unread, the key file intact (one link again)."""
    before, good = _prepare(run)
    key_file = run / "hub" / "keys" / "sealing_key.v1.json"
    src = _batch(run, "HSG")
    for suffix, how in (("cccccc", "symlink"), ("dddddd", "hardlink")):
        b = run / "landing" / "HSG" / f"HSG-000050-20250101T000000Z-{suffix}"
        shutil.copytree(src, b)
        if how == "symlink":
            (b / "payload.parquet.sealed").unlink()
            (b / "payload.parquet.sealed").symlink_to(key_file)
        else:
            (b / "manifest.json.sealed").unlink()
            os.link(key_file, b / "manifest.json.sealed")
    report = ingest_landing(HubPaths.for_run(run))
    assert len(_refused(report, "not_regular_file")) == 1
    assert len(_refused(report, "hard_link")) == 1
    assert key_file.stat().st_nlink == 1 and oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert _recorded(run, "hard_link") == 1
    _check_after(run, report, before, good)


def test_fifo_and_device_like_files_refused_without_blocking(run: Path, monkeypatch) -> None:
    """A FIFO where a batch file should be (opening it for reading would block forever) and a
    FIFO as an agency folder: refused from lstat, never opened; ingest goes on."""
    before, good = _prepare(run)
    b = run / "landing" / "HSG" / "HSG-000051-20250101T000000Z-eeeeee"
    shutil.copytree(_batch(run, "HSG"), b)
    (b / "related.parquet.sealed").unlink()
    os.mkfifo(b / "related.parquet.sealed")
    os.mkfifo(run / "landing" / "QQ")
    sock_dir = run / "landing" / "GP" / "GP-000052-20250101T000000Z-ffffff"
    sock_dir.mkdir()
    import socket

    s = socket.socket(socket.AF_UNIX)
    monkeypatch.chdir(sock_dir)  # a socket path must be short
    s.bind("manifest.json.sealed")
    monkeypatch.undo()
    try:
        report = ingest_landing(HubPaths.for_run(run))
    finally:
        s.close()
    assert len(_refused(report, "not_regular_file")) == 2
    assert len(_refused(report, "landing_item_refused")) == 1
    assert not os.path.lexists(b) and not os.path.lexists(run / "landing" / "QQ")
    _check_after(run, report, before, good)


def test_names_with_dot_dot_and_slash_tricks_refused(run: Path) -> None:
    """Names that are not agency codes / batch ids / batch file names (dots, '..', spaces,
    lower case, a symlink named like a batch pointing at '..'): refused and removed, never
    resolved. Refusal records name them by digest, not by what the writer chose."""
    before, good = _prepare(run)
    gp = run / "landing" / "GP"
    (gp / "GP-1..2").mkdir()
    (gp / "GP-000060-..-x").mkdir()
    (gp / "GP-000061-20250101T000000Z-abcdef").symlink_to("..")
    (gp / "GP-000062 Jane Smith").mkdir()
    (run / "landing" / "gp").mkdir()
    (run / "landing" / "..HSG").symlink_to(run / "hub")
    odd = gp / "GP-000063-20250101T000000Z-012345"
    shutil.copytree(gp / good["GP"], odd)
    (odd / "..payload.parquet.sealed").write_bytes(b"x")
    report = ingest_landing(HubPaths.for_run(run))
    refused = [o for o in report.outcomes if o.status == "refused"]
    assert len(refused) == 7, refused
    assert {o.reason_code for o in refused} == {
        "bad_name",
        "not_a_folder",
        "landing_item_refused",
        "unexpected_file",
    }
    assert all("Jane" not in (o.batch_id + (o.detail or "")) for o in refused)
    assert sorted(p.name for p in gp.iterdir()) == []
    assert sorted(p.name for p in (run / "landing").iterdir()) == sorted(GOOD)
    _check_after(run, report, before, good)


def test_rekey_landing_symlink_to_hub_moves_nothing(run: Path) -> None:
    """The same symlink attacks in the re-keying landing area."""
    from linkage import orchestration
    from linkage.rekey import rekey_landing

    before = _hub_state(run / "hub")
    rk = rekey_landing(HubPaths.for_run(run))
    (rk / "GP").mkdir(parents=True)
    rk.joinpath("ZZ").symlink_to(run / "hub", target_is_directory=True)
    (rk / "GP" / "GP-000070-20250101T000000Z-rekey-aaaaaa").symlink_to(run / "hub" / "keys")
    outcomes = orchestration.apply_rekeys(base=run)
    assert sorted(o["reason_code"] for o in outcomes) == ["landing_item_refused", "not_a_folder"]
    assert _hub_state(run / "hub") == before
    assert not os.path.lexists(rk / "ZZ") and list((rk / "GP").iterdir()) == []


# -- sealing refusals at the hub (item 6) ------------------------------------------------------


def test_wrong_key_swapped_and_truncated_sealed_files_refused(run: Path, tmp_path: Path) -> None:
    """A batch sealed for another hub key (same key id, or a key id the hub lacks), a sealed
    file swapped in from another batch, a truncated stream: each refused whole, no plaintext of
    it kept at the hub, nothing loaded; the good batches load."""
    before, good = _prepare(run)
    hsg = _batch(run, "HSG")
    plain = open_batch(hsg, tmp_path / "plain")
    made = {}

    def clone(suffix: str) -> Path:
        b = run / "landing" / "HSG" / f"HSG-000080-20250101T000000Z-{suffix}"
        shutil.copytree(hsg, b)
        made[suffix] = b
        return b

    for suffix, version in (("aaaaa1", 1), ("aaaaa9", 9)):  # another hub's key
        b = clone(suffix)
        other = HubSealingKey(version, PrivateKey.generate()).public_key()
        for f in b.iterdir():
            f.unlink()
        for f in plain.iterdir():
            seal_file(f, b / (f.name + ".sealed"), other, agency="HSG", batch_id=b.name)
    swapped = clone("bbbbbb")  # GP's real sealed payload dropped into an HSG batch
    shutil.copyfile(
        _batch(run, "GP") / "payload.parquet.sealed", swapped / "payload.parquet.sealed"
    )
    renamed = clone("bbbbb2")  # this batch's own identifiers, sealed as its payload
    shutil.copyfile(hsg / "identifiers.parquet.sealed", renamed / "payload.parquet.sealed")
    for suffix, cut in (("cccccc", 17), ("ccccc2", 1)):
        b = clone(suffix)
        f = b / "identifiers.parquet.sealed"
        f.write_bytes(f.read_bytes()[:-cut])
    plain_batch = clone("dddddd")  # not sealed at all
    for f in plain_batch.iterdir():
        f.unlink()
    for f in plain.iterdir():
        shutil.copyfile(f, plain_batch / (f.name + ".sealed"))

    report = ingest_landing(HubPaths.for_run(run))
    by_id = {o.batch_id: o for o in report.outcomes}
    assert by_id[made["aaaaa1"].name].reason_code == "unseal_failed"
    assert by_id[made["aaaaa9"].name].reason_code == "unknown_hub_key"
    assert by_id[swapped.name].reason_code == "unseal_failed"
    assert by_id[renamed.name].reason_code == "unseal_failed"
    assert by_id[made["cccccc"].name].reason_code in ("truncated", "unseal_failed")
    assert by_id[made["ccccc2"].name].reason_code in ("truncated", "unseal_failed")
    assert by_id[plain_batch.name].reason_code == "not_sealed"
    for b in made.values():
        assert by_id[b.name].status == "refused" and not b.exists()
        assert _q(run, "SELECT count(*) FROM batch WHERE batch_id = ?", [b.name]) == [(0,)]
        refused = run / "hub" / "refused" / "HSG" / b.name
        assert [p.name for p in refused.iterdir()] == ["refusal.json"]  # no content kept
    _check_after(run, report, before, good)


# -- item 2: the check-then-use race -----------------------------------------------------------


def test_payload_swapped_during_ingest_never_loads_unsigned_rows(run: Path, tmp_path: Path) -> None:
    """A landing writer keeps swapping HSG's sealed payload for one with an unsigned row (sealed
    to the hub with the right batch binding, as anyone can) while the hub ingests, over many
    rounds. The hub verifies and loads its own copy: every round either refuses the batch or
    loads exactly the signed rows; the unsigned row is never loaded."""
    hsg = _batch(run, "HSG")
    key = hub_public(run / "hub" / "keys")
    plain = open_batch(hsg, tmp_path / "plain")
    signed = pq.read_table(plain / "payload.parquet")
    evil_ref = "UNSIGNED-ROW-planted-by-the-landing-writer"
    extra = signed.slice(0, 1).set_column(0, "record_ref", pa.array([evil_ref]))
    evil_dir = tmp_path / "evil"
    evil_dir.mkdir()
    pq.write_table(pa.concat_tables([signed, extra]), evil_dir / "payload.parquet")
    evil = tmp_path / "evil.sealed"
    seal_file(evil_dir / "payload.parquet", evil, key, agency="HSG", batch_id=hsg.name)
    good = tmp_path / "good.sealed"
    shutil.copyfile(hsg / "payload.parquet.sealed", good)
    saved = tmp_path / "saved_batch"
    shutil.copytree(hsg, saved)
    pristine = tmp_path / "pristine_hub"
    shutil.copytree(run / "hub", pristine)

    tally: dict[str, int] = {}
    rounds = 16
    for r in range(rounds):
        landing = tmp_path / f"landing{r}"
        target_dir = landing / "HSG" / hsg.name
        shutil.copytree(saved, target_dir)
        paths = HubPaths(hub=tmp_path / f"hub{r}", landing=landing)
        shutil.copytree(pristine, paths.hub)
        stop = threading.Event()
        spare = landing / "HSG" / ".swap"  # dot names are a bridge's temp: never taken

        def swapper(
            target: Path = target_dir / "payload.parquet.sealed",
            spare: Path = spare,
            stop: threading.Event = stop,
        ) -> None:
            while not stop.is_set():
                for src in (evil, good):
                    try:
                        shutil.copyfile(src, spare)
                        os.replace(spare, target)
                    except FileNotFoundError:  # the hub took custody and removed the batch
                        return

        t = threading.Thread(target=swapper, daemon=True)
        t.start()
        try:
            report = ingest_landing(paths, batch_dirs=[target_dir])
        finally:
            stop.set()
            t.join()
        (out,) = report.outcomes
        tally[f"{out.status}:{out.reason_code}"] = (
            tally.get(f"{out.status}:{out.reason_code}", 0) + 1
        )
        con = duckdb.connect(str(paths.warehouse), read_only=True)
        try:
            assert (
                con.execute(
                    "SELECT count(*) FROM payload WHERE record_ref = ?", [evil_ref]
                ).fetchone()[0]
                == 0
            )
            loaded = con.execute(
                "SELECT count(*) FROM payload WHERE batch_id = ?", [hsg.name]
            ).fetchone()[0]
        finally:
            con.close()
        if out.status == "accepted":
            assert loaded == signed.num_rows
        else:
            # Refused by verification, or earlier by custody noticing the file replaced
            # between its lstat and its open, or caught mid-rename with a second link (a
            # clean-clone CI run, 2026-12-06): either way nothing of the round is loaded.
            assert (
                out.reason_code
                in (
                    "checksum_mismatch",
                    "size_mismatch",
                    "row_count_mismatch",
                    "changed_during_scan",
                    "hard_link",
                )
                and loaded == 0
            )
    print(f"race rounds: {tally}")
    assert sum(tally.values()) == rounds


def test_bridge_drop_area_is_write_but_not_list(run: Path) -> None:
    """landing/<CODE>/ is created sticky, writable and searchable by others but not listable
    (mode 1733); batch folders hold sealed files only."""
    import stat

    from ig_bridge.landing import drop_area

    d = drop_area(run / "fresh_landing", "SCH")
    assert stat.S_IMODE(d.stat().st_mode) == 0o1733
    for f in _batch(run, "GP").iterdir():
        assert f.name.endswith(".sealed")


def test_plaintext_batch_planted_in_landing_is_refused(run: Path) -> None:
    """A correctly signed batch landed in plaintext (not sealed): refused as not sealed."""
    before, good = _prepare(run)
    b = run / "landing" / "HSG" / "HSG-000090-20250101T000000Z-aaaaaa"
    open_batch(_batch(run, "HSG"), b)
    report = ingest_landing(HubPaths.for_run(run))
    assert len(_refused(report, "unexpected_file")) == 1  # plaintext names are not batch files
    _check_after(run, report, before, good)


def test_hub_key_init_is_private_and_a_loose_key_file_is_refused(tmp_path: Path) -> None:
    from ig_bridge.keys import LoosePermissionsError
    from ig_bridge.sealing import load_hub_sealing_keys, parse_public_record
    from linkage.custody import main

    assert main(["init-key", "--hub-dir", str(tmp_path / "hub")]) == 0
    key_file = tmp_path / "hub" / "keys" / "sealing_key.v1.json"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert oct(key_file.parent.stat().st_mode & 0o777) == "0o700"
    public = parse_public_record((tmp_path / "hub" / "hub_sealing_key.v1.json").read_bytes())
    (key,) = load_hub_sealing_keys(tmp_path / "hub" / "keys").values()
    assert key.public_key().public == public.public and "secret" not in repr(key)
    key_file.chmod(0o640)
    with pytest.raises(LoosePermissionsError):
        load_hub_sealing_keys(tmp_path / "hub" / "keys")


def test_custody_copy_is_hub_private_and_landing_emptied(run: Path) -> None:
    """What custody leaves: the opened batch in hub/incoming/<CODE>/<batch>/ (dirs 0700, files
    0600, the plaintext the agency signed), nothing left in the agency's drop area."""
    from ig_bridge.manifest import load_public_keys, verify_batch
    from ig_bridge.sealing import load_hub_sealing_keys
    from linkage.custody import take_custody

    paths = HubPaths.for_run(run).ensure()
    good = {a: _batch(run, a).name for a in GOOD}
    custody = take_custody(paths.landing, paths.incoming, load_hub_sealing_keys(paths.keys))
    assert custody.refused == [] and len(custody.taken) == len(GOOD)
    for agency, d in custody.taken:
        assert d == paths.incoming / agency / good[agency]
        for p in (d.parent, d):
            assert oct(p.stat().st_mode & 0o777) == "0o700"
        assert sorted(f.name for f in d.iterdir()) == [
            "identifiers.parquet",
            "manifest.json",
            "payload.parquet",
            "present.parquet",
            "related.parquet",
        ]
        assert all(oct(f.stat().st_mode & 0o777) == "0o600" for f in d.iterdir())
        assert verify_batch(d, load_public_keys(paths.public_keys)).agency == agency
        assert list((paths.landing / agency).iterdir()) == []
