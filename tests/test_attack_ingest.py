"""Attacks on the hub's verify / contract / load stage, performed end to end (issue #15).

Every batch here is a real bridged batch of the `orchestrated_run` fixture (1,500 people, seven
agencies, real keys), changed the way an attacker would and re-signed with the real Ed25519
key of the agency named: a partner agency misusing its own key, or a landing-zone writer
planting what it can. Landed batches are sealed to the hub, so the forger works on the
agency's plaintext batch (the fixture opens them: the agency holds its own plaintext) and seals
the result to the hub's PUBLIC key, as anyone can, before landing it (tests/sealed_batches.py);
every check then runs end to end: custody -> verify -> contract -> load. Each test shows the
batch refused whole with a reason, nothing of it in the warehouse, nothing else changed, and
the other agencies' batches still loaded. Where custody now refuses an item before verify ever
sees it, a second test hands verify the same batch in a hub-private folder (defence in depth).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
import tracemalloc
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sealed_batches import ingest_sealed, open_landing, seal_landing
from sealed_batches import warehouse_rows as _q

from ig_bridge.keys import KeyStore
from ig_bridge.manifest import MANIFEST_MAX_BYTES, MANIFEST_NAME, sha256_file, sign_manifest
from linkage import ingest
from linkage.config import HubPaths

ingest_landing = ingest_sealed  # seals what the attacker left in landing/, then ingests

FILES = ("identifiers.parquet", "related.parquet", "payload.parquet")


@pytest.fixture()
def run(orchestrated_run: Path, copy_run, tmp_path: Path) -> Path:
    r = copy_run(orchestrated_run, tmp_path / "run")
    open_landing(r / "landing", r / "hub" / "keys")
    return r


def _hub_private(run: Path, batch: Path, folder: str) -> Path:
    """The plaintext batch placed as custody would leave it, hub/incoming/<folder>/<batch>/,
    to test verify's own checks on what custody let through (or would have)."""
    paths = HubPaths.for_run(run)
    dest = paths.incoming / folder / batch.name
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.move(str(batch), str(dest))
    return dest


def _assert_refused_at_custody(run: Path, report, batch: Path, code: str) -> dict[str, Any]:
    """Refused by custody before anything was read: removed from landing, listed (table and
    refusal.json, no content kept), nothing loaded."""
    (out,) = [o for o in report.outcomes if o.reason_code == code]
    assert out.status == "refused", out
    assert not batch.exists()
    assert _q(run, "SELECT count(*) FROM batch WHERE batch_id = ?", [batch.name])[0][0] == 0
    for t in ("identifiers", "related", "payload"):
        assert _q(run, f"SELECT count(*) FROM {t} WHERE batch_id = ?", [batch.name])[0][0] == 0
    assert _q(
        run,
        "SELECT reason_code, sequence FROM refused_batch WHERE batch_folder = ?",
        [out.batch_id],
    ) == [(code, None)]  # not verified: no sequence number spent
    paths = HubPaths.for_run(run)
    folder = out.agency if out.agency != "-" else "_landing"
    kept = paths.refused / folder / out.batch_id
    assert sorted(p.name for p in kept.iterdir()) == ["refusal.json"]
    r = json.loads((kept / "refusal.json").read_text("utf-8"))
    assert (r["stage"], r["reason_code"], r["manifest_kept"]) == ("custody", code, False)
    return r


def _landed(run: Path, agency: str) -> Path:
    (b,) = [p for p in (run / "landing" / agency).iterdir() if p.is_dir()]
    return b


def _manifest(batch: Path) -> dict[str, Any]:
    return json.loads((batch / MANIFEST_NAME).read_text("utf-8"))


def _sign(batch: Path, agency: str, body: dict[str, Any], run: Path) -> None:
    """Sign `body` exactly as given with the agency's real key (odd types and all)."""
    body = {k: v for k, v in body.items() if k != "signature"}
    key = KeyStore(run / "agency" / agency / "keys", agency).signing_key()
    (batch / MANIFEST_NAME).write_bytes(json.dumps(sign_manifest(body, key)).encode())


