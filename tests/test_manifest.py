"""Manifests: sign at the bridge, verify at the hub, detect any tampering."""

import json

import pandas as pd
import pytest

from ig_bridge.keys import generate_signing_key
from ig_bridge.manifest import (
    BatchRefused,
    build_manifest,
    canonical_json,
    load_public_keys,
    sign_manifest,
    verify_batch,
    write_manifest,
)


def _make_batch(root, key, agency="SCH", batch_id="b0001"):
    batch = root / "landing" / agency / batch_id
    batch.mkdir(parents=True)
    ids = pd.DataFrame(
        {
            "record_ref": ["r1", "r2", "r3"],
            "agency": agency,
            "batch_id": batch_id,
            "tok_dob": ["a" * 32, None, "b" * 32],
        }
    )
    ids.to_parquet(batch / "identifiers.parquet", index=False)
    ids[["record_ref", "agency", "batch_id"]].to_parquet(batch / "payload.parquet", index=False)
    ids.iloc[:0].to_parquet(batch / "related.parquet", index=False)
    manifest = build_manifest(
        batch,
        batch_id=batch_id,
        agency=agency,
        sequence=1,
        extract_kind="snapshot",
        mapping_version=1,
        canonical_version=1,
        encoding_spec_version=1,
        link_key_version=1,
        ref_key_version=1,
        signing_key_id=key.key_id,
        rows={"read": 4, "accepted": 3, "quarantined": 1},
    )
    write_manifest(batch, sign_manifest(manifest, key))
    return batch


@pytest.fixture()
def signed(tmp_path):
    key = generate_signing_key("SCH")
    return _make_batch(tmp_path, key), key


def test_valid_batch_verifies(signed):
    batch, key = signed
    vm = verify_batch(batch, {key.key_id: key.public_bytes()})
    assert vm.agency == "SCH" and vm.batch_id == "b0001" and vm.rows["accepted"] == 3
    assert vm.files["identifiers.parquet"]["rows"] == 3
    assert vm.files["related.parquet"]["rows"] == 0
    # A single-key agency may also be registered by its code.
    assert verify_batch(batch, {"SCH": key.public_bytes()}).sequence == 1


def test_signature_is_over_canonical_json(signed):
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    batch, key = signed
    doc = json.loads((batch / "manifest.json").read_text())
    sig = base64.b64decode(doc.pop("signature"))
    Ed25519PublicKey.from_public_bytes(key.public_bytes()).verify(
        sig, json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    )
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()


@pytest.mark.parametrize(
    "name", ["identifiers.parquet", "payload.parquet", "related.parquet", "manifest.json"]
)
def test_any_flipped_byte_is_detected(signed, name):
    batch, key = signed
    size = (batch / name).stat().st_size
    # Every byte of the manifest, a spread of positions in the data files (keeps it fast).
    positions = (
        range(size)
        if name == "manifest.json"
        else sorted({0, 1, size // 3, size // 2, size - 9, size - 1})
    )
    target = batch / name
    original = target.read_bytes()
    for pos in positions:
        data = bytearray(original)
        data[pos] ^= 0x01
        target.write_bytes(bytes(data))
        try:
            with pytest.raises(BatchRefused) as err:
                verify_batch(batch, {key.key_id: key.public_bytes()})
        finally:
            target.write_bytes(original)
        assert err.value.reason_code in {
            "bad_signature",
            "manifest_invalid",
            "checksum_mismatch",
            "size_mismatch",
            "unknown_signing_key",
            "unknown_agency",
            "path_mismatch",
        }, (pos, err.value)


def test_wrong_public_key_and_unknown_agency(signed):
    batch, key = signed
    other = generate_signing_key("SCH")
    with pytest.raises(BatchRefused) as err:
        verify_batch(batch, {key.key_id: other.public_bytes()})
    assert err.value.reason_code == "bad_signature"
    with pytest.raises(BatchRefused) as err:
        verify_batch(batch, {"GP-ed25519-v1": generate_signing_key("GP").public_bytes()})
    assert err.value.reason_code == "unknown_agency"
    with pytest.raises(BatchRefused) as err:
        verify_batch(batch, {"SCH-ed25519-v9": key.public_bytes()})
    assert err.value.reason_code == "unknown_signing_key"


def test_another_agencys_key_cannot_vouch_for_a_batch(tmp_path):
    gp = generate_signing_key("GP")
    # GP signs a manifest claiming to be SCH, naming its own key id.
    batch = _make_batch(tmp_path, gp, agency="SCH")
    with pytest.raises(BatchRefused) as err:
        verify_batch(batch, {gp.key_id: gp.public_bytes()})
    assert err.value.reason_code == "unknown_agency"


def test_missing_and_extra_files(signed):
    batch, key = signed
    keys = {key.key_id: key.public_bytes()}
    (batch / "notes.txt").write_text("x")
    with pytest.raises(BatchRefused) as err:
        verify_batch(batch, keys)
    assert err.value.reason_code == "extra_file"
    (batch / "notes.txt").unlink()
    (batch / "payload.parquet").unlink()
    with pytest.raises(BatchRefused) as err:
        verify_batch(batch, keys)
    assert err.value.reason_code == "missing_file"
    (batch / "manifest.json").unlink()
    with pytest.raises(BatchRefused) as err:
        verify_batch(batch, keys)
    assert err.value.reason_code == "manifest_missing"


def test_renamed_batch_folder_is_refused(signed, tmp_path):
    batch, key = signed
    moved = tmp_path / "landing" / "SCH" / "b0002"
    batch.rename(moved)
    with pytest.raises(BatchRefused) as err:
        verify_batch(moved, {key.key_id: key.public_bytes()})
    assert err.value.reason_code == "path_mismatch"


def test_rows_must_add_up(tmp_path):
    with pytest.raises(ValueError, match="read != accepted"):
        build_manifest(
            tmp_path,
            batch_id="b",
            agency="SCH",
            sequence=1,
            extract_kind="delta",
            mapping_version=1,
            canonical_version=1,
            encoding_spec_version=1,
            link_key_version=1,
            ref_key_version=1,
            signing_key_id="SCH-ed25519-v1",
            rows={"read": 5, "accepted": 3, "quarantined": 1},
        )


def test_public_keys_directory(tmp_path):
    from ig_bridge.keys import KeyStore

    store = KeyStore(tmp_path / "keys", "SCH")
    store.ensure()
    store.export_public_key(tmp_path / "pub")
    keys = load_public_keys(tmp_path / "pub")
    assert keys == {"SCH-ed25519-v1": store.signing_key().public_bytes()}
