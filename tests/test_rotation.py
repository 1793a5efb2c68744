"""Key rotation end to end on a real two-agency partnership (200 people, real keys, real DuckDB
warehouse, real linkage): record-ref key re-keying batches applied at the hub, and K_link
re-tokenisation refused by a v1 hub and accepted once the hub moves to v2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from sealed_batches import hub_public, open_batch, seal_in_place, unseal_in_place

from ig_bridge.keys import KeyStore, decrypt_record_ref, unwrap_link_key, wrap_link_key
from ig_bridge.rotation import (
    RotationError,
    build_rekey_batch,
    read_refs_file,
    retokenise_snapshot,
    start_ref_key_rotation,
)
from ig_bridge.split import run_bridge
from linkage import orchestration
from linkage.batch_contract import HubExpectations
from linkage.config import HubPaths
from linkage.orchestration import resolve_extract
from linkage.pipeline import stage_households, stage_ingest, stage_link_persons
from linkage.rekey import (
    accepted_link_key_versions,
    apply_rekey,
    export_agency_refs,
    rekey_landing,
    set_accepted_link_key_versions,
)
from schemas.mapping import load_all_mappings
from synthetic_data.generate import generate_population
from synthetic_data.parties import provision_partnership

CODES = ["GP", "SCH"]


@pytest.fixture(scope="module")
def linked_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two agencies bridged, ingested, linked (persons, households) under K_link v1."""
    run = tmp_path_factory.mktemp("rotation") / "run"
    generate_population(run / "population", seed=5, people=200)
    provision_partnership(run, CODES)
    mappings = load_all_mappings(HubPaths.for_run(run).mappings)
    for code in CODES:
        run_bridge(
            resolve_extract(code, base=run),
            mappings[code].path,
            run / "agency" / code,
            run / "landing",
        )
    paths = HubPaths.for_run(run)
    assert {o["status"] for o in stage_ingest(paths)["outcomes"]} == {"accepted"}
    stage_link_persons(paths, "r1")
    stage_households(paths, "r1")
    return run


def _fresh(linked_run: Path, tmp_path: Path) -> tuple[Path, HubPaths]:
    run = tmp_path / "run"
    shutil.copytree(linked_run, run, symlinks=True)
    return run, HubPaths.for_run(run)