def _resign(batch: Path, agency: str, run: Path, **changes: Any) -> None:
    """File entries recomputed over what the folder now holds, `changes` applied, signed:
    a batch the agency really could have sent."""
    body = _manifest(batch)
    body["files"] = {
        p.name: {
            "sha256": sha256_file(p),
            "bytes": p.stat().st_size,
            "rows": pq.read_metadata(p).num_rows,
        }
        for p in sorted(batch.iterdir())
        if p.name != MANIFEST_NAME
    }
    body.update(changes)
    _sign(batch, agency, body, run)


def _rows_of(run: Path, agency: str) -> dict[str, list[tuple]]:
    """Everything the warehouse holds for one agency, to compare before/after an attack."""
    return {
        t: sorted(
            _q(run, f"SELECT * EXCLUDE (agency) FROM {t} WHERE agency = ?", [agency]), key=repr
        )
        for t in ("identifiers", "related", "payload", "record_retired")
    }


def _next_batch(run: Path, agency: str, new_id_suffix: str, kind: str = "delta") -> Path:
    """A copy of the agency's ingested batch, landed as its next batch (sequence 2, new id,
    rows relabelled to the new id), not yet signed."""
    paths = HubPaths.for_run(run)
    (src,) = list((paths.ingested / agency).iterdir())
    m = _manifest(src)
    new_id = f"{agency}-000002-{new_id_suffix}"
    dest = paths.landing / agency / new_id
    shutil.copytree(src, dest)
    for name in FILES:
        t = pq.read_table(dest / name)
        i = t.schema.get_field_index("batch_id")
        t = t.set_column(i, "batch_id", pa.array([new_id] * t.num_rows, pa.string()))
        pq.write_table(t, dest / name)
    m.update(batch_id=new_id, sequence=2, extract_kind=kind)
    (dest / MANIFEST_NAME).write_text(json.dumps(m), "utf-8")
    return dest


def _assert_refused_whole(run: Path, report, batch: Path, code: str) -> dict[str, Any]:
    (out,) = [o for o in report.outcomes if o.batch_id == batch.name]
    assert (out.status, out.reason_code) == ("refused", code), out
    assert not batch.exists()
    for t in ("identifiers", "related", "payload", "record_retired"):
        assert _q(run, f"SELECT count(*) FROM {t} WHERE batch_id = ?", [batch.name])[0][0] == 0
    assert _q(run, "SELECT count(*) FROM batch WHERE batch_id = ?", [batch.name])[0][0] == 0
    assert _q(
        run, "SELECT reason_code FROM refused_batch WHERE batch_folder = ?", [batch.name]
    ) == [(code,)]
    kept = HubPaths.for_run(run).refused / out.agency / batch.name
    # Refused: the manifest and the reason stay, every data file is destroyed.
    assert sorted(p.name for p in kept.iterdir()) == sorted(
        n for n in (MANIFEST_NAME, "refusal.json") if (kept / n).exists()
    )
    assert (kept / "refusal.json").exists()
    return json.loads((kept / "refusal.json").read_text("utf-8"))


# ------------------------------------------------------------- one agency against another


def test_delta_signed_by_A_carrying_B_refs_leaves_B_untouched(run: Path) -> None:
    """HSG (a partner holding its own key, and B's refs read off a shared landing zone) sends
    a delta whose records are GP's refs: before, the delta's DELETE matched record_ref alone
    and replaced GP's records with HSG's rows."""
    paths = HubPaths.for_run(run)
    assert not ingest_landing(paths).refused
    gp_before, hsg_before = _rows_of(run, "GP"), _rows_of(run, "HSG")
    gp_refs = [
        r
        for (r,) in _q(
            run,
            "SELECT record_ref FROM identifiers WHERE agency = 'GP' ORDER BY record_ref LIMIT 5",
        )
    ]
    b = _next_batch(run, "HSG", "steal")
    ident = pq.read_table(b / "identifiers.parquet").to_pydict()
    mine = ident["record_ref"][:5]
    swap = dict(zip(mine, gp_refs, strict=True))
    for name in FILES:  # consistently: the forged records carry GP's refs in every file
        t = pq.read_table(b / name).to_pydict()
        t["record_ref"] = [swap.get(r, r) for r in t["record_ref"]]
        pq.write_table(pa.table(t, schema=pq.read_schema(b / name)), b / name)
    _resign(b, "HSG", run)
    report = ingest_landing(paths, batch_dirs=[b])
    r = _assert_refused_whole(run, report, b, "ref_of_another_agency")
    assert r["sequence"] == 2 and r["signed_agency"] == "HSG"
    assert _rows_of(run, "GP") == gp_before and _rows_of(run, "HSG") == hsg_before


