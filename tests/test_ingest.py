"""Hub ingest on real bridge batches: verification, the column contract, versions, replay,
idempotent re-ingest, snapshot/delta semantics and refusals with a machine-readable reason.

Batches are the `orchestrated_run` fixture's (1,500 people, every agency bridged with real
keys and landed), copied per test; forged batches are re-signed with the agency's real
Ed25519 key, so the only thing wrong with them is what each test changes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sealed_batches import ingest_sealed, open_landing

from ig_bridge.keys import KeyStore, generate_signing_key
from ig_bridge.manifest import MANIFEST_NAME, sha256_file, sign_manifest, write_manifest
from ig_bridge.split import run_bridge
from linkage.config import HubPaths

ROOT = Path(__file__).resolve().parents[1]
MAPPINGS = ROOT / "schemas" / "agencies"
AGENCY = "HSG"  # Parquet extract: easy to cut into snapshots and deltas


@pytest.fixture()
def run(orchestrated_run: Path, copy_run, tmp_path: Path) -> Path:
    """Landed batches opened to plaintext, for the tests to forge as an agency could; they are
    sealed to the hub again (its key is public) when the test ingests."""
    r = copy_run(orchestrated_run, tmp_path / "run")
    open_landing(r / "landing", r / "hub" / "keys")
    return r


ingest_landing = ingest_sealed  # seals what the test left in landing/, then ingests


def _batch(run: Path, agency: str = AGENCY) -> Path:
    (b,) = [p for p in (run / "landing" / agency).iterdir() if p.is_dir()]
    return b


def _manifest(batch: Path) -> dict:
    return json.loads((batch / MANIFEST_NAME).read_text("utf-8"))


def _resign(batch: Path, agency: str, **changes: object) -> None:
    """Recompute the file entries of the manifest, apply `changes`, sign with the agency's
    real signing key: a batch the agency really could have sent."""
    body = {k: v for k, v in _manifest(batch).items() if k != "signature"}
    for name in body["files"]:
        p = batch / name
        body["files"][name] = {
            "sha256": sha256_file(p),
            "bytes": p.stat().st_size,
            "rows": pq.read_metadata(p).num_rows,
        }
    body.update(changes)
    key = KeyStore(batch.parents[2] / "agency" / agency / "keys", agency).signing_key()
    write_manifest(batch, sign_manifest(body, key))


def _count(run: Path, sql: str, params: list | None = None) -> int:
    con = duckdb.connect(str(HubPaths.for_run(run).warehouse), read_only=True)
    try:
        return con.execute(sql, params or []).fetchone()[0]
    finally:
        con.close()


def _refusal(run: Path, agency: str, batch_id: str) -> dict:
    path = HubPaths.for_run(run).refused / agency / batch_id / "refusal.json"
    assert path.exists(), f"no refusal.json at {path}"
    return json.loads(path.read_text("utf-8"))


def _assert_refused(run: Path, report, batch: Path, code: str) -> None:
    (out,) = [o for o in report.outcomes if o.batch_id == batch.name]
    assert out.status == "refused" and out.reason_code == code, out
    r = _refusal(run, out.agency, batch.name)
    assert r["reason_code"] == code and r["batch_id"] == batch.name
    assert not batch.exists()  # moved out of landing whole
    # nothing of the refused batch is in the warehouse
    for t in ("identifiers", "related", "payload"):
        assert _count(run, f"SELECT count(*) FROM {t} WHERE batch_id = ?", [batch.name]) == 0
    assert _count(run, "SELECT count(*) FROM batch WHERE batch_id = ?", [batch.name]) == 0
    assert _count(run, "SELECT count(*) FROM refused_batch WHERE reason_code = ?", [code]) >= 1


def test_accepts_every_landed_batch_and_counts_match_manifests(run: Path) -> None:
    manifests = {
        p.parent.parent.name: _manifest(p.parent)
        for p in (run / "landing").glob("*/*/manifest.json")
    }
    report = ingest_landing(HubPaths.for_run(run))
    assert {o.agency for o in report.accepted} == set(manifests) and not report.refused
    for agency, m in manifests.items():
        for table, name in (
            ("identifiers", "identifiers.parquet"),
            ("related", "related.parquet"),
            ("payload", "payload.parquet"),
        ):
            n = _count(run, f"SELECT count(*) FROM {table} WHERE agency = ?", [agency])
            assert n == m["files"][name]["rows"], (agency, table)
    assert not any((run / "landing").glob("*/*/manifest.json"))


def test_reingest_of_the_same_batch_is_a_noop(run: Path) -> None:
    paths = HubPaths.for_run(run)
    src = _batch(run)
    keep = run / "copy-of-batch"
    shutil.copytree(src, keep)
    ingest_landing(paths)
    before = _count(run, "SELECT count(*) FROM identifiers")
    again = paths.landing / AGENCY / src.name
    shutil.copytree(keep, again)
    report = ingest_landing(paths, batch_dirs=[again])
    assert [o.status for o in report.outcomes] == ["already_ingested"]
    assert _count(run, "SELECT count(*) FROM identifiers") == before
    assert _count(run, "SELECT count(*) FROM batch WHERE agency = ?", [AGENCY]) == 1


def test_tampered_file_refused_and_nothing_loaded(run: Path) -> None:
    b = _batch(run)
    t = pq.read_table(b / "payload.parquet")
    pq.write_table(t.slice(1), b / "payload.parquet")  # one row silently dropped
    report = ingest_landing(HubPaths.for_run(run))
    _assert_refused(run, report, b, "size_mismatch")
    assert _count(run, "SELECT count(*) FROM identifiers WHERE agency = ?", [AGENCY]) == 0
    assert len(report.accepted) == 6  # the other agencies are unaffected


def test_tampered_bytes_same_size_refused_on_checksum(run: Path) -> None:
    b = _batch(run, "GP")
    data = bytearray((b / "identifiers.parquet").read_bytes())
    data[len(data) // 2] ^= 0x01
    (b / "identifiers.parquet").write_bytes(bytes(data))
    report = ingest_landing(HubPaths.for_run(run), batch_dirs=[b])
    _assert_refused(run, report, b, "checksum_mismatch")


def test_column_outside_the_agreement_refused(run: Path) -> None:
    b = _batch(run)
    t = pq.read_table(b / "payload.parquet")
    # e.g. the NI number the mapping drops, sent anyway (a synthetic value)
    t = t.append_column("ni_number", pa.array(["QQ123456C"] * t.num_rows))
    pq.write_table(t, b / "payload.parquet")
    _resign(b, AGENCY)
    report = ingest_landing(HubPaths.for_run(run), batch_dirs=[b])
    _assert_refused(run, report, b, "column_not_in_agreement")
    assert "ni_number" in _refusal(run, AGENCY, b.name)["detail"]
    assert "QQ123456C" not in (
        HubPaths.for_run(run).refused / AGENCY / b.name / "refusal.json"
    ).read_text("utf-8")


@pytest.mark.parametrize(
    "field,value",
    [
        ("encoding_spec_version", 99),
        ("link_key_version", 7),
        ("canonical_version", 99),
        ("mapping_version", 5),
    ],
)
def test_wrong_versions_refused(run: Path, field: str, value: int) -> None:
    b = _batch(run)
    _resign(b, AGENCY, **{field: value})
    report = ingest_landing(HubPaths.for_run(run), batch_dirs=[b])
    _assert_refused(run, report, b, "version_mismatch")
    assert field in _refusal(run, AGENCY, b.name)["detail"]


def _clone_batch(run: Path, src: Path, new_id: str, **changes: object) -> Path:
    """A copy of an already-ingested batch, landed again under `new_id` and re-signed."""
    dest = run / "landing" / AGENCY / new_id
    shutil.copytree(src, dest)
    for name in ("identifiers.parquet", "related.parquet", "payload.parquet"):
        t = pq.read_table(dest / name)
        i = t.schema.get_field_index("batch_id")
        t = t.set_column(i, "batch_id", pa.array([new_id] * t.num_rows, pa.string()))
        pq.write_table(t, dest / name)
    _resign(dest, AGENCY, batch_id=new_id, **changes)
    return dest


def test_replay_same_sequence_new_batch_id_refused(run: Path) -> None:
    paths = HubPaths.for_run(run)
    b = _batch(run)
    seq = _manifest(b)["sequence"]
    ingest_landing(paths)
    ingested = paths.ingested / AGENCY / b.name
    replay = _clone_batch(run, ingested, f"{AGENCY}-{seq:06d}-replayed")
    report = ingest_landing(paths, batch_dirs=[replay])
    _assert_refused(run, report, replay, "replay")


def test_replay_same_batch_id_other_manifest_refused(run: Path) -> None:
    paths = HubPaths.for_run(run)
    b = _batch(run)
    ingest_landing(paths)
    refs_before = _count(run, "SELECT count(*) FROM identifiers WHERE agency = ?", [AGENCY])
    dest = paths.landing / AGENCY / b.name
    shutil.copytree(paths.ingested / AGENCY / b.name, dest)
    _resign(dest, AGENCY, created_at="2020-01-01T00:00:00+00:00")
    report = ingest_landing(paths, batch_dirs=[dest])
    (out,) = report.outcomes
    assert out.status == "refused" and out.reason_code == "replay"
    assert _refusal(run, AGENCY, b.name)["reason_code"] == "replay"
    assert _count(run, "SELECT count(*) FROM identifiers WHERE agency = ?", [AGENCY]) == refs_before


def test_unsigned_batch_refused(run: Path) -> None:
    b = _batch(run)
    m = _manifest(b)
    m.pop("signature")
    (b / MANIFEST_NAME).write_text(json.dumps(m), "utf-8")
    report = ingest_landing(HubPaths.for_run(run), batch_dirs=[b])
    _assert_refused(run, report, b, "manifest_invalid")


def test_bad_signature_refused(run: Path) -> None:
    b = _batch(run)
    m = _manifest(b)
    m["rows"]["quarantined"] += 1  # any change to signed content
    (b / MANIFEST_NAME).write_text(json.dumps(m), "utf-8")
    report = ingest_landing(HubPaths.for_run(run), batch_dirs=[b])
    _assert_refused(run, report, b, "bad_signature")


def test_batch_from_unknown_agency_refused(run: Path) -> None:
    """A well-formed batch signed by a party the hub has no public key for."""
    src = _batch(run)
    dest = run / "landing" / "ZZZ"
    shutil.copytree(src, dest / src.name)
    b = dest / src.name
    body = {k: v for k, v in _manifest(b).items() if k != "signature"}
    stranger = generate_signing_key("ZZZ")
    body.update(agency="ZZZ", signing_key_id=stranger.key_id)
    write_manifest(b, sign_manifest(body, stranger))
    report = ingest_landing(HubPaths.for_run(run), batch_dirs=[b])
    _assert_refused(run, report, b, "unknown_agency")


def test_batch_signed_with_another_agencys_key_refused(run: Path) -> None:
    b = _batch(run)
    body = {k: v for k, v in _manifest(b).items() if k != "signature"}
    gp = KeyStore(run / "agency" / "GP" / "keys", "GP").signing_key()
    write_manifest(b, sign_manifest(body, gp))  # still claims HSG's key id
    report = ingest_landing(HubPaths.for_run(run), batch_dirs=[b])
    _assert_refused(run, report, b, "bad_signature")


# --------------------------------------------------------------------------- snapshot / delta


def _hsg_extract(run: Path) -> pd.DataFrame:
    (path,) = sorted((run / "population" / "extracts" / AGENCY).glob("*.parquet"))
    return pd.read_parquet(path)


def _bridge(run: Path, frame: pd.DataFrame, kind: str, name: str) -> Path:
    path = run / "population" / f"{name}.parquet"
    frame.to_parquet(path, index=False)
    res = run_bridge(
        path, MAPPINGS / "hsg.yaml", run / "agency" / AGENCY, run / "landing", extract_kind=kind
    )
    assert res.landed_path is not None
    return res.landed_path


def test_snapshot_replaces_and_retires_delta_upserts(run: Path) -> None:
    paths = HubPaths.for_run(run)
    ingest_landing(paths)
    full = _hsg_extract(run)
    n0 = _count(run, "SELECT count(*) FROM identifiers WHERE agency = ?", [AGENCY])
    assert n0 == len(full) > 40

    # Snapshot without the first 9 tenancies (~10%: within the snapshot guards' limits): they
    # retire, the rest are replaced.
    snap = _bridge(run, full.iloc[9:], "snapshot", "hsg_snapshot")
    report = ingest_landing(paths, batch_dirs=[snap])
    assert [o.status for o in report.outcomes] == ["accepted"]
    assert _count(run, "SELECT count(*) FROM identifiers WHERE agency = ?", [AGENCY]) == n0 - 9
    assert _count(run, "SELECT count(*) FROM record_retired WHERE batch_id = ?", [snap.name]) == 9
    assert (
        _count(run, "SELECT count(DISTINCT batch_id) FROM identifiers WHERE agency = ?", [AGENCY])
        == 1
    )
    assert (
        _count(
            run,
            "SELECT count(*) FROM payload WHERE agency = ? AND batch_id <> ?",
            [AGENCY, snap.name],
        )
        == 0
    )

    # Delta: 5 changed tenancies (new phone) and 4 new ones; nothing else touched.
    changed = full.iloc[30:35].copy()
    changed["phone"] = "07700 900123"
    new = full.iloc[40:44].copy()
    new["tenancy_ref"] = [f"NEW-{i}" for i in range(4)]
    delta = _bridge(run, pd.concat([changed, new]), "delta", "hsg_delta")
    report = ingest_landing(paths, batch_dirs=[delta])
    assert [o.status for o in report.outcomes] == ["accepted"]
    assert _count(run, "SELECT count(*) FROM identifiers WHERE agency = ?", [AGENCY]) == n0 - 9 + 4
    assert _count(run, "SELECT count(*) FROM identifiers WHERE batch_id = ?", [delta.name]) == 9
    assert _count(run, "SELECT count(*) FROM payload WHERE batch_id = ?", [delta.name]) == 9
    # the changed records' phone tokens now agree with each other (same new phone)
    assert (
        _count(
            run,
            "SELECT count(DISTINCT tok_phone) FROM identifiers WHERE batch_id = ? "
            "AND tok_phone IS NOT NULL",
            [delta.name],
        )
        >= 1
    )
    assert _count(run, "SELECT count(*) FROM record_retired WHERE batch_id = ?", [delta.name]) == 0
    # one row per record_ref, whatever the history
    assert _count(run, "SELECT count(*) - count(DISTINCT record_ref) FROM identifiers") == 0
    # Ingest converted what it loaded for linkage: the converted input follows every batch,
    # retirements included, so a linkage run finds nothing left to convert.
    n = _count(run, "SELECT count(*) FROM identifiers")
    assert _count(run, "SELECT count(*) FROM linkage_features") == n
    assert (
        _count(
            run,
            "SELECT count(*) FROM linkage_features JOIN identifiers "
            "USING (agency, record_ref, batch_id)",
        )
        == n
    )