def _q(paths: HubPaths, sql: str, params: list | None = None) -> list[tuple]:
    con = duckdb.connect(str(paths.warehouse), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def _ref_tables(paths: HubPaths) -> list[tuple[str, str, str]]:
    from linkage.rekey import _ref_columns

    con = duckdb.connect(str(paths.warehouse), read_only=True)
    try:
        return [(t, c, a) for t, c, a in _ref_columns(con) if a is not None]
    finally:
        con.close()


def _snapshot_by_local_id(paths: HubPaths, store: KeyStore, agency: str) -> dict[str, list]:
    """Per ref-holding table: sorted (local id, other columns...) rows for `agency`, refs
    resolved to local ids with every key version the agency holds."""
    keys = store.ref_keys()
    out = {}
    for t, c, a in _ref_tables(paths):
        con = duckdb.connect(str(paths.warehouse), read_only=True)
        try:
            cols = [
                r[0]
                for r in con.execute(
                    "SELECT column_name FROM duckdb_columns() WHERE table_name = ? "
                    "AND data_type NOT IN ('BIT', 'BLOB')",
                    [t],
                ).fetchall()
            ]
            rows = con.execute(
                f"SELECT {', '.join(chr(34) + x + chr(34) for x in cols)} "
                f'FROM "{t}" WHERE "{a}" = ?',
                [agency],
            ).fetchall()
        finally:
            con.close()
        refcols = {j for j, x in enumerate(cols) if x.startswith("record_ref")}
        out[f"{t}.{c}"] = sorted(
            tuple(_resolve(v, keys) if j in refcols else str(v) for j, v in enumerate(r))
            for r in rows
        )
    return out


def _resolve(ref: str | None, keys: list) -> str:
    """The agency's local id for its own refs (any key version); others' refs as they are."""
    from ig_bridge.keys import RecordRefError

    try:
        return "local:" + decrypt_record_ref(ref, keys) if ref else "None"
    except RecordRefError:
        return "other:" + ref


def test_ref_key_rotation_rekeys_every_table_in_one_step(linked_run: Path, tmp_path: Path) -> None:
    run, paths = _fresh(linked_run, tmp_path)
    agency_dir = run / "agency" / "SCH"
    store = KeyStore(agency_dir / "keys", "SCH")
    before = _snapshot_by_local_id(paths, store, "SCH")
    gp_before = _q(paths, "SELECT record_ref FROM identifiers WHERE agency = 'GP' ORDER BY 1")
    assert before["record_person.record_ref"] and before["identifiers.record_ref"]
    assert any(k.startswith("related.") for k in before)

    refs_file = export_agency_refs(paths, "SCH", run / "exchange" / "SCH_refs.parquet")
    refs = read_refs_file(refs_file)
    assert len(refs) == len(set(refs)) >= len(before["identifiers.record_ref"])

    with pytest.raises(RotationError, match="start the rotation"):
        build_rekey_batch(agency_dir, "SCH", rekey_landing(paths), refs)
    new_key = start_ref_key_rotation(agency_dir, "SCH")
    assert new_key.version == 2 and store.versions("ref") == [1, 2]
    batch = build_rekey_batch(agency_dir, "SCH", rekey_landing(paths), refs, source=str(refs_file))
    assert batch.mapped == len(refs) and batch.from_versions == [1] and batch.to_version == 2
    opened = open_batch(batch.path, run / "opened" / "SCH" / batch.batch_id)
    mapping = pq.read_table(opened / "rekey.parquet").to_pydict()
    assert set(mapping["old_ref"]) == set(refs)
    assert not set(mapping["new_ref"]) & set(refs)

    # What the hub DAG's first task runs: every landed re-keying batch.
    (out,) = orchestration.apply_rekeys(base=run)
    assert out["status"] == "applied" and out["batch_id"] == batch.batch_id, out
    assert not batch.path.exists()
    assert out["rows"]["identifiers.record_ref"] == len(before["identifiers.record_ref"])
    assert out["rows"]["record_person.record_ref"] == len(before["record_person.record_ref"])
    assert orchestration.apply_rekeys(base=run) == []  # nothing left waiting

    # Every SCH ref now decrypts under v2 only, to the same local record, with all the other
    # columns (person ids, tokens, payload, bands) unchanged; GP's refs untouched.
    v2 = store.ref_key(2)
    for t, c, a in _ref_tables(paths):
        for (ref,) in _q(paths, f'SELECT "{c}" FROM "{t}" WHERE "{a}" = ?', ["SCH"]):
            decrypt_record_ref(ref, v2)
    assert _snapshot_by_local_id(paths, store, "SCH") == before
    assert (
        _q(paths, "SELECT record_ref FROM identifiers WHERE agency = 'GP' ORDER BY 1") == gp_before
    )
    assert _q(
        paths,
        "SELECT extract_kind, ref_key_version FROM batch WHERE batch_id = ?",
        [batch.batch_id],
    ) == [("rekey", 2)]

    # The next ordinary snapshot is encrypted under v2 and matches: nothing retires.
    mappings = load_all_mappings(paths.mappings)
    res = run_bridge(
        resolve_extract("SCH", base=run),
        mappings["SCH"].path,
        agency_dir,
        run / "landing",
        extract_kind="snapshot",
    )
    opened = open_batch(res.landed_path, run / "opened" / "SCH" / res.batch_id)
    assert json.loads((opened / "manifest.json").read_text())["ref_key_version"] == 2
    assert {o["status"] for o in stage_ingest(paths)["outcomes"]} == {"accepted"}
    assert _q(paths, "SELECT count(*) FROM record_retired WHERE batch_id = ?", [res.batch_id]) == [
        (0,)
    ]


def test_rekey_batch_refused_when_replayed_tampered_or_foreign(
    linked_run: Path, tmp_path: Path
) -> None:
    run, paths = _fresh(linked_run, tmp_path)
    agency_dir = run / "agency" / "SCH"
    refs = read_refs_file(export_agency_refs(paths, "SCH", run / "x" / "refs.parquet"))
    start_ref_key_rotation(agency_dir, "SCH")
    before = _q(paths, "SELECT record_ref FROM identifiers ORDER BY 1")

    # A GP ref in SCH's list: the agency cannot decrypt it, so no batch is built at all.
    gp_ref = _q(paths, "SELECT min(record_ref) FROM identifiers WHERE agency = 'GP'")[0][0]
    with pytest.raises(RotationError, match=r"row \d+: record_ref does not decrypt"):
        build_rekey_batch(agency_dir, "SCH", rekey_landing(paths), [*refs, gp_ref])
    assert not (rekey_landing(paths) / "SCH").exists() or not any(
        p for p in (rekey_landing(paths) / "SCH").iterdir() if not p.name.startswith(".")
    )

    # Tampered mapping after signing (opened, changed and sealed again, as any landing writer
    # can with the hub's public key): refused on checksum, warehouse unchanged.
    batch = build_rekey_batch(agency_dir, "SCH", rekey_landing(paths), refs)
    good = open_batch(batch.path, tmp_path / "good" / "SCH" / batch.batch_id)
    hub_key = hub_public(paths.keys)
    unseal_in_place(batch.path)
    t = pq.read_table(batch.path / "rekey.parquet").to_pydict()
    t["new_ref"][0], t["new_ref"][1] = t["new_ref"][1], t["new_ref"][0]
    import pyarrow as pa

    pq.write_table(pa.table(t), batch.path / "rekey.parquet")
    seal_in_place(batch.path, hub_key)
    out = apply_rekey(paths, batch.path)
    assert out.status == "refused" and out.reason_code in ("checksum_mismatch", "size_mismatch")
    assert (paths.refused / "SCH" / batch.batch_id / "refusal.json").exists()
    assert _q(paths, "SELECT record_ref FROM identifiers ORDER BY 1") == before

    # The genuine batch applies once; a replay of it is recognised, changes nothing.
    restored = batch.path.parent / batch.batch_id
    shutil.copytree(good, restored)
    seal_in_place(restored, hub_key)
    assert apply_rekey(paths, restored).status == "applied"
    after = _q(paths, "SELECT record_ref FROM identifiers ORDER BY 1")
    assert after != before
    shutil.copytree(good, restored)
    seal_in_place(restored, hub_key)
    assert apply_rekey(paths, restored).status == "already_applied"
    assert _q(paths, "SELECT record_ref FROM identifiers ORDER BY 1") == after

    # A batch signed by GP's key under SCH's name is refused on the signature.
    forged_id = "SCH-000099-20250101T000000Z-rekey-f0f0f0"
    gp_signed = rekey_landing(paths) / "SCH" / forged_id
    shutil.copytree(good, gp_signed)
    m = json.loads((gp_signed / "manifest.json").read_text())
    m["batch_id"] = forged_id
    m["sequence"] += 10
    from ig_bridge.manifest import sign_manifest, write_manifest

    (gp_signed / "manifest.json").unlink()
    write_manifest(
        gp_signed, sign_manifest(m, KeyStore(run / "agency" / "GP" / "keys", "GP").signing_key())
    )
    seal_in_place(gp_signed, hub_key)
    out = apply_rekey(paths, gp_signed)
    assert out.status == "refused" and out.reason_code in ("bad_signature", "unknown_signing_key")
    assert _q(paths, "SELECT record_ref FROM identifiers ORDER BY 1") == after


def test_link_key_rotation_refused_by_v1_hub_accepted_after_move(
    linked_run: Path, tmp_path: Path
) -> None:
    run, paths = _fresh(linked_run, tmp_path)
    mappings = load_all_mappings(paths.mappings)
    refs_v1 = set(r for (r,) in _q(paths, "SELECT record_ref FROM identifiers"))
    tok_v1 = dict(_q(paths, "SELECT record_ref, tok_dob FROM identifiers"))
    persons_v1 = dict(_q(paths, "SELECT record_ref, person_id FROM record_person"))

    # The lead creates v2 and sends it wrapped; every bridge imports it.
    lead = KeyStore(run / "partnership" / "keys", "LEAD")
    v2 = lead.create_link_key()
    blob = wrap_link_key(v2, "correct horse battery staple", scrypt_n=2**14)
    for code in CODES:
        imported = KeyStore(run / "agency" / code / "keys", code).import_link_key(
            blob, "correct horse battery staple"
        )
        assert imported.version == 2 and imported.key_check == v2.key_check
    assert unwrap_link_key(blob, "correct horse battery staple").key_check == v2.key_check

    # Hub still on v1: the re-tokenised snapshots are refused whole, nothing loaded.
    assert accepted_link_key_versions(paths) == (1,)
    first = [
        retokenise_snapshot(
            resolve_extract(c, base=run), mappings[c].path, run / "agency" / c, run / "landing"
        )
        for c in CODES
    ]
    got = stage_ingest(paths)["outcomes"]
    assert {(o["status"], o["reason_code"]) for o in got} == {("refused", "version_mismatch")}
    assert all("link_key_version 2" in o["detail"] for o in got)
    assert set(r for (r,) in _q(paths, "SELECT record_ref FROM identifiers")) == refs_v1
    assert {b.batch_id for b in first} == {o["batch_id"] for o in got}

    # Hub config moves to v2: the bridges re-send, the batches load, a full relink follows.
    set_accepted_link_key_versions(paths, [2])
    assert HubExpectations.load(paths).link_key_versions == frozenset({2})
    for c in CODES:
        retokenise_snapshot(
            resolve_extract(c, base=run), mappings[c].path, run / "agency" / c, run / "landing"
        )
    got = stage_ingest(paths)["outcomes"]
    assert {o["status"] for o in got} == {"accepted"}
    assert _q(
        paths, "SELECT DISTINCT link_key_version FROM batch b JOIN identifiers i USING (batch_id)"
    ) == [(2,)]
    # Refs do not depend on K_link: the same records; every token changed.
    tok_v2 = dict(_q(paths, "SELECT record_ref, tok_dob FROM identifiers"))
    assert set(tok_v2) == refs_v1
    both = [r for r in refs_v1 if tok_v1[r] is not None]
    assert both and all(tok_v2[r] != tok_v1[r] for r in both)

    stage_link_persons(paths, "r2")
    persons_v2 = dict(_q(paths, "SELECT record_ref, person_id FROM record_person"))
    assert set(persons_v2) == set(persons_v1)
    # Same key material relation -> same clusters -> person ids carried over by ref overlap.
    same = sum(persons_v2[r] == persons_v1[r] for r in persons_v1)
    assert same / len(persons_v1) > 0.9