@pytest.mark.parametrize("name", FILES)
def test_snapshot_with_rows_labelled_another_agency_refused_whole(run: Path, name: str) -> None:
    """A snapshot signed by HSG with some rows labelled GP: loaded, GP's views would read
    them as GP's; and a snapshot deletes all of HSG's rows first. Refused whole instead."""
    paths = HubPaths.for_run(run)
    ingest_landing(paths)
    before = {a: _rows_of(run, a) for a in ("GP", "HSG")}
    b = _next_batch(run, "HSG", "label", kind="snapshot")
    t = pq.read_table(b / name)
    assert t.num_rows > 2
    agency = ["GP" if i < 2 else a for i, a in enumerate(t.column("agency").to_pylist())]
    t = t.set_column(t.schema.get_field_index("agency"), "agency", pa.array(agency))
    pq.write_table(t, b / name)
    _resign(b, "HSG", run)
    report = ingest_landing(paths, batch_dirs=[b])
    r = _assert_refused_whole(run, report, b, "row_of_another_agency")
    assert name in r["detail"] and "2 row(s)" in r["detail"]
    assert {a: _rows_of(run, a) for a in ("GP", "HSG")} == before


@pytest.mark.parametrize(
    "case", ["payload_ref_not_in_identifiers", "related_ref_not_in_ids", "row_of_another_batch"]
)
def test_rows_that_are_not_this_batchs_records_refused(run: Path, case: str) -> None:
    paths = HubPaths.for_run(run)
    ingest_landing(paths)
    before = _rows_of(run, "HSG")
    b = _next_batch(run, "HSG", "orphan")
    if case == "row_of_another_batch":
        t = pq.read_table(b / "payload.parquet").to_pydict()
        t["batch_id"][0] = "HSG-000001-old"
        pq.write_table(
            pa.table(t, schema=pq.read_schema(b / "payload.parquet")), b / "payload.parquet"
        )
        code = "row_of_another_batch"
    else:
        name = "payload.parquet" if case.startswith("payload") else "related.parquet"
        t = pq.read_table(b / name).to_pydict()
        t["record_ref"][0] = "planted-ref-of-nobody"
        pq.write_table(pa.table(t, schema=pq.read_schema(b / name)), b / name)
        code = "ref_not_in_identifiers"
    _resign(b, "HSG", run)
    report = ingest_landing(paths, batch_dirs=[b])
    _assert_refused_whole(run, report, b, code)
    assert _rows_of(run, "HSG") == before


# ------------------------------------------------------------------- malformed signed batches


def _subdir(b: Path, body: dict[str, Any]) -> None:
    (b / "extra").mkdir()
    (b / "extra" / "x").write_bytes(b"x")
    body["files"]["extra"] = {"sha256": "0" * 64, "bytes": 4096, "rows": None}


MALFORMED = {
    "files_entry_not_an_object": (
        lambda b, m: m["files"].update({"payload.parquet": "deadbeef"}),
        "manifest_invalid",
        "files.payload.parquet",
    ),
    # custody refuses a folder inside a landed batch (only sealed regular files are taken)
    "listed_sub_directory": (_subdir, "unexpected_file", "not named as a sealed batch file"),
    "sequence_a_string": (lambda b, m: m.update(sequence="2"), "manifest_invalid", "sequence"),
    "rows_a_list": (lambda b, m: m.update(rows=[1, 2, 3]), "manifest_invalid", "rows"),
    "files_a_list": (lambda b, m: m.update(files=list(m["files"])), "manifest_invalid", "files"),
    "file_name_a_path": (
        lambda b, m: m["files"].update(
            {"../../hub/warehouse.duckdb": m["files"]["payload.parquet"]}
        ),
        "manifest_invalid",
        "files",
    ),
    "version_a_float": (
        lambda b, m: m.update(mapping_version=1.0),
        "manifest_invalid",
        "mapping_version",
    ),
    "size_a_bool": (
        lambda b, m: m["files"]["related.parquet"].update(bytes=True),
        "manifest_invalid",
        "files.related.parquet.bytes",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_signed_batch_refused_and_the_queue_goes_on(run: Path, case: str) -> None:
    """Signed by CSC with its real key, malformed: before, some of these crashed ingest on
    every run (AttributeError, IsADirectoryError) and blocked every batch behind them."""
    paths = HubPaths.for_run(run)
    bad, good = _landed(run, "CSC"), _landed(run, "GP")
    body = _manifest(bad)
    change, code, named = MALFORMED[case]
    change(bad, body)
    _sign(bad, "CSC", body, run)
    report = ingest_landing(paths, batch_dirs=[bad, good])
    assert [o.status for o in report.outcomes] == ["refused", "accepted"], report.outcomes
    check = _assert_refused_at_custody if code == "unexpected_file" else _assert_refused_whole
    r = check(run, report, bad, code)
    assert named in r["detail"]
    assert _q(run, "SELECT count(*) FROM identifiers WHERE agency = 'GP'")[0][0] > 1000


def test_listed_sub_directory_refused_by_verify_in_hub_custody(run: Path) -> None:
    """Defence in depth: the same signed batch with a listed sub-folder, met by verify in a
    hub-private folder (as if custody had let it through), is refused `not_a_file` and the
    queue goes on."""
    paths = HubPaths.for_run(run)
    bad, good = _landed(run, "CSC"), _landed(run, "GP")
    body = _manifest(bad)
    _subdir(bad, body)
    _sign(bad, "CSC", body, run)
    private = _hub_private(run, bad, "CSC")
    report = ingest_landing(paths, batch_dirs=[private, good])
    assert [o.status for o in report.outcomes] == ["refused", "accepted"], report.outcomes
    r = _assert_refused_whole(run, report, private, "not_a_file")
    assert "extra" in r["detail"]
    assert (r["signed_agency"], r["sequence"]) == ("CSC", 1)  # signed: its number is spent
    assert _q(run, "SELECT count(*) FROM identifiers WHERE agency = 'GP'")[0][0] > 1000


def _oversized(run: Path) -> Path:
    """CSC's batch with a 64 MiB signed manifest (padding in a signed key)."""
    bad = _landed(run, "CSC")
    body = _manifest(bad)
    body["padding"] = " " * (64 << 20)
    _sign(bad, "CSC", body, run)
    assert (bad / MANIFEST_NAME).stat().st_size > 64 * MANIFEST_MAX_BYTES
    return bad


def _ingest_measured(paths: HubPaths, batch: Path):  # noqa: ANN202 - (report, peak, seconds)
    tracemalloc.start()
    t0 = time.perf_counter()
    report = ingest.ingest_landing(paths, batch_dirs=[batch])
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return report, peak, elapsed


def test_oversized_manifest_refused_after_reading_at_most_the_cap(run: Path) -> None:
    """Landed sealed, the 64 MiB manifest is refused by custody on its size before a byte is
    opened (before: read and parsed whole, 1.3 GB for 300 MB); memory and time stay flat and
    the queue goes on."""
    paths = HubPaths.for_run(run)
    bad, good = _oversized(run), _landed(run, "GP")
    seal_landing(paths.landing, paths.keys)  # the attacker seals before landing, not timed
    report, peak, elapsed = _ingest_measured(paths, bad)
    r = _assert_refused_at_custody(run, report, bad, "too_large")
    assert "manifest" in r["detail"]
    assert peak < 8 * MANIFEST_MAX_BYTES, peak  # never the 64 MiB, let alone unsealed
    assert elapsed < 30
    assert not any(paths.incoming.rglob("*.json"))  # nothing of it unsealed at the hub
    assert [o.status for o in ingest_landing(paths, batch_dirs=[good]).outcomes] == ["accepted"]


def test_oversized_manifest_refused_by_verify_in_hub_custody(run: Path) -> None:
    """Defence in depth: the same manifest met by verify in a hub-private folder is refused
    `manifest_too_large` after reading at most the cap, not parsed, not kept."""
    paths = HubPaths.for_run(run)
    private = _hub_private(run, _oversized(run), "CSC")
    report, peak, elapsed = _ingest_measured(paths, private)
    r = _assert_refused_whole(run, report, private, "manifest_too_large")
    assert r["manifest_kept"] is False
    assert peak < 8 * MANIFEST_MAX_BYTES, peak  # never the 64 MiB, let alone parsed
    assert elapsed < 30
    assert [o.status for o in ingest_landing(paths, batch_dirs=[_landed(run, "GP")]).outcomes] == [
        "accepted"
    ]


@pytest.mark.parametrize("folder", ["hsg", "drop-zone", "GP"])
def test_batch_under_another_folder_refused_whatever_the_folder_is_called(
    run: Path, folder: str
) -> None:
    """HSG's genuine batch moved under a folder that is not HSG and sealed for that folder (the
    seal binds the folder; anyone can seal): before, the agency check ran only when the folder
    looked like an agency code, so 'hsg' or 'drop-zone' passed. Now custody refuses a landing
    folder that is not an agency code, and verify a batch under another agency's folder."""
    paths = HubPaths.for_run(run)
    src = _landed(run, "HSG")
    dest = paths.landing / folder / src.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    src.rename(dest)
    report = ingest_landing(paths, batch_dirs=[dest])
    if folder == "GP":
        r = _assert_refused_whole(run, report, dest, "path_mismatch")
        assert "HSG" in r["detail"]
    else:
        _assert_refused_at_custody(run, report, dest, "landing_item_refused")
        assert not dest.parent.exists()
    assert _q(run, "SELECT count(*) FROM identifiers")[0][0] == 0


@pytest.mark.parametrize("folder", ["hsg", "drop-zone"])
def test_batch_under_a_non_code_folder_refused_by_verify_in_hub_custody(
    run: Path, folder: str
) -> None:
    """Defence in depth: verify checks the signing agency against the folder whatever the
    folder is called, also on a hub-private copy custody would never have made."""
    paths = HubPaths.for_run(run)
    private = _hub_private(run, _landed(run, "HSG"), folder)
    report = ingest_landing(paths, batch_dirs=[private])
    r = _assert_refused_whole(run, report, private, "path_mismatch")
    assert "HSG" in r["detail"]
    assert _q(run, "SELECT count(*) FROM identifiers")[0][0] == 0


# ------------------------------------------------------------------ types and refused content


def test_payload_type_mismatch_refused_naming_the_field_not_the_value(run: Path) -> None:
    """arrears_amount (a number) sent as text with one value that is not a number: before,
    TRY_CAST turned it into NULL and the batch loaded."""
    paths = HubPaths.for_run(run)
    b = _landed(run, "HSG")
    t = pq.read_table(b / "payload.parquet")
    vals = [None if v is None else str(v) for v in t.column("arrears_amount").to_pylist()]
    vals[3] = "about nine hundred quid"
    i = t.schema.get_field_index("arrears_amount")
    pq.write_table(
        t.set_column(i, "arrears_amount", pa.array(vals, pa.string())), b / "payload.parquet"
    )
    _resign(b, "HSG", run)
    report = ingest_landing(paths, batch_dirs=[b])
    r = _assert_refused_whole(run, report, b, "payload_type_mismatch")
    assert "arrears_amount" in r["detail"] and "nine" not in json.dumps(r)


def test_refused_batch_content_is_destroyed(run: Path) -> None:
    """A payload with a given_name column (outside the agreement): refused, and the name
    exists nowhere at the hub afterwards, only the manifest and the reason."""
    paths = HubPaths.for_run(run)
    b = _landed(run, "HSG")
    t = pq.read_table(b / "payload.parquet")
    canary = "Zebedee-Quillfeather"
    t = t.append_column("given_name", pa.array([canary] * t.num_rows))
    pq.write_table(t, b / "payload.parquet")
    _resign(b, "HSG", run)
    report = ingest_landing(paths)
    _assert_refused_whole(run, report, b, "column_not_in_agreement")
    assert len(report.accepted) == 6
    for p in paths.hub.rglob("*"):
        if p.is_file():
            assert canary.encode() not in p.read_bytes(), p


# -------------------------------------------------------------------------- file permissions


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_hub_files_and_folders_are_owner_only(run: Path) -> None:
    """Before: warehouse, governance store and marts 0644 in 0755 folders. Also a warehouse
    left world-readable by an earlier release is made 0600 on the next ingest."""
    from governance.hub_stage import governance_engine

    paths = HubPaths.for_run(run)
    b = _landed(run, "HSG")
    (b / "stray.txt").write_text("x")  # sealed and landed with it: refused at custody
    ingest_landing(paths)
    for d in (
        paths.hub,
        paths.refused,
        paths.ingested,
        paths.held,
        paths.marts,
        paths.reports,
        paths.refused / "HSG",
        paths.ingested / "GP",
    ):
        assert _mode(d) == 0o700, d
    assert _mode(paths.warehouse) == 0o600
    for p in (*paths.refused.rglob("*"), *paths.ingested.rglob("*")):
        assert _mode(p) & 0o077 == 0, p
    paths.warehouse.chmod(0o644)
    ingest_landing(paths, batch_dirs=[])
    assert _mode(paths.warehouse) == 0o600
    governance_engine(run).dispose()
    assert _mode(paths.hub / "governance.db") == 0o600


def test_hub_side_failure_keeps_the_batch_and_the_queue_goes_on(run: Path, monkeypatch) -> None:
    """A failure that is the hub's own (here a simulated disk error while loading CSC) must
    neither refuse (and so destroy) a good batch nor stop the others: CSC stays in hub
    custody, whole, and loads on the next run."""
    import linkage.ingest as ingest_mod

    paths = HubPaths.for_run(run)
    real = ingest_mod._load

    def failing(con, vm, sha, expect):  # noqa: ANN001, ANN202
        if vm.agency == "CSC":
            raise duckdb.IOException("simulated: no space left on device")
        return real(con, vm, sha, expect)

    monkeypatch.setattr(ingest_mod, "_load", failing)
    csc = _landed(run, "CSC")
    files = sorted(p.name for p in csc.iterdir())
    report = ingest_landing(paths)
    assert {o.agency: o.status for o in report.outcomes} == {
        "CSC": "error",
        "EH": "accepted",
        "GP": "accepted",
        "HSG": "accepted",
        "HV": "accepted",
        "POL": "accepted",
        "SCH": "accepted",
    }
    # custody took it (the landed copy is gone); the hub-private copy stays whole
    assert not csc.exists()
    assert sorted(p.name for p in (paths.incoming / "CSC" / csc.name).iterdir()) == files
    assert not (paths.refused / "CSC").exists()
    assert _q(run, "SELECT count(*) FROM identifiers WHERE agency = 'CSC'") == [(0,)]
    monkeypatch.undo()
    (out,) = ingest_landing(paths).outcomes
    assert (out.agency, out.status) == ("CSC", "accepted")


def test_flag_column_carrying_text_is_refused_before_a_value_is_read(run: Path) -> None:
    """flag_dob_estimated is a boolean (encoding spec `flags`): the one identifiers column
    that is not a keyed hash. A partner agency (or a forger with its key) sending it as text
    could smuggle a name past every token check; the batch is refused whole, naming the
    column and its type, and the text exists nowhere at the hub."""
    paths = HubPaths.for_run(run)
    b = _landed(run, "POL")
    t = pq.read_table(b / "identifiers.parquet")
    canary = "Zebedee-Quillfeather"
    i = t.schema.get_field_index("flag_dob_estimated")
    assert pa.types.is_boolean(t.schema.field(i).type)
    assert any(t.column(i).to_pylist())  # police estimate ages: some are raised
    t = t.set_column(i, "flag_dob_estimated", pa.array([canary] * t.num_rows, pa.string()))
    pq.write_table(t, b / "identifiers.parquet")
    _resign(b, "POL", run)
    report = ingest_landing(paths, batch_dirs=[b])
    r = _assert_refused_whole(run, report, b, "column_type")
    assert "flag_dob_estimated" in r["detail"] and canary not in json.dumps(r)
    for p in paths.hub.rglob("*"):
        if p.is_file():
            assert canary.encode() not in p.read_bytes(), p
